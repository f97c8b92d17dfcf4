"""What a reader hands over before validation: one image, its raw annotations, or why it is unusable.

Readers only parse; `load.finish` checks images and boxes the same way for every format.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Candidate:
    image: str  # image path
    label_file: str = ""  # annotation file (named in the report for annotation problems)
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))  # xyxy px, or cxcywh 0..1
    classes: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int64))  # -1 never; unknown -> error
    difficult: np.ndarray | None = None
    iscrowd: np.ndarray | None = None
    area: np.ndarray | None = None
    image_id: int | None = None  # None: the position in the split
    normalized: bool = False  # YOLO: boxes are cx, cy, w, h as fractions of the image size
    declared_size: tuple[int, int] | None = None  # (w, h) the annotation claims
    error: str | None = None  # set: the sample is skipped with this reason
    repairs: list[str] = field(default_factory=list)
    missing_label: bool = False  # YOLO: image without a label file (kept as a negative)


def failed(image: str, label_file: str, reason: str) -> Candidate:
    return Candidate(image=image, label_file=label_file, error=reason)


# What an unknown class's skip message suggests: the fix for a typo, or the switch for training on a subset.
UNLISTED_FIX = ("add it to the class names (classes.txt / the data YAML 'names'), fix the label, or set "
                "'unlisted_classes: drop' in the data YAML to train on the listed classes only")


def dropped_unlisted(labels: list[str]) -> str:
    """The repair a reader records when `unlisted_classes: drop` leaves objects out of an image."""
    counts = Counter(labels)
    return "objects of unlisted classes dropped: " + ", ".join(
        f"{k} x{n}" if n > 1 else k for k, n in counts.most_common())
