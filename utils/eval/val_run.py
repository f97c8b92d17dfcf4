"""get_map.py's run (and `Detector.val`): weights or a saved detections file in; the table, metrics.json,
PR curves, the confusion matrix and detections.json out.

    ev = detections_of_model(cfg, weights)               # cfg: the "val" mode Config of utils/config.py
    numbers = score_and_report(ev, ReportOptions(), log=print)   # = metrics.json

Both paths use the same ground-truth loader (`utils/eval/evaluate.py` `load_split` / `load_ground_truth`)
and the model path runs predict.py's `Predictor` with the shared inference keys.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from utils.config import Config
from utils.device import select_device
from utils.eval.confusion import detection_confusion, save_confusion
from utils.eval.evaluate import (
    EvalSet,
    detections_to_results,
    load_detections,
    load_ground_truth,
    load_split,
    official_coco,
    predictions_to_table,
    run_inference,
    score,
)
from utils.eval.metrics import DetTable
from utils.eval.report import format_table, plot_pr_curves, save_json
from utils.infer.predictor import Predictor

Log = Callable[[str], Any]


@dataclass
class Evaluation:
    """What gets scored: the ground truth, the detections, where reports go, and how they were made."""
    evalset: EvalSet
    dets: DetTable
    out_dir: Path
    device: torch.device
    inference_s: float = 0.0
    detections_json: Path | None = None  # the scored file, when the detections came from one


@dataclass
class ReportOptions:
    """get_map.py's scoring and report options (not shared with other modes, so not Config keys)."""
    metric: str = "both"  # voc | coco | both
    voc_iou: float = 0.5
    score_thr: float = 0.5  # per-class P, R, F1 at this score
    official: bool = False  # also pycocotools' COCOeval
    save_json: str = ""  # a second copy of metrics.json
    plots: bool = True
    cm_conf: float = 0.25
    cm_iou: float = 0.45


def run_data(weights: Path) -> tuple[Path | None, str]:
    """The run folder of `<run>/weights/x.pt` and the data set its config.yaml names ("" if none)."""
    run_dir = weights.parent.parent if weights.parent.name == "weights" else None
    if run_dir is None or not (run_dir / "config.yaml").is_file():
        return run_dir, ""
    return run_dir, str((yaml.safe_load((run_dir / "config.yaml").read_text()) or {}).get("data", ""))


def detections_of_model(cfg: Config, weights: Path, out: str = "", progress: bool = True,
                        log: Log = print) -> Evaluation:
    """Run the model over `cfg.data` (default: its run's data set) [`cfg.split`]; raises ValueError when the
    classes do not fit the data."""
    run_dir, run_data_set = run_data(weights)
    data = cfg.data or run_data_set or "synthetic"
    evalset, records, report = load_split(data, cfg.split or None)
    if report.skipped:
        log(f"note: {len(report.skipped)} sample(s) of {evalset.source} skipped while loading (see the data report)")
    predictor = Predictor.from_config(weights, cfg, multi_label=True, log=log)
    if predictor.num_classes != evalset.num_classes:
        raise ValueError(f"{weights}: a {predictor.num_classes}-class model cannot be scored on {data} "
                         f"({evalset.num_classes} classes); pass the --data it was trained on")
    log(f"evaluating {weights} on {evalset.source}: {len(records)} images; {predictor.describe()}")
    t0 = time.perf_counter()
    preds = run_inference(predictor, records, cfg.batch_size, progress=progress, log=log)
    out_dir = Path(out) if out else (run_dir / "map_out" if run_dir is not None else Path("map_out"))
    return Evaluation(evalset, predictions_to_table(preds), out_dir, predictor.device, time.perf_counter() - t0)


def detections_of_file(detections: str | Path, ground_truth: str | Path, split: str = "", device: str = "",
                       out: str = "") -> Evaluation:
    """A COCO results json scored against a COCO instances json or a data set."""
    evalset = load_ground_truth(ground_truth, split or None)
    return Evaluation(evalset, load_detections(detections, evalset), Path(out or "map_out"), select_device(device),
                      detections_json=Path(detections))


def score_and_report(ev: Evaluation, opts: ReportOptions, log: Log = print) -> dict[str, Any]:
    """Score, print the table, write the reports; returns every number (what metrics.json holds)."""
    t0 = time.perf_counter()
    evalset, dets = ev.evalset, ev.dets
    outcome = score(evalset, dets, opts.metric, voc_iou=opts.voc_iou, score_thr=opts.score_thr, device=ev.device)
    t_metric = time.perf_counter() - t0
    log(format_table(evalset.class_names, outcome.coco, outcome.voc, evalset.gt_counts(), outcome.det_counts()))
    numbers = outcome.as_dict()
    if opts.official:
        t1 = time.perf_counter()
        outcome.official = official_coco(evalset, dets, ev.detections_json)
        diff = float(abs(outcome.coco.stats_array() - outcome.official).max())
        log("pycocotools COCOeval: " + " ".join(f"{v:.4f}" for v in outcome.official)
            + f"\nmax |ours - pycocotools| over the 12 stats = {diff:.2e} "
              f"(pycocotools took {time.perf_counter() - t1:.2f} s)")
        for k, v in zip(("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100"), outcome.official):
            numbers["coco"][k] = float(v)

    out_dir = ev.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [save_json(out_dir / "metrics.json", numbers)]
    if opts.save_json:
        written.append(save_json(opts.save_json, numbers))
    if ev.detections_json is None:
        written.append(save_json(out_dir / "detections.json", detections_to_results(dets, evalset)))
    if opts.plots:
        written += plot_pr_curves(out_dir, evalset.class_names, outcome.coco, outcome.voc)[:1]
    cm = detection_confusion(dets, evalset.gts, evalset.class_names, conf=opts.cm_conf, iou=opts.cm_iou)
    log(cm.summary())
    written += save_confusion(out_dir, cm, plot=opts.plots)
    log(f"\n{evalset.num_images} images, {dets.labels.numel()} detections; metrics {t_metric:.3f} s"
        + (f" (inference {ev.inference_s:.1f} s)" if ev.inference_s else ""))
    log(f"results in {out_dir}/ ({', '.join(Path(w).name for w in written)}" + (", pr_curves/" if opts.plots else "")
        + ")")
    return numbers
