"""Optimizer with parameter groups, and the learning-rate schedule (warm-up, then decay)."""
from __future__ import annotations

import math

import torch
from torch import nn


def scaled_lr(lr0: float, batch_size: int, nbs: int, optimizer: str) -> float:
    """lr0 is tuned for batch size `nbs`; other batch sizes scale it: linearly for SGD (Goyal et al.),
    by the square root for Adam/AdamW, whose steps do not grow with the gradient's size."""
    ratio = batch_size / nbs
    return lr0 * (ratio if optimizer == "sgd" else ratio ** 0.5)


def build_optimizer(model: nn.Module, name: str, lr: float, momentum: float, weight_decay: float) -> torch.optim.Optimizer:
    """Three groups: conv/linear weights (decayed), norm weights and biases (not decayed)."""
    decay, no_decay_norm, biases = [], [], []
    for module in model.modules():
        for pname, p in module.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            if pname == "bias":
                biases.append(p)
            elif isinstance(module, (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)):
                no_decay_norm.append(p)
            else:
                decay.append(p)
    groups = [
        {"params": decay, "weight_decay": weight_decay, "name": "weights"},
        {"params": no_decay_norm, "weight_decay": 0.0, "name": "norm"},
        {"params": biases, "weight_decay": 0.0, "name": "bias"},
    ]
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=True)
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr, betas=(momentum, 0.999))
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=(momentum, 0.999))
    raise ValueError(f"unknown optimizer '{name}'; choose sgd, adam or adamw")


def lr_factor(epoch_progress: float, epochs: float, scheduler: str, lrf: float) -> float:
    """Multiplier of the base lr at a (fractional) epoch, going from 1 to `lrf` over `epochs`."""
    t = min(max(epoch_progress / max(epochs, 1e-9), 0.0), 1.0)
    if scheduler == "cosine":
        return lrf + (1 - lrf) * 0.5 * (1 + math.cos(math.pi * t))
    if scheduler == "linear":
        return 1 - (1 - lrf) * t
    if scheduler == "step":  # x0.1 at 70% and 90% of training, floored at lrf
        return max(lrf, 0.1 ** ((t >= 0.7) + (t >= 0.9)))
    raise ValueError(f"unknown scheduler '{scheduler}'; choose cosine, linear or step")


def set_learning_rates(optimizer: torch.optim.Optimizer, base_lr: float, factor: float, iteration: int,
                       warmup_iters: int, warmup_bias_lr: float, momentum: float) -> None:
    """Linear warm-up over `warmup_iters` (biases fall from warmup_bias_lr, others rise from 0), then the schedule.

    Computed from the iteration count alone, so a resumed run gets the same lr as one run straight through.
    """
    target = base_lr * factor
    w = min(iteration / warmup_iters, 1.0) if warmup_iters > 0 else 1.0
    # momentum (Adam's beta1) rises from 0.8 and is `momentum` exactly from the end of warm-up on
    beta = 0.8 + (momentum - 0.8) * w
    for group in optimizer.param_groups:
        lr = target
        if w < 1.0:
            # biases start high and fall (YOLOv5's recipe for SGD; callers pass 0 for Adam)
            start = warmup_bias_lr if group.get("name") == "bias" else 0.0
            lr = start + (target - start) * w
        if "momentum" in group:
            group["momentum"] = beta
        elif "betas" in group:
            group["betas"] = (beta, group["betas"][1])
        group["lr"] = lr
