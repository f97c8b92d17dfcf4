"""Readers for the small text assets in `model_data/` (anchors, class names)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
MODEL_DATA = ROOT / "model_data"
DEFAULT_ANCHORS = MODEL_DATA / "yolo_anchors.txt"
ANCHOR_MASKS = ((3, 4, 5), (1, 2, 3))  # yolov4-tiny.cfg: stride-32 head, stride-16 head
STRIDES = (32, 16)


def read_anchors(path: str | Path = DEFAULT_ANCHORS) -> np.ndarray:
    """Read `w,h, w,h, ...` (commas and/or whitespace) into a float32 (N, 2) array."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"anchors file not found: {path} (expected 'w,h, w,h, ...' in pixels)")
    text = path.read_text().replace(",", " ").split()
    try:
        values = np.array([float(v) for v in text], dtype=np.float32)
    except ValueError as e:
        raise ValueError(f"{path}: anchors must be numbers 'w,h, w,h, ...' ({e})") from None
    if values.size == 0 or values.size % 2 or (values <= 0).any():
        raise ValueError(f"{path}: expected an even count of positive numbers, got {values.size} values")
    return values.reshape(-1, 2)


def read_classes(path: str | Path) -> list[str]:
    """One class name per line; blank lines and surrounding spaces ignored."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"class-names file not found: {path} (one class name per line)")
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not names:
        raise ValueError(f"{path}: no class names in file (one class name per line)")
    return names
