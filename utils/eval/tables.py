"""Flat detection / ground-truth tables and the segmented torch ops that the COCO and VOC metrics share.

Box input: the project's xyxy (0-based continuous pixels). Internally COCO-style xywh float64 is
kept, so a COCO results json evaluates bit-for-bit like pycocotools does it.
"""
from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch


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


def check_tables(dets: DetTable, gts: GtTable, num_images: int, num_classes: int) -> None:
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


def default_device(device: torch.device | str | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@contextlib.contextmanager
def one_cpu_thread(device: torch.device):
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
def rank_in_group(sorted_keys: torch.Tensor) -> torch.Tensor:
    """Position of each element inside its run of equal keys (keys already sorted)."""
    if sorted_keys.numel() == 0:
        return sorted_keys.clone()
    _, counts = torch.unique_consecutive(sorted_keys, return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    return torch.arange(sorted_keys.numel(), device=sorted_keys.device) - torch.repeat_interleave(starts, counts)


def scatter(out: torch.Tensor, index: torch.Tensor, src: torch.Tensor, reduce: str) -> torch.Tensor:
    """out[index[i]] = reduce(out[index[i]], src[i]) along dim 0 (rows of src may be vectors)."""
    if src.dim() > 1:
        index = index.view(-1, *([1] * (src.dim() - 1))).expand_as(src)
    return out.scatter_reduce_(0, index, src, reduce, include_self=True)


def stable_order(*keys: torch.Tensor) -> torch.Tensor:
    """Permutation sorting lexicographically by keys (first key most significant), stable."""
    n = keys[0].numel()
    perm = torch.arange(n, device=keys[0].device)
    for k in reversed(keys):
        perm = perm[torch.sort(k[perm], stable=True).indices]
    return perm


def group_pairs(det_key: torch.Tensor, gt_key_sorted: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """All (det, gt) index pairs with equal group key; gt indices refer to the sorted gt order and
    come out ascending per det."""
    lo = torch.searchsorted(gt_key_sorted, det_key, right=False)
    hi = torch.searchsorted(gt_key_sorted, det_key, right=True)
    n = hi - lo
    pd = torch.repeat_interleave(torch.arange(det_key.numel(), device=det_key.device), n)
    first = torch.cumsum(n, 0) - n
    pg = lo[pd] + (torch.arange(pd.numel(), device=det_key.device) - first[pd])
    return pd, pg


def segment_suffix_max(values: torch.Tensor, seg: torch.Tensor, num_segs: int) -> torch.Tensor:
    """max(values[..., j:end_of_segment]) for each j; values in [0, 1], seg ascending (last dim).
    An offset per segment stops the running max at segment borders; the result is gathered from
    the original values, so it is exact unless two values differ by less than the float64 spacing
    at 2 * num_segs (about 1e-12 for a thousand segments)."""
    offset = 2.0 * (num_segs - 1 - seg).to(values.dtype)
    shifted = torch.flip(values + offset, dims=[-1])
    idx = torch.cummax(shifted, dim=-1).indices
    idx = values.shape[-1] - 1 - torch.flip(idx, dims=[-1])
    return torch.gather(values, -1, idx)


def first_index_at_least(x: torch.Tensor, seg: torch.Tensor, thrs: torch.Tensor, num_segs: int) -> torch.Tensor:
    """For rows x (B, N) that are non-decreasing inside each segment, the count of entries of a
    segment that are < thr, per (row, segment, thr): (B, S, R). Exact comparisons (no offsets)."""
    B, _ = x.shape
    R = thrs.numel()
    c = torch.searchsorted(thrs, x.contiguous(), right=True)  # number of thresholds <= x
    idx = (torch.arange(B, device=x.device)[:, None] * num_segs + seg[None, :]) * (R + 1) + c
    hist = torch.bincount(idx.reshape(-1), minlength=B * num_segs * (R + 1)).reshape(B, num_segs, R + 1)
    return torch.cumsum(hist, dim=-1)[..., :R]


def interp_precision(prec: torch.Tensor, rec: torch.Tensor, seg: torch.Tensor, starts: torch.Tensor,
                      counts: torch.Tensor, rec_thrs: torch.Tensor, num_segs: int) -> torch.Tensor:
    """Precision envelope sampled at recall thresholds, per segment: (B, S, R); 0 past the last
    recall reached (COCOeval's and voc_eval's rule)."""
    B, N = prec.shape
    R = rec_thrs.numel()
    if N == 0:
        return prec.new_zeros(B, num_segs, R)
    env = segment_suffix_max(prec, seg, num_segs)
    below = first_index_at_least(rec, seg, rec_thrs, num_segs)  # (B, S, R)
    valid = below < counts[None, :, None]
    pos = (starts[None, :, None] + below).clamp(max=N - 1)
    q = torch.gather(env, 1, pos.reshape(B, -1)).reshape(B, num_segs, R)
    return torch.where(valid, q, torch.zeros_like(q))


def segment_cumsum(flags: torch.Tensor, seg_starts_of: torch.Tensor) -> torch.Tensor:
    """Cumulative sum along the last dim restarting at each segment; seg_starts_of[j] is the start
    index of j's segment. Exact for 0/1 float64 flags."""
    cs = torch.cumsum(flags, dim=-1)
    before = torch.cat([cs.new_zeros(cs.shape[:-1] + (1,)), cs], dim=-1)
    return cs - before[..., seg_starts_of]
