"""INT8 post-training quantisation of the OpenVINO IR with NNCF, calibrated on training images letterboxed
the way predict.py feeds them (export.py --format openvino --int8 --data DATA).

    samples = calibration_batches("configs/voc.yaml", img_size=416, count=300)
    int8_model = quantize_int8(ov_model, samples)
"""
from __future__ import annotations

from typing import Any

import numpy as np

from utils.data import letterbox, load_data_spec, load_image, load_records

INT8_HINT = "pip install nncf (INT8 calibration for OpenVINO)"


def calibration_batches(data: str, img_size: int, count: int = 300, seed: int = 0) -> list[np.ndarray]:
    """`count` random training images of `data` (fewer if the split is smaller), each a (1, 3, S, S) float32
    batch in [0, 1], letterboxed to img_size x img_size like predict.py's square input."""
    records, _ = load_records(load_data_spec(data), "train")
    pick = np.random.default_rng(seed).permutation(len(records))[:count]
    out = []
    for i in sorted(pick):
        boxed, _, _ = letterbox(load_image(records[i].image), (img_size, img_size))
        out.append(np.ascontiguousarray(boxed.transpose(2, 0, 1)[None], dtype=np.float32) / 255.0)
    return out


def quantize_int8(model: Any, samples: list[np.ndarray]) -> Any:
    """The OpenVINO model with INT8 convolutions (NNCF's default symmetric preset, statistics from `samples`)."""
    try:
        import nncf  # optional (with scikit-learn etc.): only --int8 needs it
    except ImportError:
        raise ImportError(f"the nncf package is not installed: {INT8_HINT}") from None
    return nncf.quantize(model, nncf.Dataset(samples), subset_size=len(samples))
