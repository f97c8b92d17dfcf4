"""One loader for every kind of weights file.

* `load_model(path)` -> an eval-mode YoloBody ready for inference, from a project checkpoint, a
  Darknet `.weights` (its cfg, or the built-in yolov4-tiny layout), or a reference-repository
  state dict (bubbliiiing/yolov4-tiny-pytorch `.pth`). Nothing is guessed silently: a class count
  or attention type that does not fit the file is an error naming the file.
* `load_pretrained(model, path)` -> report: what `train.py --weights` does. Loads every tensor
  whose name and shape fit, and says what it skipped: final head convs when the class count
  differs, attention layers that the file has no counterpart for.

Project checkpoints carry their model config (phi, classes, anchors, input size), so users
never repeat them.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from nets.assets import SCALE_X_Y, class_names_for
from nets.attention import resolve_attention
from nets.weights import darknet, reference
from nets.weights.checkpoint import CheckpointError, build_from_model_cfg, is_project_checkpoint, load_checkpoint
from nets.yolo import ATTENTION_SITES, YoloBody

HEAD_PREFIXES = ("yolo_headP5.1.", "yolo_headP4.1.")
ATT_PREFIXES = tuple(f"{s}_att." for s in ATTENTION_SITES)


def _describe(obj: Any) -> str:
    if isinstance(obj, dict):
        keys = list(obj)[:5]
        return f"a dict with keys {keys}{'...' if len(obj) > 5 else ''}"
    return f"a {type(obj).__name__}"


# ----------------------------------------------------------------------------- read any file
def _read(path: Path, cfg: str | Path | None = None) -> dict[str, Any]:
    """Normalise any supported file to {"kind", "state", "model_cfg", "info"} with project keys."""
    if not path.exists():
        raise CheckpointError(f"weights file not found: {path}")
    if path.suffix.lower() == ".cfg":
        raise CheckpointError(f"{path}: this is a Darknet cfg, not weights; pass the .weights file "
                              "(and this cfg with --cfg)")
    if darknet.is_darknet_file(path):
        dw = darknet.read_weights(path, cfg)
        model_cfg = {"phi": "none", "num_classes": dw.num_classes, "scale_x_y": dw.scale_x_y}
        if dw.cfg is not None:
            model_cfg.update(anchors=dw.cfg.anchors.tolist(), masks=dw.cfg.masks, img_size=dw.cfg.img_size)
        label = f"Darknet {'.'.join(map(str, dw.version))}, seen {dw.seen}, {len(dw.convs)} convs"
        return {"kind": "darknet", "state": dw.state_dict, "model_cfg": model_cfg, "info": dw,
                "label": label + (f", {dw.num_classes} classes" if dw.num_classes else ", no heads")}
    obj = load_checkpoint(path)
    if is_project_checkpoint(obj):
        state = obj["ema"] if obj.get("ema") else obj["model"]
        mc = dict(obj["model_cfg"])
        return {"kind": "checkpoint", "state": state, "model_cfg": mc, "info": obj, "all": obj,
                "label": f"project checkpoint, phi {mc.get('phi')}, {mc.get('num_classes')} classes, "
                         f"epoch {obj.get('epoch')}{', EMA weights' if obj.get('ema') else ''}"}
    if reference.is_reference_state_dict(obj):
        state = reference.to_project_keys(reference.unwrap(obj))
        try:
            mc = reference.infer_config(state)
        except ValueError as e:
            raise CheckpointError(f"{path}: {e}") from None
        return {"kind": "reference", "state": state, "model_cfg": mc, "info": None,
                "label": f"reference state dict, phi {mc['phi']}, {mc['num_classes']} classes"}
    sd = reference.unwrap(obj)
    if sd is not None:
        return {"kind": "state_dict", "state": sd, "model_cfg": None, "info": None,
                "label": f"state dict of {len(sd)} tensors (not yolov4-tiny key names)"}
    raise CheckpointError(f"{path}: holds {_describe(obj)}; expected a project checkpoint ('model' + "
                          "'model_cfg'), a yolov4-tiny state dict, or Darknet .weights")


def load_model(path: str | Path, num_classes: int | None = None, phi: int | str | None = None,
               use_ema: bool = True, device: str | torch.device = "cpu", cfg: str | Path | None = None) -> YoloBody:
    """An eval-mode network from a project checkpoint (EMA weights when present), Darknet weights
    (`cfg`: its Darknet cfg; default the built-in yolov4-tiny layout) or a reference state dict.

    `num_classes` / `phi`, when given, must match the file: inference needs every layer trained.
    Use `load_pretrained` to start training from a file that fits only partly.
    """
    path = Path(path)
    src = _read(path, cfg)
    kind, mc = src["kind"], src["model_cfg"]
    if kind == "state_dict":
        raise CheckpointError(f"{path}: holds a {src['label']}; expected yolov4-tiny keys such as "
                              "'backbone.conv1.conv.weight'. Is it a different architecture?")
    if kind == "darknet" and mc["num_classes"] is None:
        dw = src["info"]
        raise CheckpointError(f"{path}: {dw.notes[0]}; a backbone file has no heads and cannot run inference. "
                              f"Train from it: python train.py --weights {path}")
    if num_classes is not None and int(num_classes) != int(mc["num_classes"]):
        raise CheckpointError(f"{path}: trained for {mc['num_classes']} classes, asked for {num_classes} "
                              "(to fine-tune for another class count use train.py --weights)")
    if phi is not None and resolve_attention(phi) != resolve_attention(mc.get("phi", 0)):
        extra = " (Darknet has no attention layers; train.py --weights starts an attention model from it)" \
            if kind == "darknet" else ""
        raise CheckpointError(f"{path}: holds attention '{resolve_attention(mc.get('phi', 0))}', "
                              f"asked for '{resolve_attention(phi)}'{extra}")
    if kind == "checkpoint":
        state = src["all"]["ema"] if use_ema and src["all"].get("ema") else src["all"]["model"]
    else:
        state = src["state"]
    try:
        model = build_from_model_cfg(mc if "class_names" in mc else {**mc, "class_names": class_names_for(
            None, int(mc["num_classes"]))})
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{path}: its model config {mc} does not build a network: {e}") from None
    try:
        # Darknet files have no BN batch counters; everything else must fit exactly.
        missing, unexpected = model.load_state_dict(state, strict=False)
        missing = [k for k in missing if not (kind == "darknet" and k.endswith("num_batches_tracked"))]
        if missing or unexpected:
            raise RuntimeError(f"missing keys {missing[:4]}{'...' if len(missing) > 4 else ''}, "
                               f"unexpected keys {unexpected[:4]}{'...' if len(unexpected) > 4 else ''}")
    except RuntimeError as e:
        raise CheckpointError(f"{path}: {src['label']}: weights do not fit the architecture it describes: "
                              f"{str(e).splitlines()[0]}") from None
    return model.to(device).eval()


# ----------------------------------------------------------------------------- partial loads
def load_pretrained(model: YoloBody, path: str | Path, log: Callable[[str], Any] = print,
                    cfg: str | Path | None = None) -> dict[str, Any]:
    """Copy every tensor of `path` whose name and shape fit `model` (in place); report the rest.

    Final head convs whose shape differs (another class count) keep the model's own
    initialisation (whatever the trainer set, e.g. prior biases); attention layers the file lacks
    (Darknet files, phi 0 checkpoints) start fresh. Raises CheckpointError when nothing fits.
    Returns {"source", "kind", "loaded", "skipped": [(key, file_shape, model_shape)],
    "unexpected", "reinitialised", "fresh_attention", "missing", "file_num_classes"}.
    """
    path = Path(path)
    src = _read(path, cfg)
    kind, state = src["kind"], src["state"]
    own = model.state_dict()
    loaded, skipped, unexpected = [], [], []
    new_state = {}
    for key, value in state.items():
        if key not in own:
            unexpected.append(key)
        elif tuple(value.shape) != tuple(own[key].shape):
            skipped.append((key, tuple(value.shape), tuple(own[key].shape)))
        else:
            new_state[key] = value.to(own[key].dtype)
            loaded.append(key)
    if not [k for k in loaded if not k.endswith("num_batches_tracked")]:
        raise CheckpointError(
            f"{path}: {src['label']}: none of its {len(state)} tensors fit this yolov4-tiny model "
            f"(e.g. {(skipped or [(k,) for k in unexpected] or [('-',)])[0]}); is it another architecture?")
    model.load_state_dict(new_state, strict=False)

    got = set(loaded)
    missing = [k for k in own if k not in got and not k.endswith("num_batches_tracked")]
    reinit = [k for k in missing if k.startswith(HEAD_PREFIXES)]
    fresh_att = [k for k in missing if k.startswith(ATT_PREFIXES)]
    other = [k for k in missing if k not in reinit and k not in fresh_att]
    mc = src["model_cfg"] or {}
    file_nc = mc.get("num_classes")

    n_tensors = sum(1 for k in own if not k.endswith("num_batches_tracked"))
    n_loaded = sum(1 for k in loaded if not k.endswith("num_batches_tracked"))
    log(f"weights: {path} ({src['label']})")
    log(f"weights: loaded {n_loaded}/{n_tensors} tensors of the model")
    for key, fs, ms in skipped:
        log(f"weights: skipped {key}: file {list(fs)} vs model {list(ms)}")
    if unexpected:
        log(f"weights: {len(unexpected)} file tensors have no place in this model: "
            f"{', '.join(unexpected[:6])}{' ...' if len(unexpected) > 6 else ''}")
    if reinit:
        why = (f"the file has {file_nc} classes, the model {model.num_classes}" if file_nc and file_nc != model.num_classes
               else "the file has no head convs" if kind == "darknet" and file_nc is None else "not in the file")
        log(f"weights: final head convs yolo_headP5.1 / yolo_headP4.1 keep their fresh initialisation ({why})")
    if fresh_att:
        blocks = sorted({k.split(".")[0] for k in fresh_att})
        why = ("Darknet has no attention layers" if kind == "darknet"
               else f"the file holds attention '{mc.get('phi', 'none')}', the model '{model.phi}'")
        log(f"weights: attention layers {', '.join(blocks)} ({model.phi}) start fresh: {why}")
    file_sxy = float(mc.get("scale_x_y", SCALE_X_Y))
    if not reinit and file_sxy != model.scale_x_y:
        log(f"weights: the file's heads decode box centres with scale_x_y {file_sxy:g}, this model with "
            f"{model.scale_x_y:g}; --scale-x-y {file_sxy:g} keeps them as they were trained")
    if other:
        groups = sorted({k.rsplit(".", 2)[0] for k in other})
        log(f"weights: {len(other)} other tensors not in the file keep their initialisation: "
            f"{', '.join(groups[:8])}{' ...' if len(groups) > 8 else ''}")
    return {"source": str(path), "kind": kind, "loaded": loaded, "skipped": skipped, "unexpected": unexpected,
            "reinitialised": reinit, "fresh_attention": fresh_att, "missing": missing, "file_num_classes": file_nc}
