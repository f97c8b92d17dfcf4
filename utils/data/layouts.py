"""How each format lays a data set out on disk (VOC, COCO, YOLO-txt): its split entries, the default splits
when none are named, and where the class names come from. `spec.py` turns `--data` into these calls.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import yaml

from nets.assets import ROOT, read_classes

from .coco import coco_categories, find_coco_images
from .records import DataError, DataSpec, SplitSource
from .yolo_txt import max_class_id

SPLITS = ("train", "val", "test")
HOLDOUT = 0.1  # fraction of an unsplit set used for val


def find_path(value: str | Path, bases: list[Path], what: str) -> Path:
    """`value` as an absolute path, or relative to the first base where it exists."""
    p = Path(value).expanduser()
    if p.is_absolute():
        if p.exists():
            return p
        raise DataError(f"{what}: path not found: {p}")
    tried = []
    for b in bases:
        q = (b / p).resolve()
        if q.exists():
            return q
        tried.append(str(q))
    raise DataError(f"{what}: path not found: {value} (tried {', '.join(dict.fromkeys(tried))})")


def names_from(v: Any, bases: list[Path], where: str) -> list[str] | None:
    """names as a list, an {index: name} mapping (Ultralytics), or a path to a one-name-a-line file."""
    if v is None:
        return None
    if isinstance(v, dict):
        try:
            items = sorted((int(k), str(n)) for k, n in v.items())
        except ValueError:
            raise DataError(f"{where}: 'names' mapping must be {{index: name}}") from None
        if [k for k, _ in items] != list(range(len(items))):
            raise DataError(f"{where}: 'names' indices must be 0..{len(items) - 1} without gaps")
        return [n for _, n in items]
    if isinstance(v, (list, tuple)):
        names = [str(n).strip() for n in v]
    else:
        names = read_names(find_path(str(v), bases, f"{where}: 'names'"))
    if not names or len(set(names)) != len(names):
        raise DataError(f"{where}: 'names' must be a non-empty list of distinct class names")
    return names


def read_names(path: Path) -> list[str]:
    try:
        return read_classes(path)
    except (OSError, ValueError) as e:
        raise DataError(str(e)) from None


# ----------------------------------------------------------------------------------------------- VOC
def voc_entry(e: Any, bases: list[Path], where: Path) -> SplitSource:
    """'VOC2007/trainval' (year folder / image set) or 'VOC2007' (every annotation)."""
    if isinstance(e, dict):
        return SplitSource(str(find_path(e["path"], bases, f"{where}: VOC entry")), e.get("set"))
    s = str(e).rstrip("/")
    for b in bases:
        if (b / s / "Annotations").is_dir():
            return SplitSource(str((b / s).resolve()), None)
        year, _, subset = s.rpartition("/")
        if year and (b / year / "Annotations").is_dir():
            return SplitSource(str((b / year).resolve()), subset)
    raise DataError(f"{where}: VOC entry '{s}' not found: expected <year folder>/<image set>, e.g. "
                    f"VOC2007/trainval with VOC2007/Annotations and VOC2007/ImageSets/Main/trainval.txt")


def voc_years(path: Path) -> list[Path]:
    if (path / "Annotations").is_dir():
        return [path]
    return sorted(d for d in path.iterdir() if d.is_dir() and (d / "Annotations").is_dir())


def _voc_default_splits(years: list[Path]) -> dict[str, list[SplitSource]]:
    """train.txt / val.txt / test.txt of each year; trainval.txt or all annotations split 90/10 when missing."""
    splits: dict[str, list[SplitSource]] = {s: [] for s in SPLITS}
    for y in years:
        main = y / "ImageSets" / "Main"
        has = {s: (main / f"{s}.txt").is_file() for s in ("train", "val", "trainval", "test")}
        if has["train"] and has["val"]:
            splits["train"].append(SplitSource(str(y), "train"))
            splits["val"].append(SplitSource(str(y), "val"))
        elif has["train"] or has["trainval"]:
            base = "train" if has["train"] else "trainval"
            splits["train"].append(SplitSource(str(y), base, holdout=("train", HOLDOUT)))
            splits["val"].append(SplitSource(str(y), base, holdout=("val", HOLDOUT)))
        elif not has["test"]:
            splits["train"].append(SplitSource(str(y), None, holdout=("train", HOLDOUT)))
            splits["val"].append(SplitSource(str(y), None, holdout=("val", HOLDOUT)))
        if has["test"]:
            splits["test"].append(SplitSource(str(y), "test"))
    return {s: v for s, v in splits.items() if v}


def voc_spec(root: Path, names: list[str] | None, splits: dict[str, list[SplitSource]] | None) -> DataSpec:
    years = voc_years(root) if root.is_dir() else []
    if splits is None:
        if not years:
            raise DataError(f"{root}: no VOC20xx folder with Annotations/ inside")
        splits = _voc_default_splits(years)
    if names is None:
        # a year folder (Annotations/ inside): look in it, its devkit and beside the devkit
        near = [root, root.parent, root.parent.parent] if (root / "Annotations").is_dir() else [root, root.parent]
        for cand in (d / "classes.txt" for d in near):
            if cand.is_file():
                names = read_names(cand)
                break
    if names is None:
        names = _voc_names_from_annotations(splits)
    return DataSpec("voc", names, root, splits)


def _voc_names_from_annotations(splits: dict[str, list[SplitSource]]) -> list[str]:
    """Every object name in the annotations the splits use; VOC's own order when they are VOC classes."""
    found: set[str] = set()
    for y in {s.path for srcs in splits.values() for s in srcs}:
        for xml in Path(y, "Annotations").glob("*.xml"):
            try:
                root = ET.parse(xml).getroot()
            except (ET.ParseError, OSError):
                continue  # reported by the reader
            found.update((o.findtext("name") or "").strip() for o in root.iter("object"))
    found.discard("")
    if not found:
        raise DataError(f"no object names in the annotations of {sorted({s.path for v in splits.values() for s in v})}; "
                        "put a classes.txt (one name a line) beside the VOCdevkit folder")
    voc = read_names(ROOT / "model_data" / "voc_classes.txt") if (ROOT / "model_data" / "voc_classes.txt").is_file() else []
    return [n for n in voc if n in found] if found <= set(voc) else sorted(found)


# ---------------------------------------------------------------------------------------------- COCO
def coco_entry(e: Any, bases: list[Path], where: Path) -> SplitSource:
    if isinstance(e, dict):
        ann = find_path(e["ann"], bases, f"{where}: COCO 'ann'")
        images = str(find_path(e["images"], bases, f"{where}: COCO 'images'")) if e.get("images") else None
        return SplitSource(str(ann), images=images)
    return SplitSource(str(find_path(str(e), bases, f"{where}: COCO json")))


def coco_splits_for_json(path: Path) -> dict[str, list[SplitSource]]:
    """One json given: its val/train sibling when the name says so (instances_train2017 <-> _val2017),
    else a deterministic 90/10 split of its images."""
    name = path.name
    for a, b in (("train", "val"), ("val", "train")):
        if a in name:
            other = path.with_name(name.replace(a, b))
            if other.is_file():
                return {a: [SplitSource(str(path))], b: [SplitSource(str(other))]}
    return {"train": [SplitSource(str(path), holdout=("train", HOLDOUT))],
            "val": [SplitSource(str(path), holdout=("val", HOLDOUT))]}


def coco_spec(root: Path, splits: dict[str, list[SplitSource]], names: list[str] | None) -> DataSpec:
    first = (splits.get("train") or splits.get("val") or next(iter(splits.values())))[0]
    cat_ids, cat_names = coco_categories(Path(first.path))  # parses (and checks) the json first
    for srcs in splits.values():
        for s in srcs:
            if s.images is None:
                s.images = str(find_coco_images(Path(s.path)))
    if names is None:
        names = cat_names
    else:  # names given: map categories to them by name; categories not listed become unknown
        cat_ids = [cat_ids[cat_names.index(n)] if n in cat_names else -1 for n in names]
    return DataSpec("coco", names, root, splits, cat_ids=cat_ids)


# ---------------------------------------------------------------------------------------------- YOLO
_YOLO_NAME_FILES = ("classes.txt", "obj.names", "names.txt", "coco.names")


def _yolo_default_splits(root: Path) -> dict[str, list[SplitSource]]:
    splits: dict[str, list[SplitSource]] = {}
    aliases = {"train": ("train",), "val": ("val", "valid", "validation"), "test": ("test",)}
    for s, names in aliases.items():
        for n in names:
            for cand in (root / "images" / n, root / n / "images", root / f"{n}.txt"):
                if cand.exists():
                    splits.setdefault(s, []).append(SplitSource(str(cand)))
                    break
            if s in splits:
                break
    if "train" in splits and "val" not in splits:
        t = splits["train"][0]
        splits["train"] = [SplitSource(t.path, holdout=("train", HOLDOUT))]
        splits["val"] = [SplitSource(t.path, holdout=("val", HOLDOUT))]
    if not splits:
        images = root / "images"
        if not images.is_dir():
            raise DataError(f"{root}: not a YOLO-txt root: expected images/ and labels/ folders")
        splits = {"train": [SplitSource(str(images), holdout=("train", HOLDOUT))],
                  "val": [SplitSource(str(images), holdout=("val", HOLDOUT))]}
    return splits


def yolo_spec(root: Path, names: list[str] | None, splits: dict[str, list[SplitSource]] | None) -> DataSpec:
    if splits is None:
        splits = _yolo_default_splits(root)
    if names is None:
        data_yaml = next((p for p in (root / "data.yaml", root / "dataset.yaml") if p.is_file()), None)
        if data_yaml is not None:
            try:
                names = names_from((yaml.safe_load(data_yaml.read_text()) or {}).get("names"), [root], str(data_yaml))
            except yaml.YAMLError:
                names = None
    if names is None:
        for n in _YOLO_NAME_FILES:
            if (root / n).is_file():
                names = read_names(root / n)
                break
    if names is None:
        top = max_class_id(splits)
        if top < 0:
            raise DataError(f"{root}: no class names (put a classes.txt in the root, one name a line, or "
                            "write a data YAML with 'names') and no labels to count classes from")
        names = [f"class{i}" for i in range(top + 1)]
    return DataSpec("yolo", names, root, splits)
