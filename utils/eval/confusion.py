"""Detection confusion matrix (Ultralytics' definition): which classes are taken for which, what is missed.

mAP says how good a detector is; this says how it goes wrong. The matrix is (nc + 1, nc + 1),
rows = predicted class, columns = true class, the last row and column "background":

    [det_class, gt_class]   a detection matched to a ground-truth box (a confusion when they differ)
    [background, gt_class]  a ground-truth box no detection matched (missed)
    [det_class, background] a detection that matched no ground-truth box (false positive)

Per image: detections with score >= `conf` are kept; every (ground truth, detection) pair with IoU
> `iou` (torchvision.ops.box_iou, class-agnostic) is a candidate; candidates become one-to-one
matches in Ultralytics' two passes: each detection keeps its highest-IoU candidate, then each
ground-truth box keeps its highest-IoU detection among those left. (This is not fully greedy: a
detection whose best box is taken by a better detection stays unmatched even when it overlaps a
second, free box.) Ties in IoU go to the higher index, which is what Ultralytics' reversed argsort
gives on small inputs (its order is unspecified there). Ground truth that mAP ignores (VOC
"difficult", COCO iscrowd) is dropped before matching, so a detection on it counts as a background
false positive here, unlike in mAP, where it counts as neither. (Ultralytics keeps score > conf;
we keep score >= conf, like get_map.py's other thresholds; only a score exactly at conf differs.)
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from utils.eval.report import save_json
from utils.eval.tables import DetTable, GtTable

BACKGROUND = "background"


@dataclass
class ConfusionMatrix:
    """Counts (rows predicted, columns true, background last) and the thresholds that made them."""
    matrix: np.ndarray  # (nc + 1, nc + 1) int64
    class_names: list[str]
    conf: float
    iou: float

    @property
    def names(self) -> list[str]:
        """Row / column labels: the classes, then "background"."""
        return list(self.class_names) + [BACKGROUND]

    def normalized(self) -> np.ndarray:
        """Fractions per true class (each column sums to 1; empty columns stay 0)."""
        return column_normalize(self.matrix)

    def as_dict(self) -> dict[str, Any]:
        """The shape of confusion_matrix.json."""
        return {"names": self.names, "rows": "predicted", "columns": "true", "conf": float(self.conf),
                "iou": float(self.iou), "matrix": self.matrix.tolist()}

    def summary(self) -> str:
        """One line for the console: matches (right class), missed, false positives."""
        m, nc = self.matrix, len(self.class_names)
        matched = int(m[:nc, :nc].sum())
        return (f"confusion matrix (score >= {self.conf:g}, IoU > {self.iou:g}): {matched} matched "
                f"({int(np.trace(m[:nc, :nc]))} right class, {matched - int(np.trace(m[:nc, :nc]))} confused), "
                f"{int(m[nc, :nc].sum())} missed, {int(m[:nc, nc].sum())} false positives")


def column_normalize(matrix: np.ndarray) -> np.ndarray:
    """Each column divided by its sum (float64): what became of the boxes of each true class."""
    m = np.asarray(matrix, np.float64)
    tot = m.sum(0, keepdims=True)
    return np.divide(m, tot, out=np.zeros_like(m), where=tot > 0)


def resolve_matches(gt_idx: np.ndarray, det_idx: np.ndarray, iou: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one matches from candidate pairs (indices unique across images), Ultralytics' two passes:
    each detection keeps its best pair, then each ground-truth box its best remaining one (ties:
    higher index). Returns the matched (gt_idx, det_idx)."""
    gt_idx, det_idx, iou = np.asarray(gt_idx, np.int64), np.asarray(det_idx, np.int64), np.asarray(iou, np.float64)
    if gt_idx.size == 0:
        return gt_idx, det_idx
    # pass 1: group by detection, best IoU (then higher gt index) first, keep the first of each group
    o = np.lexsort((-gt_idx, -iou, det_idx))
    first = np.r_[True, det_idx[o][1:] != det_idx[o][:-1]]
    g, d, v = gt_idx[o][first], det_idx[o][first], iou[o][first]
    # pass 2: group by ground truth, best IoU (then higher detection index) first
    o = np.lexsort((-d, -v, g))
    first = np.r_[True, g[o][1:] != g[o][:-1]]
    return g[o][first], d[o][first]


def confusion_counts(dets: DetTable, gts: GtTable, num_classes: int, conf: float = 0.25,
                     iou: float = 0.45) -> np.ndarray:
    """The (nc + 1, nc + 1) int64 matrix of `dets` against `gts` (the tables of utils/eval/metrics.py).
    Candidate pairs are found image by image; the matching then runs once over all of them."""
    from torchvision.ops import box_convert, box_iou  # here, not at the top: ~2 s to import, only needed when counting

    nc = int(num_classes)
    dets, gts = dets.to("cpu"), gts.to("cpu")
    for what, lab in (("detection", dets.labels), ("ground-truth", gts.labels)):
        if lab.numel() and (int(lab.min()) < 0 or int(lab.max()) >= nc):
            raise ValueError(f"{what} class index out of range 0..{nc - 1} (got {int(lab.min())}..{int(lab.max())})")
    keep_d = dets.scores >= conf
    keep_g = ~(gts.iscrowd | gts.difficult)
    d_img, d_cls = dets.image[keep_d], dets.labels[keep_d]
    g_img, g_cls = gts.image[keep_g], gts.labels[keep_g]
    d_box = box_convert(dets.boxes[keep_d].double(), "xywh", "xyxy")  # the tables hold COCO xywh
    g_box = box_convert(gts.boxes[keep_g].double(), "xywh", "xyxy")
    n_img = int(max(d_img.max() + 1 if d_img.numel() else 0, g_img.max() + 1 if g_img.numel() else 0))
    # sort both tables by image so that each image is one contiguous slice
    od, og = torch.sort(d_img, stable=True)[1], torch.sort(g_img, stable=True)[1]
    d_img, d_cls, d_box = d_img[od], d_cls[od], d_box[od]
    g_img, g_cls, g_box = g_img[og], g_cls[og], g_box[og]
    nd = torch.bincount(d_img, minlength=n_img)
    ng = torch.bincount(g_img, minlength=n_img)
    d_start = (torch.cumsum(nd, 0) - nd).tolist()
    g_start = (torch.cumsum(ng, 0) - ng).tolist()
    pg, pd, pv = [], [], []
    for i in torch.nonzero((nd > 0) & (ng > 0)).flatten().tolist():  # one IoU block per image
        gs, ds = g_start[i], d_start[i]
        block = box_iou(g_box[gs:gs + int(ng[i])], d_box[ds:ds + int(nd[i])])
        gi, di = torch.nonzero(block > iou, as_tuple=True)
        pg.append(gi + gs)
        pd.append(di + ds)
        pv.append(block[gi, di])
    if pg:
        mg, md = resolve_matches(torch.cat(pg).numpy(), torch.cat(pd).numpy(), torch.cat(pv).numpy())
    else:
        mg = md = np.zeros(0, np.int64)
    g_cls_np, d_cls_np = g_cls.numpy(), d_cls.numpy()
    g_free = np.ones(len(g_cls_np), bool)
    g_free[mg] = False
    d_free = np.ones(len(d_cls_np), bool)
    d_free[md] = False
    n = nc + 1
    flat = np.concatenate([d_cls_np[md] * n + g_cls_np[mg],  # matched: [pred, true]
                           nc * n + g_cls_np[g_free],  # missed: [background, true]
                           d_cls_np[d_free] * n + nc])  # false positive: [pred, background]
    return np.bincount(flat.astype(np.int64), minlength=n * n).astype(np.int64).reshape(n, n)


def detection_confusion(dets: DetTable, gts: GtTable, class_names: Sequence[str], conf: float = 0.25,
                        iou: float = 0.45) -> ConfusionMatrix:
    """ConfusionMatrix of `dets` against `gts` (see the module docstring for the definition)."""
    return ConfusionMatrix(confusion_counts(dets, gts, len(class_names), conf, iou), list(class_names), conf, iou)


def plot_confusion_matrix(cm: ConfusionMatrix, path: str | Path) -> Path:
    """PNG of the column-normalised matrix (Agg backend: no display needed). Cells are annotated
    when there are at most 30 classes (with their counts up to 15); the x labels carry each true
    column's total, so a fraction can be read as a number of boxes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    names, nc = cm.names, len(cm.class_names)
    frac = cm.normalized()
    shown = np.where(cm.matrix > 0, frac, np.nan)  # empty cells stay white
    side = min(max(6.0, 0.32 * (nc + 1) + 3.0), 26.0)
    fig, ax = plt.subplots(figsize=(side * 1.1, side), dpi=100)
    im = ax.imshow(shown, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class (column)")
    if nc <= 100:
        totals = cm.matrix.sum(0)
        ax.set_xticks(range(nc + 1), [f"{n} ({t})" for n, t in zip(names, totals)], rotation=45, ha="right",
                      rotation_mode="anchor", fontsize=8 if nc <= 30 else 6)
        ax.set_yticks(range(nc + 1), names, fontsize=8 if nc <= 30 else 6)
    if nc <= 30:  # fraction, and the count itself while the cells are large enough
        for r, c in zip(*np.nonzero(cm.matrix)):
            text = f"{frac[r, c]:.2f}" + (f"\n({cm.matrix[r, c]})" if nc <= 15 else "")
            ax.text(c, r, text, ha="center", va="center", fontsize=8 if nc <= 15 else 6,
                    color="white" if frac[r, c] > 0.5 else "black")
    ax.set(xlabel="true", ylabel="predicted",
           title=f"Confusion matrix (score >= {cm.conf:g}, IoU > {cm.iou:g}), normalised per true class")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def save_confusion(out_dir: str | Path, cm: ConfusionMatrix, plot: bool = True) -> list[Path]:
    """Write confusion_matrix.json (and confusion_matrix.png unless plot=False) into out_dir."""
    out_dir = Path(out_dir)
    written = [save_json(out_dir / "confusion_matrix.json", cm.as_dict())]
    if plot:
        written.append(plot_confusion_matrix(cm, out_dir / "confusion_matrix.png"))
    return written
