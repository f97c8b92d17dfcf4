"""Decoding of the two YOLO heads, batched NMS and un-letterbox: the one place these formulas live.

    raw = model(x)                                   # [out_s32, out_s16], Darknet channel layout
    pred = decode_outputs(raw, model.anchors, model.masks, model.strides, model.scale_x_y)  # (B, N, 5+C)
    dets = non_max_suppression(pred, conf_thres=0.25, iou_thres=0.45)      # per image, input pixels
    boxes = unletterbox(dets[0]["boxes"], scale, (pad_x, pad_y), (h, w))   # original pixels

YOLOv4 formulas (also used by the loss through `decode_boxes`):
    cx = (s * sigmoid(tx) - (s - 1) / 2 + gx) * stride,  w = anchor_w * exp(tw),  score = sigmoid(obj) * sigmoid(cls),
with s = scale_x_y (Darknet's "eliminate grid sensitivity"; 1.0 = plain YOLOv3 decoding, the default here,
1.05 in the official yolov4-tiny.cfg), so a centre can reach its cell's edges.
Everything is vectorised over the batch; no Python loop touches a box or an anchor.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torchvision

from nets.assets import ANCHOR_MASKS, SCALE_X_Y, STRIDES

# |tw| is clamped (as in nets/loss.py): exp(10) = 22026 x anchor is far beyond any image, so no real
# prediction changes, but inf boxes (inf - inf = nan in NMS) cannot occur.
MAX_LOG_WH = 10.0


def head_view(out: torch.Tensor, num_anchors: int = 3) -> torch.Tensor:
    """(B, A*(5+C), H, W) -> (B, A, H, W, 5+C): Darknet's layout, anchor-major channels."""
    b, ch, h, w = out.shape
    if ch % num_anchors:
        raise ValueError(f"head has {ch} channels, not a multiple of {num_anchors} anchors")
    return out.view(b, num_anchors, ch // num_anchors, h, w).permute(0, 1, 3, 4, 2)


_GRIDS: dict[tuple, torch.Tensor] = {}


def make_grid(h: int, w: int, device: torch.device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(1, 1, H, W, 2) cell offsets (gx, gy), cached per size/device/dtype."""
    key = (h, w, str(device), dtype)
    grid = _GRIDS.get(key)
    if grid is None:
        gy, gx = torch.meshgrid(torch.arange(h, device=device, dtype=dtype),
                                torch.arange(w, device=device, dtype=dtype), indexing="ij")
        grid = torch.stack((gx, gy), dim=-1).view(1, 1, h, w, 2)
        if len(_GRIDS) > 64:  # many input sizes (multi-scale eval): keep the cache small
            _GRIDS.clear()
        _GRIDS[key] = grid
    return grid


def decode_boxes(p: torch.Tensor, anchors: torch.Tensor, stride: float,
                 max_log_wh: float | None = MAX_LOG_WH, scale_x_y: float = SCALE_X_Y) -> torch.Tensor:
    """Raw head (B, A, H, W, >=4) and its anchors (A, 2) in input pixels -> (B, A, H, W, 4) cx, cy, w, h.

    Differentiable, so the loss decodes with the very same formula.
    """
    grid = make_grid(p.shape[2], p.shape[3], p.device, p.dtype)
    offset = torch.sigmoid(p[..., 0:2])
    if scale_x_y != 1.0:
        offset = offset * scale_x_y - 0.5 * (scale_x_y - 1.0)
    xy = (offset + grid) * stride
    twh = p[..., 2:4] if max_log_wh is None else p[..., 2:4].clamp(-max_log_wh, max_log_wh)
    wh = torch.exp(twh) * anchors.to(p).view(1, -1, 1, 1, 2)
    return torch.cat((xy, wh), dim=-1)


def cxcywh_to_xyxy(b: torch.Tensor) -> torch.Tensor:
    half = b[..., 2:4] / 2
    return torch.cat((b[..., 0:2] - half, b[..., 0:2] + half), dim=-1)


def decode_outputs(outputs: Sequence[torch.Tensor], anchors: torch.Tensor,
                   masks: Sequence[Sequence[int]] = ANCHOR_MASKS,
                   strides: Sequence[int] = STRIDES, scale_x_y: float = SCALE_X_Y) -> torch.Tensor:
    """Both raw heads -> (B, N, 5 + C): [x1, y1, x2, y2] in network-input pixels, objectness, class probs.

    N = sum over heads of A*H*W, ordered head by head, then anchor, row, column.
    Computed in float32 whatever the model's dtype (fp16 exp/sigmoid lose boxes).
    """
    anchors = torch.as_tensor(anchors, dtype=torch.float32)
    parts = []
    for out, mask, stride in zip(outputs, masks, strides):
        p = head_view(out.float(), len(mask))
        # anchors[i] are views: indexing with the list would copy it to the GPU, a host sync per head
        level_anchors = torch.stack([anchors[i] for i in mask]).to(p.device)
        box = cxcywh_to_xyxy(decode_boxes(p, level_anchors, stride, scale_x_y=scale_x_y))
        parts.append(torch.cat((box, torch.sigmoid(p[..., 4:])), dim=-1).flatten(1, 3))
    return torch.cat(parts, dim=1)


def objectness_maps(outputs: Sequence[torch.Tensor], num_anchors: int = 3) -> list[torch.Tensor]:
    """Per head, (B, H, W): the largest sigmoid(objectness) over the head's anchors (for heatmaps)."""
    return [torch.sigmoid(head_view(o.float(), num_anchors)[..., 4]).amax(dim=1) for o in outputs]


def _rank_within(group: torch.Tensor, num_groups: int) -> torch.Tensor:
    """For `group` sorted ascending: position of each element inside its group (0, 1, 2, ...)."""
    counts = torch.bincount(group, minlength=num_groups)
    starts = torch.cumsum(counts, 0) - counts
    return torch.arange(group.numel(), device=group.device) - starts[group]


def _top_per_image(image: torch.Tensor, score: torch.Tensor, k: int, batch: int) -> torch.Tensor:
    """Indices of the k best scores of every image, grouped by image, best first."""
    order = torch.argsort(score, descending=True, stable=True)
    order = order[torch.argsort(image[order], stable=True)]
    return order[_rank_within(image[order], batch) < k]


def non_max_suppression(pred: torch.Tensor, conf_thres: float = 0.25, iou_thres: float = 0.45,
                        max_det: int = 300, classes: Sequence[int] | None = None, agnostic: bool = False,
                        multi_label: bool = False, max_nms: int = 30000) -> list[dict[str, torch.Tensor]]:
    """Class-aware NMS for a whole batch in one torchvision call.

    pred: (B, N, 5 + C) from `decode_outputs`. score = objectness * class prob; a candidate is kept
    when score >= conf_thres. multi_label=False takes each box's best class (one label a box);
    True keeps every class over the threshold (what mAP evaluation wants). Boxes of different images
    never suppress each other; of different classes neither, unless `agnostic`. At most `max_nms`
    candidates per image enter NMS and `max_det` leave it, best first.
    Returns one dict per image: boxes (K, 4) xyxy input pixels, scores (K,), labels (K,) int64.
    """
    if pred.dim() != 3 or pred.shape[-1] < 6:
        raise ValueError(f"expected (B, N, 5 + C) predictions, got {tuple(pred.shape)}")
    batch, _, width = pred.shape
    num_classes = width - 5
    obj = pred[..., 4:5]
    cls = pred[..., 5:]
    if multi_label:
        scores = obj * cls
        keep = scores >= conf_thres
        if classes is not None:
            keep &= _class_mask(classes, num_classes, pred.device)
        img, idx, label = keep.nonzero(as_tuple=True)
        score = scores[img, idx, label]
    else:
        best, label = cls.max(dim=-1)
        score = obj[..., 0] * best
        keep = score >= conf_thres
        if classes is not None:
            keep &= _class_mask(classes, num_classes, pred.device)[label]
        img, idx = keep.nonzero(as_tuple=True)
        score, label = score[img, idx], label[img, idx]
    if img.numel() > max_nms:  # cap the NMS input per image (random weights at conf 0.001)
        sel = _top_per_image(img, score, max_nms, batch)
        img, idx, label, score = img[sel], idx[sel], label[sel], score[sel]
    boxes = pred[img, idx, :4]
    groups = img if agnostic else img * num_classes + label
    kept = torchvision.ops.batched_nms(boxes, score, groups, iou_thres)  # sorted by score, descending
    kept = kept[_top_per_image(img[kept], score[kept], max_det, batch)]
    counts = torch.bincount(img[kept], minlength=batch).tolist()
    return [{"boxes": b, "scores": s, "labels": l} for b, s, l in
            zip(boxes[kept].split(counts), score[kept].split(counts), label[kept].split(counts))]


def _class_mask(classes: Sequence[int], num_classes: int, device: torch.device) -> torch.Tensor:
    mask = torch.zeros(num_classes, dtype=torch.bool, device=device)
    ids = [int(c) for c in classes]
    bad = [c for c in ids if not 0 <= c < num_classes]
    if bad:
        raise ValueError(f"class id(s) {bad} out of range: the model has {num_classes} classes (0..{num_classes - 1})")
    mask[ids] = True
    return mask


def resized_size(width: int, height: int, scale: float) -> tuple[int, int]:
    """(new_w, new_h) the letterbox resizes a width x height image to: one definition for both directions.

    Rounding makes the scale actually applied differ per axis from `scale` (333 px * 0.3844 = 128.0 -> 128,
    but 250 * 0.3844 = 96.1 -> 96), so `unletterbox` divides by new_w / w and new_h / h, not by `scale`.
    """
    return max(1, round(width * scale)), max(1, round(height * scale))


def unletterbox(boxes: torch.Tensor, scale: float, pad: Sequence[float], shape: Sequence[int]) -> torch.Tensor:
    """Network-input xyxy -> original-image xyxy, clipped to the image. shape is (h, w) of the original.

    Inverse of `utils.data.letterbox.letterbox`: x_orig = (x - pad_x) * w / new_w, y likewise with h / new_h,
    where (new_w, new_h) = resized_size(w, h, scale) is the size the image was really resized to.
    """
    pad_x, pad_y = float(pad[0]), float(pad[1])
    h, w = int(shape[0]), int(shape[1])
    new_w, new_h = resized_size(w, h, scale)
    offset = boxes.new_tensor([pad_x, pad_y, pad_x, pad_y])
    gain = boxes.new_tensor([new_w / w, new_h / h, new_w / w, new_h / h])
    out = (boxes - offset) / gain
    out[:, 0::2] = out[:, 0::2].clamp(0, w)
    out[:, 1::2] = out[:, 1::2].clamp(0, h)
    return out
