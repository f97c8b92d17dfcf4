"""utils/api.py's Detector, tested like the scripts: each method must give what its script gives."""
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
from conftest import TINY_CLASSES
from helpers import random_detector

from nets.weights.checkpoint import model_cfg_of, save_checkpoint, save_model_checkpoint
from nets.yolo import YoloBody
from utils.api import Detector
from utils.data.image import load_image
from utils.engine.runs import WeightsNotFoundError, resolve_weights

ROOT = Path(__file__).resolve().parent.parent
NAMES = ["square", "disc", "tri"]


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """runs/train/exp/weights/best.pt (a 3-class model with a spread of scores) and two images."""
    root = tmp_path_factory.mktemp("api")
    m = random_detector("cbam", len(NAMES), zero_head_bias=True)
    weights = root / "runs" / "train" / "exp" / "weights" / "best.pt"
    weights.parent.mkdir(parents=True)
    save_checkpoint(weights, {"version": 1, "model": m.state_dict(), "ema": None, "train": None, "epoch": 0,
                              "model_cfg": model_cfg_of(m, NAMES, 96)})
    rng = np.random.default_rng(0)
    for name, (h, w) in {"a.jpg": (80, 120), "b.png": (100, 64)}.items():
        img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        cv2.rectangle(img, (10, 10), (w // 2, h // 2), (255, 255, 255), -1)
        cv2.imwrite(str(root / name), img)
    return root


def test_predict_equals_predict_py(project):
    weights = project / "runs/train/exp/weights/best.pt"
    res = subprocess.run([sys.executable, str(ROOT / "predict.py"), "a.jpg", "b.png", "--weights", str(weights),
                          "--conf", "0.3", "--project", "out", "--name", "cli"], cwd=project, capture_output=True,
                         text=True, timeout=180, env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False)
    assert res.returncode == 0, res.stderr
    entries = json.loads((project / "out/cli/predictions.json").read_text())
    results = Detector(weights, conf_thres=0.3).predict([str(project / "a.jpg"), str(project / "b.png")])
    assert [Path(r.path).name for r in results] == ["a.jpg", "b.png"]
    n = 0
    for e, r in zip(entries, results):
        assert r.orig_shape == (e["height"], e["width"])
        np.testing.assert_allclose(r.boxes, np.array([d["xyxy"] for d in e["detections"]]).reshape(-1, 4), atol=2e-3)
        np.testing.assert_allclose(r.scores, [d["score"] for d in e["detections"]], atol=1e-5)
        assert r.class_ids.tolist() == [d["class_id"] for d in e["detections"]]
        assert r.names == [d["class"] for d in e["detections"]]
        n += len(r.boxes)
    assert n > 0


def test_predict_arrays_order_overrides_and_newest_run(project, monkeypatch):
    monkeypatch.chdir(project)
    det = Detector()  # "": the newest run's best.pt, as the scripts
    assert det.model_path() == Path("runs/train/exp/weights/best.pt")
    arr = load_image(project / "a.jpg")
    got = det.predict([arr, str(project / "b.png"), arr])
    assert [r.path for r in got] == ["array 0", str(project / "b.png"), "array 1"]
    np.testing.assert_allclose(got[0].boxes, got[2].boxes, atol=1e-4)
    np.testing.assert_allclose(got[0].boxes, det.predict(str(project / "a.jpg"))[0].boxes, atol=1e-4)
    assert det.predictor(det.config("predict")).conf_thres == 0.25  # predict's default
    only_disc = det.predict(arr, conf_thres=0.01, classes=["disc"])[0]
    assert len(only_disc.names) > 0 and set(only_disc.names) == {"disc"}
    with pytest.raises(ValueError, match="nope.jpg: no such file"):
        det.predict("nope.jpg")
    with pytest.raises(ValueError, match="'conf_thres': 2.0 must lie in"):
        det.predict(arr, conf_thres=2.0)


def test_no_weights_raises_the_scripts_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(WeightsNotFoundError, match="train.py"):
        resolve_weights("")
    with pytest.raises(WeightsNotFoundError):
        Detector().predict(np.zeros((32, 32, 3), np.uint8))


@pytest.fixture(scope="module")
def voc_run(tiny_voc, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("api_val")
    torch.manual_seed(0)
    model = YoloBody(len(TINY_CLASSES), 0)
    model.class_names, model.img_size = list(TINY_CLASSES), 96
    weights = root / "runs" / "train" / "exp" / "weights" / "best.pt"
    weights.parent.mkdir(parents=True)
    save_model_checkpoint(model, weights)
    (root / "runs" / "train" / "exp" / "config.yaml").write_text(f"data: {tiny_voc}\nimg_size: 96\n")
    return weights


def test_val_equals_get_map(voc_run, tmp_path):
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import get_map

    assert get_map.main(["--weights", str(voc_run), "--device", "cpu", "--batch-size", "3", "--out",
                         str(tmp_path / "cli"), "--no-plots"]) == 0
    cli = json.loads((tmp_path / "cli" / "metrics.json").read_text())
    numbers = Detector(voc_run, device="cpu").val(out=str(tmp_path / "api"), plots=False, batch_size=3)
    assert numbers == cli
    assert numbers == json.loads((tmp_path / "api" / "metrics.json").read_text())
    assert set(numbers["coco"]["per_class"]) == set(TINY_CLASSES)


@pytest.mark.parametrize("fmt", ["onnx", "openvino"])
def test_export_writes_a_model_that_predict_accepts(project, tmp_path, fmt):
    if fmt == "openvino":
        pytest.importorskip("openvino")
    weights = project / "runs/train/exp/weights/best.pt"
    output = tmp_path / ("m.onnx" if fmt == "onnx" else "ir/m.xml")
    path = Detector(weights).export(format=fmt, output=str(output), img_size=64)
    assert path == output and path.is_file()
    img = str(project / "a.jpg")
    via_export = Detector(path, conf_thres=0.3).predict(img)[0]
    via_torch = Detector(weights, conf_thres=0.3, img_size=64, backend="torch").predict(img)[0]
    assert len(via_torch.boxes) > 0 and via_export.names == via_torch.names
    np.testing.assert_allclose(via_export.boxes, via_torch.boxes, atol=1e-2)
    with pytest.raises(ValueError, match="format 'tflite'.*onnx, openvino"):
        Detector(weights).export(format="tflite")
    with pytest.raises(ValueError, match="format 'tflite'"):
        Detector(weights).export(format="tflite")


def test_train_one_epoch_then_predict(tiny_voc, tmp_path):
    det = Detector(phi="eca")
    best = det.train(data=str(tiny_voc), project=str(tmp_path / "runs"), epochs=1, img_size=64, batch_size=4,
                     workers=0, warmup_epochs=0.0, close_mosaic=0, mosaic=0.0, autoanchor=False, plots=False)
    assert best.is_file() and best.parent.name == "weights" and det.model_path() == best
    r = det.predict(np.zeros((64, 64, 3), np.uint8), conf_thres=0.001)[0]
    assert r.orig_shape == (64, 64) and set(r.names) <= set(TINY_CLASSES)
