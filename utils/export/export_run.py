"""export.py's run (and `Detector.export`): write the ONNX file or the OpenVINO IR (fp32, or INT8 calibrated on
the training images), then measure its difference from PyTorch on the raw heads.

    report = export_checked(cfg, "best.pt", fmt="openvino")   # cfg: the "export" mode Config
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from nets.weights.loader import load_model
from utils.config import Config
from utils.export.int8 import calibration_batches
from utils.export.onnx_export import check_parity, export_onnx
from utils.export.openvino_export import check_parity_openvino, export_openvino

FORMATS = ("onnx", "openvino")


def default_output(weights: Path, fmt: str, int8: bool = False) -> Path:
    """best.pt -> best.onnx or best_openvino_model/best.xml (Ultralytics' layout: one folder per IR); INT8:
    best_int8.onnx or best_int8_openvino_model/best_int8.xml, beside the fp32 export."""
    stem = f"{weights.stem}_int8" if int8 else weights.stem
    if fmt == "onnx":
        return weights.with_name(f"{stem}.onnx")
    return weights.with_name(f"{stem}_openvino_model") / f"{stem}.xml"


def export_checked(cfg: Config, weights: str | Path, output: str | Path = "", dynamic: bool = False,
                   static: bool = False, fmt: str = "onnx", int8: bool = False) -> dict[str, Any]:
    """Export with the shared keys (img_size 0: the trained size, batch_size, opset, fuse; int8: calibrated on
    cfg.data's training images), then measure the runtime-vs-PyTorch difference on the raw heads; returns the
    report (`report[fmt]` is the written file)."""
    if fmt not in FORMATS:
        raise ValueError(f"format '{fmt}' is not supported; choose one of {', '.join(FORMATS)}")
    if int8 and not cfg.data:
        raise ValueError("--int8 calibrates on training images: pass --data (the data set the model was trained on)")
    weights = Path(weights)
    if weights.suffix.lower() != ".pt":
        raise ValueError(f"{weights} is not a .pt checkpoint; pass the .pt checkpoint it came from")
    dynamic_batch = dynamic and not static
    batch = 2 if dynamic_batch else cfg.batch_size
    t0 = time.perf_counter()
    output = Path(output) if output else default_output(weights, fmt, int8)
    calibration = None
    if int8:
        img = cfg.img_size or load_model(weights).img_size
        calibration = calibration_batches(cfg.data, img, batch=1 if dynamic_batch else cfg.batch_size)
    args = (cfg.img_size or None, cfg.batch_size, dynamic_batch, cfg.opset, cfg.fuse, static, calibration)
    if fmt == "onnx":
        export_onnx(weights, output, *args)
        diff, size = check_parity(weights, output, batch=batch), output.stat().st_size
    else:
        export_openvino(weights, output, *args)
        diff = check_parity_openvino(weights, output, batch=batch)
        size = output.stat().st_size + output.with_suffix(".bin").stat().st_size
    return {fmt: str(output), "format": fmt, "int8": int8, "opset": cfg.opset, "dynamic_batch": dynamic_batch,
            "dynamic_hw": not static, "size_mb": round(size / 2**20, 2), "max_abs_diff_raw_heads": diff,
            "seconds": round(time.perf_counter() - t0, 2)}
