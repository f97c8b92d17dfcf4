"""`load_records(spec, split)`: read, validate and cache one split; the same path for every format."""
from __future__ import annotations

import logging
import zlib
from pathlib import Path

import numpy as np

from .cache import cache_file, fingerprint, read_cache, write_cache
from .candidate import Candidate
from .coco import read_coco, release
from .records import DataError, DataReport, Record
from .spec import DataSpec, SplitSource
from .validate import BadSample, check_classes, check_images, clean_boxes
from .voc import read_voc
from .yolo_txt import read_yolo

log = logging.getLogger(__name__)


def load_records(spec: DataSpec, split: str, deep: bool = False, use_cache: bool | None = None
                 ) -> tuple[list[Record], DataReport]:
    """Records of `split` ("train" / "val" / "test") and the report of what was skipped or repaired.

    Raises DataError when the split is not defined or has no usable sample (the message carries the
    report), so a broken data set stops before training, not in the middle of an epoch.
    `deep=True` decodes every image with OpenCV instead of trusting its header.
    """
    if not spec.has_split(split):
        raise DataError(f"split '{split}' is not defined for {spec.source or spec.root} "
                        f"(defined: {', '.join(s for s in spec.splits if spec.splits[s]) or 'none'})")
    try:
        return _load(spec, split, deep, spec.cache if use_cache is None else use_cache)
    finally:
        if spec.format == "coco":  # a parsed COCO json is GBs for train2017: records keep what is needed

            for src in spec.splits[split]:
                release(Path(src.path))


def _load(spec: DataSpec, split: str, deep: bool, use_cache: bool) -> tuple[list[Record], DataReport]:
    fp = path = None
    if use_cache:
        fp, path = fingerprint(spec, split, deep), cache_file(spec, split)
        hit = read_cache(path, fp, spec.root)
        if hit is not None:
            records, report = hit
            _require_usable(report)
            return records, report
    report = DataReport(split=split, source=str(spec.source or spec.root), root=str(spec.root))
    cands: list[Candidate] = []
    for src in spec.splits[split]:
        cands += _select(_read(spec, src), src)
    records = finish(cands, spec.num_classes, report, deep)
    if use_cache:
        where = write_cache(path, fp, records, report, spec.root)
        if where is None:
            log.warning("label cache not written (no writable folder): next start re-reads the annotations")
    _require_usable(report)
    return records, report


def _require_usable(report: DataReport) -> None:
    if not report.ok:
        raise DataError("no usable sample in the data set:\n" + report.summary())


def _read(spec: DataSpec, src: SplitSource) -> list[Candidate]:
    if spec.format == "voc":

        return read_voc(src, spec.names, spec.drop_unlisted)
    if spec.format == "coco":

        return read_coco(src, spec.cat_ids or [], spec.drop_unlisted)

    return read_yolo(src, spec.num_classes, spec.drop_unlisted)


def in_holdout(name: str, fraction: float) -> bool:
    """Stable split: a file's name hashes to the same side on every machine and run."""
    return zlib.crc32(Path(name).name.encode()) % 10000 < fraction * 10000


def _select(cands: list[Candidate], src: SplitSource) -> list[Candidate]:
    if not src.holdout:
        return cands
    part, frac = src.holdout
    want_val = part == "val"
    return [c for c in cands if in_holdout(c.image, frac) == want_val]


def finish(cands: list[Candidate], num_classes: int, report: DataReport, deep: bool = False) -> list[Record]:
    """Check images and boxes; keep, repair or skip each candidate, counting everything in `report`."""
    todo = [c for c in cands if c.error is None]
    infos = iter(check_images([c.image for c in todo], deep))
    records: list[Record] = []
    for c in cands:
        report.seen += 1
        if c.error is not None:
            report.skip(c.label_file or c.image, c.error)
            continue
        info = next(infos)
        if info.error is not None:
            report.skip(c.image, info.error)
            continue
        w, h = info.width, info.height
        boxes = c.boxes
        if c.normalized and len(boxes):
            scale = np.array([w, h, w, h], np.float32)
            cxcy, wh = boxes[:, :2], boxes[:, 2:]
            boxes = np.concatenate([cxcy - wh / 2, cxcy + wh / 2], 1) * scale
        try:
            check_classes(c.classes, num_classes)
            boxes, repairs = clean_boxes(boxes, w, h)
        except BadSample as e:
            report.skip(c.label_file or c.image, str(e))
            continue
        for r in info.repairs:
            report.repair(c.image, r)
        for r in c.repairs + repairs:
            report.repair(c.label_file or c.image, r)
        if c.declared_size and c.declared_size != (w, h) and c.declared_size != (0, 0) \
                and c.declared_size != (h, w):
            report.repair(c.label_file, f"annotation size {c.declared_size[0]}x{c.declared_size[1]} differs from "
                                        f"the image {w}x{h}: using the image")
        if c.missing_label:
            report.repair(c.label_file, "no label file: treated as an image without objects")
        rec = Record(c.image, w, h, boxes, c.classes, c.difficult, c.iscrowd,
                     len(records) if c.image_id is None else c.image_id, c.area)
        records.append(rec)
        report.used += 1
        report.boxes += len(rec)
        report.negatives += len(rec) == 0
    return records
