"""Fold BatchNorm into the preceding convolution for inference (same outputs, fewer ops).

Only pairs whose forward is known to be `bn(conv(x))` are fused, listed by module class, so a
new block can never be fused wrongly by a name coincidence. torch's `fuse_conv_bn_eval` does the
arithmetic; the BN is replaced by an Identity so `forward` stays unchanged.
"""
from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from nets.attention import CoordAtt
from nets.backbone import BasicConv

# module class -> (conv attribute, bn attribute) where forward computes bn(conv(x)) directly
FUSABLE: dict[type[nn.Module], tuple[str, str]] = {
    BasicConv: ("conv", "bn"),
    CoordAtt: ("conv_1x1", "bn"),
}


@torch.no_grad()
def fuse_conv_bn(model: nn.Module, inplace: bool = False) -> nn.Module:
    """An eval-mode copy of `model` (or `model` itself with inplace=True) with conv+BN folded.

    Fusing bakes the BN running statistics into the weights, so it is for inference only.
    """
    if not inplace:
        model = copy.deepcopy(model)
    model.eval()
    fused = 0
    for module in model.modules():
        names = next((pair for cls, pair in FUSABLE.items() if isinstance(module, cls)), None)
        if names is None:
            continue
        conv, bn = getattr(module, names[0]), getattr(module, names[1])
        if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
            setattr(module, names[0], fuse_conv_bn_eval(conv, bn))
            setattr(module, names[1], nn.Identity())
            fused += 1
    model.fused_layers = fused
    return model
