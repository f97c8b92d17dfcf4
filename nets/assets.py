"""The head geometry (anchor masks, strides, box-centre scale) and readers for the text assets in `model_data/`.

One definition each: the network, the loss, the decoder, the data pipeline and the exporters
all take the anchors, masks, strides and scale_x_y from here (or from a checkpoint that stored them).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
MODEL_DATA = ROOT / "model_data"
DEFAULT_ANCHORS = MODEL_DATA / "yolo_anchors.txt"
ANCHOR_MASKS = ((3, 4, 5), (1, 2, 3))  # yolov4-tiny.cfg: stride-32 head, stride-16 head
STRIDES = (32, 16)  # input pixels per cell of each head, in the order of ANCHOR_MASKS
MAX_STRIDE = max(STRIDES)  # every input side must be a multiple of it
SCALE_X_Y = 1.0  # box-centre decoding s * sigmoid - (s - 1) / 2 (nets/decode.py); 1.0 = YOLOv3's plain sigmoid


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


def class_names_for(spec: str | Path | None, num_classes: int) -> list[str]:
    """Names for imported weights, which rarely come with theirs: from a class-names file (checked
    against the count), else COCO's for 80 classes, VOC's for 20, numbers otherwise."""
    if spec and not str(spec).isdigit():
        names = read_classes(spec)
        if len(names) != num_classes:
            raise ValueError(f"{spec}: {len(names)} class names, but the weights have {num_classes} classes")
        return names
    for f in (MODEL_DATA / "coco_classes.txt", MODEL_DATA / "voc_classes.txt"):
        if f.is_file() and len(read_classes(f)) == num_classes:
            return read_classes(f)
    return [str(i) for i in range(num_classes)]
