"""Training: the Trainer and its loop events (callbacks), optimizer and schedule, EMA, DDP, multi-scale, run folders."""
