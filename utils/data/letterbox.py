"""Letterbox: resize keeping the aspect ratio, pad with grey to the network size (eval / predict).

Contract shared with decoding: scale = min(S_h / h, S_w / w); the image is resized to
(round(w * scale), round(h * scale)) and placed at (pad_x, pad_y) = floor of half the padding.
Un-letterbox a network-pixel x with x_orig = (x - pad_x) / scale, then clip to the image.
"""
from __future__ import annotations

import cv2
import numpy as np


def letterbox(img: np.ndarray, size: int | tuple[int, int], color: int = 114
              ) -> tuple[np.ndarray, float, tuple[int, int]]:
    """(padded image (S_h, S_w, C), scale, (pad_x, pad_y)) for an HxWxC uint8 image."""
    sh, sw = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    h, w = img.shape[:2]
    scale = min(sh / h, sw / w)
    nw, nh = min(sw, max(1, round(w * scale))), min(sh, max(1, round(h * scale)))
    if (nw, nh) != (w, h):
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        img = cv2.resize(img, (nw, nh), interpolation=interp)
    pad_x, pad_y = (sw - nw) // 2, (sh - nh) // 2
    out = cv2.copyMakeBorder(img, pad_y, sh - nh - pad_y, pad_x, sw - nw - pad_x, cv2.BORDER_CONSTANT,
                             value=(color,) * (img.shape[2] if img.ndim == 3 else 1))
    return out, float(scale), (int(pad_x), int(pad_y))


def letterbox_params(width: int, height: int, size: int | tuple[int, int]) -> tuple[float, tuple[int, int]]:
    """(scale, (pad_x, pad_y)) that `letterbox` uses for a width x height image, without the image."""
    sh, sw = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    scale = min(sh / height, sw / width)
    nw, nh = min(sw, max(1, round(width * scale))), min(sh, max(1, round(height * scale)))
    return float(scale), ((sw - nw) // 2, (sh - nh) // 2)


def unletterbox_boxes(boxes: np.ndarray, scale: float, pad: tuple[float, float], width: int, height: int
                      ) -> np.ndarray:
    """Network-pixel xyxy boxes back to the original image, clipped to it."""
    b = (np.asarray(boxes, np.float32) - np.array([pad[0], pad[1], pad[0], pad[1]], np.float32)) / scale
    b[:, [0, 2]] = b[:, [0, 2]].clip(0, width)
    b[:, [1, 3]] = b[:, [1, 3]].clip(0, height)
    return b
