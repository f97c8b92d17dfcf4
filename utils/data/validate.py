"""Bad-input checks shared by all readers: is the image usable, are the boxes usable.

Policy (one place, so every format behaves the same):
- skipped (sample dropped, counted, named in the report): image missing / zero bytes / not an image /
  format OpenCV cannot read; annotation that does not parse; a box with xmin >= xmax or ymin >= ymax,
  a box not a number, a box entirely outside the image; an unknown class.
- repaired (sample kept, counted): box partly outside the image -> clipped; grayscale / palette /
  RGBA / 16-bit / CMYK -> RGB 8-bit; EXIF orientation -> applied (boxes are taken in the displayed,
  rotated frame); truncated JPEG -> decoded as far as it goes.
Images are checked from their header (fast, no full decode); `deep=True` decodes each with OpenCV.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

# the one list of image extensions (data readers, predict.py's folders): what OpenCV decodes
IMG_EXTS = (".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".dib", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm")
_OPENCV_FORMATS = {"JPEG", "MPO", "PNG", "BMP", "TIFF", "WEBP", "PPM"}
_MODE_REPAIRS = {
    "L": "grayscale -> RGB", "1": "1-bit -> RGB", "P": None, "LA": "alpha dropped", "PA": "alpha dropped",
    "RGBA": "alpha dropped", "CMYK": "CMYK -> RGB", "I;16": "16-bit -> 8-bit", "I;16B": "16-bit -> 8-bit",
    "I;16L": "16-bit -> 8-bit", "I;16N": "16-bit -> 8-bit", "I": "32-bit -> 8-bit", "F": "float -> 8-bit",
}
CLIP_TOLERANCE = 1.0  # px a box may overshoot the image before clipping is reported as a repair


class BadSample(ValueError):
    """A sample that must be skipped; the message is the reason shown in the report."""


@dataclass
class ImageInfo:
    width: int = 0  # after EXIF orientation
    height: int = 0
    repairs: list[str] = field(default_factory=list)
    error: str | None = None  # set when the image is unusable


def check_image(path: str | Path, deep: bool = False) -> ImageInfo:
    """Size (as displayed, EXIF applied) and needed repairs of an image, from its header."""
    from PIL import Image, UnidentifiedImageError  # header only: OpenCV has no header reader

    p = Path(path)
    try:
        nbytes = p.stat().st_size
    except OSError:
        return ImageInfo(error="image missing")
    if nbytes == 0:
        return ImageInfo(error="zero-byte image file")
    try:
        with Image.open(p) as im:
            fmt, mode, (w, h) = im.format, im.mode, im.size
            if fmt == "PNG":
                im.verify()  # walks the chunks and their CRCs: catches truncated or corrupt PNGs
            orientation = im.getexif().get(0x0112, 1) if fmt in ("JPEG", "MPO", "TIFF", "WEBP") else 1
    except UnidentifiedImageError:
        return ImageInfo(error="image does not decode: not an image file (or a format OpenCV cannot read)")
    except (OSError, SyntaxError, ValueError, RuntimeError) as e:
        why = str(e).replace(str(p), "").split("\n")[0][:120]
        return ImageInfo(error=f"image does not decode: {type(e).__name__}: {why}")
    if fmt not in _OPENCV_FORMATS:
        return ImageInfo(error=f"image format {fmt} is not readable by OpenCV: convert it to JPEG or PNG")
    info = ImageInfo(w, h)
    repair = _MODE_REPAIRS.get(mode)
    if repair:
        info.repairs.append(repair)
    if isinstance(orientation, int) and 2 <= orientation <= 8:
        info.repairs.append(f"EXIF orientation {orientation} applied")
        if orientation >= 5:
            info.width, info.height = h, w
    if fmt in ("JPEG", "MPO") and not _jpeg_complete(p):
        info.repairs.append("truncated JPEG: missing part decodes grey")
    if deep:

        img = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if img is None:
            return ImageInfo(error="image does not decode with OpenCV")
        if (img.shape[1], img.shape[0]) != (info.width, info.height):
            return ImageInfo(error=f"decoded size {img.shape[1]}x{img.shape[0]} differs from header "
                                   f"{info.width}x{info.height}")
    return info


def _jpeg_complete(path: Path) -> bool:
    """A JPEG ends with the EOI marker FFD9 (trailing zero padding allowed)."""
    with open(path, "rb") as f:
        f.seek(max(0, path.stat().st_size - 64))
        return f.read().rstrip(b"\x00").endswith(b"\xff\xd9")


def check_images(paths: list[str], deep: bool = False, workers: int | None = None) -> list[ImageInfo]:
    """`check_image` over many files in threads (header reads are I/O bound; PIL/OpenCV release the GIL)."""
    if len(paths) < 64:
        return [check_image(p, deep) for p in paths]
    workers = workers or min(8, (os.cpu_count() or 1) * 4)
    with ThreadPoolExecutor(workers) as ex:
        return list(ex.map(lambda p: check_image(p, deep), paths, chunksize=64))


def clean_boxes(boxes: np.ndarray, width: int, height: int) -> tuple[np.ndarray, list[str]]:
    """Validate xyxy boxes against the image: raise BadSample on a box that cannot be fixed, else
    return the boxes clipped to the image and the repairs made (vectorised, no loop over boxes)."""
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    if len(boxes) == 0:
        return boxes, []
    bad = ~np.isfinite(boxes).all(1)
    if bad.any():
        i = int(np.argmax(bad))
        raise BadSample(f"box not a number: box {i} = {boxes[i].tolist()}")
    inverted = (boxes[:, 0] >= boxes[:, 2]) | (boxes[:, 1] >= boxes[:, 3])
    if inverted.any():
        i = int(np.argmax(inverted))
        b = boxes[i]
        axis = "xmin >= xmax" if b[0] >= b[2] else "ymin >= ymax"
        raise BadSample(f"{axis}: box {i} = [{b[0]:g}, {b[1]:g}, {b[2]:g}, {b[3]:g}] (0-based x1 y1 x2 y2); "
                        "fix or delete this object")
    lim = np.array([width, height, width, height], np.float32)
    clipped = np.minimum(np.maximum(boxes, 0), lim)
    outside = (clipped[:, 0] >= clipped[:, 2]) | (clipped[:, 1] >= clipped[:, 3])
    if outside.any():
        i = int(np.argmax(outside))
        raise BadSample(f"box outside the image: box {i} = {np.round(boxes[i], 1).tolist()} "
                        f"but the image is {width}x{height}")
    repairs = []
    over = np.abs(clipped - boxes).max(1) > CLIP_TOLERANCE
    if over.any():
        repairs.append(f"box clipped to the image: {int(over.sum())} box(es), "
                       f"e.g. {np.round(boxes[int(np.argmax(over))], 1).tolist()} in {width}x{height}")
    return clipped, repairs


def check_classes(classes: np.ndarray, num_classes: int) -> None:
    """Raise BadSample for a class index outside 0..num_classes-1."""
    classes = np.asarray(classes)
    bad = (classes < 0) | (classes >= num_classes)
    if bad.any():
        raise BadSample(f"unknown class: id {int(classes[int(np.argmax(bad))])} but the names list has "
                        f"{num_classes} classes; fix the label or add the class to names")
