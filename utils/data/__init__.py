"""Data pipeline: readers (VOC, COCO, YOLO-txt, built-in synthetic), validation, label cache,
augmentation, the training data set and its DataLoader.

    spec = load_data_spec("configs/voc.yaml")          # or a folder, a COCO json, "synthetic"
    records, report = load_records(spec, "train")      # report.summary() names skipped/repaired files
    ds = TrainDataset(records, 416, cfg, seed=0)        # cfg: the Config (mosaic, mixup, scale, ...)
    loader = build_loader(ds, batch_size=16, workers=2, seed=0)

Names are imported on first use (PEP 562), so the command-line checks do not pay for torch.
"""
from __future__ import annotations

import importlib

from .image import ImageError, load_image
from .letterbox import letterbox, letterbox_params
from .load import load_records
from .records import DataError, DataReport, Record
from .spec import DataSpec, load_data_spec

_LAZY = {name: "dataset" for name in ("TrainDataset", "train_collate", "build_loader")}
__all__ = ["load_data_spec", "DataSpec", "load_records", "Record", "DataReport", "DataError", "letterbox",
           "letterbox_params", "load_image", "ImageError", *_LAZY]


def __getattr__(name: str):
    """The torch-based data sets load on first use (PEP 562): the command-line checks stay light."""
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
