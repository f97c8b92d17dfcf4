"""mAP of trained weights (COCO AP@[.5:.95] ... and VOC mAP@0.5), or of a saved detections file.

    python get_map.py                                  # best.pt of the newest run, on its data's val split
    python get_map.py --weights best.pt --data configs/voc.yaml --split test --metric voc
    python get_map.py --cfg my.yaml --img 416 --augment   # the shared keys of configs/default.yaml
    python get_map.py --weights best_openvino_model/ --data configs/voc.yaml   # an export (.onnx, OpenVINO IR)
    python get_map.py --detections results.json --ground-truth instances_val2017.json --official
    python get_map.py --detections results.json --ground-truth VOCdevkit/VOC2007 --split test

A detections file is a COCO results list: [{"image_id", "category_id", "bbox": [x, y, w, h], "score"}].
Against a COCO instances json the ids are the json's; against a VOC folder (or any other data set)
image_id is the image file name without extension (e.g. "000005") and category_id the class
index + 1 (or the class name). `--official` also runs pycocotools' COCOeval on the same detections.
Outputs go to --out (default: <run>/map_out for a run's weights, else map_out/): metrics.json (every
number, one fixed shape), pr_curve.png, pr_curves/<class>.png, confusion_matrix.json and
confusion_matrix.png (rows predicted, columns true, "background" last: detections with score >=
--cm-conf matched one-to-one to ground truth at IoU > --cm-iou, as Ultralytics' val does; see
utils/eval/confusion.py) and, after inference, detections.json. The work is utils/eval/val_run.py's.
"""
from __future__ import annotations

import argparse
import sys

from utils.config import parse_config

# the shared Config keys this script reads (flags, help and defaults from utils/config.py, mode "val")
VAL_KEYS = ("weights", "data", "split", "img_size", "conf_thres", "iou_thres", "max_det", "augment", "rect", "dtype",
            "fuse", "threads", "backend", "opset", "batch_size", "device", "plots")


def parse_args(argv: list[str] | None = None) -> tuple:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--metric", default="both", choices=["voc", "coco", "both"], help="which numbers to compute")
    p.add_argument("--voc-iou", type=float, default=0.5, help="IoU threshold of the VOC metric (> this matches)")
    p.add_argument("--score-thr", type=float, default=0.5, help="score threshold of the per-class P, R and F1")
    p.add_argument("--detections", default="", help="evaluate this COCO results json instead of running a model")
    p.add_argument("--ground-truth", default="", help="with --detections: a COCO instances json or a VOC folder")
    p.add_argument("--official", action="store_true", help="also run pycocotools' COCOeval and report the difference")
    p.add_argument("--save-json", default="", help="also write every number (fixed shape) to this file")
    p.add_argument("--out", default="", help="output folder (default: <run>/map_out or map_out/)")
    p.add_argument("--cm-conf", type=float, default=0.25, help="confusion matrix: keep detections with score >= this")
    p.add_argument("--cm-iou", type=float, default=0.45, help="confusion matrix: a match needs IoU > this")
    cfg, args = parse_config(argv, parser=p, mode="val", keys=VAL_KEYS)
    if not 0 <= args.voc_iou < 1 or not 0 <= args.cm_conf <= 1 or not 0 <= args.cm_iou < 1:
        p.error("--voc-iou and --cm-iou must lie in [0, 1), --cm-conf in [0, 1]")
    if bool(args.detections) != bool(args.ground_truth):
        p.error("--detections and --ground-truth go together (a results json and the ground truth it refers to)")
    if args.detections and (cfg.weights or cfg.data):
        p.error("--detections scores a saved file: drop --weights/--data")
    if args.official and args.metric == "voc":
        p.error("--official runs pycocotools (COCO numbers): use --metric coco or both")
    return cfg, args


def main(argv: list[str] | None = None) -> int:
    cfg, args = parse_args(argv)
    # heavy imports (torch and what needs it) only after the arguments are known to be good
    from utils.data.records import DataError
    from utils.engine.runs import WeightsNotFoundError, resolve_weights
    from utils.eval.evaluate import EvalInputError
    from utils.eval.val_run import ReportOptions, detections_of_file, detections_of_model, score_and_report

    opts = ReportOptions(args.metric, args.voc_iou, args.score_thr, args.official, args.save_json, cfg.plots,
                         args.cm_conf, args.cm_iou)
    try:
        if args.detections:
            ev = detections_of_file(args.detections, args.ground_truth, cfg.split, cfg.device, args.out)
        else:
            ev = detections_of_model(cfg, resolve_weights(cfg.weights), args.out)
    except (EvalInputError, DataError, WeightsNotFoundError, OSError, ValueError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    score_and_report(ev, opts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
