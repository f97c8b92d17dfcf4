"""Test-time augmentation (predict.py / get_map.py --augment): the batch is also run enlarged and
mirrored, and every view's boxes, mapped back onto the original input, go into one NMS.

Views: the input itself, 1.33x, and mirrored left-right. Not Ultralytics' (1, 0.83x mirrored, 0.67x),
which suit large models at 640: on the built-in set the 18-minute model (trained at 320) scored
AP 0.527 / AP50 0.836 plain, 0.486 / 0.768 with Ultralytics' views, 0.565 / 0.884 with these, and
0.581 / 0.909 with no TTA at --img 416: a small model trained small gains most from a larger input.
Scaled views are padded at the right and bottom to a multiple of 32 with the letterbox grey, so a
box's pixels keep their place: x_view = x * w_view / W (mirrored: w_view - that).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from nets.assets import MAX_STRIDE

VIEWS = ((1.33, False), (1.0, True))  # (scale, mirror) besides the unchanged input
PAD_VALUE = 114 / 255  # the letterbox grey (utils/data/letterbox.py)


def make_view(x: torch.Tensor, scale: float, mirror: bool) -> tuple[torch.Tensor, tuple[int, int]]:
    """(B, 3, H, W) in [0, 1] -> the view (padded to a multiple of 32) and the (h, w) its content fills."""
    h, w = max(1, round(x.shape[2] * scale)), max(1, round(x.shape[3] * scale))
    v = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False) if (h, w) != tuple(x.shape[2:]) else x
    if mirror:
        v = v.flip(3)
    pad_h, pad_w = -h % MAX_STRIDE, -w % MAX_STRIDE
    if pad_h or pad_w:
        v = F.pad(v, (0, pad_w, 0, pad_h), value=PAD_VALUE)
    return v, (h, w)


def boxes_to_input(boxes: torch.Tensor, input_hw: tuple[int, int], view_hw: tuple[int, int],
                   mirror: bool) -> torch.Tensor:
    """xyxy boxes (..., 4) in view pixels -> the same boxes in pixels of the input the view was made from."""
    h, w = view_hw
    x1, y1, x2, y2 = boxes.unbind(-1)
    if mirror:
        x1, x2 = w - x2, w - x1
    sx, sy = input_hw[1] / w, input_hw[0] / h
    return torch.stack((x1 * sx, y1 * sy, x2 * sx, y2 * sy), -1)
