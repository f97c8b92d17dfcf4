"""Attention blocks and their registry.

Every block maps (B, C, H, W) -> (B, C, H, W) and exposes `gates(x)`, the multiplicative
maps it applies (all in [0, 1]); `forward` only multiplies them in. Keeping the gates separate
lets tests check the papers' definitions and lets `predict.py --attention-maps` draw them.

Numbering (`--phi`): 0 none, 1 SE, 2 CBAM, 3 ECA, 4 CA, 5 scSE; `cse` and `sse` by name only.
Blocks 1-4 have the parameter layout of the widely shared yolov4-tiny attention checkpoints.
"""
from __future__ import annotations

import math

import torch
from torch import nn


class AttentionBlock(nn.Module):
    """Base: forward(x) = x * gate_1 * gate_2 ..., gates computed by `gates`.

    `keep_maps = True` stores the spatial gates of the last forward in `last_maps` (for plots).
    """

    keep_maps: bool = False

    def gates(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def spatial_map(self, gates: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """A (B, 1, H, W) picture of where the block looks, or None for channel-only blocks."""
        return None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gates = self.gates(x)
        if self.keep_maps:
            m = self.spatial_map(gates)
            self.last_maps = None if m is None else m.detach()
        return self.apply_gates(x, gates)

    def apply_gates(self, x: torch.Tensor, gates: dict[str, torch.Tensor]) -> torch.Tensor:
        for g in gates.values():
            x = x * g
        return x


class SE(AttentionBlock):
    """Squeeze-and-Excitation (Hu et al. 2018): GAP -> FC(C/r) -> ReLU -> FC(C) -> sigmoid."""

    def __init__(self, channels: int, ratio: int = 16):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(
            nn.Linear(channels, channels // ratio, bias=False),
            nn.ReLU(inplace=True),
            nn.Linear(channels // ratio, channels, bias=False),
            nn.Sigmoid(),
        )

    def gates(self, x):
        b, c = x.shape[:2]
        return {"channel": self.fc(self.avg_pool(x).view(b, c)).view(b, c, 1, 1)}


class ChannelGate(nn.Module):
    """CBAM's channel attention: one shared MLP on the avg- and the max-pooled descriptor, summed."""

    def __init__(self, channels: int, ratio: int = 8):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.max_pool = nn.AdaptiveMaxPool2d(1)
        self.fc1 = nn.Conv2d(channels, channels // ratio, 1, bias=False)
        self.relu1 = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(channels // ratio, channels, 1, bias=False)

    def mlp(self, v: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.relu1(self.fc1(v)))

    def forward(self, x):
        return torch.sigmoid(self.mlp(self.avg_pool(x)) + self.mlp(self.max_pool(x)))


class SpatialGate(nn.Module):
    """CBAM's spatial attention: [mean_c, max_c] -> 7x7 conv -> sigmoid, a (B, 1, H, W) gate."""

    def __init__(self, kernel_size: int = 7):
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"CBAM spatial kernel must be odd, got {kernel_size}")
        self.conv1 = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x):
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return torch.sigmoid(self.conv1(pooled))


class CBAM(AttentionBlock):
    """CBAM (Woo et al. 2018): channel gate, then a spatial gate computed on the refined map.

    The spatial gate multiplies the channel-refined input, not the conv output.
    """

    def __init__(self, channels: int, ratio: int = 8, kernel_size: int = 7):
        super().__init__()
        self.channelattention = ChannelGate(channels, ratio)
        self.spatialattention = SpatialGate(kernel_size)

    def gates(self, x):
        cg = self.channelattention(x)
        return {"channel": cg, "spatial": self.spatialattention(x * cg)}

    def apply_gates(self, x, gates):
        # The spatial gate was computed on x * channel, so apply in that order.
        return x * gates["channel"] * gates["spatial"]

    def spatial_map(self, gates):
        return gates["spatial"]


def eca_kernel_size(channels: int, gamma: int = 2, b: int = 1) -> int:
    """ECA-Net's adaptive kernel size: |(log2 C + b) / gamma|, rounded down, made odd."""
    k = int(abs((math.log2(channels) + b) / gamma))
    return k if k % 2 else k + 1


class ECA(AttentionBlock):
    """Efficient Channel Attention (Wang et al. 2020): GAP -> 1D conv over channels -> sigmoid."""

    def __init__(self, channels: int, gamma: int = 2, b: int = 1):
        super().__init__()
        k = eca_kernel_size(channels, gamma, b)
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.conv = nn.Conv1d(1, 1, kernel_size=k, padding=(k - 1) // 2, bias=False)

    def gates(self, x):
        b, c = x.shape[:2]
        y = self.conv(self.avg_pool(x).view(b, 1, c))
        return {"channel": torch.sigmoid(y).view(b, c, 1, 1)}


class CoordAtt(AttentionBlock):
    """Coordinate Attention (Hou et al. 2021): pool along W and along H, shared 1x1 conv + BN +
    non-linearity on the concatenation, then one sigmoid gate per direction.

    Three departures from the paper's code, all to match the parameter layout of the widely shared
    yolov4-tiny checkpoints: reduction r = 16 (the paper: 32, with at least 8 channels), ReLU
    (the paper: h-swish) and 1x1 convs without bias (the paper's have one).
    """

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        mid = channels // reduction
        self.conv_1x1 = nn.Conv2d(channels, mid, 1, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.bn = nn.BatchNorm2d(mid)
        self.F_h = nn.Conv2d(mid, channels, 1, bias=False)
        self.F_w = nn.Conv2d(mid, channels, 1, bias=False)

    def gates(self, x):
        h, w = x.shape[2:]
        x_h = x.mean(dim=3, keepdim=True).permute(0, 1, 3, 2)  # (B, C, 1, H)
        x_w = x.mean(dim=2, keepdim=True)  # (B, C, 1, W)
        y = self.relu(self.bn(self.conv_1x1(torch.cat([x_h, x_w], dim=3))))
        y_h, y_w = y.split([h, w], dim=3)
        return {
            "h": torch.sigmoid(self.F_h(y_h.permute(0, 1, 3, 2))),  # (B, C, H, 1)
            "w": torch.sigmoid(self.F_w(y_w)),  # (B, C, 1, W)
        }

    def spatial_map(self, gates):
        return (gates["h"] * gates["w"]).mean(dim=1, keepdim=True)


class CSE(AttentionBlock):
    """cSE, spatial squeeze and channel excitation (Roy et al. 2018):
    GAP -> 1x1 conv (C/r) -> ReLU -> 1x1 conv (C) -> sigmoid; r=2 as in the paper."""

    def __init__(self, channels: int, ratio: int = 2):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, max(1, channels // ratio), 1)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(max(1, channels // ratio), channels, 1)

    def gates(self, x):
        return {"channel": torch.sigmoid(self.fc2(self.relu(self.fc1(self.avg_pool(x)))))}


class SSE(AttentionBlock):
    """sSE = channel squeeze, spatial excitation (Roy et al. 2018): 1x1 conv C -> 1, sigmoid."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, 1, 1)

    def gates(self, x):
        return {"spatial": torch.sigmoid(self.conv(x))}

    def spatial_map(self, gates):
        return gates["spatial"]


class SCSE(AttentionBlock):
    """scSE (Roy et al. 2018, arXiv 1803.02579): cSE(x) + sSE(x), the two recalibrations added."""

    def __init__(self, channels: int, ratio: int = 2):
        super().__init__()
        self.cse = CSE(channels, ratio)
        self.sse = SSE(channels)

    def gates(self, x):
        return {"channel": self.cse.gates(x)["channel"], "spatial": self.sse.gates(x)["spatial"]}

    def apply_gates(self, x, gates):
        return x * gates["channel"] + x * gates["spatial"]

    def spatial_map(self, gates):
        return gates["spatial"]


# One registry: name -> block class. Index in PHI_NAMES is the `--phi` number.
ATTENTION: dict[str, type[AttentionBlock] | None] = {
    "none": None,
    "se": SE,
    "cbam": CBAM,
    "eca": ECA,
    "ca": CoordAtt,
    "scse": SCSE,
    "cse": CSE,
    "sse": SSE,
}
PHI_NAMES = ["none", "se", "cbam", "eca", "ca", "scse"]
ALIASES = {"coordatt": "ca", "coord": "ca", "0": "none", "": "none"}


def resolve_attention(phi: int | str | None) -> str:
    """Normalise `--phi` (a number, a digit string or a name) to a registry name."""
    if phi is None:
        return "none"
    if isinstance(phi, bool):
        raise ValueError(f"phi must be a number or a name, got {phi!r}")
    if isinstance(phi, int) or (isinstance(phi, str) and phi.strip().isdigit()):
        n = int(phi)
        if not 0 <= n < len(PHI_NAMES):
            raise ValueError(
                f"phi={n} is not an attention block; choose 0..{len(PHI_NAMES) - 1} "
                f"({', '.join(f'{i} {name}' for i, name in enumerate(PHI_NAMES))}) or a name"
            )
        return PHI_NAMES[n]
    name = str(phi).strip().lower()
    name = ALIASES.get(name, name)
    if name not in ATTENTION:
        raise ValueError(f"unknown attention {phi!r}; choose one of {', '.join(ATTENTION)} or 0..{len(PHI_NAMES) - 1}")
    return name


def build_attention(phi: int | str | None, channels: int) -> nn.Module | None:
    """The block for `phi` on a `channels`-wide map, or None for no attention."""
    cls = ATTENTION[resolve_attention(phi)]
    return None if cls is None else cls(channels)
