"""Attention ablation: train every --phi variant with the same data, seeds and budget, then one report."""
