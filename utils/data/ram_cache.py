"""Training images decoded once and held in RAM at the training size (Ultralytics' cache=ram).

On 2 cores the JPEG decode and the resize to the training size were over half of a mosaic sample's
time (4 decodes a sample). The cache does both once per image, in the main process before the
loader's workers start: forked workers share its pages copy-on-write (one buffer, read-only, so no
page is ever copied); spawned workers each get a copy. A cached image is bit-identical to a fresh
decode (same read and resize), so samples do not depend on the setting.

`cache_images`: auto (cache when the set needs under RAM_SHARE of the available memory) | ram | off.
"""
from __future__ import annotations

import multiprocessing
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from .image import ImageError, read_bgr
from .records import Record

RAM_SHARE = 0.3  # auto: at most this share of the available memory (all copies together)
LOAD_ERRORS = (ImageError, cv2.error, OSError, ValueError)  # what an unusable image raises


def long_side_size(width: int, height: int, img_size: int) -> tuple[int, int]:
    """(w, h) with the long side scaled to img_size, as the training samples use it."""
    r = img_size / max(width, height)
    return (width, height) if r == 1 else (max(1, round(width * r)), max(1, round(height * r)))


def load_resized_bgr(path: str | Path, size: tuple[int, int], img_size: int) -> np.ndarray:
    """Decode (BGR) and resize (bilinear) so the long side is img_size; `size` = the record's (w, h)."""
    img = read_bgr(path, size)
    nw, nh = long_side_size(*size, img_size)
    return img if (nw, nh) == size else cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)


def available_memory() -> int | None:
    """Bytes of memory available to new allocations (Linux MemAvailable, else psutil), None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import psutil  # optional (not a requirement): macOS and Windows

        return int(psutil.virtual_memory().available)
    except ImportError:
        return None


class ImageCache:
    """One read-only uint8 buffer holding every record's image at the training size (BGR), or nothing.
    `get(j)` -> the image (a view), None when not cached, or raises the error the image gave when cached.
    `summary`: the one line saying what was chosen and why (for the training log)."""

    def __init__(self, records: list[Record], img_size: int, mode: str = "auto", workers: int = 0):
        if mode not in ("auto", "ram", "off"):
            raise ValueError(f"cache_images: {mode!r} is not one of auto, ram, off")
        self.shapes = [long_side_size(r.width, r.height, img_size)[::-1] + (3,) for r in records]
        ends = np.cumsum([h * w * c for h, w, c in self.shapes])
        self.offsets = np.concatenate([[0], ends[:-1]]).astype(np.int64)
        self.nbytes = int(ends[-1]) if len(ends) else 0
        self.buffer: np.ndarray | None = None
        self.errors: dict[int, str] = {}
        start = multiprocessing.get_start_method(allow_none=True) or multiprocessing.get_all_start_methods()[0]
        copies = 1 if start == "fork" else 1 + max(0, workers)  # spawned workers unpickle their own copy
        need, avail = self.nbytes * copies, available_memory()
        what = f"{len(records)} training images at {img_size} px take {self.nbytes / 2**20:.0f} MB"
        what += "" if copies == 1 else f" x {copies} copies ({start} workers)"
        fits = avail is not None and need < RAM_SHARE * avail
        room = "unknown free memory" if avail is None else f"{avail / 2**30:.1f} GB available"
        if mode == "off" or (mode == "auto" and not fits):
            why = "" if mode == "off" else f" (over {RAM_SHARE:.0%} of {room}; force with --cache-images ram)"
            self.summary = f"cache_images {mode}: decoding every sample's images from disk; {what}{why}"
            return
        t0 = time.perf_counter()
        self._fill(records, img_size)
        self.summary = (f"cache_images {mode}: {what}, decoded into RAM in {time.perf_counter() - t0:.1f} s "
                        f"({room}){f'; {len(self.errors)} failed to load' if self.errors else ''}")

    def _fill(self, records: list[Record], img_size: int) -> None:
        self.buffer = np.empty(self.nbytes, np.uint8)

        def one(j: int) -> None:
            rec = records[j]
            try:
                img = load_resized_bgr(rec.image, (rec.width, rec.height), img_size)
            except LOAD_ERRORS as e:
                self.errors[j] = str(e)
                return
            self._view(j)[...] = img

        with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:  # OpenCV decodes without the GIL
            list(pool.map(one, range(len(records))))
        self.buffer.flags.writeable = False

    def _view(self, j: int) -> np.ndarray:
        h, w, c = self.shapes[j]
        start = int(self.offsets[j])
        return self.buffer[start:start + h * w * c].reshape(h, w, c)

    def get(self, j: int) -> np.ndarray | None:
        if self.buffer is None:
            return None
        if j in self.errors:
            raise ImageError(self.errors[j])
        return self._view(j)
