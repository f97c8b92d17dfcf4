"""Pascal VOC reader: VOC20xx/{Annotations/*.xml, JPEGImages/, ImageSets/Main/<set>.txt}.

VOC boxes are 1-based inclusive pixel indices; they become our 0-based continuous xyxy once, here:
x1 = xmin - 1, y1 = ymin - 1, x2 = xmax, y2 = ymax. `difficult` is kept as a flag.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from .candidate import UNLISTED_FIX, Candidate, dropped_unlisted, failed
from .records import DataError, SplitSource
from .validate import IMG_EXTS


def read_image_set(year: Path, subset: str | None) -> list[str]:
    """Image ids of ImageSets/Main/<subset>.txt (first column; VOC's per-class lists have two);
    every annotation when subset is None."""
    if subset is None:
        return sorted(p.stem for p in (year / "Annotations").glob("*.xml"))
    f = year / "ImageSets" / "Main" / f"{subset}.txt"
    if not f.is_file():

        raise DataError(f"{f}: image-set list not found (expected one image id per line)")
    return [line.split()[0] for line in f.read_text().splitlines() if line.strip()]


def _number(text: str | None, what: str) -> float:
    if text is None:
        raise ValueError(f"{what} missing")
    return float(text.strip())


def parse_voc_xml(path: Path) -> tuple[list[str], np.ndarray, np.ndarray, tuple[int, int] | None, str | None]:
    """(object names, raw 1-based boxes (N,4) xmin ymin xmax ymax, difficult (N,), declared (w, h), filename).
    Raises ValueError with the reason when the file cannot be used."""
    if path.stat().st_size == 0:
        raise ValueError("annotation file is empty (zero bytes)")
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        raise ValueError(f"XML does not parse: {e}") from None
    size = root.find("size")
    declared = None
    if size is not None:
        try:
            declared = (int(float(size.findtext("width"))), int(float(size.findtext("height"))))
        except (TypeError, ValueError):
            declared = None
    names, boxes, difficult = [], [], []
    for i, obj in enumerate(root.findall("object")):
        name = (obj.findtext("name") or "").strip()
        if not name:
            raise ValueError(f"object without a name: object {i}")
        bb = obj.find("bndbox")
        if bb is None:
            raise ValueError(f"object without a bndbox: object {i} ({name})")
        try:
            boxes.append([_number(bb.findtext(k), k) for k in ("xmin", "ymin", "xmax", "ymax")])
        except ValueError as e:
            raise ValueError(f"box not a number: object {i} ({name}): {e}") from None
        d = (obj.findtext("difficult") or "0").strip()
        difficult.append(d not in ("0", "", "false", "False"))
        names.append(name)
    return (names, np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(difficult, bool),
            declared, root.findtext("filename"))


def _image_path(year: Path, image_id: str, filename: str | None) -> Path:
    jpg = year / "JPEGImages" / f"{image_id}.jpg"
    if jpg.exists():
        return jpg
    if filename and (year / "JPEGImages" / filename.strip()).exists():
        return year / "JPEGImages" / filename.strip()
    for ext in IMG_EXTS + tuple(e.upper() for e in IMG_EXTS):
        p = year / "JPEGImages" / f"{image_id}{ext}"
        if p.exists():
            return p
    return jpg  # missing: reported by the image check


def read_voc(src: SplitSource, names: list[str], drop_unlisted: bool = False) -> list[Candidate]:
    year = Path(src.path)
    index = {n: i for i, n in enumerate(names)}
    out = []
    for image_id in read_image_set(year, src.subset):
        xml = year / "Annotations" / f"{image_id}.xml"
        if not xml.is_file():
            out.append(failed(str(_image_path(year, image_id, None)), str(xml), "annotation file missing"))
            continue
        try:
            obj_names, raw, difficult, declared, filename = parse_voc_xml(xml)
        except (ValueError, OSError) as e:
            out.append(failed(str(_image_path(year, image_id, None)), str(xml), str(e)))
            continue
        img = _image_path(year, image_id, filename)
        unknown = [n for n in obj_names if n not in index]
        if unknown and not drop_unlisted:
            out.append(failed(str(img), str(xml), f"unknown class: '{unknown[0]}' is not in the class names "
                                                  f"({len(names)}: {', '.join(names[:6])}{'...' if len(names) > 6 else ''}); "
                                                  + UNLISTED_FIX))
            continue
        keep = np.array([n in index for n in obj_names], bool)
        boxes = raw[keep] - np.array([1, 1, 0, 0], np.float32)  # 1-based inclusive -> 0-based continuous
        classes = np.array([index[n] for n in obj_names if n in index], np.int64)
        out.append(Candidate(str(img), str(xml), boxes, classes, difficult=difficult[keep], declared_size=declared,
                             repairs=[dropped_unlisted([f"'{n}'" for n in unknown])] if unknown else []))
    return out
