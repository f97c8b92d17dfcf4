"""COCO metrics (AP@[.5:.95], AP50, AP75, APs/m/l, AR@1/10/100) as vectorised torch ops on flat tables.

COCO semantics reproduced exactly (bbox): detections are ranked per (image, class) by score
(stable), cut to the top 100; greedy matching in that order, per IoU threshold and area range,
to the best still-free non-ignored ground truth, else the best ignored one (crowd regions can be
matched many times, and their IoU is intersection / detection area); ties in IoU go to the later
ground truth. Ground truth is ignored when crowd or outside the area range (area = the "area"
field when given, else w*h); an unmatched detection outside the area range is ignored too.
Precision is 101-point interpolated on the monotone envelope; -1 where a class has no
(non-ignored) ground truth, and means skip -1 entries.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from utils.eval.tables import (
    DetTable,
    GtTable,
    check_tables,
    default_device,
    group_pairs,
    one_cpu_thread,
    rank_in_group,
    segment_suffix_max,
    stable_order,
)

# COCOeval's default parameters (same expressions, hence the same float64 values).
COCO_IOU_THRS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
COCO_REC_THRS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
COCO_AREA_RNGS = ((0.0, 1e5**2), (0.0, 32.0**2), (32.0**2, 96.0**2), (96.0**2, 1e5**2))
COCO_AREA_LABELS = ("all", "small", "medium", "large")
COCO_MAX_DETS = (1, 10, 100)
COCO_STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
_EPS = float(np.spacing(1))  # COCOeval's precision denominator guard


def _tp_needed(npig: torch.Tensor, rec_thrs: torch.Tensor) -> torch.Tensor:
    """(K, R): the smallest true-positive count j with float64 j / npig >= threshold, exactly the
    comparison COCOeval's searchsorted makes on its recall array."""
    n = npig.clamp(min=1).to(torch.float64)
    j0 = torch.ceil(rec_thrs[None, :] * n[:, None]).long()
    cand = (j0[..., None] + torch.tensor([-1, 0, 1], device=npig.device)).clamp(min=0)
    ok = cand.to(torch.float64) / n[:, None, None] >= rec_thrs[None, :, None]
    big = torch.iinfo(torch.int64).max
    return torch.where(ok, cand, torch.full_like(cand, big)).min(dim=-1).values


def _pr_at_recall(tp: torch.Tensor, fp: torch.Tensor, cls: torch.Tensor, npig: torch.Tensor, need: torch.Tensor,
                  K: int) -> tuple[torch.Tensor, torch.Tensor]:
    """COCOeval's interpolated precision (T, K, R) and final recall (T, K) for detections sorted by
    class, then score. tp / fp: (n, T) flags. Only true positives are visited: precision only rises
    at a true positive, so the envelope's maxima and the first index reaching a recall lie there."""
    n, T = tp.shape
    R = need.shape[1]
    dev = tp.device
    counts = torch.bincount(cls, minlength=K)
    starts = torch.cumsum(counts, 0) - counts
    cfp = torch.cumsum(fp.T.to(torch.int32), dim=1, dtype=torch.int32)  # (T, n)
    cfp = torch.cat([torch.zeros(T, 1, dtype=torch.int32, device=dev), cfp], dim=1)  # column i+1: fp up to i
    t_i, idx_i = torch.nonzero(tp.T, as_tuple=True)  # ordered by (t, index): groups (t, class) contiguous
    k_i = cls[idx_i]
    g_i = t_i * K + k_i
    cnt = torch.bincount(g_i, minlength=T * K)
    off = torch.cumsum(cnt, 0) - cnt
    j_i = (torch.arange(g_i.numel(), device=dev) - off[g_i] + 1).to(torch.float64)
    fp_i = (cfp[t_i, idx_i + 1] - cfp[t_i, starts[k_i]]).to(torch.float64)
    pr = j_i / (fp_i + j_i + _EPS)  # COCOeval: tp / (fp + tp + eps)
    cnt_tk, off_tk = cnt.view(T, K), off.view(T, K)
    rec = cnt_tk.to(torch.float64) / npig.clamp(min=1).to(torch.float64)[None, :]
    if g_i.numel() == 0:
        return torch.zeros(T, K, R, dtype=torch.float64, device=dev), rec
    env = segment_suffix_max(pr[None], g_i, T * K)[0]
    j = need[None].expand(T, K, R)
    # j = 0: the first detection (precision max of all); j >= 1: the j-th true positive
    pos = off_tk[..., None] + (j - 1).clamp(min=0)
    valid = (j <= cnt_tk[..., None]) & (cnt_tk[..., None] > 0)
    q = env[pos.clamp(max=g_i.numel() - 1)]
    return torch.where(valid, q, torch.zeros_like(q)), rec


@dataclass
class CocoMetrics:
    """COCO summary (fractions; -1 = no ground truth), per-class AP@[.5:.95] and the raw arrays."""
    stats: dict[str, float]
    per_class: list[float]
    precision: np.ndarray  # (T, R, K, A, M) as COCOeval.eval["precision"]
    recall: np.ndarray  # (T, K, A, M) as COCOeval.eval["recall"]
    iou_thrs: np.ndarray = field(default_factory=lambda: COCO_IOU_THRS.copy())
    rec_thrs: np.ndarray = field(default_factory=lambda: COCO_REC_THRS.copy())

    def stats_array(self) -> np.ndarray:
        """The 12 numbers in COCOeval.stats order."""
        return np.array([self.stats[k] for k in COCO_STAT_NAMES])


def _coco_iou(d: torch.Tensor, g: torch.Tensor, crowd: torch.Tensor) -> torch.Tensor:
    """Pairwise (row i with row i) IoU of xywh boxes, maskApi's bbIou arithmetic, float64."""
    w = torch.minimum(d[:, 0] + d[:, 2], g[:, 0] + g[:, 2]) - torch.maximum(d[:, 0], g[:, 0])
    h = torch.minimum(d[:, 1] + d[:, 3], g[:, 1] + g[:, 3]) - torch.maximum(d[:, 1], g[:, 1])
    inter = w * h
    da = d[:, 2] * d[:, 3]
    ga = g[:, 2] * g[:, 3]
    union = torch.where(crowd, da, da + ga - inter)
    iou = inter / union
    return torch.where((w > 0) & (h > 0), iou, torch.zeros_like(iou))


def _summary(precision: np.ndarray, recall: np.ndarray, iou_thrs: np.ndarray) -> dict[str, float]:
    def mean_valid(s: np.ndarray) -> float:
        v = s[s > -1]
        return float(np.mean(v)) if v.size else -1.0

    def ap(t=None, a=0, m=2):
        s = precision if t is None else precision[np.where(t == iou_thrs)[0]]
        return mean_valid(s[:, :, :, a, m])

    def ar(a=0, m=2):
        return mean_valid(recall[:, :, a, m])

    vals = [ap(), ap(0.5), ap(0.75), ap(a=1), ap(a=2), ap(a=3),
            ar(m=0), ar(m=1), ar(m=2), ar(a=1), ar(a=2), ar(a=3)]
    return dict(zip(COCO_STAT_NAMES, vals))


def coco_evaluate_tables(dets: DetTable, gts: GtTable, num_images: int, num_classes: int, *,
                         image_ids: Sequence[int] | torch.Tensor | None = None,
                         iou_thrs: Sequence[float] | None = None,
                         device: torch.device | str | None = None) -> CocoMetrics:
    """COCOeval (bbox) on flat tables. image_ids only set the order in which images are
    concatenated before ranking by score (COCOeval sorts by image id; it matters for tied scores)."""
    check_tables(dets, gts, num_images, num_classes)
    dev = default_device(device)
    with one_cpu_thread(dev):
        return _coco_evaluate(dets, gts, num_images, num_classes, image_ids, iou_thrs, dev)


def _coco_evaluate(dets: DetTable, gts: GtTable, num_images: int, num_classes: int, image_ids, iou_thrs,
                   dev: torch.device) -> CocoMetrics:
    dets, gts = dets.to(dev), gts.to(dev)
    K, I = num_classes, num_images
    f64 = torch.float64
    thr_np = COCO_IOU_THRS if iou_thrs is None else np.asarray(iou_thrs, dtype=np.float64)
    thr = torch.as_tensor(np.minimum(thr_np, 1 - 1e-10), dtype=f64, device=dev)
    T, A, M = thr.numel(), len(COCO_AREA_RNGS), len(COCO_MAX_DETS)
    AT = A * T
    rec_thrs = torch.as_tensor(COCO_REC_THRS, dtype=f64, device=dev)
    R = rec_thrs.numel()
    rng = torch.tensor(COCO_AREA_RNGS, dtype=f64, device=dev)  # (A, 2)
    max_det = max(COCO_MAX_DETS)

    if image_ids is None:
        img_rank = torch.arange(I, device=dev)
    else:
        ids = torch.as_tensor(image_ids, device=dev).reshape(-1)
        if ids.numel() != I:
            raise ValueError(f"image_ids has {ids.numel()} entries for {I} images")
        img_rank = torch.empty(I, dtype=torch.int64, device=dev)
        img_rank[torch.sort(ids, stable=True).indices] = torch.arange(I, device=dev)

    # -- detections: per (class, image) group, score descending (stable), top max_det.
    d_key_all = dets.labels * I + img_rank[dets.image]
    perm = stable_order(d_key_all, -dets.scores)
    d_key = d_key_all[perm]
    rank = rank_in_group(d_key)
    keep = rank < max_det
    perm, d_key, rank = perm[keep], d_key[keep], rank[keep]
    d_box, d_score, d_cls = dets.boxes[perm], dets.scores[perm], dets.labels[perm]
    d_area = d_box[:, 2] * d_box[:, 3]
    N = d_key.numel()

    # -- ground truth: per group, original order.
    g_key_all = gts.labels * I + img_rank[gts.image]
    gperm = torch.sort(g_key_all, stable=True).indices
    g_key, g_box, g_cls = g_key_all[gperm], gts.boxes[gperm], gts.labels[gperm]
    g_crowd, g_area = gts.iscrowd[gperm], gts.area[gperm]
    Mg = g_key.numel()
    g_ign = g_crowd[:, None] | (g_area[:, None] < rng[None, :, 0]) | (g_area[:, None] > rng[None, :, 1])  # (Mg, A)
    ign_at = g_ign.repeat_interleave(T, dim=1)  # (Mg, A*T), column a*T + t
    thr_at = thr.repeat(A)  # (A*T,)

    # -- candidate pairs: same group and IoU >= the lowest threshold (others can never match).
    pd, pg = group_pairs(d_key, g_key)
    iou = _coco_iou(d_box[pd], g_box[pg], g_crowd[pg])
    sel = iou >= thr.min()
    pd, pg, iou = pd[sel], pg[sel], iou[sel]
    o = torch.sort(rank[pd], stable=True).indices  # by detection rank; per det the gts stay ascending
    pd, pg, iou = pd[o], pg[o], iou[o]
    P = pd.numel()

    tp = torch.zeros(N, AT, dtype=torch.bool, device=dev)
    d_out = (d_area[:, None] < rng[None, :, 0]) | (d_area[:, None] > rng[None, :, 1])  # (N, A)
    dt_ig = d_out.repeat_interleave(T, dim=1)
    if P:
        new = torch.ones(P, dtype=torch.bool, device=dev)
        new[1:] = pd[1:] != pd[:-1]
        slot = torch.cumsum(new, 0) - 1  # one slot per detection that has a candidate
        slot_det = pd[new]
        S = slot_det.numel()
        run_start = torch.nonzero(new).flatten()
        pos = torch.arange(P, device=dev) - run_start[slot]  # place of the pair in its detection's run
        p_rank = rank[pd]
        step_start = torch.nonzero(torch.cat([torch.ones(1, dtype=torch.bool, device=dev),
                                              p_rank[1:] != p_rank[:-1]])).flatten()
        step_id = torch.cumsum(torch.zeros(P, dtype=torch.int64, device=dev).index_fill_(0, step_start, 1), 0) - 1
        width = torch.zeros(step_start.numel(), dtype=torch.int64, device=dev).scatter_reduce_(
            0, step_id, pos + 1, "amax")
        bounds = step_start.tolist() + [P]
        slot_at = slot[step_start].tolist() + [S]
        widths = width.tolist()
        none = Mg  # a sentinel ground truth: "no match"
        slot_match = torch.full((S, AT), none, dtype=torch.int64, device=dev)
        taken = torch.zeros(Mg + 1, AT, dtype=torch.bool, device=dev)
        ign_x = torch.cat([ign_at, torch.ones(1, AT, dtype=torch.bool, device=dev)])
        crowd_x = torch.cat([g_crowd, torch.zeros(1, dtype=torch.bool, device=dev)])
        col = torch.arange(AT, device=dev)
        # Greedy matching is sequential in score order inside a group: one step per rank (<= 100),
        # each step vectorised over all groups, IoU thresholds and area ranges; a step's candidates
        # are laid out densely (detection x its candidate ground truths, in ground-truth order).
        for step in range(len(bounds) - 1):
            s, e = bounds[step], bounds[step + 1]
            s0, nloc, L = slot_at[step], slot_at[step + 1] - slot_at[step], widths[step]
            ld, ps = slot[s:e] - s0, pos[s:e]
            iou_d = torch.full((nloc, L), -1.0, dtype=f64, device=dev)
            iou_d[ld, ps] = iou[s:e]
            g_d = torch.full((nloc, L), none, dtype=torch.int64, device=dev)
            g_d[ld, ps] = pg[s:e]
            cand = (iou_d[:, :, None] >= thr_at) & (~taken[g_d] | crowd_x[g_d][:, :, None])  # (nloc, L, AT)
            ig = ign_x[g_d]
            has_reg = (cand & ~ig).any(dim=1, keepdim=True)  # a regular gt is free: ignored ones wait
            key = torch.where(cand & ~(ig & has_reg), iou_d[:, :, None], torch.full_like(cand, -1.0, dtype=f64))
            best, idx = key.flip(1).max(dim=1)  # first max of the flipped run = last max: ties go to the later gt
            chosen = torch.where(best >= 0, torch.gather(g_d, 1, L - 1 - idx), torch.full_like(idx, none))
            slot_match[s0:s0 + nloc] = chosen
            taken[chosen, col[None, :].expand_as(chosen)] = True  # unmatched write the sentinel row
        matched = slot_match != none
        m_ign = ign_x[slot_match, col[None, :].expand_as(slot_match)]
        tp[slot_det] = matched & ~m_ign
        dt_ig[slot_det] = torch.where(matched, m_ign, dt_ig[slot_det])

    # -- accumulate: per class, all images, score descending (ties: image order, then rank).
    acc = stable_order(d_cls, -d_score)
    cls_s, rank_s = d_cls[acc], rank[acc]
    tp_s = tp[acc].reshape(N, A, T)
    ig_s = dt_ig[acc].reshape(N, A, T)
    fp_s = ~tp_s & ~ig_s
    npig = torch.zeros(K, A, dtype=torch.int64, device=dev).index_add_(0, g_cls, (~g_ign).long())  # (K, A)
    precision = torch.full((T, R, K, A, M), -1.0, dtype=f64, device=dev)
    recall = torch.full((T, K, A, M), -1.0, dtype=f64, device=dev)
    for a in range(A):
        has_gt = npig[:, a] > 0
        need = _tp_needed(npig[:, a], rec_thrs)  # (K, R)
        # a detection ignored at every IoU threshold adds nothing to tp or fp: leave it out
        live = ~ig_s[:, a, :].all(dim=1)
        for mi, md in enumerate(COCO_MAX_DETS):
            sel = torch.nonzero(live & (rank_s < md)).flatten()
            q, rec_k = _pr_at_recall(tp_s[sel, a, :], fp_s[sel, a, :], cls_s[sel], npig[:, a], need, K)
            precision[:, :, :, a, mi] = torch.where(has_gt[None, :, None], q, torch.full_like(q, -1.0)).permute(0, 2, 1)
            recall[:, :, a, mi] = torch.where(has_gt[None, :], rec_k, torch.full_like(rec_k, -1.0))

    precision_np, recall_np = precision.cpu().numpy(), recall.cpu().numpy()
    stats = _summary(precision_np, recall_np, thr_np)
    per_class = []
    for k in range(K):
        s = precision_np[:, :, k, 0, M - 1]
        per_class.append(float(np.mean(s[s > -1])) if (s > -1).any() else -1.0)
    return CocoMetrics(stats, per_class, precision_np, recall_np, thr_np.copy(), COCO_REC_THRS.copy())
