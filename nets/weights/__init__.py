"""Weights files: project checkpoints, Darknet `.cfg`/`.weights`, reference-repository `.pth`.

`load_model(path)` reads any of them into an eval-mode YoloBody; `load_pretrained(model, path)`
copies what fits into a model to train. `python -m nets.weights.convert` converts between them.
"""
from nets.weights.checkpoint import CheckpointError, checkpoint_dict, load_checkpoint, model_cfg_of, save_checkpoint
from nets.weights.loader import load_model, load_pretrained

__all__ = ["CheckpointError", "checkpoint_dict", "load_checkpoint", "load_model", "load_pretrained", "model_cfg_of",
           "save_checkpoint"]
