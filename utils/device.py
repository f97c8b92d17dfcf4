"""The one device resolver: what `--device` means in every mode (train, val, predict, export)."""
from __future__ import annotations

import os

import torch


def select_device(device: str | torch.device | None = "") -> torch.device:
    """'' or 'auto' -> cuda when available (this process's LOCAL_RANK under torchrun), else cpu;
    '0' -> cuda:0; 'cpu', 'cuda', 'cuda:1' as torch reads them. A CUDA device without CUDA is an error."""
    if isinstance(device, torch.device):
        return device
    device = (device or "").strip().lower()
    if device in ("", "auto"):
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.isdigit():
        device = f"cuda:{device}"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device '{device}' asked for, but torch sees no CUDA GPU; use --device cpu")
        if device == "cuda" and "LOCAL_RANK" in os.environ:
            device = f"cuda:{int(os.environ['LOCAL_RANK'])}"
    return torch.device(device)
