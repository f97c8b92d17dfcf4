"""INT8 post-training quantisation, calibrated on training images letterboxed the way predict.py feeds them:
the OpenVINO IR with NNCF (export.py --format openvino --int8 --data DATA), the ONNX graph with onnxruntime's
static QDQ quantiser (export.py --format onnx --int8 --data DATA).

    samples = calibration_batches("configs/voc.yaml", img_size=416, count=300)
    int8_model = quantize_int8(ov_model, samples)
    quantize_onnx_int8("model.onnx", "model_int8.onnx", samples)
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx

from utils.data import letterbox, load_data_spec, load_image, load_records

INT8_HINT = "pip install nncf (INT8 calibration for OpenVINO)"


def calibration_batches(data: str, img_size: int, count: int = 300, seed: int = 0, batch: int = 1) -> list[np.ndarray]:
    """`count` random training images of `data` (fewer if the split is smaller) as (batch, 3, S, S) float32
    batches in [0, 1] (a fixed-batch export's size; the last partial batch dropped), letterboxed to
    img_size x img_size like predict.py's square input."""
    records, _ = load_records(load_data_spec(data), "train")
    pick = sorted(np.random.default_rng(seed).permutation(len(records))[:count])
    images = []
    for i in pick[:len(pick) // batch * batch]:
        boxed, _, _ = letterbox(load_image(records[i].image), (img_size, img_size))
        images.append(boxed.transpose(2, 0, 1))
    return [np.ascontiguousarray(np.stack(images[i:i + batch]), dtype=np.float32) / 255.0
            for i in range(0, len(images), batch)]


def quantize_int8(model: Any, samples: list[np.ndarray]) -> Any:
    """The OpenVINO model with INT8 convolutions (NNCF's default symmetric preset, statistics from `samples`)."""
    try:
        import nncf  # optional (with scikit-learn etc.): only --int8 needs it
    except ImportError:
        raise ImportError(f"the nncf package is not installed: {INT8_HINT}") from None
    return nncf.quantize(model, nncf.Dataset(samples), subset_size=len(samples))


def quantize_onnx_int8(src: str | Path, dst: str | Path, samples: list[np.ndarray]) -> Path:
    """`src` with static INT8 QDQ pairs around its convolutions (int8 weights per output channel, uint8
    activations: onnxruntime's fast u8s8 kernels on x86), min/max ranges from `samples`; written to `dst`.
    The two head convolutions stay fp32: quantising their raw outputs (box offsets and logits in one
    tensor) cost 0.024 mAP50-95 on the built-in set, keeping them 0.0015, for a few % of the FLOPs."""
    # onnxruntime.quantization takes ~1 s to import: only --int8 needs it
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    graph = onnx.load(str(src), load_external_data=False).graph
    outputs = {o.name for o in graph.output}
    heads = [n.name for n in graph.node if outputs & set(n.output)]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(samples)

        def get_next(self) -> dict[str, np.ndarray] | None:
            x = next(self.batches, None)
            return None if x is None else {"images": x}

    quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, nodes_to_exclude=heads)
    return Path(dst)
