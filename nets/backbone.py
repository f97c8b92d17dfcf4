"""CSPDarknet53-tiny, laid out exactly as Darknet's `yolov4-tiny.cfg` (layers 0-29).

Module order = cfg order, so Darknet weights map onto `modules()` in sequence:
conv 3x3/2 (32), conv 3x3/2 (64), three CSP blocks (64, 128, 256), conv 3x3 (512).
"""
from __future__ import annotations

import torch
from torch import nn


class BasicConv(nn.Module):
    """Conv (no bias) + BatchNorm + LeakyReLU(0.1): Darknet's `batch_normalize=1 activation=leaky`."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.activation = nn.LeakyReLU(0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.bn(self.conv(x)))


class ResblockBody(nn.Module):
    """One CSP stage of yolov4-tiny.

    conv3x3 -> route(groups=2, group_id=1: second half of the channels) -> conv3x3 -> conv3x3
    -> concat(last two) -> conv1x1 -> concat(with the first conv's output) -> maxpool 2x2.
    Returns the pooled map and the pre-concat 1x1 output (the stride-16 feature in stage 3).
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        half = out_channels // 2
        self.conv1 = BasicConv(in_channels, out_channels, 3)
        self.conv2 = BasicConv(half, half, 3)
        self.conv3 = BasicConv(half, half, 3)
        self.conv4 = BasicConv(out_channels, out_channels, 1)
        self.maxpool = nn.MaxPool2d(2, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.conv1(x)
        route = x
        x = x.chunk(2, dim=1)[1]  # Darknet: route groups=2 group_id=1
        x = self.conv2(x)
        route1 = x
        x = self.conv3(x)
        x = torch.cat([x, route1], dim=1)
        x = self.conv4(x)
        feat = x
        x = torch.cat([route, x], dim=1)
        return self.maxpool(x), feat


class CSPDarknet53Tiny(nn.Module):
    """Returns (feat1: 256 ch at stride 16, feat2: 512 ch at stride 32)."""

    def __init__(self):
        super().__init__()
        self.conv1 = BasicConv(3, 32, 3, stride=2)
        self.conv2 = BasicConv(32, 64, 3, stride=2)
        self.resblock_body1 = ResblockBody(64, 64)
        self.resblock_body2 = ResblockBody(128, 128)
        self.resblock_body3 = ResblockBody(256, 256)
        self.conv3 = BasicConv(512, 512, 3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.conv2(self.conv1(x))
        x, _ = self.resblock_body1(x)
        x, _ = self.resblock_body2(x)
        x, feat1 = self.resblock_body3(x)
        feat2 = self.conv3(x)
        return feat1, feat2
