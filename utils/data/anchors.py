"""Anchors for a data set: k-means on box sizes with 1 - IoU as the distance, refined by a small
genetic search, compared with the current anchors by best-possible recall and mean IoU.

    python -m utils.data.anchors --data configs/voc.yaml --img 416
    python train.py --phi 3 --data configs/voc.yaml --anchors model_data/voc_anchors_416.txt

Box sizes are taken as the network sees them after letterboxing to --img (long side = img).
Best-possible recall (BPR) = share of boxes whose best anchor has IoU > --thr; mean IoU = average of
each box's best anchor IoU. YOLOv4-tiny's heads use anchors 1-5 (masks [3,4,5] and [1,2,3]); both
"all" and "used" figures are printed.
"""
from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from nets.assets import ANCHOR_MASKS, DEFAULT_ANCHORS, MODEL_DATA, read_anchors
from utils.data.letterbox import letterbox_params
from utils.data.load import load_records
from utils.data.records import DataError
from utils.data.spec import load_data_spec

USED = tuple(sorted({i for mask in ANCHOR_MASKS for i in mask}))  # anchor indices the two heads use (1-5)


def head_anchors(anchors: np.ndarray) -> np.ndarray:
    """The anchors the heads use: 1-5 of yolov4-tiny's six (masks [3,4,5] and [1,2,3]); all of any other set."""
    return anchors[list(USED)] if len(anchors) == 6 else anchors


def wh_iou(wh: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """(N, K) IoU between boxes and anchors placed at the same corner (only sizes matter)."""
    inter = np.minimum(wh[:, None, 0], anchors[None, :, 0]) * np.minimum(wh[:, None, 1], anchors[None, :, 1])
    union = (wh[:, 0] * wh[:, 1])[:, None] + (anchors[:, 0] * anchors[:, 1])[None] - inter
    return inter / union


def anchor_metrics(wh: np.ndarray, anchors: np.ndarray, thr: float = 0.25) -> dict[str, float]:
    best = wh_iou(wh, anchors).max(1)
    return {"bpr": float((best > thr).mean()), "mean_iou": float(best.mean())}


def kmeans_iou(wh: np.ndarray, k: int, rng: np.random.Generator, iters: int = 300) -> np.ndarray:
    """Lloyd's k-means with d = 1 - IoU, k-means++ start, median centroids (robust to outliers)."""
    centers = [wh[rng.integers(len(wh))]]
    for _ in range(1, k):  # k-means++: next centre far (in 1 - IoU) from the ones chosen
        d = 1 - wh_iou(wh, np.array(centers)).max(1)
        p = d ** 2
        centers.append(wh[rng.choice(len(wh), p=p / p.sum()) if p.sum() > 0 else rng.integers(len(wh))])
    c = np.array(centers, np.float64)
    assign = None
    for _ in range(iters):
        new = wh_iou(wh, c).argmax(1)
        if assign is not None and (new == assign).all():
            break
        assign = new
        for j in range(k):  # k centroids (6), not boxes: a loop over the clusters
            members = wh[assign == j]
            c[j] = np.median(members, 0) if len(members) else wh[rng.integers(len(wh))]
    return c


def evolve(wh: np.ndarray, anchors: np.ndarray, rng: np.random.Generator, generations: int = 1000,
           sigma: float = 0.1) -> np.ndarray:
    """Genetic refinement: random multiplicative mutations, kept when the mean best IoU improves."""
    best, fit = anchors.copy(), wh_iou(wh, anchors).max(1).mean()
    for _ in range(generations):
        m = np.ones_like(best)
        while (m == 1).all():
            mask = rng.random(best.shape) < 0.9
            m = np.where(mask, np.clip(rng.normal(1, sigma, best.shape), 0.3, 3.0), 1.0)
        cand = np.maximum(best * m, 2.0)
        f = wh_iou(wh, cand).max(1).mean()
        if f > fit:
            best, fit = cand, f
    return best


def compute_anchors(wh: np.ndarray, k: int = 6, seed: int = 0, restarts: int = 5, generations: int = 1000,
                    max_boxes: int = 30000) -> np.ndarray:
    """k anchors (K, 2) sorted by area for box sizes wh (N, 2) in network pixels."""
    rng = np.random.default_rng(seed)
    if len(wh) > max_boxes:  # k-means and the search see a fixed random sample: same result, bounded time
        wh = wh[rng.choice(len(wh), max_boxes, replace=False)]
    if len(wh) < k:
        raise ValueError(f"only {len(wh)} boxes: need at least {k} to compute {k} anchors")
    runs = [kmeans_iou(wh, k, rng) for _ in range(restarts)]
    best = max(runs, key=lambda c: wh_iou(wh, c).max(1).mean())
    best = evolve(wh, best, rng, generations)
    return best[np.argsort(best.prod(1))]


def box_sizes(records, img_size: int) -> np.ndarray:
    """(N, 2) training-box sizes after letterboxing to img_size (no difficult/crowd, >= 2 px)."""
    wh, scale = [], []
    for r in records:
        b = r.boxes[r.train_mask]
        wh.append(b[:, 2:] - b[:, :2])
        scale.append(np.full(len(b), letterbox_params(r.width, r.height, img_size)[0], np.float32))
    wh = np.concatenate(wh) * np.concatenate(scale)[:, None] if wh else np.zeros((0, 2), np.float32)
    return wh[(wh >= 2).all(1)].astype(np.float64)


def format_anchors(anchors: np.ndarray) -> str:
    return ", ".join(f"{max(1, round(w))},{max(1, round(h))}" for w, h in anchors)


BPR_THRESHOLD = 0.98  # YOLOv5's autoanchor bar: below it, more than 2% of boxes have no anchor of IoU > 0.25


def check_anchors(records, anchors: np.ndarray, img_size: int, refit: bool, seed: int = 0,
                  data: str = "DATA", log: Callable[[str], object] = print) -> np.ndarray:
    """The anchors to train with: `anchors` when the training boxes fit them (BPR of the anchors the heads
    use >= 0.98); else, with `refit`, anchors fitted to the boxes (k-means + evolution, seeded, so every
    DDP rank gets the same) when they fit better. A run saves its anchors with its weights."""
    anchors = np.asarray(anchors, np.float64).reshape(-1, 2)
    wh = box_sizes(records, img_size)
    if len(wh) < len(anchors):
        return anchors.astype(np.float32)
    now = anchor_metrics(wh, head_anchors(anchors))
    fit = (f"{now['bpr']:.1%} of {len(wh)} training boxes fit an anchor (IoU > 0.25), "
           f"mean best IoU {now['mean_iou']:.3f}")
    if now["bpr"] >= BPR_THRESHOLD:
        log(f"anchors: {fit}")
        return anchors.astype(np.float32)
    if not refit:
        log(f"anchors: only {fit} at {img_size} px; fit new ones with `python -m utils.data.anchors --data {data} "
            f"--img {img_size}` and train with --anchors FILE, or let training do it: --autoanchor true")
        return anchors.astype(np.float32)
    new = compute_anchors(wh, len(anchors), seed=seed)
    better = anchor_metrics(wh, head_anchors(new))
    if better["mean_iou"] <= now["mean_iou"]:
        log(f"anchors: only {fit}; anchors fitted to the boxes were no better, keeping these")
        return anchors.astype(np.float32)
    log(f"anchors: only {fit} at {img_size} px; training with anchors fitted to the boxes instead "
        f"(--autoanchor): {format_anchors(new)}: {better['bpr']:.1%} fit, mean best IoU {better['mean_iou']:.3f}")
    return new.astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="k-means (1 - IoU) anchors for a data set.")
    ap.add_argument("--data", default="synthetic", help="data YAML, data-set folder, COCO json, or 'synthetic'")
    ap.add_argument("--img", "--img-size", dest="img", type=int, default=416, help="network input size")
    ap.add_argument("--n", type=int, default=6, help="number of anchors (YOLOv4-tiny: 6)")
    ap.add_argument("--anchors", default=str(DEFAULT_ANCHORS), help="current anchors")
    ap.add_argument("--out", default="", help="anchors file to write (default model_data/<data>_anchors_<img>.txt)")
    ap.add_argument("--thr", type=float, default=0.25, help="IoU a box's best anchor must exceed to count in BPR")
    ap.add_argument("--generations", type=int, default=1000, help="genetic refinement steps (0: k-means only)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    try:
        spec = load_data_spec(args.data)
        records, report = load_records(spec, "train" if spec.has_split("train") else "val")
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    wh = box_sizes(records, args.img)
    print(f"{len(wh)} boxes from {len(records)} images ({spec.source}), letterboxed to {args.img}")
    if len(wh) < args.n:
        print(f"error: only {len(wh)} usable boxes, need at least {args.n}", file=sys.stderr)
        return 1
    new = compute_anchors(wh, args.n, args.seed, generations=args.generations)
    rows = [("new", new)]
    try:

        rows.insert(0, ("current", read_anchors(args.anchors).astype(np.float64)))
    except (OSError, ValueError, ImportError) as e:
        print(f"(current anchors not read: {e})")
    for name, a in rows:
        m_all = anchor_metrics(wh, a, args.thr)
        used = head_anchors(a)
        m_used = anchor_metrics(wh, used, args.thr)
        print(f"{name:8s} {format_anchors(a)}\n         all {len(a)}: BPR {m_all['bpr']:.4f}  mean IoU "
              f"{m_all['mean_iou']:.4f} | used by the heads ({len(used)}): BPR {m_used['bpr']:.4f}  "
              f"mean IoU {m_used['mean_iou']:.4f}")
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", Path(str(spec.source)).stem or "data").strip("_") or "data"
    out = Path(args.out) if args.out else MODEL_DATA / f"{stem}_anchors_{args.img}.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(format_anchors(new) + "\n")
    print(f"wrote {out}  (train with --anchors {out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
