"""What `--data` points at, resolved into one `DataSpec`: format, class names, and where each split lives.

`--data` takes a data YAML (configs/voc.yaml, coco.yaml, yolo_txt.yaml, synthetic.yaml, or an
Ultralytics-style data.yaml), or a data set directly, the format detected:
- a VOCdevkit folder (or one VOC20xx folder): splits from ImageSets/Main, names from a classes.txt
  beside it or else from the annotations;
- a COCO instances json: images beside it, in a sibling folder named like the json (val2017), or in
  an `images/` folder; a COCO root with `annotations/instances_*.json`;
- a YOLO-txt root (`images/` + `labels/`, split as images/train, images/val, or Roboflow's
  train/images, valid/images, or train.txt/val.txt lists);
- the word "synthetic": the built-in data set, generated on first use.
A set without splits is split deterministically (a stable hash of each file name sends ~10% to val).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from nets.assets import ROOT

from .layouts import (
    SPLITS,
    coco_entry,
    coco_spec,
    coco_splits_for_json,
    find_path,
    names_from,
    read_names,
    voc_entry,
    voc_spec,
    voc_years,
    yolo_spec,
)
from .records import DataError, DataSpec, SplitSource
from .synthetic import DEFAULTS, ensure_synthetic

FORMATS = ("voc", "coco", "yolo")
UNLISTED_CHOICES = ("skip_image", "drop")  # data YAML 'unlisted_classes'
__all__ = ["DataSpec", "SplitSource", "load_data_spec"]


# --------------------------------------------------------------------------------------------- entry
def load_data_spec(data: str | Path, cache: bool = True) -> DataSpec:
    """Resolve `--data` into a DataSpec; raises DataError with the fix when it cannot."""
    data = str(data).strip()
    if data.lower() == "synthetic":
        cfg = ROOT / "configs" / "synthetic.yaml"
        spec = _from_yaml(cfg) if cfg.is_file() else _synthetic_spec({})
        spec.source = "synthetic"
        spec.cache = spec.cache and cache
        return spec
    path = find_path(data, [Path.cwd(), ROOT], what="--data")
    if path.is_file() and path.suffix.lower() in (".yaml", ".yml"):
        spec = _from_yaml(path)
    elif path.is_file() and path.suffix.lower() == ".json":
        spec = coco_spec(path.parent, coco_splits_for_json(path), names=None)
    elif path.is_dir():
        spec = _from_dir(path)
    else:
        raise DataError(f"--data {data}: not a data YAML, a COCO .json, or a data-set folder")
    spec.source = data
    spec.cache = spec.cache and cache
    return spec


# ---------------------------------------------------------------------------------------------- YAML
def _from_yaml(path: Path) -> DataSpec:
    try:
        cfg = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise DataError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(cfg, dict):
        raise DataError(f"{path}: expected a mapping (format, path, train, val, names), got {type(cfg).__name__}")
    fmt = str(cfg.get("format", "")).lower().replace("yolo_txt", "yolo").replace("yolo-txt", "yolo")
    if fmt == "synthetic":
        try:
            return _synthetic_spec(cfg)
        except DataError:  # names its own file already
            raise
        except ValueError as e:  # a bad generator setting (e.g. an unknown style): say which file holds it
            raise DataError(f"{path}: {e}; fix it in {path.name}") from None
    bases = [path.parent, Path.cwd(), ROOT]
    try:
        root = find_path(cfg["path"], bases, f"{path}: 'path'") if cfg.get("path") else path.parent
    except DataError as e:
        raise DataError(f"{e}. Put the data set there, edit 'path:' in {path.name}, or pass the data-set "
                        "folder itself with --data") from None
    entries = {s: _as_list(cfg.get(s)) for s in SPLITS}
    if not entries["train"] and not entries["val"]:
        raise DataError(f"{path}: no 'train' or 'val' entry; say where the splits are (see configs/voc.yaml)")
    if not fmt:
        fmt = _infer_format(root, [e for v in entries.values() for e in v])
    if fmt not in FORMATS:
        raise DataError(f"{path}: format '{fmt}' is not one of voc, coco, yolo, synthetic")
    names = names_from(cfg.get("names"), [path.parent, root, Path.cwd(), ROOT], str(path))
    use_cache = bool(cfg.get("cache", True))
    unlisted = str(cfg.get("unlisted_classes", "skip_image")).strip().lower()
    if unlisted not in UNLISTED_CHOICES:
        raise DataError(f"{path}: 'unlisted_classes: {cfg.get('unlisted_classes')}' must be one of "
                        f"{', '.join(UNLISTED_CHOICES)} (drop: objects of classes not in 'names' are left out, "
                        "their images kept; skip_image: such images are skipped and reported)")
    loc = [root, path.parent, Path.cwd(), ROOT]
    if fmt == "voc":
        splits = {s: [voc_entry(e, loc, path) for e in v] for s, v in entries.items() if v}
        spec = voc_spec(root, names, splits)
    elif fmt == "coco":
        splits = {s: [coco_entry(e, loc, path) for e in v] for s, v in entries.items() if v}
        spec = coco_spec(root, splits, names)
    else:
        splits = {s: [SplitSource(str(find_path(e, loc, f"{path}: '{s}'")))
                      for e in v] for s, v in entries.items() if v}
        spec = yolo_spec(root, names, splits)
    spec.cache = use_cache
    spec.drop_unlisted = unlisted == "drop"
    return spec


def _as_list(v: Any) -> list:
    if v is None or v == "":
        return []
    return list(v) if isinstance(v, (list, tuple)) else [v]


def _infer_format(root: Path, entries: list) -> str:
    flat = [e.get("ann", "") if isinstance(e, dict) else str(e) for e in entries]
    if any(str(e).lower().endswith(".json") for e in flat):
        return "coco"
    for e in flat:
        first = Path(e).parts[0] if Path(e).parts else ""
        if (root / first / "Annotations").is_dir() or (root / e / "Annotations").is_dir():
            return "voc"
    return "yolo"


# ---------------------------------------------------------------------------------------------- dirs
def _from_dir(path: Path) -> DataSpec:
    if (path / "Annotations").is_dir() or voc_years(path):
        return voc_spec(path, None, None)
    ann = path / "annotations"
    if ann.is_dir() and any(ann.glob("instances_*.json")):
        jsons = sorted(ann.glob("instances_*.json"))
        train = [j for j in jsons if "train" in j.name]
        val = [j for j in jsons if "val" in j.name]
        if train and val:
            return coco_spec(path, {"train": [SplitSource(str(train[0]))], "val": [SplitSource(str(val[0]))]}, None)
        return coco_spec(path, coco_splits_for_json(jsons[0]), None)
    if (path / "images").is_dir() or any((path / s / "images").is_dir() for s in ("train", "valid", "val")):
        return yolo_spec(path, None, None)
    if (path / "data.yaml").is_file():
        return _from_yaml(path / "data.yaml")
    raise DataError(f"{path}: no data set recognised here. Expected a VOCdevkit (VOC20xx/Annotations, JPEGImages), "
                    "a COCO folder (annotations/instances_*.json), a YOLO-txt root (images/, labels/), or a data YAML")


# ----------------------------------------------------------------------------------------- synthetic
def _synthetic_spec(cfg: dict) -> DataSpec:
    params = {k: cfg[k] for k in DEFAULTS if k in cfg}
    root = Path(cfg["path"]) if cfg.get("path") else ROOT / "datasets" / "synthetic"
    if not root.is_absolute():
        root = ROOT / root
    devkit = ensure_synthetic(root, **params)
    year = devkit / "VOC2007"
    splits = {s: [SplitSource(str(year), s)] for s in SPLITS}
    spec = DataSpec("voc", read_names(root / "classes.txt"), devkit, splits, source="synthetic", synthetic=True)
    spec.cache = bool(cfg.get("cache", True))
    return spec
