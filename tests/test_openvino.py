"""OpenVINO export: the IR carries the ONNX metadata, matches PyTorch's raw heads, and predict.py runs it
through the same pipeline (boxes equal to torch's); bad files and a missing package are one clear error."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from helpers import assert_int8_near_fp32, assert_same_heads, random_detector

from nets.weights.checkpoint import checkpoint_dict, save_checkpoint
from nets.weights.loader import load_model

ov = pytest.importorskip("openvino")
from utils.export.openvino_export import openvino_core  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
NAMES = ["square", "disc"]
SIZE = 64
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def run(script: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / script), *args], capture_output=True, text=True, timeout=300,
                          env=ENV, cwd=cwd)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    d = tmp_path_factory.mktemp("ov_export")
    m = random_detector("cbam", len(NAMES))
    m.scale_x_y = 1.05  # not the default: the metadata must carry it
    ckpt = d / "best.pt"
    save_checkpoint(ckpt, checkpoint_dict(m, class_names=NAMES, img_size=SIZE))
    res = run("export.py", "--weights", str(ckpt), "--format", "openvino", "--dynamic")
    assert res.returncode == 0, res.stdout + res.stderr
    return ckpt, d / "best_openvino_model" / "best.xml", res


def test_export_cli_writes_a_self_describing_ir(exported):
    _, xml, res = exported
    report = json.loads(res.stdout.strip().splitlines()[0])
    assert report["openvino"] == str(xml) and report["format"] == "openvino" and report["dynamic_batch"] is True
    assert report["max_abs_diff_raw_heads"] < 1e-4
    assert xml.is_file() and xml.with_suffix(".bin").is_file()
    model = openvino_core().read_model(str(xml))
    cfg = json.loads(model.get_rt_info(["model_info", "model_cfg"]).astype(str))
    assert cfg["class_names"] == NAMES and cfg["img_size"] == SIZE and cfg["phi"] == "cbam"
    assert cfg["anchors"] == [[10, 14], [23, 27], [37, 58], [81, 82], [135, 169], [344, 319]]
    assert cfg["masks"] == [[3, 4, 5], [1, 2, 3]] and cfg["strides"] == [32, 16] and cfg["scale_x_y"] == 1.05
    assert [o.get_any_name() for o in model.outputs] == ["out_s32", "out_s16"]


def test_openvino_matches_pytorch_raw_heads(exported):
    """fp32 on any CPU (the plugin would run bf16 on AMX CPUs unless asked for f32): same tolerance as ONNX."""
    from utils.infer.backends import load_exported

    ckpt, xml, _ = exported
    model = load_model(ckpt)
    ir = load_exported(xml.parent, "openvino")  # the folder works like the .xml
    assert ir.batch is None and ir.fixed_hw is None
    g = torch.Generator().manual_seed(1)
    for shape in [(3, 3, SIZE, SIZE), (2, 3, SIZE, SIZE + 32)]:  # dynamic batch, rect input
        x = torch.rand(*shape, generator=g)
        with torch.no_grad():
            ref = [o.numpy() for o in model(x)]
        got = ir.run(x.numpy())
        assert_same_heads(ref, got)


def test_predict_and_api_on_the_ir_give_the_pytorch_boxes(exported, tmp_path):
    from utils.api import Detector
    from utils.data.image import load_image
    from utils.infer.predictor import Predictor

    ckpt, xml, _ = exported
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate([(50, 90), (70, 40), (64, 64)]):
        cv2.imwrite(str(tmp_path / f"{i}.png"), rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
    res = run("predict.py", str(tmp_path / "*.png"), "--weights", str(xml.parent), "--conf", "0.2", "--project",
              str(tmp_path / "runs"))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "openvino fp32" in res.stdout
    entries = json.loads((tmp_path / "runs" / "exp" / "predictions.json").read_text())
    torch_pred = Predictor.from_weights(ckpt, device="cpu", conf_thres=0.2)
    api = Detector(xml, conf_thres=0.2).predict([e["image"] for e in entries])
    total = 0
    for e, r in zip(entries, api):
        det = torch_pred([load_image(e["image"])])[0]
        assert [d["class_id"] for d in e["detections"]] == det["labels"].tolist() == r.class_ids.tolist()
        got = np.array([d["xyxy"] for d in e["detections"]]).reshape(-1, 4)
        np.testing.assert_allclose(got, det["boxes"].numpy(), atol=0.01)
        np.testing.assert_allclose(r.boxes, det["boxes"].numpy(), atol=1e-3)
        np.testing.assert_allclose([d["score"] for d in e["detections"]], det["scores"].numpy(), atol=1e-4)
        total += len(e["detections"])
    assert total > 0


def test_corrupt_or_incomplete_ir_is_one_error_naming_the_file(exported, tmp_path):
    _, xml, _ = exported
    img = tmp_path / "a.png"
    cv2.imwrite(str(img), np.zeros((40, 40, 3), np.uint8))
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "m.xml").write_text("<net><layers><layer id='0'")  # truncated XML
    (bad / "m.bin").write_bytes(xml.with_suffix(".bin").read_bytes())
    nobin = tmp_path / "nobin"
    nobin.mkdir()
    (nobin / "m.xml").write_bytes(xml.read_bytes())
    for path, expected in [(bad / "m.xml", f"{bad / 'm.xml'}: OpenVINO cannot read it"),
                           (nobin / "m.xml", f"{nobin / 'm.bin'}: missing")]:
        res = run("predict.py", str(img), "--weights", str(path), "--project", str(tmp_path / "runs"))
        assert res.returncode == 2, res.stdout + res.stderr
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: {expected}") and "export.py" in lines[0]


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_ir_without_metadata_is_refused(tmp_path):
    from utils.infer.predictor import Predictor

    m = random_detector("none", 2)
    bare = tmp_path / "bare.onnx"
    torch.onnx.export(m, (torch.zeros(1, 3, SIZE, SIZE),), str(bare), dynamo=False)
    ov.save_model(ov.convert_model(str(bare)), str(tmp_path / "bare.xml"))
    for path, backend in [(tmp_path / "bare.xml", None), (bare, "openvino")]:
        with pytest.raises(ValueError, match="no 'model_cfg' metadata.*export.py"):
            Predictor.from_weights(path, device="cpu", backend=backend)


def test_missing_package_names_it(monkeypatch, tmp_path):
    from utils.export.openvino_export import require_openvino

    monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` now raises ImportError
    with pytest.raises(ImportError, match="pip install openvino"):
        require_openvino()


def test_int8_needs_data(exported, tmp_path):
    ckpt, _, _ = exported
    for fmt, out in (("openvino", tmp_path / "x.xml"), ("onnx", tmp_path / "x.onnx")):
        res = run("export.py", "--weights", str(ckpt), "--int8", "--format", fmt, "--output", str(out))
        assert res.returncode == 2 and res.stderr.startswith("error: --int8 calibrates on training images"), res.stderr
        assert "pass --data" in res.stderr and not out.exists()


@pytest.mark.slow
def test_int8_export_is_smaller_labelled_and_close(exported, tiny_voc, tmp_path):
    """NNCF INT8 calibrated on tiny_voc's training images: ~4x smaller weights, described as int8 by predict,
    boxes near the fp32 ones (a quantised model is not bit-exact: its cost is a mAP number, see README)."""
    pytest.importorskip("nncf")
    from utils.infer.predictor import Predictor

    ckpt, xml, _ = exported
    out = tmp_path / "int8" / "m.xml"
    res = run("export.py", "--weights", str(ckpt), "--format", "openvino", "--int8", "--data", str(tiny_voc),
              "--output", str(out))
    assert res.returncode == 0, res.stdout + res.stderr
    report = json.loads(next(ln for ln in res.stdout.splitlines() if ln.startswith("{")))
    assert report["int8"] is True and report["openvino"] == str(out)
    assert out.with_suffix(".bin").stat().st_size < 0.4 * xml.with_suffix(".bin").stat().st_size
    pred = Predictor.from_weights(out, device="cpu", conf_thres=0.2)
    assert "openvino int8" in pred.describe()
    assert_int8_near_fp32(out, xml, tiny_voc, SIZE)
