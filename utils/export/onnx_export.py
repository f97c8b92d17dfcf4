"""ONNX export: the fused model's raw heads, with the model's description in the metadata.

The graph outputs the two raw head maps (out_s32, out_s16), exactly what the PyTorch model returns,
so decode + NMS stay the one shared code path (nets/decode.py). Class names, input size, anchors,
masks, strides and scale_x_y travel in the ONNX metadata (key `model_cfg`), so the .onnx file is all
predict.py and get_map.py need. The traced graph is simplified by onnxslim (the tracer's Shape/Gather/
Unsqueeze chains and Identity nodes folded: 177 -> 72 nodes for phi 3), and with `calibration` batches it
is quantised to static INT8 by onnxruntime (utils/export/int8.py).
"""
from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch

from nets.assets import MAX_STRIDE
from nets.fuse import fuse_conv_bn
from nets.weights.checkpoint import model_cfg_of
from nets.weights.loader import load_model
from utils.config import Config
from utils.export.int8 import quantize_onnx_int8

MODEL_CFG_KEY = "model_cfg"  # metadata key: JSON of the checkpoint's model_cfg plus masks and strides
OUTPUT_NAMES = ["out_s32", "out_s16"]
DEFAULT_OPSET = Config().opset  # 17: widely supported by onnxruntime, TensorRT and OpenVINO releases
WEIGHTS_KEY = "weights_precision"  # metadata (an IR's rt_info): "int8" for a quantised export, else "fp32"
SLIM_HINT = "pip install onnxslim (it simplifies the exported ONNX graph)"


def export_onnx(weights: str | Path, output: str | Path, img_size: int | None = None, batch_size: int = 1,
                dynamic: bool = False, opset: int = DEFAULT_OPSET, fuse: bool = True, static: bool = False,
                calibration: list[np.ndarray] | None = None) -> Path:
    """Write the simplified ONNX file with its metadata and pass onnx.checker; returns the output path.

    Height and width stay dynamic (unless `static`) so predict.py feeds the same rect inputs as
    with the .pt weights; `dynamic` also frees the batch dimension. `calibration` batches given: static INT8.
    """
    try:
        import onnxslim  # ~2 s to import (sympy): only an export needs it, not predict.py on an exported file
    except ImportError:
        raise ImportError(f"the onnxslim package is not installed: {SLIM_HINT}") from None
    model = load_model(weights, device="cpu")
    size = int(img_size or model.img_size)
    if size % MAX_STRIDE:
        raise ValueError(f"--img-size {size} must be a multiple of {MAX_STRIDE}")
    net = fuse_conv_bn(model) if fuse else model
    x = torch.zeros(batch_size, 3, size, size)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    axes = None
    if not static:
        axes = {"images": {2: "height", 3: "width"}, "out_s32": {2: "height_32", 3: "width_32"},
                "out_s16": {2: "height_16", 3: "width_16"}}
        if dynamic:
            for v in axes.values():
                v[0] = "batch"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about python ints in check_input_size
        torch.onnx.export(net, (x,), str(output), input_names=["images"], output_names=list(OUTPUT_NAMES),
                          dynamic_axes=axes, opset_version=opset, do_constant_folding=True, dynamo=False)
    proto = onnxslim.slim(onnx.load(str(output)))
    if calibration:  # the quantiser reads and writes files: the simplified fp32 graph is replaced in place
        onnx.save(proto, str(output))
        proto = onnx.load(str(quantize_onnx_int8(output, output, calibration)))
    cfg = model_cfg_of(model, img_size=size)
    cfg.update(masks=model.masks, strides=model.strides)
    meta = {
        MODEL_CFG_KEY: json.dumps(cfg),
        "names": json.dumps(cfg["class_names"]),
        "img_size": str(size),
        "anchors": json.dumps(cfg["anchors"]),
        "outputs": "raw heads [out_s32, out_s16], Darknet layout; decode with nets/decode.py",
        "source_weights": Path(weights).name,
        WEIGHTS_KEY: "int8" if calibration else "fp32",
    }
    del proto.metadata_props[:]
    for k, v in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    proto.doc_string = f"YOLOv4-tiny ({cfg['phi']} attention, {cfg['num_classes']} classes, {size}x{size})"
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(output))
    return output


def max_head_diff(weights: str | Path, run: Callable[[np.ndarray], list[np.ndarray]], shape: Sequence[Any],
                  batch: int = 1, seed: int = 0) -> float:
    """Max |PyTorch - run(x)| over both raw heads on random inputs (unfused PyTorch reference); `shape` is the
    exported input's (B, 3, H, W) with strings or None for dynamic dimensions: a fixed H x W is fed as is, a
    dynamic one as the square trained size and a rect (4:3) one. Every backend's export is checked by it."""
    model = load_model(weights, device="cpu")
    b = shape[0] if isinstance(shape[0], int) else batch
    if isinstance(shape[2], int):
        sizes = [(shape[2], shape[3])]
    else:
        s = model.img_size
        sizes = [(s, s), (max(32, (s * 3 // 4) // 32 * 32), s)]
    g = torch.Generator().manual_seed(seed)
    diff = 0.0
    for h, w in sizes:
        x = torch.rand(b, 3, h, w, generator=g)
        with torch.inference_mode():
            ref = [o.numpy() for o in model(x)]
        got = run(x.numpy())
        diff = max(diff, *(float(np.abs(r - o).max()) for r, o in zip(ref, got)))
    return diff


def check_parity(weights: str | Path, onnx_path: str | Path, batch: int = 1, seed: int = 0) -> float:
    """Max |PyTorch - onnxruntime| over both raw heads (`max_head_diff`)."""
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    return max_head_diff(weights, lambda x: session.run(OUTPUT_NAMES, {"images": x}),
                         session.get_inputs()[0].shape, batch, seed)
