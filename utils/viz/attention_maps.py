"""Where each attention site looks: one 2-D map per site on the network input grid, for EVERY variant.

gate:   the block's spatial gate, in [0, 1] (CBAM, sSE, scSE: its (h, w) sigmoid; CA: channel-mean of gate_h * gate_w).
energy: channel-mean of |site output| (the block's output; with no block there, the feature itself): defined for all.
A site is drawn with its gate when the block has one, else with its energy, so none/SE/ECA/cSE get a map too.

    raw, maps = attention_maps(model, x)                 # maps["feat1"].drawn: (B, S_h, S_w)
    det, info, maps = detect_with_maps(predictor, rgb)   # one image through the shared Predictor
    panels, titles = overlay_panels(rgb, info, maps)     # heatmaps over the photo: "feat1 gate 0.41-0.73",
                                                         # "feat2 |x| 0.021-1.94" (kind and value range)

Captured with forward hooks (the block's output, or the backbone/upsample output where no block sits)
and the blocks' own `keep_maps` (the gate the forward really applied); the model is not changed.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nets.attention import AttentionBlock
from nets.yolo import ATTENTION_SITES
from utils.viz.draw import map_to_image, overlay_heatmap

# site -> (module whose output is the site's feature when no block sits there, index into its output)
FEATURE_SOURCES: dict[str, tuple[str, int | None]] = {"feat1": ("backbone", 0), "feat2": ("backbone", 1),
                                                        "upsample": ("upsample", None)}
KIND_LABELS = {"gate": "gate", "energy": "|x|"}  # how a panel title names what it shows (|x|: channel-mean)
_UNSET = object()


@dataclass
class SiteMap:
    """One site over a batch: `energy` (B, h, w) always, `gate` (B, h, w) where the block has a spatial gate."""
    site: str
    block: str  # the block's name ("cbam", "se", ...), "none" where the site has no block
    energy: torch.Tensor
    gate: torch.Tensor | None = None

    @property
    def kind(self) -> str:
        return "gate" if self.gate is not None else "energy"

    @property
    def drawn(self) -> torch.Tensor:
        """The map to draw: the spatial gate when there is one, else the feature energy."""
        return self.gate if self.gate is not None else self.energy


def has_spatial_gate(block: nn.Module | None) -> bool:
    """True for blocks that weight positions (CBAM, CA, sSE, scSE); False for channel-only ones and None."""
    return isinstance(block, AttentionBlock) and type(block).spatial_map is not AttentionBlock.spatial_map


def to_input_grid(m: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """(B, h, w) feature-grid map -> (B, S_h, S_w), bilinear with pixel centres aligned (as cv2.resize)."""
    if tuple(m.shape[-2:]) == tuple(size):
        return m
    return F.interpolate(m[:, None], size=tuple(int(s) for s in size), mode="bilinear", align_corners=False)[:, 0]


class AttentionCapture:
    """Context manager: each forward of `model` inside it records a SiteMap per site (the last forward wins).

    Hooks and `keep_maps` flags are removed/restored on exit, so the model is left as it was.
    """

    def __init__(self, model: nn.Module):
        missing = [name for name in ("backbone", "upsample", *(f"{s}_att" for s in ATTENTION_SITES))
                   if not hasattr(model, name)]
        if missing or not isinstance(model, nn.Module):
            raise ValueError("attention maps need the PyTorch YoloBody (.pt weights), not an ONNX model or "
                             f"another network (it lacks {', '.join(missing) or 'nn.Module'})")
        self.model = model
        self._handles: list[Any] = []
        self._restore: list[tuple[nn.Module, Any]] = []
        self._energy: dict[str, torch.Tensor] = {}
        self._gate: dict[str, torch.Tensor | None] = {}
        self._blocks: dict[str, str] = {}
        self._size: tuple[int, int] | None = None

    def __enter__(self) -> "AttentionCapture":
        m = self.model
        self._handles.append(m.register_forward_pre_hook(self._record_size))
        for site in ATTENTION_SITES:
            block = getattr(m, f"{site}_att")
            if block is not None:
                self._blocks[site] = str(getattr(m, "phi", type(block).__name__.lower()))
                if isinstance(block, AttentionBlock):
                    self._restore.append((block, block.__dict__.get("keep_maps", _UNSET)))
                    block.keep_maps, block.last_maps = True, None
                self._handles.append(block.register_forward_hook(partial(self._from_block, site)))
            else:
                self._blocks[site] = "none"
                name, index = FEATURE_SOURCES[site]
                self._handles.append(getattr(m, name).register_forward_hook(partial(self._from_feature, site, index)))
        return self

    def __exit__(self, *exc: Any) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        for block, keep in self._restore:
            if keep is _UNSET:
                block.__dict__.pop("keep_maps", None)  # back to the class default
            else:
                block.keep_maps = keep
            block.__dict__.pop("last_maps", None)
        self._restore.clear()

    def _record_size(self, module: nn.Module, args: tuple) -> None:
        self._size = tuple(int(v) for v in args[0].shape[-2:])

    def _from_block(self, site: str, block: nn.Module, args: tuple, output: torch.Tensor) -> None:
        self._energy[site] = output.detach().abs().float().mean(dim=1)
        gate = getattr(block, "last_maps", None) if has_spatial_gate(block) else None
        self._gate[site] = None if gate is None else gate.detach().float()[:, 0]

    def _from_feature(self, site: str, index: int | None, module: nn.Module, args: tuple, output: Any) -> None:
        feat = output if index is None else output[index]
        self._energy[site] = feat.detach().abs().float().mean(dim=1)
        self._gate[site] = None

    def maps(self, input_grid: bool = True) -> dict[str, SiteMap]:
        """Per site (in ATTENTION_SITES order) the maps of the last forward; on the input grid by default."""
        if self._size is None or len(self._energy) != len(ATTENTION_SITES):
            raise RuntimeError("no forward pass ran inside AttentionCapture")
        grid = (lambda t: to_input_grid(t, self._size)) if input_grid else (lambda t: t)
        return {s: SiteMap(s, self._blocks[s], grid(self._energy[s]),
                           None if self._gate[s] is None else grid(self._gate[s])) for s in ATTENTION_SITES}


def attention_maps(model: nn.Module, x: torch.Tensor, input_grid: bool = True
                   ) -> tuple[list[torch.Tensor], dict[str, SiteMap]]:
    """Raw head maps of `model(x)` and its SiteMap per site ((B, S_h, S_w), or the feature grid)."""
    with AttentionCapture(model) as cap, torch.inference_mode():
        raw = model(x)
    return raw, cap.maps(input_grid)


def detect_with_maps(predictor: Any, image: np.ndarray, shape: Sequence[int] | None = None
                     ) -> tuple[dict[str, torch.Tensor], Any, dict[str, SiteMap]]:
    """One RGB image through the shared Predictor (letterbox -> model -> decode -> NMS) with its maps.

    `shape` is the network input (S_h, S_w); by default the one `predictor.detect` would use, so the
    boxes equal the predictor's and the maps belong to exactly that forward pass.
    """
    if getattr(predictor, "onnx", False):
        raise ValueError("attention maps need the PyTorch weights (.pt), not an ONNX model")
    x, infos = predictor.preprocess([image], tuple(shape) if shape is not None else None)
    with AttentionCapture(predictor.model) as cap:
        raw = predictor.infer(x)
    det = predictor.postprocess(raw, infos)[0]
    return det, infos[0], cap.maps()


def map_title(sm: SiteMap, lo: float, hi: float) -> str:
    """'feat1 gate 0.412-0.733' or 'feat2 |x| 0.0213-1.94': site, what is drawn, its value range (short: it
    must fit on a 320 px panel)."""
    fmt = (lambda v: f"{v:.3f}") if sm.kind == "gate" else (lambda v: f"{v:.3g}")
    return f"{sm.site} {KIND_LABELS[sm.kind]} {fmt(lo)}-{fmt(hi)}"


def overlay_panels(img: np.ndarray, info: Any, maps: dict[str, SiteMap], index: int = 0,
                   display: tuple[int, int] | None = None) -> tuple[list[np.ndarray], list[str]]:
    """Per site, the drawn map over RGB `img` (stretched to its own range; the title gives the range).

    `info` says how `img` was letterboxed (LetterboxInfo); `display` (h, w) resizes the panels.
    """
    size = info.input_shape or tuple(maps[next(iter(maps))].drawn.shape[-2:])
    base = img if display is None else cv2.resize(img, (display[1], display[0]), interpolation=cv2.INTER_AREA)
    panels, titles = [], []
    for sm in maps.values():
        mm = map_to_image(sm.drawn[index].cpu().numpy(), info.scale, info.pad, info.shape, size)
        lo, hi = float(mm.min()), float(mm.max())  # range over the photo, padding cut off
        if display is not None:
            mm = cv2.resize(mm, (display[1], display[0]), interpolation=cv2.INTER_LINEAR)
        panels.append(overlay_heatmap(base, mm, normalize=True))
        titles.append(map_title(sm, lo, hi))
    return panels, titles
