"""Detection metrics: COCO (AP@[.5:.95], AP50, AP75, APs/m/l, AR@1/10/100) and PASCAL VOC mAP@0.5.

Why our own code: pycocotools' COCOeval loops in Python per image, class and detection (seconds
to minutes per evaluation); here the same algorithm runs as vectorised torch ops on the GPU when
there is one, so training-time evaluation is cheap. `get_map.py --official` still runs pycocotools
and the tests check that both agree to 1e-4.

The code lives by concept: `tables` (the flat inputs and shared segment ops), `coco`, `voc`; this module is
the one import for callers:
    dets, gts = tables_from_lists(preds, gts)        # per-image dicts of xyxy boxes -> flat tables
    coco = coco_evaluate_tables(dets, gts, num_images, num_classes)
    voc = voc_evaluate_tables(dets, gts, num_images, num_classes, iou_thr=0.5)
"""
from __future__ import annotations

from utils.eval.coco import COCO_STAT_NAMES, CocoMetrics, coco_evaluate_tables
from utils.eval.tables import DetTable, GtTable, tables_from_lists
from utils.eval.voc import VocMetrics, voc_evaluate_tables

__all__ = ["COCO_STAT_NAMES", "CocoMetrics", "DetTable", "GtTable", "VocMetrics", "coco_evaluate_tables",
           "tables_from_lists", "voc_evaluate_tables"]
