"""YOLOv4-tiny training loss: CIoU box + BCE objectness (with ignore threshold) + BCE classes.

    criterion = YoloLoss(model.anchors, num_classes)
    loss, items = criterion(model(images), targets)   # targets (M, 6): [b, cls, x1, y1, x2, y2] px

Fully vectorised and free of host-device syncs: every target is expanded to a fixed set of
candidate slots (anchors of a level x cells) that carry a 0/1 weight instead of being filtered
with a boolean mask, so all shapes depend only on M (the row count of `targets`) and the head
shapes. The only Python loop is over the two levels.

Decoding is the YOLOv4 one shared with inference (`nets.decode.decode_boxes`):
cx = (s * sigmoid(tx) - (s - 1) / 2 + gx) * stride with s = scale_x_y, w = anchor_w * exp(tw) (|tw| clamped at 10
so exp stays finite).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from nets.assets import ANCHOR_MASKS, SCALE_X_Y, STRIDES
from nets.decode import cxcywh_to_xyxy, decode_boxes, head_view

REF_SIZE = 416  # the input size at which `obj_gain` is specified (see YoloLoss)


class YoloLoss(nn.Module):
    """YOLOv4-style loss for the two heads of YOLOv4-tiny.

    forward(outputs, targets) -> (total, items):
      outputs: raw head maps [(B, A*(5+C), H/32, W/32), (B, A*(5+C), H/16, W/16)], Darknet layout;
      targets: (M, 6) float rows [batch_index, class, x1, y1, x2, y2] in network-input pixels;
      total:   scalar, differentiable;
      items:   (3,) detached [box, obj, cls], already multiplied by their gains (they sum to total).

    Scale: the loss is a MEAN over the batch (each term is a mean over positives or over
    cells), so its value and gradient do not depend on batch size (an image duplicated twice
    gives the same loss), and DDP's gradient averaging keeps that meaning across ranks. YOLOv5
    multiplies the same quantity by the batch size: YOLOv5's SGD step (lr0 = 0.01 on that sum) is
    lr = 0.01 * batch_size here. Adam(W) is scale-free: lr 1e-3..2e-3 (from scratch on the runs
    below, AdamW 2e-3 reached 0.69 mAP@0.5 where SGD lr 0.16 reached 0.23 and SGD lr 0.01 0.06).

    Per level l (mean over positive candidates P_l, cells N_l = B*A*H*W):
      box_l = sum_P w (1 - CIoU) / |P|          (CIoU as torchvision.ops.complete_box_iou_loss)
      cls_l = sum_P w mean_c BCE(cls, smooth one-hot) / |P|
      obj_l = sum_N keep * BCE(obj, t_obj) / N_l, keep = positive or max-IoU(pred, GTs of its image) <= ignore_thresh
      total = box_gain * sum box_l + obj_gain * (S/416)^2 * sum balance_l obj_l + cls_gain * sum cls_l
    where S^2 is the batch's input area H*W: the obj term is a mean over cells, whose count grows with
    S^2, so this keeps a positive cell's weight the same at any size (multi-scale batches included).

    Assignment (which prediction learns a target): on each level, every anchor of that level whose
    shape IoU with the target is > `match_iou_thresh` (or, with `match_ratio_thresh`, whose w and h
    ratios are both < it, YOLOv5's rule), plus always the best of all used anchors (so no target is
    lost); in the cell holding the box centre and, with `neighbor_cells`, in the two adjacent cells
    nearest to the centre (YOLOv5's 3-cell rule). Targets with w or h <= 0 are ignored.

    Options (keyword arguments). Defaults were picked by short from-scratch runs on synthetic shapes
    (4 classes, 160 px, AdamW 2e-3, mAP@0.5 after 450 steps, two seeds; run-to-run noise ~0.02):
    best-anchor-only with target 1 (the reference implementation's rules) 0.26; + extra anchors 0.58;
    + cls_gain 0.1 instead of 0.5: 0.76; + neighbour cells: 0.78 (mean of 3 runs). At 900 steps
    both objectness targets (1 or IoU) reach 0.85; target 1 gets there faster.
      box_gain=0.05, obj_gain=1.0: YOLOv5's values (obj at a 416-px input, see above).
      cls_gain=0.1: the class term is a mean over classes; at 0.5 it dominated the loss early and
        slowed everything (0.53 / 0.64 vs 0.69 / 0.73 mAP, two seeds); 0.05 did as well as 0.1.
        (YOLOv5 scales its 0.5 by nc / 80, which keeps the gradient per class logit constant.)
      balance=(0.4, 1.0): obj weight per level in `strides` order (s32, s16). The finer level has
        4x the cells, so its mean weighs each cell 4x less; 0.4 vs 1.0 gives a stride-32 cell
        about 1.6x the weight of a stride-16 cell (YOLOv5's P5/P4 ratio).
      label_smoothing=0.0: class targets 1 - eps/2 and eps/2.
      ignore_thresh=0.5: negatives whose decoded box has IoU > this with any GT of their image get no
        objectness loss (YOLOv3's 0.5; the official yolov4-tiny.cfg uses ignore_thresh=.7). Set > 1 to disable.
      obj_iou_ratio=0.0: objectness target of a positive = (1 - r) + r * CIoU.detach().clamp(0)
        (YOLOv5's `gr`, which YOLOv5 sets to 1). 0 is the classic target 1: it learns faster from
        scratch (IoU targets are tiny while boxes are still bad); 1 ranks by localisation quality.
      match_iou_thresh=0.213: extra anchors by shape IoU (AlexeyAB's yolov4 `iou_thresh`);
        >= 1 gives best-anchor-only (YOLOv3 / the reference implementation), 2x slower to learn.
      match_ratio_thresh=None: if set (e.g. 4.0) use the YOLOv5 wh-ratio rule instead of shape IoU
        (as fast as 0.213 in the runs above).
      neighbor_cells=True: also assign the 2 nearest neighbouring cells (3x the positives). The
        YOLOv4 decoder cannot put a centre outside its own cell (sigmoid in (0, 1)), so a neighbour
        only gets as close as its cell edge and its tx saturates; it still learned faster (more
        positives for objectness and classes), and NMS removes the near-duplicate boxes.
    """

    def __init__(
        self,
        anchors: torch.Tensor | np.ndarray,
        num_classes: int,
        masks: Sequence[Sequence[int]] = ANCHOR_MASKS,
        strides: Sequence[int] = STRIDES,
        *,
        box_gain: float = 0.05,
        obj_gain: float = 1.0,
        cls_gain: float = 0.1,
        balance: Sequence[float] = (0.4, 1.0),
        label_smoothing: float = 0.0,
        ignore_thresh: float = 0.5,
        obj_iou_ratio: float = 0.0,
        match_iou_thresh: float = 0.213,
        match_ratio_thresh: float | None = None,
        neighbor_cells: bool = True,
        scale_x_y: float = SCALE_X_Y,
    ):
        super().__init__()
        anchors = torch.as_tensor(np.asarray(anchors.cpu() if torch.is_tensor(anchors) else anchors),
                                  dtype=torch.float32).reshape(-1, 2)
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if len(masks) != len(strides) or len(balance) != len(strides):
            raise ValueError(f"masks ({len(masks)}), strides ({len(strides)}) and balance ({len(balance)}) "
                             "need one entry per output level")
        if len({len(m) for m in masks}) != 1:
            raise ValueError(f"every level needs the same number of anchors, got masks {masks}")
        if max(max(m) for m in masks) >= len(anchors) or (anchors <= 0).any():
            raise ValueError(f"masks {masks} index anchors that do not exist or are not positive "
                             f"({len(anchors)} anchors given)")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.num_classes = int(num_classes)
        self.masks = [list(map(int, m)) for m in masks]
        self.strides = [int(s) for s in strides]
        self.box_gain, self.obj_gain, self.cls_gain = float(box_gain), float(obj_gain), float(cls_gain)
        self.balance = [float(b) for b in balance]
        self.label_smoothing = float(label_smoothing)
        self.ignore_thresh = float(ignore_thresh)
        self.obj_iou_ratio = float(obj_iou_ratio)
        self.match_iou_thresh = float(match_iou_thresh)
        self.match_ratio_thresh = None if match_ratio_thresh is None else float(match_ratio_thresh)
        self.neighbor_cells = bool(neighbor_cells)
        self.scale_x_y = float(scale_x_y)
        used = torch.zeros(len(anchors), dtype=torch.bool)
        used[sorted({i for m in self.masks for i in m})] = True
        self.register_buffer("anchors", anchors, persistent=False)
        self.register_buffer("used", used, persistent=False)
        self.register_buffer("mask_index", torch.tensor(self.masks, dtype=torch.long), persistent=False)

    def forward(self, outputs: Sequence[torch.Tensor], targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if len(outputs) != len(self.strides):
            raise ValueError(f"expected {len(self.strides)} output maps, got {len(outputs)}")
        device = outputs[0].device
        if self.anchors.device != device:  # once: keeps per-call host->device copies out of the loop
            self.to(device)
        t = targets.to(device=device, dtype=torch.float32).reshape(-1, 6)
        bidx, tcls = t[:, 0].long(), t[:, 1].long()
        tbox = t[:, 2:6]
        twh = tbox[:, 2:] - tbox[:, :2]
        tcxy = (tbox[:, :2] + tbox[:, 2:]) / 2
        valid = (twh > 0).all(1)
        # a finite stand-in for degenerate boxes (their weight is 0, but 0 * nan is nan)
        tbox = torch.where(valid[:, None], tbox, (torch.arange(4, device=device) >= 2).float())
        twh = tbox[:, 2:] - tbox[:, :2]

        anchors = self.anchors
        shape_iou = _wh_iou(twh, anchors)  # (M, n_anchors)
        best = shape_iou.masked_fill(~self.used[None], -1.0).argmax(1)  # (M,)
        if self.match_ratio_thresh is not None:
            r = twh[:, None, :] / anchors[None]
            extra = torch.max(r, 1 / r).amax(2) < self.match_ratio_thresh
        else:
            extra = shape_iou > self.match_iou_thresh

        h_in, w_in = (outputs[0].shape[2] * self.strides[0], outputs[0].shape[3] * self.strides[0])
        obj_scale = self.obj_gain * float(h_in * w_in) / REF_SIZE**2

        lbox = torch.zeros((), device=device)
        lobj = torch.zeros((), device=device)
        lcls = torch.zeros((), device=device)
        for level, (p, stride) in enumerate(zip(outputs, self.strides)):
            b_, c_, h, w = p.shape
            idx = self.mask_index[level]  # (A,)
            A = idx.numel()
            if c_ != A * (5 + self.num_classes):
                raise ValueError(f"output {level} has {c_} channels, expected {A}*(5+{self.num_classes})")
            p = head_view(p.float(), A)  # (B, A, H, W, 5+C)
            pf = p.reshape(-1, 5 + self.num_classes)  # (B*A*H*W, 5+C): one row per prediction
            boxes = cxcywh_to_xyxy(decode_boxes(p, anchors[idx], stride, scale_x_y=self.scale_x_y))  # differentiable

            # candidate slots (M, A, K): anchors x cells, with a 0/1 weight instead of filtering
            match = ((best[:, None] == idx[None]) | extra[:, idx]) & valid[:, None]  # (M, A)
            g = tcxy / stride
            cx, cy = g.floor().unbind(1)
            xs, ys = [cx], [cy]
            if self.neighbor_cells:  # the neighbour on the side of the centre, in x and in y
                sx = torch.where(g[:, 0] - cx < 0.5, -1.0, 1.0)
                sy = torch.where(g[:, 1] - cy < 0.5, -1.0, 1.0)
                xs, ys = [cx, cx + sx, cx], [cy, cy, cy + sy]
            xs, ys = torch.stack(xs, 1), torch.stack(ys, 1)  # (M, K)
            # the centre cell is clamped (a box touching the far edge); neighbours outside are dropped
            inside = (xs >= 0) & (xs < w) & (ys >= 0) & (ys < h)
            inside = inside | (torch.arange(xs.shape[1], device=device) == 0)
            xs, ys = xs.clamp(0, w - 1), ys.clamp(0, h - 1)
            weight = (match[:, :, None] & inside[:, None, :]).float()  # (M, A, K)
            M, K = xs.shape
            gx = xs.long()[:, None, :].expand(M, A, K)
            gy = ys.long()[:, None, :].expand(M, A, K)
            ai = torch.arange(A, device=device)[None, :, None].expand(M, A, K)
            bi = bidx[:, None, None].expand(M, A, K)
            flat = (((bi * A + ai) * h + gy) * w + gx).reshape(-1)
            ps = pf.index_select(0, flat).view(M, A, K, 5 + self.num_classes)  # gather, fixed shape
            pbox = boxes.reshape(-1, 4).index_select(0, flat).view(M, A, K, 4)
            ciou = _ciou(pbox, tbox[:, None, None, :])  # (M, A, K)
            lciou = 1.0 - ciou
            npos = _mean_over_processes(weight.sum()).clamp(min=1.0)
            lbox = lbox + (lciou * weight).sum() / npos

            eps = self.label_smoothing
            onehot = (tcls[:, None] == torch.arange(self.num_classes, device=device)).float()  # F.one_hot syncs
            tc = (onehot * (1.0 - eps) + 0.5 * eps)[:, None, None, :].expand_as(ps[..., 5:])
            bce_cls = F.binary_cross_entropy_with_logits(ps[..., 5:], tc, reduction="none").mean(-1)
            lcls = lcls + (bce_cls * weight).sum() / npos

            # objectness: scatter with 'amax' so duplicates resolve the same whatever the target order
            n_cells = b_ * A * h * w
            tval = ((1.0 - self.obj_iou_ratio) + self.obj_iou_ratio * ciou.detach().clamp(0, 1)) * weight
            tobj = torch.zeros(n_cells, device=device).scatter_reduce(0, flat, tval.reshape(-1), "amax")
            pos = torch.zeros(n_cells, device=device).scatter_reduce(0, flat, weight.reshape(-1), "amax")
            ignored = _overlaps_gt(boxes.detach().view(b_, -1, 4), tbox, bidx, valid, self.ignore_thresh)
            keep = (pos > 0) | ~ignored.view(-1)
            bce_obj = F.binary_cross_entropy_with_logits(pf[:, 4], tobj, reduction="none")
            lobj = lobj + self.balance[level] * (bce_obj * keep).sum() / n_cells

        items = torch.stack([self.box_gain * lbox, obj_scale * lobj, self.cls_gain * lcls]).detach()
        total = self.box_gain * lbox + obj_scale * lobj + self.cls_gain * lcls
        return total, items


@torch.no_grad()
def _mean_over_processes(count: torch.Tensor) -> torch.Tensor:
    """Under DDP, the mean positive count over all processes (one all-reduce, no host sync).

    DDP averages gradients, so normalising each process's sum by this shared count makes the
    update equal to one process normalising the whole global batch by its total count.
    """
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        count = count.detach().clone()
        dist.all_reduce(count)
        count /= dist.get_world_size()
    return count


@torch.no_grad()
def _overlaps_gt(boxes: torch.Tensor, tbox: torch.Tensor, bidx: torch.Tensor, valid: torch.Tensor,
                 thresh: float) -> torch.Tensor:
    """(B, N) bool: predicted box (B, N, 4) has IoU > thresh with some GT box (M, 4) of its own image.

    Each target is compared with every prediction of its image, (M, N), and the per-image 'any' is a
    scatter-'amax' over targets: fixed shapes, no padding to a data-dependent max box count.
    torchvision.ops.box_iou is all-pairs, not batched per image, hence the short broadcast here;
    IoU > t is tested as inter > t * union (no division) on (M, N) planes, areas taken before the gather.
    """
    b_, n = boxes.shape[:2]
    bidx = bidx.clamp(0, b_ - 1)
    planes = boxes.permute(2, 0, 1)  # (4, B, N)
    area = (planes[2] - planes[0]) * (planes[3] - planes[1])
    x1, y1, x2, y2, area = torch.cat([planes, area[None]]).index_select(1, bidx)  # (M, N) each
    gx1, gy1, gx2, gy2 = (c[:, None] for c in tbox.unbind(-1))
    inter = (torch.minimum(x2, gx2) - torch.maximum(x1, gx1)).clamp_(min=0)
    inter.mul_((torch.minimum(y2, gy2) - torch.maximum(y1, gy1)).clamp_(min=0))
    union = area.add_((gx2 - gx1) * (gy2 - gy1)).sub_(inter)
    hit = ((inter > union.mul_(thresh)) & valid[:, None]).float()
    out = torch.zeros(b_, n, device=boxes.device)
    return out.scatter_reduce_(0, bidx[:, None].expand(-1, n), hit, "amax") > 0


def _ciou(p: torch.Tensor, t: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Complete IoU of paired xyxy boxes (..., 4) (Zheng et al. 2020), alpha without gradient.

    Same value and gradient as 1 - torchvision.ops.complete_box_iou_loss (the tests check it), written
    with clamp instead of torchvision's boolean-mask intersection, which costs a host-device sync.
    """
    px1, py1, px2, py2 = p.unbind(-1)
    tx1, ty1, tx2, ty2 = t.unbind(-1)
    pw, ph, tw, th = px2 - px1, py2 - py1, tx2 - tx1, ty2 - ty1
    inter = (torch.minimum(px2, tx2) - torch.maximum(px1, tx1)).clamp(min=0) * (
        torch.minimum(py2, ty2) - torch.maximum(py1, ty1)).clamp(min=0)
    iou = inter / (pw * ph + tw * th - inter + eps)
    cw = torch.maximum(px2, tx2) - torch.minimum(px1, tx1)  # enclosing box
    ch = torch.maximum(py2, ty2) - torch.minimum(py1, ty1)
    c2 = cw**2 + ch**2
    rho2 = ((px1 + px2 - tx1 - tx2) ** 2 + (py1 + py2 - ty1 - ty2) ** 2) / 4
    v = (4 / math.pi**2) * (torch.atan(tw / th) - torch.atan(pw / ph)) ** 2
    with torch.no_grad():
        alpha = v / (1 - iou + v + eps)
    return iou - rho2 / (c2 + eps) - alpha * v


def _wh_iou(wh: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """Shape IoU (boxes and anchors centred on each other): (M, 2) x (N, 2) -> (M, N)."""
    inter = torch.minimum(wh[:, None, :], anchors[None]).prod(2)
    return inter / (wh.prod(1)[:, None] + anchors.prod(1)[None] - inter)


def init_head_biases(
    heads: nn.Module | Sequence[nn.Conv2d],
    num_classes: int,
    strides: Sequence[int] | None = None,
    img_size: int = 416,
    objects_per_image: float = 8.0,
    prior_obj: float | None = None,
    prior_cls: float | None = None,
) -> None:
    """Set prior biases of the objectness and class channels of the final 1x1 head convs.

    With zero biases every one of the ~2.5k predictions starts at p(obj) = 0.5, so the first steps
    are spent shouting down objectness everywhere (a huge, noisy gradient). Starting at the base
    rate instead keeps early training stable (RetinaNet's prior-probability init, YOLOv5's
    `_initialize_biases`):
      p(obj) at stride s = objects_per_image / (A * cells), cells = (img_size / s)^2 (or `prior_obj`);
      p(cls) = 1 / num_classes, capped at 0.5 (or `prior_cls`).
    `heads` is a YoloBody (uses `.heads` and `.strides`) or the final convs in `strides` order.
    """
    if hasattr(heads, "heads"):
        strides = list(heads.strides) if strides is None else strides
        heads = heads.heads
    convs = list(heads)
    strides = list(STRIDES if strides is None else strides)
    if len(convs) != len(strides):
        raise ValueError(f"got {len(convs)} head convs but {len(strides)} strides")
    p_cls = prior_cls if prior_cls is not None else min(0.5, 1.0 / num_classes)
    for conv, stride in zip(convs, strides):
        if conv.bias is None or conv.out_channels % (5 + num_classes):
            raise ValueError(f"head conv {conv} needs a bias and A*(5+{num_classes}) output channels")
        A = conv.out_channels // (5 + num_classes)
        cells = max(1.0, (img_size / stride) ** 2)
        p_obj = prior_obj if prior_obj is not None else min(0.5, objects_per_image / (A * cells))
        with torch.no_grad():
            b = conv.bias.view(A, 5 + num_classes)
            b[:, 4] = math.log(p_obj / (1.0 - p_obj))
            b[:, 5:] = math.log(p_cls / (1.0 - p_cls))
