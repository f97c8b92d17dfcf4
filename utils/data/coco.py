"""COCO reader (instances json, through pycocotools).

Category ids (sparse: 1..90 in COCO) map to contiguous class indices in category-id order; the
spec keeps `cat_ids` to map back for json export. `iscrowd` regions are kept as a flag (ignored in
training and matching); images without annotations are kept as negatives. COCO boxes are xywh in
continuous pixels: x2 = x + w.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path

import numpy as np

from .candidate import UNLISTED_FIX, Candidate, dropped_unlisted, failed
from .records import DataError, SplitSource
from .validate import IMG_EXTS

_MEMO: dict[tuple[str, int, int], object] = {}  # parsed jsons between spec and load_records


def _key(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return str(path.resolve()), st.st_size, st.st_mtime_ns


def get_coco(path: Path):
    """pycocotools.COCO for `path`, parsed once until `release(path)`."""
    from pycocotools.coco import COCO

    key = _key(path)
    if key not in _MEMO:
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
                _MEMO[key] = COCO(str(path))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DataError(f"{path}: not valid JSON ({e}); expected a COCO instances file") from None
        except (AssertionError, KeyError, TypeError) as e:
            raise DataError(f"{path}: not a COCO instances json (needs 'images', 'annotations', "
                            f"'categories'): {type(e).__name__} {e}") from None
        coco = _MEMO[key]
        if "categories" not in coco.dataset or "images" not in coco.dataset:
            del _MEMO[key]
            raise DataError(f"{path}: not a COCO instances json: 'images' and 'categories' are required")
    return _MEMO[key]


def release(path: Path) -> None:
    """Free a parsed json (COCO train2017 takes GBs; records keep what training needs)."""
    with contextlib.suppress(OSError):
        _MEMO.pop(_key(path), None)


def coco_categories(path: Path) -> tuple[list[int], list[str]]:
    """(category ids, names) in category-id order: class index i <-> cat_ids[i]. Remembered in a small
    side file (keyed by the json's size and mtime) so a start with a valid label cache does not parse
    a 450 MB json just for 80 names."""
    key = list(_key(path)[1:])
    side = path.with_name(f"labels_categories_{path.stem}.cache")
    try:
        d = json.loads(side.read_text())
        if d["key"] == key:
            return [int(i) for i in d["ids"]], [str(n) for n in d["names"]]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    cats = sorted(get_coco(path).dataset["categories"], key=lambda c: c["id"])
    ids, names = [int(c["id"]) for c in cats], [str(c["name"]) for c in cats]
    with contextlib.suppress(OSError):
        side.write_text(json.dumps({"key": key, "ids": ids, "names": names}))
    return ids, names


def find_coco_images(ann: Path) -> Path:
    """Where the images of `ann` live: beside it, in a sibling folder named like it (instances_val2017.json
    -> val2017/), or in an images/ folder."""
    stem = ann.stem.replace("instances_", "")
    d, up = ann.parent, ann.parent.parent
    cands = [d / stem, up / stem, d / "images" / stem, up / "images" / stem, d / "images", up / "images", d]
    for c in cands:
        if c.is_dir() and (c != d or _has_images(c)):
            return c
    raise DataError(f"{ann}: image folder not found (tried {', '.join(str(c) for c in cands)}); "
                    "put the images beside the json or give 'images:' in the data YAML")


def _has_images(d: Path) -> bool:
    with os.scandir(d) as it:
        return any(e.name.lower().endswith(IMG_EXTS) for e in it)


def read_coco(src: SplitSource, cat_ids: list[int], drop_unlisted: bool = False) -> list[Candidate]:
    path = Path(src.path)
    coco = get_coco(path)
    images = Path(src.images) if src.images else find_coco_images(path)
    to_index = {c: i for i, c in enumerate(cat_ids) if c >= 0}
    known = {int(c["id"]): c.get("name", "") for c in coco.dataset["categories"]}
    out = []
    for img_id in sorted(coco.imgs):
        info = coco.imgs[img_id]
        img = str(images / info.get("file_name", f"<no file_name for id {img_id}>"))
        where = f"{path} [image id {img_id}: {info.get('file_name', '?')}]"  # one json for all: name the image
        anns = coco.imgToAnns.get(img_id, [])
        declared = (int(info["width"]), int(info["height"])) if "width" in info and "height" in info else None
        if not anns:
            out.append(Candidate(img, where, image_id=int(img_id), declared_size=declared))
            continue
        try:
            bb = np.array([a["bbox"] for a in anns], np.float32).reshape(len(anns), 4)
        except (KeyError, ValueError, TypeError):
            out.append(failed(img, where, "annotation bbox is not [x, y, w, h]"))
            continue
        cats = [a.get("category_id") for a in anns]
        broken = [c for c in cats if c not in known]  # a json error, whatever unlisted_classes says
        unknown = [c for c in cats if c not in to_index]
        if broken or (unknown and not drop_unlisted):
            what = f"category_id {broken[0]} is not in the json's categories" if broken else \
                f"category {unknown[0]} ('{known[unknown[0]]}') is not in the class names; {UNLISTED_FIX}"
            out.append(failed(img, where, f"unknown class: {what}"))
            continue
        keep = np.array([c in to_index for c in cats], bool)
        boxes = np.concatenate([bb[:, :2], bb[:, :2] + bb[:, 2:]], 1)[keep]  # xywh -> xyxy
        classes = np.array([to_index[c] for c in cats if c in to_index], np.int64)
        iscrowd = np.array([bool(a.get("iscrowd", 0)) for a in anns])[keep]
        area = np.array([a.get("area", w * h) for a, (w, h) in zip(anns, bb[:, 2:])], np.float32)[keep]
        out.append(Candidate(img, where, boxes, classes, iscrowd=iscrowd, area=area,
                             image_id=int(img_id), declared_size=declared,
                             repairs=[dropped_unlisted([f"'{known[c]}'" for c in unknown])] if unknown else []))
    return out
