"""Label cache: the validated records of one split, written next to the data as JSON.

Parsing 16k VOC XMLs and checking 16k image headers takes a minute; reading this file takes well
under a second. It is keyed by a fingerprint of every file the split depends on (path, size,
mtime), the class names and the reader version, so any change to the data rebuilds it. Written
atomically (temp file + rename); a folder we cannot write to falls back to ~/.cache.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path

import numpy as np

from .records import DataReport, Record
from .spec import DataSpec
from .yolo_txt import label_path

CACHE_VERSION = 3
log = logging.getLogger(__name__)


def watched_paths(spec: DataSpec, split: str) -> list[Path]:
    """Files and folders whose content the records of `split` depend on."""
    out: list[Path] = []
    for s in spec.splits[split]:
        p = Path(s.path)
        if spec.format == "voc":
            out += [p / "Annotations", p / "JPEGImages"]
            if s.subset:
                out.append(p / "ImageSets" / "Main" / f"{s.subset}.txt")
        elif spec.format == "coco":
            out += [p] + ([Path(s.images)] if s.images else [])
        else:

            out.append(p)
            if p.is_dir():
                out.append(label_path(p / "x.jpg").parent)
            else:  # a list file: watch the images/labels folders beside it
                out += [d for d in (p.parent / "images", p.parent / "labels") if d.is_dir()]
    return out


def _stat_lines(paths: list[Path], root: Path) -> list[str]:
    lines = []
    for p in paths:
        if p.is_file():
            st = p.stat()
            lines.append(f"{_rel(p, root)}\t{st.st_size}\t{st.st_mtime_ns}")
        elif p.is_dir():
            top = _rel(p, root)
            for d, dirs, _ in os.walk(p):
                dirs.sort()
                sub = os.path.relpath(d, p)
                with os.scandir(d) as it:
                    for e in it:
                        if e.is_file():
                            st = e.stat()
                            lines.append(f"{top}/{sub}/{e.name}\t{st.st_size}\t{st.st_mtime_ns}")
        else:
            lines.append(f"{_rel(p, root)}\tmissing")
    lines.sort()
    return lines


def _rel(p: Path | str, root: Path) -> str:
    """`p` relative to `root` when inside it (string operation: no file-system calls per file)."""
    rel = os.path.relpath(os.path.abspath(p), os.path.abspath(root))
    return str(os.path.abspath(p)) if rel.startswith("..") else rel


def fingerprint(spec: DataSpec, split: str, deep: bool = False) -> str:
    h = hashlib.sha256()
    head = [str(CACHE_VERSION), spec.format, split, str(deep), json.dumps(spec.names), json.dumps(spec.cat_ids),
            f"drop_unlisted={spec.drop_unlisted}"]
    head += [_rel(Path(s.path), spec.root) + f"|{s.subset}|{s.images}|{s.holdout}" for s in spec.splits[split]]
    h.update("\n".join(head).encode())
    h.update("\n".join(_stat_lines(watched_paths(spec, split), spec.root)).encode())
    return h.hexdigest()


def cache_file(spec: DataSpec, split: str) -> Path:
    """<root>/labels_<split>_<hash of the split's sources>.cache (gitignored by *.cache)."""
    key = hashlib.sha1("|".join(s.key() for s in spec.splits[split]).encode()).hexdigest()[:8]
    return spec.root / f"labels_{split}_{key}.cache"


def _fallback(path: Path) -> Path:
    key = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:16]
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "yolo_data_cache" / f"{key}.cache"


def read_cache(path: Path, fp: str, root: Path) -> tuple[list[Record], DataReport] | None:
    for p in (path, _fallback(path)):
        try:
            d = json.loads(p.read_text())
        except (OSError, ValueError):
            continue
        if d.get("version") != CACHE_VERSION or d.get("fingerprint") != fp:
            continue
        try:
            records = [_record(r, root) for r in d["records"]]
            report = DataReport.from_dict(d["report"])
        except (KeyError, TypeError, ValueError):
            continue
        report.from_cache = True
        return records, report
    return None


def _record(r: list, root: Path) -> Record:
    image, w, h, boxes, classes, difficult, iscrowd, image_id, area = r
    path = Path(image)
    return Record(str(path if path.is_absolute() else root / path), w, h,
                  np.array(boxes, np.float32).reshape(-1, 4), np.array(classes, np.int64),
                  np.array(difficult, bool), np.array(iscrowd, bool), image_id,
                  None if area is None else np.array(area, np.float32))


def write_cache(path: Path, fp: str, records: list[Record], report: DataReport, root: Path) -> Path | None:
    """Write atomically; returns where it went (None when nowhere was writable)."""
    rows = [[_rel(r.image, root), r.width, r.height, r.boxes.ravel().tolist(),
             r.classes.tolist(), r.difficult.astype(int).tolist(), r.iscrowd.astype(int).tolist(), r.image_id,
             None if r.area is None else r.area.tolist()] for r in records]
    text = json.dumps({"version": CACHE_VERSION, "fingerprint": fp, "records": rows, "report": report.to_dict()},
                      separators=(",", ":"))
    for p in (path, _fallback(path)):
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=p.name + ".", suffix=".tmp", dir=p.parent)
            with os.fdopen(fd, "w") as f:
                f.write(text)
            os.replace(tmp, p)
            return p
        except OSError as e:
            log.debug("label cache not written to %s: %s", p, e)
    return None
