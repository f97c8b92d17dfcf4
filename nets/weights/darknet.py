"""Darknet `.cfg` / `.weights` for yolov4-tiny: read them onto `YoloBody`, write them back.

Darknet's weights file is a header (int32 major, minor, revision; then `seen`, images trained on,
as int64 from version 0.2 on, int32 before) followed by raw float32 values, one convolutional
layer after another in cfg order: for `batch_normalize=1` layers beta (the BN bias), gamma,
running mean, running variance, then the conv weights (out, in, kh, kw); for linear layers (the
1x1 convs before each `[yolo]`) the conv bias, then the weights. Nothing in the file names a
layer, so the layout is the cfg below, kept in one table (`layers`) that both the cfg writer and
the weights reader walk. Partial files such as `yolov4-tiny.conv.29` (`darknet partial ... 29`)
hold the first convs only.

Converting files on the command line: `python -m nets.weights.convert` (see there).
"""
from __future__ import annotations

import re
import struct
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nets.assets import ANCHOR_MASKS, MODEL_DATA, read_anchors

BUILTIN_CFG = MODEL_DATA / "yolov4-tiny.cfg"
HEADER_VERSION = (0, 2, 5)  # what Darknet writes today: seen is int64


class DarknetError(ValueError):
    """A Darknet cfg or weights file that does not fit yolov4-tiny; the message names the file."""


# ----------------------------------------------------------------------------- the layout
Section = tuple[str, dict[str, Any]]


def _conv(filters: int, size: int, stride: int = 1) -> Section:
    return ("convolutional", {"batch_normalize": 1, "filters": filters, "size": size, "stride": stride,
                              "pad": 1, "activation": "leaky"})


def _head(filters: int) -> Section:
    return ("convolutional", {"size": 1, "stride": 1, "pad": 1, "filters": filters, "activation": "linear"})


def _csp(channels: int) -> list[Section]:
    half = channels // 2
    return [_conv(channels, 3), ("route", {"layers": "-1", "groups": 2, "group_id": 1}),
            _conv(half, 3), _conv(half, 3), ("route", {"layers": "-1,-2"}), _conv(channels, 1),
            ("route", {"layers": "-6,-1"}), ("maxpool", {"size": 2, "stride": 2})]


# Module of YoloBody that each convolutional layer of the cfg fills, in cfg order.
CONV_MODULES = [
    "backbone.conv1", "backbone.conv2",
    *[f"backbone.resblock_body{i}.conv{j}" for i in (1, 2, 3) for j in (1, 2, 3, 4)],
    "backbone.conv3", "conv_for_P5", "yolo_headP5.0", "yolo_headP5.1",
    "upsample.0", "yolo_headP4.0", "yolo_headP4.1",
]


def layers(num_classes: int = 80, anchors: np.ndarray | None = None,
           masks: list[list[int]] | tuple = ANCHOR_MASKS, img_size: int | tuple[int, int] = 416,
           scale_x_y: float = 1.05) -> list[Section]:
    """The sections of yolov4-tiny.cfg (after `[net]`), indices as Darknet numbers layers."""
    anchors = read_anchors() if anchors is None else np.asarray(anchors, dtype=np.float32).reshape(-1, 2)
    anchor_text = ",  ".join(f"{_num(w)},{_num(h)}" for w, h in anchors)

    def yolo(mask: list[int]) -> Section:
        return ("yolo", {"mask": ",".join(str(m) for m in mask), "anchors": anchor_text,
                         "classes": num_classes, "num": len(anchors), "jitter": ".3",
                         "scale_x_y": _num(scale_x_y), "cls_normalizer": "1.0", "iou_normalizer": "0.07",
                         "iou_loss": "ciou", "ignore_thresh": ".7", "truth_thresh": 1, "random": 0,
                         "resize": "1.5", "nms_kind": "greedynms", "beta_nms": "0.6"})

    out = [3 * (5 + num_classes) for _ in masks]
    return [
        _conv(32, 3, 2), _conv(64, 3, 2),                 # 0-1
        *_csp(64), *_csp(128), *_csp(256),                # 2-25
        _conv(512, 3),                                    # 26
        _conv(256, 1), _conv(512, 3), _head(out[0]),      # 27-29
        yolo(list(masks[0])),                             # 30
        ("route", {"layers": "-4"}), _conv(128, 1),       # 31-32
        ("upsample", {"stride": 2}),                      # 33
        ("route", {"layers": "-1, 23"}),                  # 34
        _conv(256, 3), _head(out[1]),                     # 35-36
        yolo(list(masks[1])),                             # 37
    ]


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{float(v):g}"


def make_cfg(num_classes: int = 80, anchors: np.ndarray | None = None,
             masks: list[list[int]] | tuple = ANCHOR_MASKS, img_size: int | tuple[int, int] = 416,
             scale_x_y: float = 1.05) -> str:
    """yolov4-tiny.cfg text for any class count (Darknet and OpenCV DNN read it).

    `scale_x_y=1.05` is what the official weights were trained with; `export_darknet` writes the
    model's own (1.0 unless trained with --scale-x-y).
    """
    h, w = (img_size, img_size) if isinstance(img_size, int) else img_size
    net = ("net", {"batch": 64, "subdivisions": 1, "width": w, "height": h, "channels": 3, "momentum": 0.9,
                   "decay": 0.0005, "angle": 0, "saturation": 1.5, "exposure": 1.5, "hue": ".1",
                   "learning_rate": 0.00261, "burn_in": 1000, "max_batches": 500200, "policy": "steps",
                   "steps": "400000,450000", "scales": ".1,.1"})
    text = [f"# yolov4-tiny, {num_classes} classes (written by nets/weights/darknet.py)\n"]
    for name, opts in [net, *layers(num_classes, anchors, masks, img_size, scale_x_y)]:
        text.append(f"[{name}]\n" + "".join(f"{k}={v}\n" for k, v in opts.items()) + "\n")
    return "".join(text)


def parse_cfg(source: str | Path) -> list[Section]:
    """Sections of a Darknet cfg (a path, or the text itself), `[net]` first, values as strings."""
    path = Path(source) if not str(source).lstrip().startswith(("[", "#")) else None
    if path is not None and not path.is_file():
        raise DarknetError(f"Darknet cfg not found: {path}")
    text = path.read_text(errors="replace") if path else str(source)
    where = path or "<cfg text>"
    sections: list[Section] = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#")[0].split(";")[0].strip()
        if not line:
            continue
        if line.startswith("["):
            if not line.endswith("]"):
                raise DarknetError(f"{where}:{n}: bad section header {raw.strip()!r}")
            sections.append((line[1:-1].strip().lower(), {}))
        elif "=" in line and sections:
            key, value = line.split("=", 1)
            sections[-1][1][key.strip()] = value.strip()
        else:
            raise DarknetError(f"{where}:{n}: expected '[section]' or 'key=value', got {raw.strip()!r}")
    if not sections or sections[0][0] not in ("net", "network"):
        raise DarknetError(f"{where}: not a Darknet cfg (first section must be [net])")
    return sections


# Keys that decide the structure; everything else (training settings) may differ freely.
_STRUCTURE = {"convolutional": ("batch_normalize", "filters", "size", "stride", "activation"),
              "route": ("layers", "groups", "group_id"), "maxpool": ("size", "stride"),
              "upsample": ("stride",), "yolo": ()}
_DEFAULTS = {"batch_normalize": "0", "groups": "1", "group_id": "0", "stride": "1", "activation": "logistic"}


def _structure(sections: list[Section]) -> list[tuple]:
    out = []
    for i, (name, opts) in enumerate(sections):
        keys = _STRUCTURE.get(name)
        if keys is None:
            out.append((name,))
            continue
        values = []
        for k in keys:
            v = str(opts.get(k, _DEFAULTS.get(k, ""))).replace(" ", "")
            if k == "layers":  # relative and absolute indices mean the same layer
                v = ",".join(str(int(x) + i if int(x) < 0 else int(x)) for x in v.split(",") if x)
            values.append((k, v))
        out.append((name, *values))
    return out


@dataclass
class CfgInfo:
    num_classes: int
    anchors: np.ndarray
    masks: list[list[int]]
    img_size: int
    scale_x_y: float = 1.0


def cfg_info(source: str | Path) -> CfgInfo:
    """Classes, anchors, masks and input size of a yolov4-tiny cfg; errors if its layout differs."""
    sections = parse_cfg(source)
    where = source if len(str(source)) < 300 else "<cfg text>"
    yolos = [opts for name, opts in sections if name == "yolo"]
    if len(yolos) != 2:
        raise DarknetError(f"{where}: has {len(yolos)} [yolo] layers; yolov4-tiny has 2 "
                           "(is this a full yolov4 / yolov3 cfg? only yolov4-tiny layouts load here)")
    try:
        classes = {int(y["classes"]) for y in yolos}
        anchors = np.array([float(v) for v in yolos[0]["anchors"].replace(",", " ").split()], np.float32)
        masks = [[int(m) for m in y["mask"].split(",")] for y in yolos]
        net = sections[0][1]
        w, h = int(net.get("width", 416)), int(net.get("height", 416))
        sxy = float(yolos[0].get("scale_x_y", 1.0))
    except (KeyError, ValueError) as e:
        raise DarknetError(f"{where}: bad [yolo]/[net] entry: {e}") from None
    if len(classes) != 1:
        raise DarknetError(f"{where}: the two [yolo] layers disagree on classes ({sorted(classes)})")
    num_classes = classes.pop()
    anchors = anchors.reshape(-1, 2)
    if anchors.shape[0] != 6 or any(len(m) != 3 for m in masks):
        raise DarknetError(f"{where}: expected 6 anchors and 3 per [yolo] mask, got {anchors.shape[0]} / {masks}")
    ours = _structure(layers(num_classes, anchors, masks))
    theirs = _structure(sections[1:])
    for i, (a, b) in enumerate(zip(theirs, ours)):
        if a != b:
            raise DarknetError(f"{where}: layer {i} is {_show(a)}, but yolov4-tiny has {_show(b)} there; "
                               "only the yolov4-tiny layout loads into this network")
    if len(theirs) != len(ours):
        raise DarknetError(f"{where}: {len(theirs)} layers, yolov4-tiny has {len(ours)}")
    if w != h:
        print(f"note: {where}: non-square input {w}x{h}; model img_size set to {max(w, h)}", file=sys.stderr)
    return CfgInfo(num_classes, anchors, masks, max(w, h), sxy)


def _show(entry: tuple) -> str:
    return f"[{entry[0]}] " + " ".join(f"{k}={v}" for k, v in entry[1:])


@dataclass
class ConvLayer:
    index: int  # Darknet layer number
    module: str  # YoloBody module it fills
    filters: int
    in_channels: int
    size: int
    batch_norm: bool

    @property
    def numel(self) -> int:
        return self.filters * (4 if self.batch_norm else 1) + self.filters * self.in_channels * self.size ** 2


def conv_layers(num_classes: int = 80) -> list[ConvLayer]:
    """The convolutional layers in cfg order, with their input widths (walked through the routes)."""
    out_ch: list[int] = []
    convs: list[ConvLayer] = []
    prev = 3
    for i, (name, opts) in enumerate(layers(num_classes)):
        if name == "convolutional":
            convs.append(ConvLayer(i, CONV_MODULES[len(convs)], int(opts["filters"]), prev, int(opts["size"]),
                                   bool(opts.get("batch_normalize"))))
            prev = int(opts["filters"])
        elif name == "route":
            idx = [int(x) + i if int(x) < 0 else int(x) for x in str(opts["layers"]).split(",")]
            prev = sum(out_ch[j] for j in idx) // int(opts.get("groups", 1))
        out_ch.append(prev)
    return convs


def conv_keys(conv: ConvLayer) -> list[str]:
    """State-dict keys of one conv, in the order the weights file stores them."""
    m = conv.module
    if conv.batch_norm:
        return [f"{m}.bn.bias", f"{m}.bn.weight", f"{m}.bn.running_mean", f"{m}.bn.running_var", f"{m}.conv.weight"]
    return [f"{m}.bias", f"{m}.weight"]


def _shapes(conv: ConvLayer) -> list[tuple[int, ...]]:
    n = conv.filters
    w = (n, conv.in_channels, conv.size, conv.size)
    return [(n,)] * 4 + [w] if conv.batch_norm else [(n,), w]


# ----------------------------------------------------------------------------- weights files
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
    scale_x_y: float = 1.0  # how its heads decode box centres (from the cfg; the official 1.05 without one)

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
        for key, shape in zip(conv_keys(conv), _shapes(conv)):
            size = int(np.prod(shape))
            state[key] = torch.from_numpy(data[pos:pos + size].reshape(shape).copy())
            pos += size
    if count < len(convs_all):
        notes.append(f"partial file: the first {count} of {len(convs_all)} convs "
                     f"(Darknet layers 0-{convs[-1].index}: {convs[0].module} .. {convs[-1].module})")
        scale_x_y = 1.0  # no heads: nothing was trained to decode one way or the other
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
        for key, shape in zip(conv_keys(conv), _shapes(conv)):
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
                                 scale_x_y=float(getattr(model, "scale_x_y", 1.0))))
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
