"""YoloBody: CSPDarknet53-tiny + FPN neck + two YOLO heads, with attention at up to three sites.

Sites (names used by `attention_sites`): `feat1` (256 ch, stride 16), `feat2` (512 ch, stride 32)
and `upsample` (the 128-ch upsampled branch of the neck). Outputs are the raw head maps in
Darknet's channel layout: [out_s32 (B, 3*(5+C), H/32, W/32), out_s16 (B, 3*(5+C), H/16, W/16)].
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from nets.assets import ANCHOR_MASKS, MAX_STRIDE, SCALE_X_Y, STRIDES, read_anchors
from nets.attention import build_attention, resolve_attention
from nets.backbone import BasicConv, CSPDarknet53Tiny

ATTENTION_SITES = ("feat1", "feat2", "upsample")


class Upsample(nn.Sequential):
    """1x1 conv then 2x nearest upsampling (cfg layers 32-33)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(BasicConv(in_channels, out_channels, 1), nn.Upsample(scale_factor=2, mode="nearest"))


def yolo_head(channels: int, out_channels: int, in_channels: int) -> nn.Sequential:
    """3x3 BasicConv then a linear 1x1 conv with bias (the layer before a `[yolo]` layer)."""
    return nn.Sequential(BasicConv(in_channels, channels, 3), nn.Conv2d(channels, out_channels, 1))


def check_input_size(h: int, w: int) -> None:
    s = MAX_STRIDE
    if h % s or w % s or h <= 0 or w <= 0:
        raise ValueError(
            f"input size {h}x{w} is not a multiple of {s}; YOLOv4-tiny downsamples by {s} "
            f"(use e.g. {max(s, round(h / s) * s)}x{max(s, round(w / s) * s)})"
        )


class YoloBody(nn.Module):
    def __init__(
        self,
        num_classes: int,
        phi: int | str = 0,
        attention_sites: Sequence[str] = ATTENTION_SITES,
        anchors: np.ndarray | torch.Tensor | None = None,
        scale_x_y: float = SCALE_X_Y,
    ):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        unknown = set(attention_sites) - set(ATTENTION_SITES)
        if unknown:
            raise ValueError(f"unknown attention site(s) {sorted(unknown)}; choose from {list(ATTENTION_SITES)}")
        if not 1.0 <= scale_x_y <= 2.0:
            raise ValueError(f"scale_x_y must be in [1, 2] (Darknet's range; 1.0 = plain sigmoid), got {scale_x_y}")
        self.num_classes = num_classes
        self.scale_x_y = float(scale_x_y)  # box-centre decoding, see nets/decode.py; the loss uses the same
        self.phi = resolve_attention(phi)
        self.attention_sites = [s for s in ATTENTION_SITES if s in attention_sites] if self.phi != "none" else []
        self.masks = [list(m) for m in ANCHOR_MASKS]
        self.strides = list(STRIDES)
        anchors = read_anchors() if anchors is None else anchors
        self.register_buffer("anchors", torch.as_tensor(np.asarray(anchors), dtype=torch.float32).reshape(-1, 2), persistent=False)

        out = len(self.masks[0]) * (5 + num_classes)
        self.backbone = CSPDarknet53Tiny()
        self.conv_for_P5 = BasicConv(512, 256, 1)
        self.yolo_headP5 = yolo_head(512, out, 256)
        self.upsample = Upsample(256, 128)
        self.yolo_headP4 = yolo_head(256, len(self.masks[1]) * (5 + num_classes), 384)
        widths = {"feat1": 256, "feat2": 512, "upsample": 128}
        for site in ATTENTION_SITES:  # None where a site has no attention: keys stay stable
            block = build_attention(self.phi, widths[site]) if site in self.attention_sites else None
            setattr(self, f"{site}_att", block)

    @property
    def heads(self) -> list[nn.Conv2d]:
        """The two final linear 1x1 convs (stride 32, stride 16): where prior biases go."""
        return [self.yolo_headP5[-1], self.yolo_headP4[-1]]

    def attention_blocks(self) -> dict[str, nn.Module]:
        return {s: getattr(self, f"{s}_att") for s in self.attention_sites}

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        check_input_size(*x.shape[2:])
        feat1, feat2 = self.backbone(x)
        if self.feat1_att is not None:
            feat1 = self.feat1_att(feat1)
        if self.feat2_att is not None:
            feat2 = self.feat2_att(feat2)
        p5 = self.conv_for_P5(feat2)
        out0 = self.yolo_headP5(p5)
        p5_up = self.upsample(p5)
        if self.upsample_att is not None:
            p5_up = self.upsample_att(p5_up)
        out1 = self.yolo_headP4(torch.cat([p5_up, feat1], dim=1))
        return [out0, out1]
