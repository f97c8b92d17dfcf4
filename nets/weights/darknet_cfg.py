"""The yolov4-tiny layout as Darknet `.cfg` text: one table of layers (`layers`) that writes the cfg,
checks a user's cfg against it, and tells the weights reader (nets/weights/darknet.py) which YoloBody
module each convolutional layer fills and in what order its values are stored.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nets.assets import ANCHOR_MASKS, MODEL_DATA, SCALE_X_Y, read_anchors

BUILTIN_CFG = MODEL_DATA / "yolov4-tiny.cfg"
OFFICIAL_SCALE_X_Y = 1.05  # what yolov4-tiny.cfg says and its published weights were trained with


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
           scale_x_y: float = OFFICIAL_SCALE_X_Y) -> list[Section]:
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
             scale_x_y: float = OFFICIAL_SCALE_X_Y) -> str:
    """yolov4-tiny.cfg text for any class count (Darknet and OpenCV DNN read it).

    The official weights were trained with OFFICIAL_SCALE_X_Y; `export_darknet` writes the
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
    scale_x_y: float = SCALE_X_Y


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
        sxy = float(yolos[0].get("scale_x_y", 1.0))  # Darknet's value when the key is absent
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


def conv_shapes(conv: ConvLayer) -> list[tuple[int, ...]]:
    n = conv.filters
    w = (n, conv.in_channels, conv.size, conv.size)
    return [(n,)] * 4 + [w] if conv.batch_norm else [(n,), w]
