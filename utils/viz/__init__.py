"""Pictures: boxes and labels drawn on images, the plots of a run, attention and objectness maps."""
