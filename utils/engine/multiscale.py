"""Multi-scale training (Darknet's `random=1`, YOLOv5's `--multi-scale`): each batch at another input size.

The loader always yields `img_size` squares; the trainer resizes a whole batch on the device, so the
loader's work and its caches stay the same. The size is a pure function of (seed, step): every DDP
rank picks the same one, and a resumed run picks the sizes the uninterrupted run would have.
"""
from __future__ import annotations

import math
import random

import torch
import torch.nn.functional as F

from nets.assets import MAX_STRIDE



def size_range(img_size: int, ratio: float) -> tuple[int, int]:
    """The smallest and largest multiple of 32 within img_size * (1 -/+ ratio) (at least 32)."""
    lo = max(MAX_STRIDE, math.ceil(img_size * (1 - ratio) / MAX_STRIDE) * MAX_STRIDE)
    hi = max(lo, math.floor(img_size * (1 + ratio) / MAX_STRIDE) * MAX_STRIDE)
    return lo, hi


def input_size_at(img_size: int, ratio: float, seed: int, step: int) -> int:
    """The square input side for global training step `step`: uniform over the multiples of 32 in range."""
    if ratio <= 0:
        return img_size
    lo, hi = size_range(img_size, ratio)
    return random.Random(f"multiscale|{seed}|{step}").randrange(lo, hi + 1, MAX_STRIDE)


def rescale_batch(images: torch.Tensor, targets: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Float (B, 3, S, S) images and their targets rows [image, class, x1, y1, x2, y2] (input pixels) at
    size x size. Bilinear, as the loader's resizes; boxes scale with the image."""
    if size == images.shape[-1] and size == images.shape[-2]:
        return images, targets
    sx, sy = size / images.shape[-1], size / images.shape[-2]
    images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=False)
    targets = targets.clone()  # scaled by Python numbers: a scale tensor made from a list is a host sync on CUDA
    targets[:, 2::2] *= sx
    targets[:, 3::2] *= sy
    return images, targets
