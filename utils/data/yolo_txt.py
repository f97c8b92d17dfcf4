"""YOLO-txt reader: images/... with labels/... beside them, one `cls cx cy w h` row per object,
coordinates as fractions of the image size (Ultralytics / Darknet layout).

An empty label file is an image without objects (that is what YOLO-txt means by it); a missing
label file is treated the same and counted. Segment rows (cls x1 y1 x2 y2 ...) become their box.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .candidate import UNLISTED_FIX, Candidate, dropped_unlisted, failed
from .records import DataError, SplitSource
from .validate import IMG_EXTS


def list_images(src: str | Path) -> list[Path]:
    """Images under a folder (recursive, sorted) or listed in a .txt file (paths relative to the file's
    folder or its parent, as Ultralytics and Darknet write them)."""
    src = Path(src)
    if src.is_dir():
        found = []
        for d, _, files in os.walk(src):
            found.extend(Path(d) / f for f in files if f.lower().endswith(IMG_EXTS))
        return sorted(found)
    if src.is_file() and src.suffix == ".txt":
        out = []
        for line in src.read_text().splitlines():
            line = line.strip()
            if not line:
                continue
            p = Path(line)
            if not p.is_absolute():
                p = next((b / p for b in (src.parent, src.parent.parent) if (b / p).exists()), src.parent / p)
            out.append(p)
        return out
    raise DataError(f"{src}: not an image folder or a .txt list of images")


def label_path(image: Path) -> Path:
    """images/a/b.jpg -> labels/a/b.txt (last 'images' folder); b.jpg -> b.txt when there is none."""
    parts = list(image.parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            return Path(*parts).with_suffix(".txt")
    return image.with_suffix(".txt")


def parse_label(path: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(classes (N,), cx cy w h (N,4) normalised, repairs); raises ValueError with the reason."""
    text = path.read_text(errors="replace")
    rows = [line.split() for line in text.splitlines() if line.strip()]
    if not rows:
        return np.zeros(0, np.int64), np.zeros((0, 4), np.float32), []
    repairs = []
    lens = np.array([len(r) for r in rows])
    if (lens == 5).all():
        flat = [v for r in rows for v in r]
        try:
            arr = np.array(flat, np.float64).reshape(-1, 5)
        except ValueError:
            bad = next(i for i, r in enumerate(rows) if not all(_is_number(v) for v in r))
            raise ValueError(f"label not a number: line {bad + 1}: {' '.join(rows[bad])!r}") from None
    else:  # segments: cls x y x y ... -> the polygon's box
        bad = np.flatnonzero((lens < 5) | (lens % 2 == 0))
        if len(bad):
            i = int(bad[0])
            raise ValueError(f"malformed label row: line {i + 1} has {lens[i]} values, expected 5 "
                             f"(cls cx cy w h): {' '.join(rows[i])!r}")
        try:
            arr = np.zeros((len(rows), 5))
            for i, r in enumerate(rows):  # parsing a text format: one row at a time is the format
                v = np.array(r, np.float64)
                xy = v[1:].reshape(-1, 2)
                lo, hi = xy.min(0), xy.max(0)
                arr[i] = [v[0], *((lo + hi) / 2), *(hi - lo)] if len(v) > 5 else v
        except ValueError:
            raise ValueError("label not a number in a segment row") from None
        repairs.append("segment polygons converted to boxes")
    if not np.isfinite(arr).all():
        raise ValueError("label not a number: NaN or inf in the file")
    cls = arr[:, 0]
    if (cls != np.round(cls)).any() or (cls < 0).any():
        raise ValueError(f"unknown class: class id {cls[(cls != np.round(cls)) | (cls < 0)][0]:g} is not a "
                         "non-negative integer")
    if (arr[:, 1:] > 1.5).any():
        raise ValueError(f"coordinates not normalised: value {arr[:, 1:].max():g} > 1; YOLO-txt wants "
                         "cx cy w h as fractions of the image width/height")
    uniq, first = np.unique(arr, axis=0, return_index=True)
    if len(uniq) < len(arr):
        repairs.append(f"duplicate label rows removed: {len(arr) - len(uniq)}")
        arr = arr[np.sort(first)]
    return arr[:, 0].astype(np.int64), arr[:, 1:].astype(np.float32), repairs


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def read_yolo(src: SplitSource, num_classes: int, drop_unlisted: bool = False) -> list[Candidate]:
    out = []
    for img in list_images(src.path):
        lab = label_path(img)
        if not lab.is_file():
            c = Candidate(str(img), str(lab))
            c.missing_label = True
            out.append(c)
            continue
        try:
            classes, boxes, repairs = parse_label(lab)
        except (ValueError, OSError) as e:
            out.append(failed(str(img), str(lab), str(e)))
            continue
        unlisted = classes >= num_classes
        if unlisted.any() and not drop_unlisted:
            out.append(failed(str(img), str(lab), f"unknown class: id {int(classes.max())} but there are "
                                                  f"{num_classes} class names; {UNLISTED_FIX}"))
            continue
        if unlisted.any():
            repairs.append(dropped_unlisted([f"id {int(c)}" for c in classes[unlisted]]))
            classes, boxes = classes[~unlisted], boxes[~unlisted]
        out.append(Candidate(str(img), str(lab), boxes, classes, normalized=True, repairs=repairs))
    return out


def max_class_id(splits: dict[str, list[SplitSource]]) -> int:
    """Largest class id in the labels (names unknown: classes become class0..classN)."""
    top = -1
    for srcs in splits.values():
        for s in srcs:
            for img in list_images(s.path):
                lab = label_path(img)
                if lab.is_file():
                    try:
                        cls, _, _ = parse_label(lab)
                    except (ValueError, OSError):
                        continue
                    if len(cls):
                        top = max(top, int(cls.max()))
    return top
