"""State dicts of the reference repository (bubbliiiing/yolov4-tiny-pytorch) and its forks.

Their published `yolov4_tiny_weights_coco.pth` / `_voc.pth` (and checkpoints trained with that
code, phi 0-4) are plain state dicts whose names match ours except one: the neck's upsampling
block is a module holding a Sequential called `upsample`, so their `upsample.upsample.0.*` is our
`upsample.0.*`. Saves made under DataParallel add a `module.` prefix. The attention blocks (SE
`fc.0`/`fc.2`, CBAM `channelattention.fc1/fc2` + `spatialattention.conv1`, ECA `conv`, CA
`conv_1x1`/`bn`/`F_h`/`F_w`) already have their parameter names and shapes here.

Converting files on the command line: `python -m nets.weights.convert` (see there).
"""
from __future__ import annotations

from collections.abc import Mapping

import torch

from nets.attention import resolve_attention

_THEIRS_TO_OURS = (("upsample.upsample.", "upsample."),)
_SITES = ("feat1_att", "feat2_att", "upsample_att")
HEAD_KEYS = ("yolo_headP5.1.weight", "yolo_headP5.1.bias", "yolo_headP4.1.weight", "yolo_headP4.1.bias")
MARKER = "backbone.conv1.conv.weight"


def unwrap(obj: object) -> dict[str, torch.Tensor] | None:
    """The tensor dict inside `obj` (bare, or under 'state_dict' / 'model' / 'model_state_dict'),
    with any `module.` prefix removed; None when there is none."""
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model_state_dict", "model"):
            inner = obj.get(key)
            if isinstance(inner, Mapping) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                obj = inner
                break
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        return None
    out = {}
    for k, v in obj.items():
        k = str(k)
        while k.startswith("module."):
            k = k[len("module."):]
        out[k] = v
    return out


def is_reference_state_dict(obj: object) -> bool:
    """A yolov4-tiny state dict with the reference (or our own) key names."""
    sd = unwrap(obj)
    return sd is not None and MARKER in sd


def to_project_keys(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename reference keys to ours (our own names pass through unchanged)."""
    out = {}
    for k, v in state.items():
        for theirs, ours in _THEIRS_TO_OURS:
            if k.startswith(theirs):
                k = ours + k[len(theirs):]
        out[k] = v
    return out


def to_reference_keys(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename our keys to the reference repository's (to hand a model back to that code)."""
    out = {}
    for k, v in state.items():
        for theirs, ours in _THEIRS_TO_OURS:
            if k.startswith(ours) and not k.startswith(theirs):
                k = theirs + k[len(ours):]
        out[k] = v
    return out


def infer_attention(state: Mapping[str, torch.Tensor]) -> str:
    """Attention name from the parameter names of the first attention site present."""
    for site in _SITES:
        names = {k[len(site) + 1:] for k in state if k.startswith(site + ".")}
        if not names:
            continue
        if "fc.0.weight" in names:
            return "se"
        if "channelattention.fc1.weight" in names:
            return "cbam"
        if "conv_1x1.weight" in names:
            return "ca"
        if "cse.fc1.weight" in names:
            return "scse"
        if "fc1.weight" in names and "fc2.weight" in names:
            return "cse"
        if names == {"conv.weight"}:
            return "eca" if state[f"{site}.conv.weight"].dim() == 3 else "sse"
        if names == {"conv.weight", "conv.bias"}:
            return "sse"
        raise ValueError(f"unknown attention block at '{site}' (parameters {sorted(names)})")
    return "none"


def infer_config(state: Mapping[str, torch.Tensor]) -> dict:
    """num_classes, phi and attention sites of a (project-keyed) yolov4-tiny state dict."""
    w = state.get("yolo_headP5.1.weight")
    if w is None or w.dim() != 4 or w.shape[0] % 3 or w.shape[0] // 3 < 6:
        shape = None if w is None else tuple(w.shape)
        raise ValueError(f"no yolov4-tiny head 'yolo_headP5.1.weight' of 3*(5+C) filters (found {shape})")
    sites = [s[:-4] for s in _SITES if any(k.startswith(s + ".") for k in state)]
    phi = resolve_attention(infer_attention(state))
    return {"num_classes": w.shape[0] // 3 - 5, "phi": phi, "attention_sites": sites if phi != "none" else
            ["feat1", "feat2", "upsample"]}
