"""Training augmentation: mosaic, random scale/translate, mixup (OpenCV + NumPy), colour jitter
(albumentations) and horizontal flip (NumPy, boxes mirrored alongside).

All randomness comes from the `np.random.Generator` the caller passes in, so a sample is a pure
function of (seed, epoch, index) whatever the worker count. Geometry is one cv2.warpAffine per sample
(mosaic canvas or resized image -> network input), boxes follow through the same 2x3 matrix, are
clipped to the output, and dropped when they become tiny, thin or mostly cut away. Of the 2S x 2S
mosaic canvas only the window the warp reads is built (a third of it on average at scale 0.5): the
same pixels out, a third of the filling and copying.
"""
from __future__ import annotations

import math
import os
import random

import cv2
import numpy as np

GREY = 114
MIN_WH = 2.0  # px: smaller boxes after augmentation are dropped
MIN_AREA_RATIO = 0.1  # a box keeping < 10% of its area after clipping is dropped
MAX_ASPECT = 20.0  # thinner boxes are dropped


def affine_matrix(rng: np.random.Generator, out_size: int, center: tuple[float, float], scale: float,
                  translate: float) -> np.ndarray:
    """2x3 matrix: move `center` of the source to the middle of an out_size square, zoom by
    s ~ U(1 - scale, 1 + scale) about it, shift by U(-translate, translate) * out_size."""
    s = rng.uniform(1 - scale, 1 + scale)
    tx, ty = rng.uniform(0.5 - translate, 0.5 + translate, size=2) * out_size
    return np.array([[s, 0, tx - s * center[0]], [0, s, ty - s * center[1]]], np.float64)


def transform_boxes(boxes: np.ndarray, m: np.ndarray) -> np.ndarray:
    """xyxy boxes through a 2x3 affine matrix: the box around the four transformed corners."""
    if len(boxes) == 0:
        return boxes.reshape(0, 4).astype(np.float32)
    xs = boxes[:, [0, 2, 2, 0]]
    ys = boxes[:, [1, 1, 3, 3]]
    nx = m[0, 0] * xs + m[0, 1] * ys + m[0, 2]
    ny = m[1, 0] * xs + m[1, 1] * ys + m[1, 2]
    return np.stack([nx.min(1), ny.min(1), nx.max(1), ny.max(1)], 1).astype(np.float32)


def clip_and_filter(boxes: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Clip to the image; return (clipped boxes, keep mask): keep boxes at least MIN_WH px wide and high,
    with >= MIN_AREA_RATIO of their area left inside the image and an aspect ratio below MAX_ASPECT."""
    clipped = boxes.copy()
    clipped[:, [0, 2]] = clipped[:, [0, 2]].clip(0, width)
    clipped[:, [1, 3]] = clipped[:, [1, 3]].clip(0, height)
    w, h = clipped[:, 2] - clipped[:, 0], clipped[:, 3] - clipped[:, 1]
    w0, h0 = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    ar = np.maximum(w / (h + 1e-9), h / (w + 1e-9))
    keep = (w > MIN_WH) & (h > MIN_WH) & (w * h > MIN_AREA_RATIO * w0 * h0) & (ar < MAX_ASPECT)
    return clipped, keep


def source_window(m: np.ndarray, out_size: int, width: int, height: int) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1): the part of a width x height source that warp(source, m, out_size) reads (bilinear
    neighbours and a pixel of rounding margin included), clipped to the source. m scales and shifts only."""
    inv = cv2.invertAffineTransform(m)
    xs = inv[0, 0] * np.array([0.0, out_size]) + inv[0, 2]
    ys = inv[1, 1] * np.array([0.0, out_size]) + inv[1, 2]
    return (max(0, math.floor(xs.min()) - 2), max(0, math.floor(ys.min()) - 2),
            min(width, math.ceil(xs.max()) + 2), min(height, math.ceil(ys.max()) + 2))


def mosaic_canvas(tiles: list[tuple[np.ndarray, np.ndarray, np.ndarray]], size: int, center: tuple[int, int],
                  buffer: np.ndarray | None = None, window: tuple[int, int, int, int] | None = None
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Four (image, boxes, classes) around `center` of a 2S x 2S grey canvas: top-left, top-right,
    bottom-left, bottom-right; boxes (canvas coordinates) clipped to the part of their tile that is pasted.
    Returns the pixels of `window` (x0, y0, x1, y1) of the canvas only (default: all of it). `buffer`: a
    uint8 array of at least 2S * 2S * 3 elements to reuse (saves page-faulting 1-2 MB a sample)."""
    s2 = 2 * size
    xc, yc = center
    wx0, wy0, wx1, wy1 = window or (0, 0, s2, s2)
    n = (wy1 - wy0) * (wx1 - wx0) * 3
    canvas = (np.empty(n, np.uint8) if buffer is None else buffer.reshape(-1)[:n]).reshape(wy1 - wy0, wx1 - wx0, 3)
    canvas.fill(GREY)
    all_boxes, all_cls = [], []
    for k, (img, boxes, cls) in enumerate(tiles):
        h, w = img.shape[:2]
        if k == 0:
            x1a, y1a, x2a, y2a = max(xc - w, 0), max(yc - h, 0), xc, yc
            x1b, y1b = w - (x2a - x1a), h - (y2a - y1a)
        elif k == 1:
            x1a, y1a, x2a, y2a = xc, max(yc - h, 0), min(xc + w, s2), yc
            x1b, y1b = 0, h - (y2a - y1a)
        elif k == 2:
            x1a, y1a, x2a, y2a = max(xc - w, 0), yc, xc, min(s2, yc + h)
            x1b, y1b = w - (x2a - x1a), 0
        else:
            x1a, y1a, x2a, y2a = xc, yc, min(xc + w, s2), min(s2, yc + h)
            x1b, y1b = 0, 0
        px1, py1, px2, py2 = max(x1a, wx0), max(y1a, wy0), min(x2a, wx1), min(y2a, wy1)  # pasted part in window
        if px2 > px1 and py2 > py1:
            canvas[py1 - wy0:py2 - wy0, px1 - wx0:px2 - wx0] = img[y1b + py1 - y1a:y1b + py2 - y1a,
                                                                   x1b + px1 - x1a:x1b + px2 - x1a]
        if len(boxes):
            b = boxes + np.array([x1a - x1b, y1a - y1b] * 2, np.float32)
            b[:, [0, 2]] = b[:, [0, 2]].clip(x1a, x2a)
            b[:, [1, 3]] = b[:, [1, 3]].clip(y1a, y2a)
            all_boxes.append(b)
            all_cls.append(cls)
    if all_boxes:
        return canvas, np.concatenate(all_boxes), np.concatenate(all_cls)
    return canvas, np.zeros((0, 4), np.float32), np.zeros((0,), np.int64)


def warp(img: np.ndarray, m: np.ndarray, size: int, origin: tuple[int, int] = (0, 0)) -> np.ndarray:
    """Affine warp to a size x size image, grey outside. `img` is the window of a larger source whose top-left
    pixel is at `origin` in the coordinates `m` maps from. The inverse is OpenCV's own (what warpAffine computes
    from m), shifted: at origin (0, 0) the result is exactly warpAffine(img, m)."""
    inv = cv2.invertAffineTransform(m)
    inv[:, 2] -= origin
    return cv2.warpAffine(img, inv, (size, size), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=(GREY, GREY, GREY))


def mixup(img1: np.ndarray, img2: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Blend two images with r ~ Beta(32, 32) (about half and half); the caller concatenates the boxes."""
    r = rng.beta(32.0, 32.0)
    return cv2.addWeighted(img1, r, img2, 1.0 - r, 0.0)


def hflip(img: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mirror left-right; x -> W - x. The image comes back as a view (the caller's CHW copy makes it
    contiguous). By hand: albumentations' box bookkeeping costs ~0.8 ms a sample for one slice and
    one subtraction."""
    w = img.shape[1]
    out = img[:, ::-1]
    b = boxes.copy()
    b[:, [0, 2]] = w - boxes[:, [2, 0]]
    return out, b


class ColourJitter:
    """HSV-style colour jitter through albumentations' ColorJitter, seeded per sample.

    hsv_h: hue shift, fraction of the colour circle (+/-); hsv_s, hsv_v: saturation and brightness
    gains drawn from [1 - g, 1 + g] (Ultralytics-like meanings). RGB uint8 in and out.
    """

    def __init__(self, hsv_h: float, hsv_s: float, hsv_v: float):
        self.transform = None
        if hsv_h > 0 or hsv_s > 0 or hsv_v > 0:
            os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no network check on import
            import albumentations as A

            self.transform = A.Compose([A.ColorJitter(brightness=hsv_v, contrast=0.0, saturation=hsv_s,
                                                      hue=min(hsv_h, 0.5), p=1.0)])

    def __call__(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if self.transform is None:
            return img
        seed = int(rng.integers(2**63))
        if hasattr(self.transform, "set_random_state"):  # albumentations 2.x: its own generators
            self.transform.set_random_state(np.random.default_rng(seed), random.Random(seed))
        else:  # 1.x draws from the global generators
            random.seed(seed)
            np.random.seed(seed % 2**32)
        return self.transform(image=img)["image"]
