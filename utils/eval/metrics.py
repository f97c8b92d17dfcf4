"""Detection metrics: COCO (AP@[.5:.95], AP50, AP75, APs/m/l, AR@1/10/100) and PASCAL VOC mAP@0.5.

Why our own code: pycocotools' COCOeval loops in Python per image, class and detection (seconds
to minutes per evaluation); here the same algorithm runs as vectorised torch ops on the GPU when
there is one, so training-time evaluation is cheap. `get_map.py --official` still runs pycocotools
and the tests check that both agree to 1e-4.

COCO semantics reproduced exactly (bbox): detections are ranked per (image, class) by score
(stable), cut to the top 100; greedy matching in that order, per IoU threshold and area range,
to the best still-free non-ignored ground truth, else the best ignored one (crowd regions can be
matched many times, and their IoU is intersection / detection area); ties in IoU go to the later
ground truth. Ground truth is ignored when crowd or outside the area range (area = the "area"
field when given, else w*h); an unmatched detection outside the area range is ignored too.
Precision is 101-point interpolated on the monotone envelope; -1 where a class has no
(non-ignored) ground truth, and means skip -1 entries.

VOC semantics follow the devkit as ported in py-faster-rcnn's `voc_eval.py`: every detection of a
class (score order) takes the ground truth of highest overlap (+1 pixel convention, first on ties);
overlap > threshold and not difficult -> true positive if that box is still free, else a false
positive; difficult -> neither. AP is the VOC2007 11-point or the VOC2010+ all-point area.

Box input: the project's xyxy (0-based continuous pixels). Internally COCO-style xywh float64 is
kept, so a COCO results json evaluates bit-for-bit like pycocotools does it.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import torch

# COCOeval's default parameters (same expressions, hence the same float64 values).
COCO_IOU_THRS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
COCO_REC_THRS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
COCO_AREA_RNGS = ((0.0, 1e5**2), (0.0, 32.0**2), (32.0**2, 96.0**2), (96.0**2, 1e5**2))
COCO_AREA_LABELS = ("all", "small", "medium", "large")
COCO_MAX_DETS = (1, 10, 100)
COCO_STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
# voc_eval.py's 11 recall points: np.arange(0., 1.1, 0.1) (0.3 is 0.30000000000000004 there).
VOC07_REC_THRS = np.arange(0.0, 1.1, 0.1)
_EPS = float(np.spacing(1))  # COCOeval's precision denominator guard
_VOC_EPS = float(np.finfo(np.float64).eps)  # voc_eval.py's precision denominator guard


# ----------------------------------------------------------------------------- tables
@dataclass
class DetTable:
    """All detections of a data set, flat. boxes are xywh float64 (COCO's own form)."""
    image: torch.Tensor  # (N,) int64 index of the image, 0..I-1
    boxes: torch.Tensor  # (N, 4) float64 x, y, w, h
    scores: torch.Tensor  # (N,) float64
    labels: torch.Tensor  # (N,) int64 class index 0..K-1

    def to(self, device: torch.device | str) -> "DetTable":
        return DetTable(*(t.to(device) for t in (self.image, self.boxes, self.scores, self.labels)))


@dataclass
class GtTable:
    """All ground-truth boxes of a data set, flat. boxes are xywh float64."""
    image: torch.Tensor  # (M,) int64
    boxes: torch.Tensor  # (M, 4) float64 x, y, w, h
    labels: torch.Tensor  # (M,) int64
    iscrowd: torch.Tensor  # (M,) bool
    difficult: torch.Tensor  # (M,) bool
    area: torch.Tensor  # (M,) float64, COCO "area" (used only for the area ranges)

    def to(self, device: torch.device | str) -> "GtTable":
        return GtTable(*(t.to(device) for t in (self.image, self.boxes, self.labels, self.iscrowd,
                                                self.difficult, self.area)))


def _xyxy_to_xywh(b: torch.Tensor) -> torch.Tensor:
    b = b.reshape(-1, 4).to(torch.float64)
    return torch.cat([b[:, :2], b[:, 2:] - b[:, :2]], dim=1)


def tables_from_lists(preds: Sequence[Mapping[str, torch.Tensor]],
                      gts: Sequence[Mapping[str, torch.Tensor]]) -> tuple[DetTable, GtTable]:
    """Flatten the per-image dicts of the metrics API (xyxy boxes) into tables."""
    if len(preds) != len(gts):
        raise ValueError(f"got {len(preds)} prediction entries but {len(gts)} ground-truth entries; "
                         "pass one of each per image, in the same order")
    cpu = torch.device("cpu")

    def cat(items, key, dtype, shape=(-1,), default=None):
        parts = []
        for it in items:
            v = it.get(key) if default is not None else it[key]
            if v is None:
                v = default(it)
            parts.append(torch.as_tensor(v).to(cpu).reshape(*shape).to(dtype))
        if not parts:
            return torch.zeros((0,) + tuple(shape[1:]), dtype=dtype)
        return torch.cat(parts)

    n_det = torch.tensor([int(torch.as_tensor(p["scores"]).numel()) for p in preds], dtype=torch.int64)
    n_gt = torch.tensor([int(torch.as_tensor(g["labels"]).numel()) for g in gts], dtype=torch.int64)
    img_ar = torch.arange(len(preds), dtype=torch.int64)
    det_boxes = _xyxy_to_xywh(cat(preds, "boxes", torch.float64, (-1, 4)))
    dets = DetTable(torch.repeat_interleave(img_ar, n_det), det_boxes,
                    cat(preds, "scores", torch.float64), cat(preds, "labels", torch.int64))
    gt_boxes = _xyxy_to_xywh(cat(gts, "boxes", torch.float64, (-1, 4)))

    def zeros_bool(g):
        return torch.zeros(int(torch.as_tensor(g["labels"]).numel()), dtype=torch.bool)

    def box_area(g):
        b = torch.as_tensor(g["boxes"]).reshape(-1, 4).to(torch.float64)
        return (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])

    gtab = GtTable(torch.repeat_interleave(img_ar, n_gt), gt_boxes, cat(gts, "labels", torch.int64),
                   cat(gts, "iscrowd", torch.bool, default=zeros_bool),
                   cat(gts, "difficult", torch.bool, default=zeros_bool),
                   cat(gts, "area", torch.float64, default=box_area))
    for name, t, n in (("prediction", dets.boxes, dets.scores.numel()), ("ground-truth", gtab.boxes, gtab.labels.numel())):
        if t.shape[0] != n:
            raise ValueError(f"{name} boxes and labels/scores differ in count ({t.shape[0]} vs {n})")
    return dets, gtab


def _check_tables(dets: DetTable, gts: GtTable, num_images: int, num_classes: int) -> None:
    for name, tab in (("prediction", dets), ("ground-truth", gts)):
        if tab.labels.numel() and (int(tab.labels.min()) < 0 or int(tab.labels.max()) >= num_classes):
            raise ValueError(f"{name} labels must be in 0..{num_classes - 1}, got "
                             f"{int(tab.labels.min())}..{int(tab.labels.max())}")
        if tab.image.numel() and (int(tab.image.min()) < 0 or int(tab.image.max()) >= num_images):
            raise ValueError(f"{name} image index out of range 0..{num_images - 1}")
        if not bool(torch.isfinite(tab.boxes).all()):
            raise ValueError(f"{name} boxes contain NaN or inf")
    if dets.scores.numel() and not bool(torch.isfinite(dets.scores).all()):
        raise ValueError("prediction scores contain NaN or inf")


def _default_device(device: torch.device | str | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@contextlib.contextmanager
def _one_cpu_thread(device: torch.device):
    """The metrics are many small tensor ops: on CPU, intra-op threads cost more than they give,
    and 10x more when the cores are busy (data-loader workers, other jobs). Restored afterwards."""
    if device.type != "cpu":
        yield
        return
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


# ----------------------------------------------------------------------------- segment helpers
def _rank_in_group(sorted_keys: torch.Tensor) -> torch.Tensor:
    """Position of each element inside its run of equal keys (keys already sorted)."""
    if sorted_keys.numel() == 0:
        return sorted_keys.clone()
    _, counts = torch.unique_consecutive(sorted_keys, return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    return torch.arange(sorted_keys.numel(), device=sorted_keys.device) - torch.repeat_interleave(starts, counts)


def _scatter(out: torch.Tensor, index: torch.Tensor, src: torch.Tensor, reduce: str) -> torch.Tensor:
    """out[index[i]] = reduce(out[index[i]], src[i]) along dim 0 (rows of src may be vectors)."""
    if src.dim() > 1:
        index = index.view(-1, *([1] * (src.dim() - 1))).expand_as(src)
    return out.scatter_reduce_(0, index, src, reduce, include_self=True)


def _stable_order(*keys: torch.Tensor) -> torch.Tensor:
    """Permutation sorting lexicographically by keys (first key most significant), stable."""
    n = keys[0].numel()
    perm = torch.arange(n, device=keys[0].device)
    for k in reversed(keys):
        perm = perm[torch.sort(k[perm], stable=True).indices]
    return perm


def _group_pairs(det_key: torch.Tensor, gt_key_sorted: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """All (det, gt) index pairs with equal group key; gt indices refer to the sorted gt order and
    come out ascending per det."""
    lo = torch.searchsorted(gt_key_sorted, det_key, right=False)
    hi = torch.searchsorted(gt_key_sorted, det_key, right=True)
    n = hi - lo
    pd = torch.repeat_interleave(torch.arange(det_key.numel(), device=det_key.device), n)
    first = torch.cumsum(n, 0) - n
    pg = lo[pd] + (torch.arange(pd.numel(), device=det_key.device) - first[pd])
    return pd, pg


def _segment_suffix_max(values: torch.Tensor, seg: torch.Tensor, num_segs: int) -> torch.Tensor:
    """max(values[..., j:end_of_segment]) for each j; values in [0, 1], seg ascending (last dim).
    An offset per segment stops the running max at segment borders; the result is gathered from
    the original values, so it is exact unless two values differ by less than the float64 spacing
    at 2 * num_segs (about 1e-12 for a thousand segments)."""
    offset = 2.0 * (num_segs - 1 - seg).to(values.dtype)
    shifted = torch.flip(values + offset, dims=[-1])
    idx = torch.cummax(shifted, dim=-1).indices
    idx = values.shape[-1] - 1 - torch.flip(idx, dims=[-1])
    return torch.gather(values, -1, idx)


def _first_index_at_least(x: torch.Tensor, seg: torch.Tensor, thrs: torch.Tensor, num_segs: int) -> torch.Tensor:
    """For rows x (B, N) that are non-decreasing inside each segment, the count of entries of a
    segment that are < thr, per (row, segment, thr): (B, S, R). Exact comparisons (no offsets)."""
    B, _ = x.shape
    R = thrs.numel()
    c = torch.searchsorted(thrs, x.contiguous(), right=True)  # number of thresholds <= x
    idx = (torch.arange(B, device=x.device)[:, None] * num_segs + seg[None, :]) * (R + 1) + c
    hist = torch.bincount(idx.reshape(-1), minlength=B * num_segs * (R + 1)).reshape(B, num_segs, R + 1)
    return torch.cumsum(hist, dim=-1)[..., :R]


def _interp_precision(prec: torch.Tensor, rec: torch.Tensor, seg: torch.Tensor, starts: torch.Tensor,
                      counts: torch.Tensor, rec_thrs: torch.Tensor, num_segs: int) -> torch.Tensor:
    """Precision envelope sampled at recall thresholds, per segment: (B, S, R); 0 past the last
    recall reached (COCOeval's and voc_eval's rule)."""
    B, N = prec.shape
    R = rec_thrs.numel()
    if N == 0:
        return prec.new_zeros(B, num_segs, R)
    env = _segment_suffix_max(prec, seg, num_segs)
    below = _first_index_at_least(rec, seg, rec_thrs, num_segs)  # (B, S, R)
    valid = below < counts[None, :, None]
    pos = (starts[None, :, None] + below).clamp(max=N - 1)
    q = torch.gather(env, 1, pos.reshape(B, -1)).reshape(B, num_segs, R)
    return torch.where(valid, q, torch.zeros_like(q))


def _segment_cumsum(flags: torch.Tensor, seg_starts_of: torch.Tensor) -> torch.Tensor:
    """Cumulative sum along the last dim restarting at each segment; seg_starts_of[j] is the start
    index of j's segment. Exact for 0/1 float64 flags."""
    cs = torch.cumsum(flags, dim=-1)
    before = torch.cat([cs.new_zeros(cs.shape[:-1] + (1,)), cs], dim=-1)
    return cs - before[..., seg_starts_of]


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
    env = _segment_suffix_max(pr[None], g_i, T * K)[0]
    j = need[None].expand(T, K, R)
    # j = 0: the first detection (precision max of all); j >= 1: the j-th true positive
    pos = off_tk[..., None] + (j - 1).clamp(min=0)
    valid = (j <= cnt_tk[..., None]) & (cnt_tk[..., None] > 0)
    q = env[pos.clamp(max=g_i.numel() - 1)]
    return torch.where(valid, q, torch.zeros_like(q)), rec


# ----------------------------------------------------------------------------- COCO
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
    _check_tables(dets, gts, num_images, num_classes)
    dev = _default_device(device)
    with _one_cpu_thread(dev):
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
    perm = _stable_order(d_key_all, -dets.scores)
    d_key = d_key_all[perm]
    rank = _rank_in_group(d_key)
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
    pd, pg = _group_pairs(d_key, g_key)
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
    acc = _stable_order(d_cls, -d_score)
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


def coco_metrics(preds: Sequence[Mapping[str, torch.Tensor]], gts: Sequence[Mapping[str, torch.Tensor]],
                 num_classes: int, *, image_ids: Sequence[int] | None = None,
                 iou_thrs: Sequence[float] | None = None,
                 device: torch.device | str | None = None) -> CocoMetrics:
    """COCO metrics from per-image dicts (xyxy boxes; see the metrics API in the design notes)."""
    dets, gtab = tables_from_lists(preds, gts)
    return coco_evaluate_tables(dets, gtab, len(preds), num_classes, image_ids=image_ids,
                                iou_thrs=iou_thrs, device=device)


# ----------------------------------------------------------------------------- VOC
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
    _check_tables(dets, gts, num_images, num_classes)
    dev = _default_device(device)
    with _one_cpu_thread(dev):
        return _voc_evaluate(dets, gts, num_images, num_classes, iou_thr, score_thr, dev)


def _voc_evaluate(dets: DetTable, gts: GtTable, num_images: int, num_classes: int, iou_thr: float,
                  score_thr: float, dev: torch.device) -> VocMetrics:
    dets, gts = dets.to(dev), gts.to(dev)
    K, I = num_classes, num_images
    f64 = torch.float64
    # Detections of a class in score order (stable: ties keep image order, then listed order).
    order = _stable_order(dets.labels, -dets.scores)
    d_cls, d_img, d_box, d_score = dets.labels[order], dets.image[order], dets.boxes[order], dets.scores[order]
    N = d_cls.numel()
    g_key_all = gts.labels * I + gts.image
    gperm = torch.sort(g_key_all, stable=True).indices
    g_key, g_box, g_cls = g_key_all[gperm], gts.boxes[gperm], gts.labels[gperm]
    g_dif = (gts.difficult | gts.iscrowd)[gperm]
    npos = torch.zeros(K, dtype=torch.int64, device=dev).index_add_(0, g_cls, (~g_dif).long())

    pd, pg = _group_pairs(d_cls * I + d_img, g_key)
    ov = _voc_overlap(d_box[pd], g_box[pg])
    ovmax = _scatter(torch.full((N,), -float("inf"), dtype=f64, device=dev), pd, ov, "amax")
    big = torch.iinfo(torch.int64).max
    jmax = _scatter(torch.full((N,), big, dtype=torch.int64, device=dev), pd,
                    torch.where(ov == ovmax[pd], pg, torch.full_like(pg, big)), "amin")
    hit = ovmax > iou_thr
    j = torch.where(hit, jmax, torch.zeros_like(jmax))
    dif = hit & g_dif[j] if g_dif.numel() else torch.zeros_like(hit)
    cand = hit & ~dif
    pos = torch.arange(N, device=dev)
    first = _scatter(torch.full((max(g_key.numel(), 1),), big, dtype=torch.int64, device=dev),
                     j[cand], pos[cand], "amin")
    tp = cand & (first[j] == pos)
    fp = ~tp & ~dif

    counts = torch.bincount(d_cls, minlength=K)
    starts = torch.cumsum(counts, 0) - counts
    seg_start = starts[d_cls]
    ctp = _segment_cumsum(tp.to(f64)[None], seg_start)  # (1, N)
    cfp = _segment_cumsum(fp.to(f64)[None], seg_start)
    denom = npos.clamp(min=1).to(f64)
    rec = ctp / denom[d_cls][None]
    prec = ctp / torch.clamp(ctp + cfp, min=_VOC_EPS)
    # All-point: sum over detections of (rec_j - rec_{j-1}) * envelope_j inside each class.
    env = _segment_suffix_max(prec, d_cls, K) if N else prec
    prev = torch.cat([rec.new_zeros(1, 1), rec[:, :-1]], dim=1)
    is_first = pos == seg_start
    prev = torch.where(is_first[None], torch.zeros_like(prev), prev)
    ap_all = torch.zeros(K, dtype=f64, device=dev).index_add_(0, d_cls, ((rec - prev) * env)[0])
    thr11 = torch.as_tensor(VOC07_REC_THRS, dtype=f64, device=dev)
    q11 = _interp_precision(prec, rec, d_cls, starts, counts, thr11, K)[0]  # (K, 11)
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


def voc_metrics(preds: Sequence[Mapping[str, torch.Tensor]], gts: Sequence[Mapping[str, torch.Tensor]],
                num_classes: int, *, iou_thr: float = 0.5, score_thr: float = 0.5,
                device: torch.device | str | None = None) -> VocMetrics:
    """VOC metrics from per-image dicts (xyxy boxes; "difficult" boxes are ignored)."""
    dets, gtab = tables_from_lists(preds, gts)
    return voc_evaluate_tables(dets, gtab, len(preds), num_classes, iou_thr=iou_thr,
                               score_thr=score_thr, device=device)
