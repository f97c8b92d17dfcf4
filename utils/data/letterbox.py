"""Letterbox: resize keeping the aspect ratio, pad with grey to the network size (eval / predict).

Contract shared with decoding: scale = min(S_h / h, S_w / w); the image is resized to
`nets.decode.resized_size(w, h, scale)` and placed at (pad_x, pad_y) = floor of half the padding;
`nets.decode.unletterbox` maps boxes back with the same size, per axis.
"""
from __future__ import annotations

import cv2
import numpy as np

from nets.decode import resized_size


def letterbox(img: np.ndarray, size: int | tuple[int, int], color: int = 114
              ) -> tuple[np.ndarray, float, tuple[int, int]]:
    """(padded image (S_h, S_w, C), scale, (pad_x, pad_y)) for an HxWxC uint8 image."""
    sh, sw = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    h, w = img.shape[:2]
    scale, (pad_x, pad_y) = letterbox_params(w, h, (sh, sw))
    nw, nh = resized_size(w, h, scale)
    if (nw, nh) != (w, h):
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        img = cv2.resize(img, (nw, nh), interpolation=interp)
    out = cv2.copyMakeBorder(img, pad_y, sh - nh - pad_y, pad_x, sw - nw - pad_x, cv2.BORDER_CONSTANT,
                             value=(color,) * (img.shape[2] if img.ndim == 3 else 1))
    return out, float(scale), (int(pad_x), int(pad_y))


def letterbox_params(width: int, height: int, size: int | tuple[int, int]) -> tuple[float, tuple[int, int]]:
    """(scale, (pad_x, pad_y)) that `letterbox` uses for a width x height image, without the image."""
    sh, sw = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    scale = min(sh / height, sw / width)  # round(side * scale) <= S for both sides: the image always fits
    nw, nh = resized_size(width, height, scale)
    return float(scale), ((sw - nw) // 2, (sh - nh) // 2)
