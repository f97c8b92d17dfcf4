"""Shared fixtures: a tiny VOC-layout data set written to disk, and a tiny saved model."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
TINY_CLASSES = ["square", "disc"]


def write_tiny_voc(root: Path, n_train: int = 8, n_val: int = 4, size: int = 96, seed: int = 0) -> Path:
    """VOCdevkit/VOC2007 with filled squares (class 0) and discs (class 1) on noise; returns the devkit."""
    rng = np.random.default_rng(seed)
    voc = root / "VOCdevkit" / "VOC2007"
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (voc / sub).mkdir(parents=True, exist_ok=True)
    names = {"train": [], "val": []}
    for i in range(n_train + n_val):
        split = "train" if i < n_train else "val"
        img = rng.integers(0, 80, (size, size, 3), dtype=np.uint8)
        objs = []
        for _ in range(int(rng.integers(1, 3))):
            cls = int(rng.integers(0, 2))
            s = int(rng.integers(size // 5, size // 2))
            x1, y1 = (int(v) for v in rng.integers(0, size - s, 2))
            colour = tuple(int(c) for c in rng.integers(150, 256, 3))
            if cls == 0:
                cv2.rectangle(img, (x1, y1), (x1 + s - 1, y1 + s - 1), colour, -1)
            else:
                cv2.circle(img, (x1 + s // 2, y1 + s // 2), s // 2, colour, -1)
            objs.append((TINY_CLASSES[cls], x1 + 1, y1 + 1, x1 + s, y1 + s))  # VOC: 1-based inclusive
        stem = f"{i:06d}"
        cv2.imwrite(str(voc / "JPEGImages" / f"{stem}.jpg"), img)
        xml = "".join(
            f"<object><name>{n}</name><difficult>0</difficult><bndbox><xmin>{a}</xmin><ymin>{b}</ymin>"
            f"<xmax>{c}</xmax><ymax>{d}</ymax></bndbox></object>" for n, a, b, c, d in objs)
        (voc / "Annotations" / f"{stem}.xml").write_text(
            f"<annotation><filename>{stem}.jpg</filename><size><width>{size}</width><height>{size}</height>"
            f"<depth>3</depth></size>{xml}</annotation>")
        names[split].append(stem)
    for split, stems in names.items():
        (voc / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(stems) + "\n")
    (root / "VOCdevkit" / "classes.txt").write_text("\n".join(TINY_CLASSES) + "\n")
    return root / "VOCdevkit"


@pytest.fixture(scope="session")
def tiny_voc(tmp_path_factory) -> Path:
    return write_tiny_voc(tmp_path_factory.mktemp("tiny_voc"))
