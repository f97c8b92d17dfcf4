"""OpenVINO export: export.py's ONNX graph converted to an OpenVINO IR (.xml + .bin), with the same
`model_cfg` metadata in the IR's rt_info, so the .xml (or its folder) is all predict.py and get_map.py need.

    xml = export_openvino("best.pt", "best_openvino_model/best.xml", dynamic=True)
    model, xml = read_openvino("best_openvino_model")      # the folder or the .xml; errors name the file
    compiled = compile_openvino(model, threads=0, precision="fp32")

The IR outputs the two raw heads like the ONNX graph, so decode + NMS stay nets/decode.py's.
"""
from __future__ import annotations

import functools
import json
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from utils.export.int8 import quantize_int8
from utils.export.onnx_export import DEFAULT_OPSET, MODEL_CFG_KEY, WEIGHTS_KEY, export_onnx, max_head_diff

INSTALL_HINT = "pip install openvino (or pick another backend: --backend onnxruntime or torch)"
# OpenVINO's CPU plugin runs fp32 graphs in bf16 on CPUs with AMX/AVX512-BF16 unless told otherwise: the
# precision is asked for explicitly, so an fp32 export gives fp32 numbers (parity) and bf16 is opt-in (--dtype)
PRECISION_HINTS = {"fp32": "f32", "bf16": "bf16"}


def require_openvino() -> ModuleType:
    """The openvino module, or ImportError saying what to install."""
    try:
        import openvino  # optional dependency (about 60 MB wheel): only the openvino backend and export need it
    except ImportError:
        raise ImportError(f"the openvino package is not installed: {INSTALL_HINT}") from None
    return openvino


@functools.cache
def openvino_core() -> Any:
    """The process's one openvino.Core: every read and compile goes through it. A Core per call is how
    OpenVINO's Python users have met segfaults once a process has made many (its plugins are process-wide)."""
    return require_openvino().Core()


def export_openvino(weights: str | Path, output: str | Path, img_size: int | None = None, batch_size: int = 1,
                    dynamic: bool = False, opset: int = DEFAULT_OPSET, fuse: bool = True, static: bool = False,
                    calibration: list[np.ndarray] | None = None) -> Path:
    """Convert export_onnx's graph (same options) to an fp32 IR with the ONNX model_cfg in its rt_info;
    `calibration` batches given: INT8-quantised with NNCF (utils/export/int8.py) first."""
    ov = require_openvino()
    import onnx  # only to read the metadata export_onnx just wrote

    output = Path(output)
    if output.suffix.lower() != ".xml":
        raise ValueError(f"{output}: an OpenVINO IR is written as NAME.xml (+ NAME.bin beside it)")
    with tempfile.TemporaryDirectory(prefix="ov_export_") as d:
        onnx_path = export_onnx(weights, Path(d) / "model.onnx", img_size, batch_size, dynamic, opset, fuse, static)
        meta = {p.key: p.value for p in onnx.load(str(onnx_path), load_external_data=False).metadata_props}
        try:
            model = ov.convert_model(str(onnx_path))
        except Exception as e:  # noqa: BLE001 - OpenVINO raises its own types
            raise ValueError(f"OpenVINO cannot convert the ONNX export of {weights} ({str(e).splitlines()[0]}); "
                             f"try another --opset than {opset}") from None
    if calibration:
        model = quantize_int8(model, calibration)
    for key, value in {**meta, WEIGHTS_KEY: "int8" if calibration else "fp32"}.items():
        model.set_rt_info(value, ["model_info", key])
    output.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(model, str(output), compress_to_fp16=False)
    return output


def read_openvino(path: str | Path) -> tuple[Any, Path]:
    """An IR (.xml, or a folder holding one) or an .onnx file read by OpenVINO; ValueError naming the file
    when it is missing, corrupt, or has no model_cfg."""
    require_openvino()  # the install hint before any file check
    path = Path(path)
    if path.is_dir():
        xmls = sorted(path.glob("*.xml"))
        if len(xmls) != 1:
            raise ValueError(f"{path}: expected one OpenVINO .xml in the folder, found {len(xmls)}; "
                             "pass the .xml file")
        path = xmls[0]
    if path.suffix.lower() == ".xml" and not path.with_suffix(".bin").is_file():
        raise ValueError(f"{path.with_suffix('.bin')}: missing (the weights of {path.name}); "
                         "re-export with python export.py --format openvino")
    hint = f"re-export with python export.py --format {'openvino' if path.suffix.lower() == '.xml' else 'onnx'}"
    if path.suffix.lower() == ".xml":
        try:  # a broken .xml would send OpenVINO through every other frontend (TensorFlow's logs to stderr)
            root = ET.parse(path).getroot()
        except (ET.ParseError, OSError) as e:
            raise ValueError(f"{path}: OpenVINO cannot read it (not valid XML: {e}); {hint}") from None
        if root.tag != "net" or "version" not in root.attrib:
            raise ValueError(f"{path}: OpenVINO cannot read it (not an OpenVINO IR: no <net version=...>); {hint}")
    try:
        model = openvino_core().read_model(str(path))
    except Exception as e:  # noqa: BLE001 - OpenVINO raises RuntimeError with "Exception from <file>" lines
        lines = [ln for ln in str(e).strip().splitlines() if ln.strip() and not ln.startswith("Exception from")]
        name = f"{path} (+ {path.with_suffix('.bin').name})" if path.suffix.lower() == ".xml" else str(path)
        raise ValueError(f"{name}: OpenVINO cannot read it ({(lines or ['unknown error'])[0][:200]}); {hint}") from None
    model_cfg_of_ir(model, path)  # fail here, naming the file, when the metadata is missing
    return model, path


def model_cfg_of_ir(model: Any, path: str | Path, onnx_meta: dict[str, str] | None = None) -> dict:
    """The model_cfg export.py stored (rt_info of an IR; for an .onnx read by OpenVINO, its metadata)."""
    if onnx_meta is None and Path(path).suffix.lower() == ".onnx":
        import onnx  # only for .onnx files given to the openvino backend

        onnx_meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    if onnx_meta is not None:
        raw = onnx_meta.get(MODEL_CFG_KEY)
    else:
        raw = model.get_rt_info(["model_info", MODEL_CFG_KEY]).astype(str) \
            if model.has_rt_info(["model_info", MODEL_CFG_KEY]) else None
    if raw is None:
        raise ValueError(f"{path}: no '{MODEL_CFG_KEY}' metadata (class names, input size, anchors); "
                         "export it with `python export.py --weights best.pt --format openvino`")
    return json.loads(raw)


def weights_precision(model: Any) -> str:
    """"int8" for export.py --int8's IR, else "fp32"."""
    key = ["model_info", WEIGHTS_KEY]
    return model.get_rt_info(key).astype(str) if model.has_rt_info(key) else "fp32"


def compile_openvino(model: Any, threads: int = 0, precision: str = "fp32") -> Any:
    """The model compiled for the CPU: `threads` > 0 caps its threads; precision fp32 | bf16."""
    if precision not in PRECISION_HINTS:
        raise ValueError(f"the openvino backend runs fp32 or bf16, not {precision}; drop --dtype")
    config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": PRECISION_HINTS[precision]}
    if threads > 0:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    return openvino_core().compile_model(model, "CPU", config)


def run_compiled(request: Any, x: np.ndarray) -> list[np.ndarray]:
    """Both raw heads of one infer request (copies: the request reuses its buffers)."""
    request.infer([np.ascontiguousarray(x, dtype=np.float32)])
    return [request.get_output_tensor(i).data.copy() for i in range(2)]


def check_parity_openvino(weights: str | Path, xml: str | Path, batch: int = 1, seed: int = 0) -> float:
    """Max |PyTorch - OpenVINO fp32| over both raw heads (`max_head_diff`)."""
    model, _ = read_openvino(xml)
    request = compile_openvino(model).create_infer_request()
    shape = [d.get_length() if d.is_static else None for d in model.input(0).get_partial_shape()]
    return max_head_diff(weights, lambda x: run_compiled(request, x), shape, batch, seed)
