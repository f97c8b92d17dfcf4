"""What an evaluation shows a person: the per-class table, the one fixed-shape JSON, PR-curve PNGs.

The JSON has the same keys whatever was computed, so scripts that read it never branch:
    {"coco": {"AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "per_class": {name: AP}},
     "voc":  {"mAP", "mAP07", "per_class": {name: AP}}}
Values are fractions in [0, 1]; -1 means "no ground truth" (pycocotools' convention); null means
that metric was not computed (e.g. `--metric voc` leaves the COCO numbers null).
"""
from __future__ import annotations

import json
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from utils.eval.metrics import CocoMetrics, VocMetrics

COCO_JSON_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100")
VOC_JSON_KEYS = ("mAP", "mAP07")


def _clean(v: float | None) -> float | None:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    return float(v)


def metrics_dict(class_names: Sequence[str], coco: CocoMetrics | None, voc: VocMetrics | None) -> dict[str, Any]:
    """The fixed-shape dict of every number (see the module docstring)."""
    names = list(class_names)
    if coco is not None:
        c = {k: _clean(coco.stats[k]) for k in COCO_JSON_KEYS}
        c["per_class"] = {n: _clean(v) for n, v in zip(names, coco.per_class)}
    else:
        c = {k: None for k in COCO_JSON_KEYS} | {"per_class": {n: None for n in names}}
    if voc is not None:
        v = {"mAP": _clean(voc.mAP), "mAP07": _clean(voc.mAP07),
             "per_class": {n: _clean(a) for n, a in zip(names, voc.ap)}}
    else:
        v = {k: None for k in VOC_JSON_KEYS} | {"per_class": {n: None for n in names}}
    return {"coco": c, "voc": v}


def save_json(path: str | Path, obj: Any) -> Path:
    """Write JSON atomically (temp file + rename): a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _fmt(v: float | None, width: int = 7) -> str:
    if v is None:
        return " " * (width - 1) + "-"
    if v < 0:
        return f"{'n/a':>{width}}"
    return f"{v:{width}.4f}"


def format_table(class_names: Sequence[str], coco: CocoMetrics | None, voc: VocMetrics | None,
                 num_gt: Sequence[int] | None = None, num_det: Sequence[int] | None = None) -> str:
    """Per-class table then the summary lines; columns for whatever was computed."""
    names = list(class_names)
    w = max([5] + [len(n) for n in names])
    head = f"{'class':<{w}} {'gt':>6} {'dets':>7}"
    if coco is not None:
        head += f" {'AP50-95':>7} {'AP50':>7} {'AP75':>7}"
    if voc is not None:
        head += f" {'vocAP':>7} {'AP07':>7} {'P':>7} {'R':>7} {'F1':>7}"
    lines = [head, "-" * len(head)]
    ious = coco.iou_thrs if coco is not None else None
    for k, n in enumerate(names):
        row = f"{n:<{w}} {num_gt[k] if num_gt is not None else '':>6} {num_det[k] if num_det is not None else '':>7}"
        if coco is not None:
            row += f" {_fmt(coco.per_class[k])} {_fmt(_class_ap_at(coco, k, 0.5, ious))} {_fmt(_class_ap_at(coco, k, 0.75, ious))}"
        if voc is not None:
            row += (f" {_fmt(voc.ap[k])} {_fmt(voc.ap07[k])} {_fmt(voc.precision[k])} {_fmt(voc.recall[k])}"
                    f" {_fmt(voc.f1[k])}")
        lines.append(row)
    lines.append("")
    if coco is not None:
        s = coco.stats
        lines += [
            f"COCO  AP@[.50:.95] {_fmt(s['AP'])}   AP50 {_fmt(s['AP50'])}   AP75 {_fmt(s['AP75'])}",
            f"      AP small {_fmt(s['APs'])}   medium {_fmt(s['APm'])}   large {_fmt(s['APl'])}",
            f"      AR@1 {_fmt(s['AR1'])}   AR@10 {_fmt(s['AR10'])}   AR@100 {_fmt(s['AR100'])}"
            f"   (small {_fmt(s['ARs'])} medium {_fmt(s['ARm'])} large {_fmt(s['ARl'])})",
        ]
    if voc is not None:
        lines.append(f"VOC   mAP@{voc.iou_thr:g} (all-point, VOC2010+) {_fmt(voc.mAP)}   "
                     f"(11-point, VOC2007) {_fmt(voc.mAP07)}   P/R/F1 at score >= {voc.score_thr:g}")
    return "\n".join(lines)


def _class_ap_at(coco: CocoMetrics, k: int, iou: float, ious: np.ndarray) -> float:
    t = np.where(np.isclose(ious, iou))[0]
    if t.size == 0:
        return -1.0
    s = coco.precision[t[0], :, k, 0, -1]
    return float(s.mean()) if (s > -1).any() else -1.0


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "class"


def plot_pr_curves(out_dir: str | Path, class_names: Sequence[str], coco: CocoMetrics | None,
                   voc: VocMetrics | None, per_class: bool = True) -> list[Path]:
    """PR curves: `pr_curve.png` (every class and their mean at IoU 0.5) and, per class,
    `pr_curves/<class>.png`. VOC curves are the raw score-ordered points with their envelope;
    without VOC numbers the COCO 101-point curves at IoU 0.5 are drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = list(class_names)
    curves: list[tuple[np.ndarray, np.ndarray, float] | None] = []
    for k in range(len(names)):
        if voc is not None:
            c = voc.curves[k]
            if voc.ap[k] < 0:
                curves.append(None)
                continue
            rec, prec = c["recall"], c["precision"]
            r = np.concatenate([[0.0], rec, [rec[-1] if len(rec) else 0.0]])
            p = np.concatenate([[prec[0] if len(prec) else 0.0], prec, [0.0]])
            env = np.maximum.accumulate(p[::-1])[::-1]
            curves.append((r, env, voc.ap[k]))
        elif coco is not None:
            t = np.where(np.isclose(coco.iou_thrs, 0.5))[0]
            t = t[0] if t.size else 0
            p = coco.precision[t, :, k, 0, -1]
            curves.append(None if (p < 0).all() else (coco.rec_thrs, p, float(p.mean())))
        else:
            curves.append(None)
    written = []
    grid = np.linspace(0, 1, 101)
    fig, ax = plt.subplots(figsize=(7, 6), dpi=110)
    interp = []
    for n, c in zip(names, curves):
        if c is None:
            continue
        r, p, ap = c
        ax.plot(r, p, lw=1, alpha=0.6, label=f"{n} {ap:.3f}" if len(names) <= 20 else None)
        interp.append(_precision_at(r, p, grid))
    if interp:
        mean = np.mean(interp, axis=0)
        m = voc.mAP if voc is not None else (coco.stats["AP50"] if coco is not None else float("nan"))
        ax.plot(grid, mean, lw=3, color="black", label=f"all classes {m:.3f} mAP@0.5")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title="Precision-recall (IoU 0.5)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=7)
    fig.tight_layout()
    path = out_dir / "pr_curve.png"
    fig.savefig(path)
    plt.close(fig)
    written.append(path)
    if per_class:
        sub = out_dir / "pr_curves"
        sub.mkdir(exist_ok=True)
        for n, c in zip(names, curves):
            if c is None:
                continue
            r, p, ap = c
            fig, ax = plt.subplots(figsize=(5, 4), dpi=100)
            ax.plot(r, p, lw=2)
            ax.fill_between(r, p, step=None, alpha=0.2)
            ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title=f"{n}: AP@0.5 {ap:.4f}")
            ax.grid(alpha=0.3)
            fig.tight_layout()
            path = sub / f"{_safe(n)}.png"
            fig.savefig(path)
            plt.close(fig)
            written.append(path)
    return written


def _precision_at(r: np.ndarray, p: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Envelope precision at each recall of `grid` (0 past the last recall reached)."""
    env = np.maximum.accumulate(np.asarray(p, float)[::-1])[::-1]
    idx = np.searchsorted(np.asarray(r, float), grid, side="left")
    out = np.zeros_like(grid)
    ok = idx < len(env)
    out[ok] = env[idx[ok]]
    return out
