"""mAP of trained weights (COCO AP@[.5:.95] ... and VOC mAP@0.5), or of a saved detections file.

    python get_map.py                                  # best.pt of the newest run, on its data's val split
    python get_map.py --weights best.pt --data configs/voc.yaml --split test --metric voc
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
utils/eval/confusion.py) and, after inference, detections.json.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", default="", help="checkpoint .pt or exported .onnx (default: best.pt of the newest run)")
    p.add_argument("--data", default="", help="data YAML / folder / COCO json (default: the run's own data set)")
    p.add_argument("--split", default="", help="val, test or train (default: val, else test)")
    p.add_argument("--img", "--img-size", dest="img", type=int, default=None, help="input size (default: the trained one)")
    p.add_argument("--conf", "--conf-thres", dest="conf", type=float, default=0.001, help="score threshold before NMS")
    p.add_argument("--iou", "--iou-thres", dest="iou", type=float, default=0.6, help="NMS IoU threshold")
    p.add_argument("--max-det", type=int, default=300, help="at most this many boxes per image")
    p.add_argument("--augment", action="store_true",
                   help="test-time augmentation: also run 1.33x and mirrored views (~4x the compute; "
                        "try a larger --img first)")
    p.add_argument("--batch-size", "--batch", dest="batch_size", type=int, default=16, help="images per forward pass")
    p.add_argument("--workers", type=int, default=2, help="data-loader processes")
    p.add_argument("--device", default="", help="cpu, cuda, cuda:1 or 0 (default: cuda when available)")
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
    p.add_argument("--no-plots", action="store_true", help="skip the PNGs (PR curves, confusion matrix)")
    args = p.parse_args(argv)
    if not 0 <= args.conf <= 1 or not 0 <= args.iou <= 1 or not 0 <= args.voc_iou < 1:
        p.error("--conf, --iou and --voc-iou must lie in [0, 1]")
    if not 0 <= args.cm_conf <= 1 or not 0 <= args.cm_iou < 1:
        p.error("--cm-conf must lie in [0, 1] and --cm-iou in [0, 1)")
    if args.batch_size < 1 or args.max_det < 1 or args.workers < 0:
        p.error("--batch-size and --max-det must be >= 1, --workers >= 0")
    if bool(args.detections) != bool(args.ground_truth):
        p.error("--detections and --ground-truth go together (a results json and the ground truth it refers to)")
    if args.detections and (args.weights or args.data):
        p.error("--detections scores a saved file: drop --weights/--data")
    if args.official and args.metric == "voc":
        p.error("--official runs pycocotools (COCO numbers): use --metric coco or both")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    t_start = time.perf_counter()
    # heavy imports (torch and what needs it) only after the arguments are known to be good
    from utils.data.records import DataError
    from utils.engine.runs import WeightsNotFoundError
    from utils.eval.confusion import detection_confusion, save_confusion
    from utils.eval.evaluate import EvalInputError, official_coco, score
    from utils.eval.report import format_table, plot_pr_curves, save_json

    try:
        if args.detections:
            evalset, dets, out_dir, device, t_inf = _from_file(args)
        else:
            evalset, dets, out_dir, device, t_inf = _from_model(args)
    except (EvalInputError, DataError, WeightsNotFoundError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    t0 = time.perf_counter()
    outcome = score(evalset, dets, args.metric, voc_iou=args.voc_iou, score_thr=args.score_thr, device=device)
    t_metric = time.perf_counter() - t0
    print(format_table(evalset.class_names, outcome.coco, outcome.voc, evalset.gt_counts(), outcome.det_counts()))
    numbers = outcome.as_dict()
    if args.official:
        t1 = time.perf_counter()
        outcome.official = official_coco(evalset, dets, args.detections or None)
        t_off = time.perf_counter() - t1
        ours = outcome.coco.stats_array()
        diff = float(abs(ours - outcome.official).max())
        print("pycocotools COCOeval: " + " ".join(f"{v:.4f}" for v in outcome.official)
              + f"\nmax |ours - pycocotools| over the 12 stats = {diff:.2e} (pycocotools took {t_off:.2f} s)")
        for k, v in zip(("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100"), outcome.official):
            numbers["coco"][k] = float(v)

    out_dir.mkdir(parents=True, exist_ok=True)
    written = [save_json(out_dir / "metrics.json", numbers)]
    if args.save_json:
        written.append(save_json(args.save_json, numbers))
    if not args.detections:
        from utils.eval.evaluate import detections_to_results

        written.append(save_json(out_dir / "detections.json", detections_to_results(dets, evalset)))
    if not args.no_plots:
        written += plot_pr_curves(out_dir, evalset.class_names, outcome.coco, outcome.voc)[:1]
    cm = detection_confusion(dets, evalset.gts, evalset.class_names, conf=args.cm_conf, iou=args.cm_iou)
    print(cm.summary())
    written += save_confusion(out_dir, cm, plot=not args.no_plots)
    total = time.perf_counter() - t_start
    print(f"\n{evalset.num_images} images, {dets.labels.numel()} detections; metrics {t_metric:.3f} s "
          + (f"(inference {t_inf:.1f} s) " if t_inf else "") + f"total {total:.1f} s")
    print(f"results in {out_dir}/ ({', '.join(Path(w).name for w in written)}"
          + (", pr_curves/" if not args.no_plots else "") + ")")
    return 0


def _from_file(args):
    from utils.device import select_device
    from utils.eval.evaluate import load_detections, load_ground_truth

    evalset = load_ground_truth(args.ground_truth, args.split or None)
    dets = load_detections(args.detections, evalset)
    return evalset, dets, Path(args.out or "map_out"), select_device(args.device), 0.0


def _from_model(args):
    import yaml

    from utils.data.load import load_records
    from utils.data.spec import load_data_spec
    from utils.engine.runs import latest_weights
    from utils.eval.evaluate import default_split, evalset_from_records, predictions_to_table, run_inference
    from utils.infer.predictor import Predictor

    weights = Path(args.weights) if args.weights else latest_weights()
    run_dir = weights.parent.parent if weights.parent.name == "weights" else None
    data = args.data
    if not data and run_dir is not None and (run_dir / "config.yaml").is_file():
        data = (yaml.safe_load((run_dir / "config.yaml").read_text()) or {}).get("data", "")
    data = data or "synthetic"
    spec = load_data_spec(data)
    split = args.split or default_split(spec)
    records, report = load_records(spec, split)
    if report.skipped:
        print(f"note: {len(report.skipped)} sample(s) of {split} skipped while loading (see the data report)")
    predictor = Predictor.from_weights(weights, device=args.device, img_size=args.img, conf_thres=args.conf,
                                       iou_thres=args.iou, max_det=args.max_det, multi_label=True,
                                       augment=args.augment)
    if predictor.num_classes != spec.num_classes:
        raise ValueError(f"{weights}: a {predictor.num_classes}-class model cannot be scored on {data} "
                         f"({spec.num_classes} classes); pass the --data it was trained on")
    print(f"evaluating {weights} on {data} [{split}]: {len(records)} images; {predictor.describe()}")
    t0 = time.perf_counter()
    preds = run_inference(predictor, records, args.batch_size, args.workers, progress=True, log=print)
    t_inf = time.perf_counter() - t0
    evalset = evalset_from_records(records, spec.names, spec.cat_ids,
                                   keys="image_id" if spec.format == "coco" else "stem", source=f"{data} ({split})")
    out = Path(args.out) if args.out else (run_dir / "map_out" if run_dir is not None else Path("map_out"))
    return evalset, predictions_to_table(preds), out, predictor.device, t_inf


if __name__ == "__main__":
    sys.exit(main())
