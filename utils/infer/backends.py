"""Where the network runs: torch (the .pt module), onnxruntime or OpenVINO (an exported file). Each exported
runtime only returns the two raw heads; letterbox, decode + NMS and un-letterbox stay Predictor's.

    backend = resolve_backend("auto", Path("best.pt"), torch.device("cpu"))   # -> "onnxruntime" when installed
    model = load_exported("best_openvino_model/best.xml", "openvino", threads=0, precision="fp32")
    raw = model.run(x_numpy)                                                  # [out_s32, out_s16]

`auto` picks, on a CPU, the first installed backend of AUTO_ORDER for the precision (measured with
benchmarks/bench_inference.py's model-only rows); on CUDA it stays torch. A .pt given to an exported backend runs its
cached export (utils/export/cache.py).
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from utils.export.onnx_export import MODEL_CFG_KEY, OUTPUT_NAMES, WEIGHTS_KEY
from utils.export.openvino_export import (
    compile_openvino,
    model_cfg_of_ir,
    read_openvino,
    run_compiled,
    weights_precision,
)

BACKENDS = ("auto", "torch", "onnxruntime", "openvino")
# fastest first, model-only at 416 fp32 on a 2-core AVX-512/AMX CPU, each in its own process, medians of 3 rounds:
# batch 1 onnxruntime 33.6 ms, openvino 38.1, torch fused channels-last 48.6; batch 32 887 / 1025 / 1519 ms.
# bf16 (--dtype bf16): openvino 17.3 ms (AMX); onnxruntime has no bf16 CPU kernels.
AUTO_ORDER = {"fp32": ("onnxruntime", "openvino", "torch"), "bf16": ("openvino", "torch")}
EXPORT_FORMAT = {"onnxruntime": "onnx", "openvino": "openvino"}  # the cached export each exported backend runs
CPU = torch.device("cpu")


def file_kind(path: Path) -> str:
    """The backend a model file is native to: .onnx onnxruntime, .xml (or an IR folder) openvino, else torch."""
    if path.is_dir() or path.suffix.lower() == ".xml":
        return "openvino"
    return "onnxruntime" if path.suffix.lower() == ".onnx" else "torch"


def installed(backend: str) -> bool:
    return importlib.util.find_spec(backend) is not None  # each backend is the package of its name


def resolve_backend(backend: str | None, path: Path, device: torch.device, torch_only: bool = False,
                    precision: str = "fp32") -> str:
    """The backend to run `path` on. None: the file's own; auto: for a .pt on a CPU the fastest installed one at
    `precision` (torch when `torch_only` features are asked for, on CUDA, and for exported files their own);
    else as asked, or ValueError."""
    kind = file_kind(path)
    if backend not in (None, *BACKENDS):
        raise ValueError(f"unknown backend '{backend}'; choose one of {', '.join(BACKENDS)}")
    if backend is None:
        return kind
    if backend == "auto":  # an exported file runs on the runtime it was exported for
        if kind != "torch" or device.type != "cpu" or torch_only:
            return kind
        return next((b for b in AUTO_ORDER.get(precision, ()) if installed(b)), kind)
    if backend == "torch" and kind != "torch":
        raise ValueError(f"{path}: --backend torch runs .pt checkpoints; pass the .pt it was exported from "
                         f"or --backend {kind}")
    if backend == "onnxruntime" and kind == "openvino":
        raise ValueError(f"{path}: onnxruntime cannot run an OpenVINO IR; use --backend openvino")
    if backend == "openvino" and device.type != "cpu":
        raise ValueError("the openvino backend runs on the CPU here; pass --device cpu or --backend torch")
    return backend


class ExportedModel:
    """An exported model behind one call: `run(x)` -> the raw heads as numpy, plus the export's model_cfg."""

    def __init__(self, backend: str, path: Path, runner: Any, model_cfg: dict, input_shape: list[int | None],
                 precision: str = "fp32"):
        self.backend, self.path, self.model_cfg, self.precision = backend, path, model_cfg, precision
        self.batch = input_shape[0]  # None: dynamic
        self.fixed_hw = tuple(input_shape[2:4]) if all(isinstance(v, int) for v in input_shape[2:4]) else None
        self._runner = runner

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        """Raw heads [out_s32, out_s16] of a (B, 3, H, W) float32 batch; a fixed-batch export gets chunks of its
        own batch size, the last one padded."""
        b = self.batch
        if b is None or b == x.shape[0]:
            return self._runner(x)
        chunks = []
        for i in range(0, x.shape[0], b):
            part = x[i:i + b]
            n = part.shape[0]
            if n < b:
                part = np.concatenate([part, np.zeros((b - n, *part.shape[1:]), part.dtype)])
            chunks.append([o[:n] for o in self._runner(part)])
        return [np.concatenate(parts) for parts in zip(*chunks)]

    def describe(self) -> str:
        return f"{self.backend} {self.precision} ({self.path})"


def load_exported(path: str | Path, backend: str, device: torch.device = CPU, threads: int = 0,
                  precision: str = "fp32") -> ExportedModel:
    """An .onnx on onnxruntime or OpenVINO, or an IR on OpenVINO; ValueError naming the file when it is
    unreadable or has no model_cfg, ImportError naming the package to install."""
    path = Path(path)
    if backend == "openvino":
        model, path = read_openvino(path)
        request = compile_openvino(model, threads, precision).create_infer_request()
        shape = [d.get_length() if d.is_static else None for d in model.input(0).get_partial_shape()]
        label = "int8" if weights_precision(model) == "int8" else precision
        return ExportedModel("openvino", path, lambda x: run_compiled(request, x), model_cfg_of_ir(model, path),
                             shape, label)
    if precision != "fp32":
        raise ValueError(f"onnxruntime runs {path.name} in the precision it was exported in (fp32); drop --dtype")
    session = load_onnx_session(path, device, threads)
    meta = session.get_modelmeta().custom_metadata_map
    if MODEL_CFG_KEY not in meta:
        raise ValueError(f"{path}: no '{MODEL_CFG_KEY}' metadata (class names, input size, anchors); "
                         "export it with `python export.py --weights best.pt --format onnx`")
    inp = session.get_inputs()[0]
    shape = [v if isinstance(v, int) else None for v in inp.shape]
    return ExportedModel("onnxruntime", path, lambda x: session.run(OUTPUT_NAMES, {inp.name: x}),
                         json.loads(meta[MODEL_CFG_KEY]), shape, meta.get(WEIGHTS_KEY, "fp32"))


def load_onnx_session(path: str | Path, device: torch.device, threads: int = 0) -> Any:
    try:
        import onnxruntime as ort  # optional at run time: only the onnxruntime backend needs it
    except ImportError:
        raise ImportError("the onnxruntime package is not installed: pip install onnxruntime "
                          "(or pick another backend: --backend openvino or torch)") from None
    available = ort.get_available_providers()
    providers = ["CPUExecutionProvider"]
    if device.type == "cuda" and "CUDAExecutionProvider" in available:
        providers.insert(0, ("CUDAExecutionProvider", {"device_id": device.index or 0}))
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = max(0, int(threads))  # 0: one per physical core
    # idle threads would spin after each run and take the cores from decode + NMS (torch): 0.7 -> 4.9 ms/image
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(str(path), opts, providers=providers)
    except Exception as e:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise ValueError(f"{path}: onnxruntime cannot load it ({str(e).splitlines()[0]}); re-export it with "
                         "python export.py --format onnx") from None
