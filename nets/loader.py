"""One loader for every kind of weights file: `load_model(path)` -> eval-mode YoloBody.

Project checkpoints carry their own model config (phi, classes, anchors, input size), so users
never repeat them. Darknet `.weights` and reference-repository state dicts come in `nets.darknet`
and `nets.reference`.
"""
from __future__ import annotations

from pathlib import Path

import torch

from nets.yolo import YoloBody
from utils.checkpoint import CheckpointError, is_project_checkpoint, load_checkpoint


def build_from_model_cfg(model_cfg: dict) -> YoloBody:
    model = YoloBody(
        int(model_cfg["num_classes"]),
        model_cfg.get("phi", 0),
        model_cfg.get("attention_sites", ("feat1", "feat2", "upsample")),
        anchors=model_cfg.get("anchors"),
    )
    model.class_names = list(model_cfg.get("class_names") or [str(i) for i in range(model.num_classes)])
    model.img_size = int(model_cfg.get("img_size", 416))
    return model


def model_cfg_of(model: YoloBody, class_names: list[str] | None = None, img_size: int | None = None) -> dict:
    """The plain-data description of `model` that a checkpoint stores next to its weights."""
    return {
        "phi": model.phi,
        "num_classes": model.num_classes,
        "class_names": list(class_names or getattr(model, "class_names", [str(i) for i in range(model.num_classes)])),
        "anchors": model.anchors.cpu().tolist(),
        "img_size": int(img_size or getattr(model, "img_size", 416)),
        "attention_sites": list(model.attention_sites),
    }


def load_model(path: str | Path, num_classes: int | None = None, phi: int | str | None = None,
               use_ema: bool = True, device: str | torch.device = "cpu") -> YoloBody:
    """An eval-mode network from a project checkpoint (EMA weights when present)."""
    path = Path(path)
    obj = load_checkpoint(path)
    if not is_project_checkpoint(obj):
        keys = list(obj)[:5] if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(f"{path}: not a project checkpoint (holds {keys}...); "
                              "expected keys 'model' and 'model_cfg'")
    model_cfg = dict(obj["model_cfg"])
    if num_classes is not None and int(num_classes) != int(model_cfg["num_classes"]):
        raise CheckpointError(f"{path}: trained for {model_cfg['num_classes']} classes, asked for {num_classes}")
    if phi is not None:
        from nets.attention import resolve_attention
        if resolve_attention(phi) != resolve_attention(model_cfg.get("phi", 0)):
            raise CheckpointError(f"{path}: holds attention '{model_cfg.get('phi')}', asked for '{phi}'")
    model = build_from_model_cfg(model_cfg)
    state = obj["ema"] if use_ema and obj.get("ema") else obj["model"]
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not fit the architecture in its model_cfg: "
                              f"{str(e).splitlines()[0]}") from None
    return model.to(device).eval()
