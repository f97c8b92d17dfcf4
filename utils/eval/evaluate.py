"""Evaluation glue: a model or a detections file in, COCO / VOC numbers out.

    res = evaluate_model(model, records, class_names, 416, 16, "cpu", conf=0.001, iou=0.45, metric="coco")
    res["coco"]["AP"], res["voc"]["mAP"]      # the fixed shape of utils/eval/report.metrics_dict

The ground truth of a split becomes an `EvalSet` (flat tables plus the ids that a COCO results json
uses for its images and classes); detections become a `DetTable`; `score()` runs the metrics of
utils/eval/metrics.py on them. `official_coco()` runs pycocotools' COCOeval on the same detections.
Inference is predict.py's own path (`predict_paths` of utils/infer/predictor.py: read -> letterbox ->
model -> decode -> NMS -> un-letterbox), so evaluation scores exactly the boxes predict.py draws.
get_map.py's run around this (weights or a detections file in, reports out) is utils/eval/val_run.py.
"""
from __future__ import annotations

import contextlib
import io
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from utils.data.load import load_records
from utils.data.spec import load_data_spec
from utils.eval.confusion import detection_confusion, save_confusion
from utils.eval.metrics import (
    CocoMetrics,
    DetTable,
    GtTable,
    VocMetrics,
    coco_evaluate_tables,
    tables_from_lists,
    voc_evaluate_tables,
)
from utils.eval.report import metrics_dict, plot_pr_curves
from utils.infer.predictor import Predictor, predict_paths

METRICS = ("coco", "voc", "both")


class EvalInputError(ValueError):
    """A detections or ground-truth file that cannot be scored; the message names the file and the fix."""


@dataclass
class EvalSet:
    """Ground truth of one split, flat, with the ids a COCO results json uses for it."""
    class_names: list[str]
    gts: GtTable
    keys: list[int | str]  # per image: its "image_id" in a detections json
    coco_ids: list[int]  # per image: the numeric id COCOeval orders images by
    cat_ids: list[int]  # per class: its "category_id" in a detections json
    sizes: list[tuple[int, int]] = field(default_factory=list)  # per image (width, height)
    source: str = ""  # what the ground truth was read from (for messages)
    coco_json: Path | None = None  # the instances json itself, when the ground truth is one

    @property
    def num_images(self) -> int:
        return len(self.keys)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def gt_counts(self) -> list[int]:
        """Boxes per class that count (not crowd, not difficult)."""
        keep = ~(self.gts.iscrowd | self.gts.difficult)
        return torch.bincount(self.gts.labels[keep], minlength=self.num_classes).tolist()


@dataclass
class EvalOutcome:
    """Everything one evaluation produced."""
    evalset: EvalSet
    dets: DetTable
    coco: CocoMetrics | None
    voc: VocMetrics | None
    seconds: dict[str, float]
    official: np.ndarray | None = None  # pycocotools' 12 stats, when asked for

    def as_dict(self) -> dict[str, Any]:
        return metrics_dict(self.evalset.class_names, self.coco, self.voc)

    def det_counts(self) -> list[int]:
        return torch.bincount(self.dets.labels, minlength=self.evalset.num_classes).tolist()


# ----------------------------------------------------------------------------- ground truth
def evalset_from_records(records: Sequence[Any], class_names: Sequence[str], cat_ids: Sequence[int] | None = None,
                         keys: str = "image_id", source: str = "") -> EvalSet:
    """EvalSet of utils.data Records. keys="image_id" (COCO data: the json's ids) or "stem" (the
    image file name without extension: VOC, YOLO-txt)."""
    n = [len(r.boxes) for r in records]
    boxes = np.concatenate([np.asarray(r.boxes, np.float64).reshape(-1, 4) for r in records]) if records else np.zeros((0, 4))
    wh = boxes[:, 2:] - boxes[:, :2]
    given = [np.asarray(r.area, np.float64).reshape(-1) if r.area is not None else None for r in records]
    # COCO's "area" (segment area) where the data gave one, else the box area
    area = wh[:, 0] * wh[:, 1]
    if any(a is not None for a in given):
        area = np.concatenate([a if a is not None else (wh[o:o + k, 0] * wh[o:o + k, 1])
                               for a, o, k in zip(given, np.cumsum([0] + n[:-1]), n)])

    def cat(attr, dtype):
        return torch.from_numpy(np.concatenate([np.asarray(getattr(r, attr), dtype).reshape(-1) for r in records])
                                if records else np.zeros(0, dtype))

    gts = GtTable(torch.repeat_interleave(torch.arange(len(records)), torch.tensor(n, dtype=torch.int64)),
                  torch.from_numpy(np.concatenate([boxes[:, :2], wh], 1)), cat("classes", np.int64),
                  cat("iscrowd", bool), cat("difficult", bool), torch.from_numpy(area))
    ids = [int(r.image_id) for r in records]
    coco_ids = ids if len(set(ids)) == len(ids) else list(range(len(records)))
    image_keys: list[int | str] = [Path(r.image).stem for r in records] if keys == "stem" else list(coco_ids)
    if keys == "stem" and len(set(image_keys)) != len(image_keys):
        image_keys = list(coco_ids)  # duplicate file names across folders: fall back to numeric ids
    cats = list(cat_ids) if cat_ids else list(range(1, len(class_names) + 1))
    return EvalSet(list(class_names), gts, image_keys, coco_ids, cats,
                   [(int(r.width), int(r.height)) for r in records], source)


def read_json(path: Path, what: str, hint: str, expected: str) -> Any:
    """The parsed file, or an EvalInputError naming it: missing (with `hint`) or not JSON (expected `expected`)."""
    if not path.is_file():
        raise EvalInputError(f"{what} not found: {path}{' ' + hint if hint else ''}")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise EvalInputError(f"{path}: not valid JSON ({e}); expected {expected}") from None


def load_coco_ground_truth(path: str | Path) -> EvalSet:
    """EvalSet straight from a COCO instances json (no image files needed). Classes are the
    json's categories in id order; images without annotations count (as in COCOeval)."""
    path = Path(path)
    data = read_json(path, "ground truth", "(pass a COCO instances json or a VOC folder)", "a COCO instances file")
    if not isinstance(data, dict) or not all(k in data for k in ("images", "annotations", "categories")):
        raise EvalInputError(f"{path}: expected a COCO instances json with 'images', 'annotations' and "
                             "'categories' (a results list goes to --detections)")
    cats = sorted(data["categories"], key=lambda c: c["id"])
    cat_ids = [int(c["id"]) for c in cats]
    names = [str(c.get("name", c["id"])) for c in cats]
    cat_index = {c: k for k, c in enumerate(cat_ids)}
    images = data["images"]
    ids = [int(im["id"]) for im in images]
    if len(set(ids)) != len(ids):
        raise EvalInputError(f"{path}: duplicate image ids in 'images'")
    img_index = {i: k for k, i in enumerate(ids)}
    anns = data["annotations"]
    try:
        a_img = np.array([img_index[int(a["image_id"])] for a in anns], np.int64)
    except KeyError as e:
        raise EvalInputError(f"{path}: an annotation refers to image id {e} that is not in 'images'") from None
    try:
        a_cat = np.array([cat_index[int(a["category_id"])] for a in anns], np.int64)
    except KeyError as e:
        raise EvalInputError(f"{path}: an annotation has category id {e} that is not in 'categories'") from None
    bbox = np.array([a["bbox"] for a in anns], np.float64).reshape(-1, 4)
    if not np.isfinite(bbox).all() or (bbox[:, 2:] < 0).any():
        bad = int(np.nonzero(~np.isfinite(bbox).all(1) | (bbox[:, 2:] < 0).any(1))[0][0])
        raise EvalInputError(f"{path}: annotation {anns[bad].get('id', bad)} has bbox {anns[bad]['bbox']}; "
                             "COCO boxes are [x, y, width, height] with width, height >= 0")
    area = np.array([a.get("area", b[2] * b[3]) for a, b in zip(anns, bbox)], np.float64)
    crowd = np.array([bool(a.get("iscrowd", 0)) for a in anns], bool)
    gts = GtTable(torch.from_numpy(a_img), torch.from_numpy(bbox), torch.from_numpy(a_cat), torch.from_numpy(crowd),
                  torch.zeros(len(anns), dtype=torch.bool), torch.from_numpy(area))
    sizes = [(int(im.get("width", 0)), int(im.get("height", 0))) for im in images]
    return EvalSet(names, gts, list(ids), list(ids), cat_ids, sizes, str(path), path)


def load_split(data: str | Path, split: str | None = None) -> tuple[EvalSet, list[Any], Any]:
    """The ground truth of one split of a data set utils.data reads: EvalSet, its Records (the image files
    to run a model on) and the load report. split None: val, else test, else train."""
    spec = load_data_spec(data)
    split = split or default_split(spec)
    records, report = load_records(spec, split)
    evalset = evalset_from_records(records, spec.names, spec.cat_ids,
                                   keys="image_id" if spec.format == "coco" else "stem", source=f"{data} ({split})")
    return evalset, records, report


def load_ground_truth(path: str | Path, split: str | None = None) -> EvalSet:
    """A COCO instances json, or a data set utils.data reads (a VOC folder, a data YAML, ...)."""
    path = Path(path)
    if path.suffix.lower() == ".json":
        return load_coco_ground_truth(path)
    if not path.exists():
        raise EvalInputError(f"ground truth not found: {path} (pass a COCO instances json or a VOC folder)")
    return load_split(path, split)[0]


def default_split(spec: Any) -> str:
    for s in ("val", "test"):
        if spec.has_split(s):
            return s
    return "train"


# ----------------------------------------------------------------------------- detections
def load_detections(path: str | Path, evalset: EvalSet) -> DetTable:
    """A COCO results json ([{"image_id", "category_id", "bbox": [x, y, w, h], "score"}, ...])
    checked against `evalset`: every id must be known and every box a real box."""
    path = Path(path)
    data = read_json(path, "detections file", "", "a COCO results list")
    if isinstance(data, dict) and "annotations" in data:
        raise EvalInputError(f"{path}: this is an instances (ground-truth) file; --detections takes a COCO "
                             "results list [{\"image_id\", \"category_id\", \"bbox\", \"score\"}, ...]")
    if not isinstance(data, list):
        raise EvalInputError(f"{path}: expected a list of detections [{{\"image_id\", \"category_id\", "
                             "\"bbox\": [x, y, w, h], \"score\"}}, ...]")
    img_index: dict[Any, int] = {}
    numeric = [k for k in evalset.keys if isinstance(k, str) and k.isdigit()]
    if len({int(k) for k in numeric}) == len(evalset.keys):  # stems "000005": image_id 5 works too
        img_index.update({int(k): i for i, k in enumerate(evalset.keys)})
    img_index.update({k: i for i, k in enumerate(evalset.keys)})
    img_index.update({str(k): i for i, k in enumerate(evalset.keys)})
    cat_index = {c: k for k, c in enumerate(evalset.cat_ids)}
    cat_index.update({n: k for k, n in enumerate(evalset.class_names)})

    def entry_error(i: int, why: str) -> EvalInputError:
        return EvalInputError(f"{path}: detection {i} {json.dumps(data[i])[:200]}: {why}")

    img = np.empty(len(data), np.int64)
    cls = np.empty(len(data), np.int64)
    for i, d in enumerate(data):  # parsing: one dict a detection is what the file holds
        if not isinstance(d, dict) or not all(k in d for k in ("image_id", "category_id", "bbox", "score")):
            raise entry_error(i, "needs the keys image_id, category_id, bbox, score")
        k = img_index.get(d["image_id"], img_index.get(str(d["image_id"])))
        if k is None:
            sample = ", ".join(map(str, evalset.keys[:5]))
            raise entry_error(i, f"unknown image_id {d['image_id']!r}: not in the ground truth {evalset.source} "
                                 f"({evalset.num_images} images, ids like {sample})")
        c = cat_index.get(d["category_id"])
        if c is None:
            raise entry_error(i, f"unknown category_id {d['category_id']!r}; the ground truth has "
                                 f"{', '.join(map(str, evalset.cat_ids[:10]))}{' ...' if evalset.num_classes > 10 else ''}")
        img[i], cls[i] = k, c
    try:
        bbox = np.array([d["bbox"] for d in data], np.float64).reshape(len(data), 4)
        scores = np.array([d["score"] for d in data], np.float64).reshape(len(data))
    except (TypeError, ValueError):
        for i, d in enumerate(data):
            b = d["bbox"]
            if not (isinstance(b, (list, tuple)) and len(b) == 4 and all(isinstance(v, (int, float)) for v in b)):
                raise entry_error(i, "bbox must be 4 numbers [x, y, width, height]") from None
            if not isinstance(d["score"], (int, float)):
                raise entry_error(i, "score must be a number") from None
        raise
    bad = ~np.isfinite(bbox).all(1) | ~np.isfinite(scores)
    if bad.any():
        raise entry_error(int(np.nonzero(bad)[0][0]), "bbox and score must be finite numbers")
    neg = (bbox[:, 2:] < 0).any(1)
    if neg.any():
        raise entry_error(int(np.nonzero(neg)[0][0]), "negative width or height; COCO boxes are [x, y, width, "
                                                       "height] (an [x1, y1, x2, y2] box must be converted)")
    return DetTable(torch.from_numpy(img), torch.from_numpy(bbox), torch.from_numpy(scores), torch.from_numpy(cls))


def detections_to_results(dets: DetTable, evalset: EvalSet) -> list[dict[str, Any]]:
    """COCO results list (the format `load_detections` and pycocotools' loadRes read). Scores keep full precision:
    rounded, the near-equal scores of a weak model tie and re-scoring the file would rank them differently."""
    keys, cats = evalset.keys, evalset.cat_ids
    return [{"image_id": keys[i], "category_id": cats[c], "bbox": [round(v, 3) for v in b], "score": s}
            for i, c, b, s in zip(dets.image.tolist(), dets.labels.tolist(), dets.boxes.tolist(), dets.scores.tolist())]


# ----------------------------------------------------------------------------- scoring
def score(evalset: EvalSet, dets: DetTable, metric: str = "both", voc_iou: float = 0.5, score_thr: float = 0.5,
          device: torch.device | str | None = None) -> EvalOutcome:
    """COCO and/or VOC metrics of `dets` against `evalset`."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(METRICS)}, got '{metric}'")
    seconds = {}
    coco = voc = None
    if metric in ("coco", "both"):
        t = time.perf_counter()
        coco = coco_evaluate_tables(dets, evalset.gts, evalset.num_images, evalset.num_classes,
                                    image_ids=evalset.coco_ids, device=device)
        seconds["coco"] = time.perf_counter() - t
    if metric in ("voc", "both"):
        t = time.perf_counter()
        voc = voc_evaluate_tables(dets, evalset.gts, evalset.num_images, evalset.num_classes, iou_thr=voc_iou,
                                  score_thr=score_thr, device=device)
        seconds["voc"] = time.perf_counter() - t
    return EvalOutcome(evalset, dets, coco, voc, seconds)


def official_coco(evalset: EvalSet, dets: DetTable, detections_json: str | Path | None = None) -> np.ndarray:
    """pycocotools' COCOeval (bbox) 12 stats on the same detections. Reads the instances json and
    the results file themselves when both exist; otherwise builds them in memory."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        if evalset.coco_json is not None:
            gt = COCO(str(evalset.coco_json))
        else:
            gt = COCO()
            gt.dataset = _coco_gt_dict(evalset)
            gt.createIndex()
        if dets.labels.numel() == 0:
            return _no_detection_stats(evalset)
        if evalset.coco_json is not None and detections_json is not None:
            dt = gt.loadRes(str(detections_json))
        else:
            ids = evalset.coco_ids if evalset.coco_json is None else evalset.keys
            res = [{"image_id": ids[i], "category_id": evalset.cat_ids[c] if evalset.coco_json is not None else c + 1,
                    "bbox": b, "score": s} for i, c, b, s in
                   zip(dets.image.tolist(), dets.labels.tolist(), dets.boxes.tolist(), dets.scores.tolist())]
            dt = gt.loadRes(res)
        ev = COCOeval(gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return np.asarray(ev.stats, np.float64)


def _coco_gt_dict(evalset: EvalSet) -> dict[str, Any]:
    g = evalset.gts
    sizes = evalset.sizes or [(0, 0)] * evalset.num_images
    anns = [{"id": j + 1, "image_id": evalset.coco_ids[i], "category_id": c + 1, "bbox": b, "area": a,
             "iscrowd": int(cr)} for j, (i, c, b, a, cr) in
            enumerate(zip(g.image.tolist(), g.labels.tolist(), g.boxes.tolist(), g.area.tolist(), g.iscrowd.tolist()))]
    return {"images": [{"id": i, "width": w, "height": h} for i, (w, h) in zip(evalset.coco_ids, sizes)],
            "annotations": anns,
            "categories": [{"id": k + 1, "name": n} for k, n in enumerate(evalset.class_names)]}


def _no_detection_stats(evalset: EvalSet) -> np.ndarray:
    """What COCOeval reports with no detections at all (it cannot load an empty results list):
    0 wherever some class has ground truth in the area range, else -1."""
    empty = DetTable(torch.zeros(0, dtype=torch.int64), torch.zeros(0, 4, dtype=torch.float64),
                     torch.zeros(0, dtype=torch.float64), torch.zeros(0, dtype=torch.int64))
    return coco_evaluate_tables(empty, evalset.gts, evalset.num_images, evalset.num_classes).stats_array()


# ----------------------------------------------------------------------------- inference
@torch.inference_mode()
def run_inference(predictor: Any, records: Sequence[Any], batch_size: int = 16, progress: bool = True,
                  log: Callable[[str], Any] | None = None) -> list[dict[str, torch.Tensor]]:
    """Detections (original pixels, CPU) for every record, in record order.

    Runs predict.py's own loop (`predict_paths`: same reader, letterbox geometry and batching), so
    evaluation scores exactly the boxes predict.py draws. Images are read by threads one batch
    ahead. An unreadable image is scored as having no detections, and counted.
    """
    out: list[dict[str, torch.Tensor]] = []
    failures: list[str] = []
    results = predict_paths(predictor, [r.image for r in records], batch_size)
    for r in tqdm(results, total=len(records), desc="inference", unit="img", disable=not progress, leave=False):
        if r.error is not None:
            failures.append(r.error)
            out.append({"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.int64)})
            continue
        out.append({k: v.detach().float().cpu() if k != "labels" else v.detach().cpu() for k, v in r.det.items()})
    if failures and log is not None:
        log(f"warning: {len(failures)} image(s) could not be read and were scored as empty: {failures[:3]}")
    return out


def predictions_to_table(preds: Sequence[dict[str, torch.Tensor]]) -> DetTable:
    empty = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}] * len(preds)
    return tables_from_lists(preds, empty)[0]


def evaluate_model(model: Any, records: Sequence[Any], class_names: Sequence[str], img_size: int, batch_size: int,
                   device: Any, conf: float = 0.001, iou: float = 0.45, metric: str = "coco",
                   progress: bool = False, voc_iou: float = 0.5, max_det: int = 300,
                   plots_dir: str | Path | None = None) -> dict[str, Any]:
    """Score `model` on `records` (training-time evaluation): the fixed-shape dict of
    utils/eval/report.metrics_dict. The model's train/eval mode is restored afterwards.
    `plots_dir`: also draw pr_curve.png and the confusion matrix there (a run's last evaluation)."""
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    try:
        # every class over `conf` per box (multi-label), as COCO evaluation expects
        predictor = Predictor(model, img_size=img_size, class_names=class_names, conf_thres=conf, iou_thres=iou,
                              max_det=max_det, multi_label=True, device=device)
        preds = run_inference(predictor, records, batch_size, progress)
    finally:
        if was_training:
            model.train()
    evalset = evalset_from_records(records, class_names)
    dets = predictions_to_table(preds)
    outcome = score(evalset, dets, metric, voc_iou=voc_iou, device=predictor.device)
    if plots_dir is not None:
        plot_pr_curves(plots_dir, evalset.class_names, outcome.coco, outcome.voc, per_class=False)
        save_confusion(plots_dir, detection_confusion(dets, evalset.gts, evalset.class_names))
    return outcome.as_dict()

