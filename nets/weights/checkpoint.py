"""Checkpoints as plain data, written atomically, read without unpickling code.

The schema (fields listed in `checkpoint_dict`, the one place that builds a checkpoint) holds only tensors
and plain Python values, so `torch.load(path, weights_only=True)` opens it and a malicious file cannot run code.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from nets.assets import ANCHOR_MASKS, SCALE_X_Y
from nets.yolo import ATTENTION_SITES, YoloBody

VERSION = 1  # unchanged when model_cfg gained masks and scale_x_y: readers default both (see checkpoint_dict)


class CheckpointError(RuntimeError):
    """A file that is not a usable checkpoint; the message names the file and what it holds."""


def save_checkpoint(path: str | Path, obj: dict[str, Any]) -> None:
    """Write to a temp file in the same folder, fsync, then rename over `path`.

    A crash or kill -9 at any moment leaves either the old file or the new one, never half of one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with weights_only=True; raise CheckpointError with the file name on failure."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty file (0 bytes); was the save interrupted? Use another checkpoint.")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many kinds; all mean "not loadable"
        text = str(e)
        if "weights_only" in text or "Unsupported global" in text or "GLOBAL" in text:
            # Name what was refused; leave out torch's hint to retry with weights_only=False.
            detail = [ln.strip() for ln in text.splitlines() if "GLOBAL" in ln or "Unsupported" in ln]
            raise CheckpointError(
                f"{path}: refused to load: the file holds pickled Python objects, not plain tensors and data"
                f"{' (' + '; '.join(detail) + ')' if detail else ''}. Nothing in it was run. A checkpoint that "
                "pickles code can run it on load: only use files from sources you trust, saved as a state dict."
            ) from None
        msg = text.splitlines()[0].split(". ")[0] if text.strip() else ""
        if len(msg) < 12:  # e.g. KeyError('101'): say what kind of failure it was
            msg = f"{type(e).__name__}: {msg}" if msg else type(e).__name__
        with open(path, "rb") as f:
            head = f.read(16)
        raise CheckpointError(
            f"{path}: not a readable PyTorch checkpoint, truncated or corrupt? ({path.stat().st_size} bytes, "
            f"starting {head!r}; {msg}). Use another checkpoint (runs keep weights/last.pt and best.pt)."
        ) from None
    return obj


def is_project_checkpoint(obj: Any) -> bool:
    return isinstance(obj, dict) and "model_cfg" in obj and "model" in obj


def build_from_model_cfg(model_cfg: dict) -> YoloBody:
    model = YoloBody(
        int(model_cfg["num_classes"]),
        model_cfg.get("phi", 0),
        model_cfg.get("attention_sites", ATTENTION_SITES),
        anchors=model_cfg.get("anchors"),
        scale_x_y=float(model_cfg.get("scale_x_y", SCALE_X_Y)),  # older checkpoints: the default decoding
    )
    model.masks = [list(map(int, m)) for m in (model_cfg.get("masks") or ANCHOR_MASKS)]
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
        "masks": [list(m) for m in model.masks],
        "img_size": int(img_size or getattr(model, "img_size", 416)),
        "attention_sites": list(model.attention_sites),
        "scale_x_y": float(model.scale_x_y),
    }


def checkpoint_dict(model: YoloBody, *, ema: dict | None = None, epoch: int = 0, train: dict | None = None,
                    class_names: list[str] | None = None, img_size: int | None = None,
                    source: str | None = None) -> dict[str, Any]:
    """The one place a checkpoint's fields are defined (trainer and converters alike). A checkpoint is:

        version:    int, VERSION
        model:      the model's state_dict (CPU tensors)
        ema:        the EMA model's state_dict, or None; loaders prefer it when present
        model_cfg:  what rebuilds the model (`model_cfg_of`): phi, num_classes, class_names, anchors (N, 2) px,
                    masks (anchor indices per head, s32 first), img_size, attention_sites, scale_x_y.
                    Files written before masks and scale_x_y existed load with ANCHOR_MASKS and SCALE_X_Y.
        epoch:      int, the last finished epoch (0 for converted weights)
        train:      None, or the trainer's resume state (config, optimizer, scaler, rng, ...)
        source:     optional str, the file a converter read
    """
    obj: dict[str, Any] = {"version": VERSION, "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                           "ema": ema, "model_cfg": model_cfg_of(model, class_names, img_size), "epoch": int(epoch),
                           "train": train}
    if source:
        obj["source"] = str(source)
    return obj


def save_model_checkpoint(model: YoloBody, path: str | Path, source: str | None = None) -> None:
    """A project checkpoint of `model` alone (no training state): what the converters write."""
    save_checkpoint(path, checkpoint_dict(model, source=source))
