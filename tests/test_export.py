"""ONNX export: onnx.checker, metadata, the onnxslim-simplified graph, onnxruntime vs PyTorch parity on the
raw heads, predict.py running the same pipeline on the .onnx file, and onnxruntime's static INT8."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from helpers import assert_int8_near_fp32, assert_same_heads, random_detector

from nets.weights.checkpoint import checkpoint_dict, save_checkpoint
from nets.weights.loader import load_model
from nets.yolo import YoloBody

ROOT = Path(__file__).resolve().parent.parent
NAMES = ["square", "disc"]
SIZE = 64


def spread_model(phi: str) -> YoloBody:
    m = random_detector(phi, len(NAMES))
    m.scale_x_y = 1.05  # not the default: the ONNX metadata must carry it to predict.py
    return m


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    d = tmp_path_factory.mktemp("export")
    m = spread_model("ca")
    ckpt = d / "best.pt"
    save_checkpoint(ckpt, checkpoint_dict(m, class_names=NAMES, img_size=SIZE))
    res = subprocess.run([sys.executable, str(ROOT / "export.py"), "--weights", str(ckpt), "--format", "onnx",
                          "--dynamic"], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert res.returncode == 0, res.stdout + res.stderr
    return ckpt, d / "best.onnx", res


def test_export_cli_reports_parity(exported):
    _, onnx_path, res = exported
    report = json.loads(res.stdout.strip().splitlines()[0])
    assert report["onnx"] == str(onnx_path) and report["dynamic_batch"] is True and report["dynamic_hw"] is True
    assert report["max_abs_diff_raw_heads"] < 1e-4
    assert "predict.py IMAGE --weights" in res.stdout


def test_onnx_file_is_valid_and_self_describing(exported):
    _, onnx_path, _ = exported
    proto = onnx.load(str(onnx_path))
    onnx.checker.check_model(proto, full_check=True)
    assert proto.opset_import[0].version >= 17
    meta = {p.key: p.value for p in proto.metadata_props}
    cfg = json.loads(meta["model_cfg"])
    assert cfg["class_names"] == NAMES and cfg["img_size"] == SIZE and cfg["phi"] == "ca"
    assert cfg["anchors"] == [[10, 14], [23, 27], [37, 58], [81, 82], [135, 169], [344, 319]]
    assert cfg["masks"] == [[3, 4, 5], [1, 2, 3]] and cfg["strides"] == [32, 16] and cfg["scale_x_y"] == 1.05
    assert [o.name for o in proto.graph.output] == ["out_s32", "out_s16"]


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_onnx_graph_is_simplified(exported, tmp_path, monkeypatch):
    """onnxslim folds what the tracer leaves (Identity, Constant and shape-arithmetic nodes): fewer nodes, the
    same convolutions, the same dynamic input (parity: the tests around this one)."""
    import onnxslim

    from utils.export.onnx_export import export_onnx

    ckpt, onnx_path, _ = exported
    monkeypatch.setattr(onnxslim, "slim", lambda proto: proto)  # the same export without the simplification
    raw = onnx.load(str(export_onnx(ckpt, tmp_path / "traced.onnx", dynamic=True))).graph
    slim = onnx.load(str(onnx_path)).graph
    ops = [n.op_type for n in slim.node]
    assert "Constant" in {n.op_type for n in raw.node}  # what there was to fold
    assert not {"Identity", "Constant"} & set(ops) and len(ops) < len(raw.node)
    assert ops.count("Conv") == [n.op_type for n in raw.node].count("Conv")
    dims = [d.dim_param or d.dim_value for d in slim.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, "height", "width"]


def test_onnxruntime_matches_pytorch_raw_heads(exported):
    ckpt, onnx_path, _ = exported
    model = load_model(ckpt)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    g = torch.Generator().manual_seed(1)
    for shape in [(3, 3, SIZE, SIZE), (2, 3, SIZE, SIZE + 32)]:  # dynamic batch, rect input
        x = torch.rand(*shape, generator=g)
        with torch.no_grad():
            ref = [o.numpy() for o in model(x)]
        got = session.run(["out_s32", "out_s16"], {"images": x.numpy()})
        assert_same_heads(ref, got)


def test_predict_cli_on_onnx_gives_the_pytorch_boxes(exported, tmp_path):
    from utils.data.image import load_image
    from utils.infer.predictor import Predictor

    ckpt, onnx_path, _ = exported
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate([(50, 90), (70, 40)]):
        cv2.imwrite(str(tmp_path / f"{i}.png"), rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
    res = subprocess.run([sys.executable, str(ROOT / "predict.py"), str(tmp_path / "*.png"), "--weights",
                          str(onnx_path), "--conf", "0.2", "--project", str(tmp_path / "runs")],
                         capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert res.returncode == 0, res.stdout + res.stderr
    assert "onnxruntime" in res.stdout
    entries = json.loads((tmp_path / "runs" / "exp" / "predictions.json").read_text())
    torch_pred = Predictor.from_weights(ckpt, device="cpu", conf_thres=0.2)
    total = 0
    for e in entries:
        det = torch_pred([load_image(e["image"])])[0]
        assert [d["class_id"] for d in e["detections"]] == det["labels"].tolist()
        got = np.array([d["xyxy"] for d in e["detections"]]).reshape(-1, 4)
        np.testing.assert_allclose(got, det["boxes"].numpy(), atol=0.01)
        np.testing.assert_allclose([d["score"] for d in e["detections"]], det["scores"].numpy(), atol=1e-4)
        total += len(e["detections"])
    assert total > 0


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_fixed_batch_export_and_missing_metadata(tmp_path):
    from utils.export.onnx_export import export_onnx
    from utils.infer.predictor import Predictor

    m = spread_model("none")
    ckpt = tmp_path / "m.pt"
    save_checkpoint(ckpt, checkpoint_dict(m, class_names=NAMES, img_size=SIZE))
    rng = np.random.default_rng(3)
    imgs = [rng.integers(0, 255, (60, 60 + 10 * i, 3), dtype=np.uint8) for i in range(3)]
    for static in (False, True):
        path = export_onnx(ckpt, tmp_path / f"fixed{static}.onnx", batch_size=1, static=static)
        onnx_pred = Predictor.from_weights(path, device="cpu", conf_thres=0.2)
        assert onnx_pred.rect is not static and onnx_pred.img_size == SIZE
        onnx_dets = onnx_pred(imgs + imgs[:1])  # 4 images through a batch-1 graph
        torch_dets = Predictor(load_model(ckpt), conf_thres=0.2, rect=not static)(imgs + imgs[:1])
        for a, b in zip(onnx_dets, torch_dets):
            torch.testing.assert_close(a["boxes"], b["boxes"], atol=1e-3, rtol=0)

    bare = tmp_path / "bare.onnx"
    torch.onnx.export(m, (torch.zeros(1, 3, SIZE, SIZE),), str(bare), dynamo=False)
    with pytest.raises(ValueError, match="export.py"):
        Predictor.from_weights(bare, device="cpu")


def test_onnx_int8_export_is_smaller_labelled_and_close(exported, tiny_voc, tmp_path):
    """export.py --format onnx --int8: onnxruntime's static QDQ INT8 beside the fp32 file (best_int8.onnx),
    ~4x smaller, the head convolutions left in fp32, described as int8, boxes near the fp32 ones."""
    from utils.infer.predictor import Predictor

    ckpt, onnx_path, _ = exported
    res = subprocess.run([sys.executable, str(ROOT / "export.py"), "--weights", str(ckpt), "--format", "onnx",
                          "--int8", "--dynamic", "--data", str(tiny_voc)], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert res.returncode == 0, res.stdout + res.stderr
    out = ckpt.with_name("best_int8.onnx")
    report = json.loads(next(ln for ln in res.stdout.splitlines() if ln.startswith("{")))
    assert report["int8"] is True and report["onnx"] == str(out) and "get_map.py --weights" in res.stdout
    assert out.stat().st_size < 0.4 * onnx_path.stat().st_size
    graph = onnx.load(str(out)).graph
    weights = {i.name for i in graph.initializer}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    heads = [n for n in convs if set(n.output) & {"out_s32", "out_s16"}]
    assert len(heads) == 2 and all(n.input[1] in weights for n in heads)  # fp32 weights: no DequantizeLinear
    assert sum(n.input[1] not in weights for n in convs) == len(convs) - 2  # every other conv: int8 weights
    pred = Predictor.from_weights(out, device="cpu", conf_thres=0.2)
    assert "onnxruntime int8" in pred.describe()
    assert_int8_near_fp32(out, onnx_path, tiny_voc, SIZE)
