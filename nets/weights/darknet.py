"""Darknet `.cfg` / `.weights` for yolov4-tiny: read them onto `YoloBody`, write them back.

Darknet's weights file is a header (int32 major, minor, revision; then `seen`, images trained on,
as int64 from version 0.2 on, int32 before) followed by raw float32 values, one convolutional
layer after another in cfg order: for `batch_normalize=1` layers beta (the BN bias), gamma,
running mean, running variance, then the conv weights (out, in, kh, kw); for linear layers (the
1x1 convs before each `[yolo]`) the conv bias, then the weights. Nothing in the file names a
layer, so the layout is the cfg's, kept in one table (`darknet_cfg.layers`) that both the cfg writer
and this weights reader walk. Partial files such as `yolov4-tiny.conv.29` (`darknet partial ... 29`)
hold the first convs only.

Converting files on the command line: `python -m nets.weights.convert` (see there).
"""
from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from nets.assets import SCALE_X_Y
from nets.weights.darknet_cfg import (
    BUILTIN_CFG,
    CfgInfo,
    ConvLayer,
    DarknetError,
    cfg_info,
    conv_keys,
    conv_layers,
    conv_shapes,
    make_cfg,
)

HEADER_VERSION = (0, 2, 5)  # what Darknet writes today: seen is int64


@dataclass
class DarknetWeights:
    """What a .weights file holds, as project state-dict entries."""
    path: Path
    version: tuple[int, int, int]
    seen: int
    num_classes: int | None  # None: a partial (backbone) file without the heads
    state_dict: dict[str, torch.Tensor]
    convs: list[ConvLayer]  # the convs it holds, in order
    total_convs: int = 21
    cfg: CfgInfo | None = None
    notes: list[str] = field(default_factory=list)
    scale_x_y: float = SCALE_X_Y  # how its heads decode box centres (from the cfg; the official 1.05 without one)

    @property
    def partial(self) -> bool:
        return len(self.convs) < self.total_convs


def read_header(path: str | Path) -> tuple[tuple[int, int, int], int, int]:
    """(major, minor, revision), seen, and the byte offset where the floats start."""
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(20)
    if len(head) < 16:
        raise DarknetError(f"{path}: {len(head)} bytes, too short for a Darknet weights header")
    major, minor, revision = struct.unpack("<3i", head[:12])
    if not (0 <= major < 1000 and 0 <= minor < 1000 and 0 <= revision < 10 ** 6):
        raise DarknetError(f"{path}: not a Darknet weights file (header {major}.{minor}.{revision}; "
                           "a PyTorch checkpoint goes to load_model / --weights as .pt/.pth)")
    if major * 10 + minor >= 2:
        return (major, minor, revision), struct.unpack("<q", head[12:20])[0], 20
    return (major, minor, revision), struct.unpack("<i", head[12:16])[0], 16


def _prefix_counts(convs: list[ConvLayer]) -> list[int]:
    sums, total = [0], 0
    for c in convs:
        total += c.numel
        sums.append(total)
    return sums


def infer_num_classes(n_floats: int) -> int | None:
    """Class count of a complete yolov4-tiny weights file from its size; None when it is no such file."""
    base = conv_layers(1)
    body = sum(c.numel for c in base if c.batch_norm)
    heads = [c for c in base if not c.batch_norm]
    per_filter = sum(1 + c.in_channels for c in heads)  # bias + weights per output filter, both heads
    rest = n_floats - body
    if rest <= 0 or rest % per_filter:
        return None
    filters = rest // per_filter
    if filters % 3 or filters // 3 - 5 < 1:
        return None
    return filters // 3 - 5


def read_weights(path: str | Path, cfg: str | Path | None = None) -> DarknetWeights:
    """Read a yolov4-tiny `.weights` (complete, or partial like `.conv.29`) into project keys.

    The class count comes from the cfg when given, else from the file size (built-in layout).
    """
    path = Path(path)
    if not path.is_file():
        raise DarknetError(f"Darknet weights not found: {path}")
    version, seen, offset = read_header(path)
    data = np.fromfile(path, dtype="<f4", offset=offset)
    extra = (path.stat().st_size - offset) % 4
    info = cfg_info(cfg) if cfg is not None else None
    n = data.size
    notes: list[str] = []
    if info is not None:
        num_classes: int | None = info.num_classes
    else:
        num_classes = infer_num_classes(n)
    convs_all = conv_layers(num_classes or 1)
    sums = _prefix_counts(convs_all)
    if num_classes is not None and sums[-1] == n and not extra:
        count = len(convs_all)
    else:
        # A partial file: it must end exactly after one of the convs (before the first head when
        # the class count is unknown, since the heads' size depends on it).
        first_head = next(i for i, c in enumerate(convs_all) if not c.batch_norm)
        limit = len(convs_all) if info is not None else first_head
        count = next((k for k in range(1, limit + 1) if sums[k] == n), None)
        if count is None or extra:
            body = sum(c.numel for c in convs_all if c.batch_norm)
            conv29 = _prefix_counts(conv_layers(1))[sum(1 for c in convs_all if c.index < 29)]
            what = f"{n} float32 values after a {offset}-byte header" + (f" and {extra} stray bytes" if extra else "")
            raise DarknetError(
                f"{path}: holds {what}, which is no yolov4-tiny weights file: a complete one holds "
                f"{body} + 2310 x (5 + classes) values ({body + 2310 * 85} for 80 classes), the backbone "
                f"file yolov4-tiny.conv.29 holds {conv29}; a partial file must end after a whole conv. "
                + ("Its size does not fit the cfg's layout either. " if info is not None else
                   "Truncated download? ")
                + "Full YOLOv4 / YOLOv3 weights are other networks and do not load here."
            )
    convs = convs_all[:count]
    state: dict[str, torch.Tensor] = {}
    pos = 0
    for conv in convs:
        for key, shape in zip(conv_keys(conv), conv_shapes(conv)):
            size = int(np.prod(shape))
            state[key] = torch.from_numpy(data[pos:pos + size].reshape(shape).copy())
            pos += size
    if count < len(convs_all):
        notes.append(f"partial file: the first {count} of {len(convs_all)} convs "
                     f"(Darknet layers 0-{convs[-1].index}: {convs[0].module} .. {convs[-1].module})")
        scale_x_y = SCALE_X_Y  # no heads: nothing was trained to decode one way or the other
    elif info is not None:
        scale_x_y = info.scale_x_y
    else:
        scale_x_y = cfg_info(BUILTIN_CFG).scale_x_y
        notes.append(f"no cfg given: decoding with the official yolov4-tiny.cfg's scale_x_y={scale_x_y:g}; "
                     "pass the weights' own cfg (--cfg) if they were trained with another")
    return DarknetWeights(path, version, seen, num_classes if count == len(convs_all) else None,
                          state, convs, len(convs_all), info, notes, scale_x_y)


def write_weights(model: torch.nn.Module, path: str | Path, seen: int = 0, cutoff: int | None = None) -> int:
    """Write `model` (a YoloBody) as Darknet weights; `cutoff` keeps layers < cutoff, like
    `darknet partial ... cutoff`. Attention layers have no place in the format and are not written.
    Returns the number of convs written."""
    path = Path(path)
    state = model.state_dict()
    convs = [c for c in conv_layers(model.num_classes) if cutoff is None or c.index < cutoff]
    chunks = []
    for conv in convs:
        for key, shape in zip(conv_keys(conv), conv_shapes(conv)):
            t = state[key]
            if tuple(t.shape) != shape:
                raise DarknetError(f"{key}: model has {tuple(t.shape)}, the yolov4-tiny layout needs {shape}")
            chunks.append(t.detach().cpu().float().numpy().ravel())
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<3iq", *HEADER_VERSION, int(seen)))
        np.concatenate(chunks).astype("<f4").tofile(f)
    tmp.replace(path)
    return len(convs)


def export_darknet(model: torch.nn.Module, weights_path: str | Path, cfg_path: str | Path | None = None,
                   img_size: int | None = None, seen: int = 0) -> Path:
    """Write `.weights` and a matching `.cfg` (next to it unless given) that Darknet / OpenCV DNN run.

    The cfg carries the model's scale_x_y, so OpenCV's boxes match predict.py's.
    """
    if getattr(model, "phi", "none") != "none":
        raise DarknetError(f"attention '{model.phi}' has no Darknet layer; only phi=0 models export to Darknet "
                           "(export to ONNX instead to keep the attention blocks)")
    weights_path = Path(weights_path)
    cfg_path = Path(cfg_path) if cfg_path else weights_path.with_suffix(".cfg")
    write_weights(model, weights_path, seen=seen)
    size = int(img_size or getattr(model, "img_size", 416))
    cfg_path.write_text(make_cfg(model.num_classes, model.anchors.cpu().numpy(), model.masks, size,
                                 scale_x_y=model.scale_x_y))
    return cfg_path


def is_darknet_file(path: str | Path) -> bool:
    """Darknet weights by name (`.weights`, `.conv.N`) or by content (a small version header, not zip/pickle)."""
    path = Path(path)
    if path.suffix.lower() == ".weights" or re.search(r"\.conv\.\d+$", path.name):
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(12)
    except OSError:
        return False
    if len(head) < 12 or head[:2] == b"PK" or head[:1] == b"\x80":
        return False
    major, minor, revision = struct.unpack("<3i", head)
    return major == 0 and 0 < minor <= 2 and 0 <= revision < 1000
