"""The one typed config: defaults here, a YAML file on top, command-line flags on top of that.

    cfg = load_config("configs/default.yaml", {"epochs": 10})
    cfg, args = parse_config(argv)           # what train.py does
    cfg, args = parse_config(argv, mode="predict", keys=PREDICT_KEYS, parser=p)   # what predict.py does

Every field is a flag: `img_size` is `--img-size` (also `--img_size`; `--img` is an alias). Every mode
(train, val, predict, export) reads the same keys; MODE_DEFAULTS holds each mode's own defaults (predict:
conf 0.25, ...), applied over configs/default.yaml and under a user's --cfg file and the flags.
Unknown keys and bad values are rejected with a message that names the key.
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from nets.assets import MAX_STRIDE, ROOT
from nets.attention import resolve_attention
from nets.yolo import ATTENTION_SITES

DEFAULT_CONFIG = ROOT / "configs" / "default.yaml"


class ConfigError(ValueError):
    """A config key or value a user got wrong; the message names the key and the fix."""


@dataclass
class Config:
    # --- model ---
    phi: str = "3"  # attention: 0 none, 1 se, 2 cbam, 3 eca, 4 ca, 5 scse (number or name; also cse, sse)
    attention_sites: list[str] = field(default_factory=lambda: ["feat1", "feat2", "upsample"])
    anchors: str = "model_data/yolo_anchors.txt"
    autoanchor: bool = True  # at start: if < 98% of training boxes fit an anchor, train with anchors fitted to them
    weights: str = ""  # train: initial weights; predict/val/export: the model ("" = newest run's best.pt)
    # --- data ---
    data: str = "synthetic"  # data YAML, VOCdevkit folder, COCO json, YOLO-txt root, or "synthetic"
    img_size: int = 320
    workers: int = 2
    cache_images: str = "auto"  # train images decoded once, kept in RAM: auto (if < 30% of free RAM) | ram | off
    # --- schedule ---
    epochs: int = 100  # used when time is 0; setting epochs (file or flag) without time sets time to 0
    time: float = 18.0  # wall-clock budget in minutes; > 0 plans the epochs to fit it
    batch_size: int = 16
    nbs: int = 16  # the batch size lr0 is tuned for; other sizes scale lr (linear for SGD, sqrt for Adam)
    accumulate: int = 1  # optimizer step every N batches: ~ a batch of batch_size * N (lr follows it)
    optimizer: str = "adamw"  # adamw | adam | sgd (nesterov)
    lr0: float = 0.002
    lrf: float = 0.01  # final lr = lr0 * lrf
    scheduler: str = "cosine"  # cosine | linear | step
    momentum: float = 0.937
    weight_decay: float = 5e-4
    warmup_epochs: float = 3.0
    warmup_bias_lr: float = 0.1
    freeze_epochs: int = 0  # backbone frozen for the first N epochs (with pretrained weights)
    ema: bool = True
    ema_decay: float = 0.9999
    amp: str = "auto"  # auto (bf16 on an AMX CPU, else off) | off | fp16 | bf16
    grad_clip: float = 10.0  # max grad norm; 0 disables
    channels_last: bool = True  # NHWC training: a 1.2-1.3x faster CPU step (fp32 and bf16)
    compile: bool = False  # torch.compile the training forward (fuses BN + activation); the first steps compile
    sync_bn: bool = False
    # --- augmentation (probabilities and gains) ---
    mosaic: float = 1.0
    mixup: float = 0.0
    scale: float = 0.5
    translate: float = 0.1
    hsv_h: float = 0.015
    hsv_s: float = 0.7
    hsv_v: float = 0.4
    fliplr: float = 0.5
    multi_scale: float = 0.0  # > 0: each batch trains at a random multiple of 32 in img_size * (1 -/+ this)
    close_mosaic: int = 10  # mosaic off for the last N epochs (under a time budget: at most 25% of the planned epochs)
    # --- loss ---
    box_gain: float = 0.05
    obj_gain: float = 1.0
    cls_gain: float = 0.1
    label_smoothing: float = 0.0
    ignore_thresh: float = 0.5
    match_iou_thresh: float = 0.213  # extra anchors whose shape IoU with a box exceeds this; >= 1: best anchor only
    neighbor_cells: bool = True  # also assign the two cells next to a box centre (YOLOv5's rule)
    scale_x_y: float = 1.0  # box-centre range: s * sigmoid - (s - 1) / 2; official yolov4-tiny.cfg: 1.05
    obj_iou_ratio: float = 0.0  # objectness target: 0 -> 1.0, 1 -> the box's IoU
    # --- evaluation ---
    eval_interval: int = 1  # evaluate every N epochs (and always at the last)
    conf_thres: float = 0.001
    iou_thres: float = 0.45  # NMS IoU in every mode (0.6 scored 0.02-0.035 lower COCO AP on short runs)
    max_det: int = 300
    split: str = ""  # val: the split to score ("" = val, else test)
    augment: bool = False  # test-time augmentation: also run 1.33x and mirrored views (~4x the compute)
    rect: bool = True  # inference input: long side img_size, short side padded to a multiple of 32 (False: square)
    dtype: str = "fp32"  # fp32 | fp16 (GPU) | bf16: precision of the inference model (--half: fp16)
    fuse: bool = True  # inference: fold BatchNorm into the convs
    classes: list[str] = field(default_factory=list)  # inference: keep only these classes (ids or names)
    agnostic_nms: bool = False  # NMS across classes (one box per object)
    threads: int = 0  # inference CPU threads (0: one per core)
    backend: str = "auto"  # auto (CPU: the fastest installed, via a cached export) | torch | onnxruntime | openvino
    opset: int = 17  # export: ONNX opset
    best_metric: str = "map50_95"  # map50_95 | map50
    patience: int = 50  # stop after N evaluations without improvement; 0 disables
    save_period: int = 0  # also keep weights/epoch{N}.pt (EMA weights, no resume state) every N epochs; 0: off
    # --- run ---
    device: str = ""  # "" picks cuda when there is one, else cpu; or cpu, cuda, cuda:1
    seed: int = 0
    deterministic: bool = True
    name: str = "exp"
    project: str = "runs/train"
    exist_ok: bool = False
    resume: str = ""  # a run directory or its last.pt
    profile: bool = False
    plots: bool = True  # labels.png, train_batch0-2.jpg, results.png, last evaluation's PR curve and confusion matrix


CHOICES = {
    "optimizer": ("sgd", "adam", "adamw"),
    "scheduler": ("cosine", "linear", "step"),
    "amp": ("auto", "off", "fp16", "bf16"),
    "best_metric": ("map50_95", "map50"),
    "dtype": ("fp32", "fp16", "bf16"),
    "backend": ("auto", "torch", "onnxruntime", "openvino"),
    "cache_images": ("auto", "ram", "off"),
}
# keys only predict/val/export read: train.py and ablate.py do not show them as flags
INFERENCE_KEYS = ("split", "augment", "rect", "dtype", "fuse", "classes", "agnostic_nms", "threads", "backend",
                  "opset")
# Each mode's own defaults, over configs/default.yaml's and under a user's --cfg file and flags (like
# Ultralytics' per-mode defaults). img_size 0 and data "": what the weights file / its run was trained with.
MODE_DEFAULTS: dict[str, dict[str, Any]] = {
    "train": {},
    "val": {"img_size": 0, "data": "", "conf_thres": 0.001},
    "predict": {"img_size": 0, "conf_thres": 0.25, "batch_size": 8, "project": "runs/predict"},
    "export": {"img_size": 0, "batch_size": 1, "data": ""},  # data: --int8's calibration images
}
PROBABILITIES = ("mosaic", "mixup", "fliplr", "multi_scale", "hsv_h", "hsv_s", "hsv_v", "label_smoothing",
                 "ignore_thresh", "obj_iou_ratio", "conf_thres", "iou_thres", "lrf", "momentum", "ema_decay")
NON_NEGATIVE = ("match_iou_thresh", "epochs", "time", "workers", "weight_decay", "warmup_epochs", "freeze_epochs",
                "grad_clip", "scale", "translate", "close_mosaic", "box_gain", "obj_gain", "cls_gain", "patience",
                "save_period", "seed", "threads")
POSITIVE = ("batch_size", "nbs", "accumulate", "lr0", "eval_interval", "max_det", "opset")
PATHS = ("anchors", "weights", "resume")  # must exist when set
ALIASES = {"img": "img_size", "imgsz": "img_size", "batch": "batch_size", "conf": "conf_thres", "iou": "iou_thres",
           "cfg": None}
FLAG_ALIASES = {"img_size": ["--img", "--imgsz"], "batch_size": ["--batch"], "conf_thres": ["--conf"],
                "iou_thres": ["--iou"]}


def field_types() -> dict[str, Any]:
    hints = typing.get_type_hints(Config)
    return {f.name: hints[f.name] for f in dataclasses.fields(Config)}


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Turn a YAML or command-line value into the field's type, or raise naming the key."""
    origin = typing.get_origin(tp)
    try:
        if tp is bool:
            if isinstance(value, bool):
                return value
            s = str(value).strip().lower()
            if s in ("1", "true", "yes", "on"):
                return True
            if s in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if tp is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(str(value)) if not isinstance(value, (int, float)) else int(value)
        if tp is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if tp is str:
            return "" if value is None else str(value)
        if origin is list:
            (item,) = typing.get_args(tp)
            items = value if isinstance(value, (list, tuple)) else str(value).replace(",", " ").split()
            return [_coerce(key, v, item) for v in items]
        if isinstance(tp, types.UnionType):
            return value
    except ValueError:
        pass
    raise ConfigError(f"config key '{key}': {value!r} is not a valid {getattr(tp, '__name__', tp)}")


def _unknown_key(key: str, source: str) -> ConfigError:
    close = difflib.get_close_matches(key, [f.name for f in dataclasses.fields(Config)], n=1)
    hint = f"; did you mean '{close[0]}'?" if close else "; see configs/default.yaml for the keys"
    return ConfigError(f"unknown config key '{key}' in {source}{hint}")


def validate(cfg: Config, root: Path = ROOT, mode: str = "train") -> Config:
    """Reject values that cannot work, naming the key; return cfg for chaining."""
    inference = mode != "train"
    s = MAX_STRIDE
    if not (inference and cfg.img_size == 0) and (cfg.img_size < s or cfg.img_size % s):
        raise ConfigError(f"config key 'img_size': {cfg.img_size} must be a positive multiple of {s} "
                          f"(e.g. {max(s, round(cfg.img_size / s) * s)})")
    for key, allowed in CHOICES.items():
        if getattr(cfg, key) not in allowed:
            raise ConfigError(f"config key '{key}': {getattr(cfg, key)!r} is not one of {', '.join(allowed)}")
    for key in PROBABILITIES:
        if not 0.0 <= getattr(cfg, key) <= 1.0:
            raise ConfigError(f"config key '{key}': {getattr(cfg, key)} must lie in [0, 1]")
    for key in NON_NEGATIVE:
        if getattr(cfg, key) < 0:
            raise ConfigError(f"config key '{key}': {getattr(cfg, key)} must not be negative")
    for key in POSITIVE:
        if getattr(cfg, key) <= 0:
            raise ConfigError(f"config key '{key}': {getattr(cfg, key)} must be positive")
    if not 1.0 <= cfg.scale_x_y <= 2.0:
        raise ConfigError(f"config key 'scale_x_y': {cfg.scale_x_y} must be in [1, 2] (1.0: plain sigmoid; "
                          "the official yolov4-tiny.cfg uses 1.05)")
    if not inference and cfg.epochs == 0 and cfg.time == 0:
        raise ConfigError("config key 'epochs': 0 epochs and no 'time' budget would train nothing")
    try:
        cfg.phi = resolve_attention(cfg.phi)
    except ValueError as e:
        raise ConfigError(f"config key 'phi': {e}") from None
    bad_sites = [s for s in cfg.attention_sites if s not in ATTENTION_SITES]
    if bad_sites:
        raise ConfigError(f"config key 'attention_sites': unknown {bad_sites}; choose from {list(ATTENTION_SITES)}")
    for key in PATHS:
        value = getattr(cfg, key)
        if value and not resolve_path(value, root).exists():
            raise ConfigError(f"config key '{key}': path not found: {value}")
    if cfg.data not in ("synthetic", "") and not resolve_path(cfg.data, root).exists():
        raise ConfigError(f"config key 'data': path not found: {cfg.data} (a data YAML, a VOCdevkit folder, "
                          "a COCO json, a YOLO-txt root, or 'synthetic' for the built-in set)")
    if not (cfg.data or inference):
        raise ConfigError("config key 'data': empty; training needs a data set (or 'synthetic')")
    return cfg


def resolve_path(value: str, root: Path = ROOT) -> Path:
    """A path as given if it exists (relative to the working directory), else relative to the repo."""
    p = Path(value).expanduser()
    return p if p.is_absolute() or p.exists() else root / p


def load_config(path: str | Path | None = DEFAULT_CONFIG, overrides: dict[str, Any] | None = None,
                check: bool = True, mode: str = "train") -> Config:
    """Defaults <- configs/default.yaml <- MODE_DEFAULTS[mode] <- your YAML file <- overrides; coerced to the
    field types and validated."""
    if mode not in MODE_DEFAULTS:
        raise ValueError(f"mode must be one of {', '.join(MODE_DEFAULTS)}, got '{mode}'")
    types_ = field_types()
    values: dict[str, Any] = {}
    sources: list[tuple[dict, str]] = []
    if path:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML ({e})") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping of config keys, got {type(loaded).__name__}")
        sources.append((loaded, str(path)))
    is_defaults_file = bool(path) and Path(path).resolve() == DEFAULT_CONFIG.resolve()
    sources.insert(len(sources) if is_defaults_file else 0, (MODE_DEFAULTS[mode], f"the {mode} defaults"))
    sources.append((overrides or {}, "the command line"))
    for mapping, source in sources:
        keys = set()
        for key, value in mapping.items():
            key = ALIASES.get(key, key) if key in ALIASES else key.replace("-", "_")
            if key is None:
                continue
            if key not in types_:
                raise _unknown_key(key, source)
            values[key] = _coerce(key, value, types_[key])
            keys.add(key)
        # asking for a number of epochs means "train that long", not "within the default budget"
        if "epochs" in keys and "time" not in keys and not (is_defaults_file and source == str(path)):
            values["time"] = 0.0
    cfg = Config(**values)
    return validate(cfg, mode=mode) if check else cfg


def _default_comments() -> dict[str, str]:
    """The `# ...` comment after each key in configs/default.yaml: the flags' help text."""
    comments = {}
    for line in DEFAULT_CONFIG.read_text().splitlines() if DEFAULT_CONFIG.is_file() else []:
        m = re.match(r"^(\w+):[^#]*#\s*(.+)$", line)
        if m:
            comments[m.group(1)] = m.group(2).strip()
    return comments


def add_config_flags(parser: argparse.ArgumentParser, skip: tuple[str, ...] = (), mode: str = "train",
                     keys: tuple[str, ...] | None = None) -> None:
    """One flag per field in `keys` (default: all but, for training, INFERENCE_KEYS; `--img-size` and `--img_size`),
    the usual short aliases, `--no-KEY` for booleans that default to true and `--half` for `--dtype fp16`;
    help text from the YAML comments."""
    comments = _default_comments()
    defaults = {**dataclasses.asdict(Config()), **MODE_DEFAULTS[mode]}
    if keys is None:
        keys = tuple(k for k in defaults if mode != "train" or k not in INFERENCE_KEYS)
    for name, tp in field_types().items():
        if name in skip or name not in keys:
            continue
        flags = [f"--{name.replace('_', '-')}"] + ([f"--{name}"] if "_" in name else []) + FLAG_ALIASES.get(name, [])
        default = defaults[name]
        help_text = f"{comments.get(name, '')} (default: {default!r})".strip().replace("%", "%%")  # argparse formats %
        kwargs: dict[str, Any] = {"dest": name, "default": None, "help": help_text}
        if tp is bool:
            kwargs.update(nargs="?", const="true", metavar="BOOL")
        elif typing.get_origin(tp) is list:
            kwargs.update(nargs="*", metavar="ITEM")
        parser.add_argument(*flags, **kwargs)
        if tp is bool and default:
            parser.add_argument(f"--no-{name.replace('_', '-')}", dest=name, action="store_const", const="false",
                                help=f"same as --{name.replace('_', '-')} false")
        if name == "dtype":
            parser.add_argument("--half", dest=name, action="store_const", const="fp16", help="same as --dtype fp16")


def parse_config(argv: list[str] | None = None, description: str = "",
                 parser: argparse.ArgumentParser | None = None, skip: tuple[str, ...] = (), mode: str = "train",
                 keys: tuple[str, ...] | None = None) -> tuple[Config, argparse.Namespace]:
    """Build the Config of `mode` from `--cfg FILE` (default configs/default.yaml) and the flags of `keys`.

    `skip` names fields whose flags the caller's own parser defines differently (e.g. ablate's --phi list).
    """
    parser = parser or argparse.ArgumentParser(description=description,
                                               formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cfg", default=str(DEFAULT_CONFIG), help="base config YAML (default: configs/default.yaml)")
    add_config_flags(parser, skip, mode, keys)
    args = parser.parse_args(argv)
    overrides = {k: v for k, v in vars(args).items() if k in field_types() and k not in skip and v is not None}
    try:
        cfg = load_config(args.cfg, overrides, mode=mode)
    except ConfigError as e:
        parser.error(str(e))
    return cfg, args


def config_to_dict(cfg: Config) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the resolved config; `load_config(path)` reads it back to the same Config."""
    Path(path).write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))


def format_config(cfg: Config) -> str:
    """A compact one-screen view: `key=value` pairs wrapped at ~100 columns."""
    parts = [f"{k}={v}" for k, v in config_to_dict(cfg).items()]
    lines, line = [], ""
    for p in parts:
        if line and len(line) + len(p) + 2 > 100:
            lines.append(line)
            line = ""
        line = f"{line}  {p}" if line else p
    return "\n".join(lines + [line])
