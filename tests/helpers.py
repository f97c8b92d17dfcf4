"""Small helpers shared by test files (import as `from helpers import ...`)."""
from __future__ import annotations

import numpy as np
import torch

from nets.yolo import YoloBody


def random_detector(phi: str = "cbam", num_classes: int = 3, seed: int = 0, zero_head_bias: bool = False) -> YoloBody:
    """An eval-mode YoloBody with random weights that give a spread of scores and realistic activation
    sizes (the default init shrinks activations towards 0 and makes every score about 0.25)."""
    torch.manual_seed(seed)
    m = YoloBody(num_classes, phi).eval()
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(mod.weight, a=0.1)
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.1, 0.1)
                mod.running_var.uniform_(0.8, 1.2)
        for h in m.heads:
            torch.nn.init.normal_(h.weight, 0, 0.15)
            if zero_head_bias:
                torch.nn.init.zeros_(h.bias)
    return m


def assert_same_heads(ref: list[np.ndarray], got: list[np.ndarray], atol: float = 1e-4) -> None:
    """An exported runtime's raw heads equal PyTorch's (shapes and values), on outputs that are not trivially small."""
    assert max(np.abs(r).max() for r in ref) > 0.5
    for r, o in zip(ref, got):
        assert r.shape == o.shape
        np.testing.assert_allclose(o, r, atol=atol, rtol=0)


def assert_int8_near_fp32(int8_path, fp32_path, data, size: int) -> None:
    """An INT8 export's raw heads on images like its calibration's: quantisation noise, small against the heads'
    spread, but there (not a copy of the fp32 graph)."""
    from utils.export.int8 import calibration_batches
    from utils.infer.predictor import Predictor
    x = np.concatenate(calibration_batches(str(data), size, count=4, seed=1))
    ref = Predictor.from_weights(fp32_path, device="cpu").model.run(x)
    got = Predictor.from_weights(int8_path, device="cpu").model.run(x)
    for r, g in zip(ref, got):
        assert 0 < np.abs(r - g).mean() < 0.15 * r.std()
