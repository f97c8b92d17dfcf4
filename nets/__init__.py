"""The network and nothing else: backbone, attention blocks, neck + heads, loss, box decoding,
conv+BN fusion, and the weights formats it reads and writes (`nets.weights`).

Imports nothing from `utils/`: the model is usable (and testable) without the training,
data and inference machinery around it.
"""
from nets.weights.loader import load_model
from nets.yolo import YoloBody

__all__ = ["YoloBody", "load_model"]
