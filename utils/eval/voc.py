"""PASCAL VOC mAP@0.5 (VOC2007 11-point and VOC2010+ all-point) as vectorised torch ops on flat tables.

VOC semantics follow the devkit as ported in py-faster-rcnn's `voc_eval.py`: every detection of a
class (score order) takes the ground truth of highest overlap (+1 pixel convention, first on ties);
overlap > threshold and not difficult -> true positive if that box is still free, else a false
positive; difficult -> neither. AP is the VOC2007 11-point or the VOC2010+ all-point area.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from utils.eval.tables import (
    DetTable,
    GtTable,
    check_tables,
    default_device,
    group_pairs,
    interp_precision,
    one_cpu_thread,
    scatter,
    segment_cumsum,
    segment_suffix_max,
    stable_order,
)

# voc_eval.py's 11 recall points: np.arange(0., 1.1, 0.1) (0.3 is 0.30000000000000004 there).
VOC07_REC_THRS = np.arange(0.0, 1.1, 0.1)
_VOC_EPS = float(np.finfo(np.float64).eps)  # voc_eval.py's precision denominator guard


@dataclass
class VocMetrics:
    """VOC numbers per class (-1 = no non-difficult ground truth) and their means over classes
    that have ground truth; precision/recall/F1 at score_thr; raw PR curves for plots."""
    mAP: float  # VOC2010+ all-point
    mAP07: float  # VOC2007 11-point
    ap: list[float]
    ap07: list[float]
    precision: list[float]  # at score_thr
    recall: list[float]
    f1: list[float]
    npos: list[int]
    iou_thr: float
    score_thr: float
    curves: list[dict[str, np.ndarray]]  # per class: "recall", "precision", "scores" (score order)


def _voc_overlap(d: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """voc_eval.py's overlap for xywh boxes in our 0-based continuous convention: the devkit box
    is (x1 + 1, y1 + 1, x2, y2) in 1-based inclusive pixels and widths are xmax - xmin + 1."""
    dx1, dy1, dx2, dy2 = d[:, 0] + 1, d[:, 1] + 1, d[:, 0] + d[:, 2], d[:, 1] + d[:, 3]
    gx1, gy1, gx2, gy2 = g[:, 0] + 1, g[:, 1] + 1, g[:, 0] + g[:, 2], g[:, 1] + g[:, 3]
    iw = (torch.minimum(dx2, gx2) - torch.maximum(dx1, gx1) + 1.0).clamp(min=0)
    ih = (torch.minimum(dy2, gy2) - torch.maximum(dy1, gy1) + 1.0).clamp(min=0)
    inter = iw * ih
    uni = (dx2 - dx1 + 1.0) * (dy2 - dy1 + 1.0) + (gx2 - gx1 + 1.0) * (gy2 - gy1 + 1.0) - inter
    return inter / uni


def voc_evaluate_tables(dets: DetTable, gts: GtTable, num_images: int, num_classes: int, *,
                        iou_thr: float = 0.5, score_thr: float = 0.5,
                        device: torch.device | str | None = None) -> VocMetrics:
    """VOC AP per class on flat tables. Crowd boxes count as difficult (the devkit has no crowd)."""
    check_tables(dets, gts, num_images, num_classes)
    dev = default_device(device)
    with one_cpu_thread(dev):
        return _voc_evaluate(dets, gts, num_images, num_classes, iou_thr, score_thr, dev)


def _voc_evaluate(dets: DetTable, gts: GtTable, num_images: int, num_classes: int, iou_thr: float,
                  score_thr: float, dev: torch.device) -> VocMetrics:
    dets, gts = dets.to(dev), gts.to(dev)
    K, I = num_classes, num_images
    f64 = torch.float64
    # Detections of a class in score order (stable: ties keep image order, then listed order).
    order = stable_order(dets.labels, -dets.scores)
    d_cls, d_img, d_box, d_score = dets.labels[order], dets.image[order], dets.boxes[order], dets.scores[order]
    N = d_cls.numel()
    g_key_all = gts.labels * I + gts.image
    gperm = torch.sort(g_key_all, stable=True).indices
    g_key, g_box, g_cls = g_key_all[gperm], gts.boxes[gperm], gts.labels[gperm]
    g_dif = (gts.difficult | gts.iscrowd)[gperm]
    npos = torch.zeros(K, dtype=torch.int64, device=dev).index_add_(0, g_cls, (~g_dif).long())

    pd, pg = group_pairs(d_cls * I + d_img, g_key)
    ov = _voc_overlap(d_box[pd], g_box[pg])
    ovmax = scatter(torch.full((N,), -float("inf"), dtype=f64, device=dev), pd, ov, "amax")
    big = torch.iinfo(torch.int64).max
    jmax = scatter(torch.full((N,), big, dtype=torch.int64, device=dev), pd,
                    torch.where(ov == ovmax[pd], pg, torch.full_like(pg, big)), "amin")
    hit = ovmax > iou_thr
    j = torch.where(hit, jmax, torch.zeros_like(jmax))
    dif = hit & g_dif[j] if g_dif.numel() else torch.zeros_like(hit)
    cand = hit & ~dif
    pos = torch.arange(N, device=dev)
    first = scatter(torch.full((max(g_key.numel(), 1),), big, dtype=torch.int64, device=dev),
                     j[cand], pos[cand], "amin")
    tp = cand & (first[j] == pos)
    fp = ~tp & ~dif

    counts = torch.bincount(d_cls, minlength=K)
    starts = torch.cumsum(counts, 0) - counts
    seg_start = starts[d_cls]
    ctp = segment_cumsum(tp.to(f64)[None], seg_start)  # (1, N)
    cfp = segment_cumsum(fp.to(f64)[None], seg_start)
    denom = npos.clamp(min=1).to(f64)
    rec = ctp / denom[d_cls][None]
    prec = ctp / torch.clamp(ctp + cfp, min=_VOC_EPS)
    # All-point: sum over detections of (rec_j - rec_{j-1}) * envelope_j inside each class.
    env = segment_suffix_max(prec, d_cls, K) if N else prec
    prev = torch.cat([rec.new_zeros(1, 1), rec[:, :-1]], dim=1)
    is_first = pos == seg_start
    prev = torch.where(is_first[None], torch.zeros_like(prev), prev)
    ap_all = torch.zeros(K, dtype=f64, device=dev).index_add_(0, d_cls, ((rec - prev) * env)[0])
    thr11 = torch.as_tensor(VOC07_REC_THRS, dtype=f64, device=dev)
    q11 = interp_precision(prec, rec, d_cls, starts, counts, thr11, K)[0]  # (K, 11)
    ap07 = q11.sum(dim=1) / 11.0

    above = d_score >= score_thr
    ntp = torch.zeros(K, dtype=f64, device=dev).index_add_(0, d_cls, (tp & above).to(f64))
    nfp = torch.zeros(K, dtype=f64, device=dev).index_add_(0, d_cls, (fp & above).to(f64))
    p_at = torch.where(ntp + nfp > 0, ntp / (ntp + nfp).clamp(min=1), torch.zeros_like(ntp))
    r_at = ntp / denom
    f1 = torch.where(p_at + r_at > 0, 2 * p_at * r_at / (p_at + r_at).clamp(min=1e-300), torch.zeros_like(p_at))

    has = (npos > 0).cpu().numpy()
    ap_np, ap07_np = ap_all.cpu().numpy(), ap07.cpu().numpy()
    ap_list = [float(v) if h else -1.0 for v, h in zip(ap_np, has)]
    ap07_list = [float(v) if h else -1.0 for v, h in zip(ap07_np, has)]
    m_all = float(ap_np[has].mean()) if has.any() else -1.0
    m_07 = float(ap07_np[has].mean()) if has.any() else -1.0
    rec_np, prec_np, sc_np = rec[0].cpu().numpy(), prec[0].cpu().numpy(), d_score.cpu().numpy()
    st, ct = starts.cpu().tolist(), counts.cpu().tolist()
    empty = np.zeros(0)
    curves = [{"recall": rec_np[s:s + c], "precision": prec_np[s:s + c], "scores": sc_np[s:s + c]} if h
              else {"recall": empty, "precision": empty, "scores": empty} for s, c, h in zip(st, ct, has)]
    return VocMetrics(m_all, m_07, ap_list, ap07_list,
                      [float(v) if h else -1.0 for v, h in zip(p_at.cpu().numpy(), has)],
                      [float(v) if h else -1.0 for v, h in zip(r_at.cpu().numpy(), has)],
                      [float(v) if h else -1.0 for v, h in zip(f1.cpu().numpy(), has)],
                      npos.cpu().tolist(), float(iou_thr), float(score_thr), curves)
