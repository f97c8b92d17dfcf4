"""Decode an image file to RGB uint8, the one way every loader does it.

OpenCV's IMREAD_COLOR already does the unambiguous repairs: grayscale and palette -> 3 channels,
alpha dropped, 16-bit -> 8-bit, CMYK JPEG -> BGR, EXIF orientation applied. We convert BGR -> RGB
once: here, or (training) once per augmented sample.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


class ImageError(RuntimeError):
    """An image that cannot be used (missing, empty, does not decode, wrong size); names the file."""


def read_bgr(path: str | Path, expect_size: tuple[int, int] | None = None) -> np.ndarray:
    """Decode `path` to BGR uint8 (H, W, 3), as OpenCV gives it; `expect_size` = (width, height) from
    the record guards against a file replaced since indexing (its boxes would no longer fit)."""
    path = str(path)
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:  # non-ASCII paths on some platforms: decode from bytes instead
        try:
            data = np.fromfile(path, dtype=np.uint8)
        except OSError as e:
            raise ImageError(f"{path}: cannot read image ({e.strerror or e})") from None
        img = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
        if img is None:
            raise ImageError(f"{path}: image does not decode (empty or corrupt file); "
                             "re-export it as JPEG/PNG or remove it from the data set")
    if expect_size is not None and (img.shape[1], img.shape[0]) != tuple(expect_size):
        raise ImageError(f"{path}: image is {img.shape[1]}x{img.shape[0]} but was indexed as "
                         f"{expect_size[0]}x{expect_size[1]}; the file changed - delete the label cache")
    return img


def load_image(path: str | Path, expect_size: tuple[int, int] | None = None) -> np.ndarray:
    """Read `path` as RGB uint8 (H, W, 3) (see read_bgr)."""
    return cv2.cvtColor(read_bgr(path, expect_size), cv2.COLOR_BGR2RGB)
