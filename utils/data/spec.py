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

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from nets.assets import ROOT, read_classes

from .coco import coco_categories, find_coco_images
from .records import DataError, SplitSource
from .synthetic import DEFAULTS, ensure_synthetic
from .yolo_txt import max_class_id

SPLITS = ("train", "val", "test")
HOLDOUT = 0.1  # fraction of an unsplit set used for val
FORMATS = ("voc", "coco", "yolo")
UNLISTED_CHOICES = ("skip_image", "drop")  # data YAML 'unlisted_classes'


@dataclass
class DataSpec:
    """A resolved data set: `format` in voc/coco/yolo, class `names`, `splits` -> sources."""
    format: str
    names: list[str]
    root: Path
    splits: dict[str, list[SplitSource]]
    source: str = ""  # what the user passed
    cat_ids: list[int] | None = None  # coco: category id of each class index (for json export)
    cache: bool = True  # write/read the label cache next to the data
    synthetic: bool = False
    # objects of classes not in `names`: False skips the image as a bad sample (a typo shows);
    # True ("unlisted_classes: drop") drops those objects and keeps the image: training on a subset
    drop_unlisted: bool = False

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def has_split(self, split: str) -> bool:
        return bool(self.splits.get(split))

    def describe(self) -> str:
        parts = [f"{self.format} data set '{self.source}' ({self.num_classes} classes, root {self.root})"]
        for s, srcs in self.splits.items():
            parts.append(f"  {s}: " + ", ".join(_short(x) for x in srcs))
        return "\n".join(parts)


def _short(s: SplitSource) -> str:
    txt = Path(s.path).name + (f"/{s.subset}" if s.subset else "")
    return txt + (f" ({s.holdout[0]} part of a {1 - s.holdout[1]:.0%}/{s.holdout[1]:.0%} split)" if s.holdout else "")


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
    path = _find(data, [Path.cwd(), ROOT], what="--data")
    if path.is_file() and path.suffix.lower() in (".yaml", ".yml"):
        spec = _from_yaml(path)
    elif path.is_file() and path.suffix.lower() == ".json":
        spec = _coco_spec(path.parent, _coco_splits_for_json(path), names=None)
    elif path.is_dir():
        spec = _from_dir(path)
    else:
        raise DataError(f"--data {data}: not a data YAML, a COCO .json, or a data-set folder")
    spec.source = data
    spec.cache = spec.cache and cache
    return spec


def _find(value: str | Path, bases: list[Path], what: str) -> Path:
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
        return _synthetic_spec(cfg)
    bases = [path.parent, Path.cwd(), ROOT]
    try:
        root = _find(cfg["path"], bases, f"{path}: 'path'") if cfg.get("path") else path.parent
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
    names = _names_from(cfg.get("names"), [path.parent, root, Path.cwd(), ROOT], str(path))
    use_cache = bool(cfg.get("cache", True))
    unlisted = str(cfg.get("unlisted_classes", "skip_image")).strip().lower()
    if unlisted not in UNLISTED_CHOICES:
        raise DataError(f"{path}: 'unlisted_classes: {cfg.get('unlisted_classes')}' must be one of "
                        f"{', '.join(UNLISTED_CHOICES)} (drop: objects of classes not in 'names' are left out, "
                        "their images kept; skip_image: such images are skipped and reported)")
    loc = [root, path.parent, Path.cwd(), ROOT]
    if fmt == "voc":
        splits = {s: [_voc_entry(e, loc, path) for e in v] for s, v in entries.items() if v}
        spec = _voc_spec(root, names, splits)
    elif fmt == "coco":
        splits = {s: [_coco_entry(e, loc, path) for e in v] for s, v in entries.items() if v}
        spec = _coco_spec(root, splits, names)
    else:
        splits = {s: [SplitSource(str(_find(e, loc, f"{path}: '{s}'")))
                      for e in v] for s, v in entries.items() if v}
        spec = _yolo_spec(root, names, splits)
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


def _names_from(v: Any, bases: list[Path], where: str) -> list[str] | None:
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
        names = _read_names(_find(str(v), bases, f"{where}: 'names'"))
    if not names or len(set(names)) != len(names):
        raise DataError(f"{where}: 'names' must be a non-empty list of distinct class names")
    return names


def _read_names(path: Path) -> list[str]:
    try:
        return read_classes(path)
    except (OSError, ValueError) as e:
        raise DataError(str(e)) from None


# ----------------------------------------------------------------------------------------------- VOC
def _voc_entry(e: Any, bases: list[Path], where: Path) -> SplitSource:
    """'VOC2007/trainval' (year folder / image set) or 'VOC2007' (every annotation)."""
    if isinstance(e, dict):
        return SplitSource(str(_find(e["path"], bases, f"{where}: VOC entry")), e.get("set"))
    s = str(e).rstrip("/")
    for b in bases:
        if (b / s / "Annotations").is_dir():
            return SplitSource(str((b / s).resolve()), None)
        year, _, subset = s.rpartition("/")
        if year and (b / year / "Annotations").is_dir():
            return SplitSource(str((b / year).resolve()), subset)
    raise DataError(f"{where}: VOC entry '{s}' not found: expected <year folder>/<image set>, e.g. "
                    f"VOC2007/trainval with VOC2007/Annotations and VOC2007/ImageSets/Main/trainval.txt")


def _voc_years(path: Path) -> list[Path]:
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


def _voc_spec(root: Path, names: list[str] | None, splits: dict[str, list[SplitSource]] | None) -> DataSpec:
    years = _voc_years(root) if root.is_dir() else []
    if splits is None:
        if not years:
            raise DataError(f"{root}: no VOC20xx folder with Annotations/ inside")
        splits = _voc_default_splits(years)
    if names is None:
        # a year folder (Annotations/ inside): look in it, its devkit and beside the devkit
        near = [root, root.parent, root.parent.parent] if (root / "Annotations").is_dir() else [root, root.parent]
        for cand in (d / "classes.txt" for d in near):
            if cand.is_file():
                names = _read_names(cand)
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
    voc = _read_names(ROOT / "model_data" / "voc_classes.txt") if (ROOT / "model_data" / "voc_classes.txt").is_file() else []
    return [n for n in voc if n in found] if found <= set(voc) else sorted(found)


# ---------------------------------------------------------------------------------------------- COCO
def _coco_entry(e: Any, bases: list[Path], where: Path) -> SplitSource:
    if isinstance(e, dict):
        ann = _find(e["ann"], bases, f"{where}: COCO 'ann'")
        images = str(_find(e["images"], bases, f"{where}: COCO 'images'")) if e.get("images") else None
        return SplitSource(str(ann), images=images)
    return SplitSource(str(_find(str(e), bases, f"{where}: COCO json")))


def _coco_splits_for_json(path: Path) -> dict[str, list[SplitSource]]:
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


def _coco_spec(root: Path, splits: dict[str, list[SplitSource]], names: list[str] | None) -> DataSpec:
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


def _yolo_spec(root: Path, names: list[str] | None, splits: dict[str, list[SplitSource]] | None) -> DataSpec:
    if splits is None:
        splits = _yolo_default_splits(root)
    if names is None:
        data_yaml = next((p for p in (root / "data.yaml", root / "dataset.yaml") if p.is_file()), None)
        if data_yaml is not None:
            try:
                names = _names_from((yaml.safe_load(data_yaml.read_text()) or {}).get("names"), [root], str(data_yaml))
            except yaml.YAMLError:
                names = None
    if names is None:
        for n in _YOLO_NAME_FILES:
            if (root / n).is_file():
                names = _read_names(root / n)
                break
    if names is None:

        top = max_class_id(splits)
        if top < 0:
            raise DataError(f"{root}: no class names (put a classes.txt in the root, one name a line, or "
                            "write a data YAML with 'names') and no labels to count classes from")
        names = [f"class{i}" for i in range(top + 1)]
    return DataSpec("yolo", names, root, splits)


# ---------------------------------------------------------------------------------------------- dirs
def _from_dir(path: Path) -> DataSpec:
    if (path / "Annotations").is_dir() or _voc_years(path):
        return _voc_spec(path, None, None)
    ann = path / "annotations"
    if ann.is_dir() and any(ann.glob("instances_*.json")):
        jsons = sorted(ann.glob("instances_*.json"))
        train = [j for j in jsons if "train" in j.name]
        val = [j for j in jsons if "val" in j.name]
        if train and val:
            return _coco_spec(path, {"train": [SplitSource(str(train[0]))], "val": [SplitSource(str(val[0]))]}, None)
        return _coco_spec(path, _coco_splits_for_json(jsons[0]), None)
    if (path / "images").is_dir() or any((path / s / "images").is_dir() for s in ("train", "valid", "val")):
        return _yolo_spec(path, None, None)
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
    spec = DataSpec("voc", _read_names(root / "classes.txt"), devkit, splits, source="synthetic", synthetic=True)
    spec.cache = bool(cfg.get("cache", True))
    return spec
