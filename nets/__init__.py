"""The network: backbone, neck + heads, attention blocks, loss, weight I/O."""
from nets.loader import load_model
from nets.yolo import YoloBody

__all__ = ["YoloBody", "load_model"]
