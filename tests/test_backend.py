"""The `backend` key: which runtime runs which weights, the cached export of a .pt (made once, reused only
while it provably belongs to the checkpoint, rebuilt otherwise), and predict.py / get_map.py on each backend
giving the torch numbers."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_CLASSES
from helpers import random_detector

from nets.weights.checkpoint import checkpoint_dict, save_checkpoint
from utils.config import ConfigError, load_config
from utils.export import cache
from utils.infer import backends
from utils.infer.backends import resolve_backend
from utils.infer.predictor import Predictor

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
CPU, CUDA = torch.device("cpu"), torch.device("cuda")
HAS_OV = backends.installed("openvino")


def write_ckpt(path: Path, seed: int = 0, img_size: int = 64) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(path, checkpoint_dict(random_detector("eca", len(TINY_CLASSES), seed), class_names=TINY_CLASSES,
                                          img_size=img_size))
    return path


def test_resolve_backend_table(monkeypatch):
    pt, onnx, xml = Path("best.pt"), Path("best.onnx"), Path("m_openvino_model/m.xml")
    monkeypatch.setattr(backends, "installed", lambda b: True)
    assert [resolve_backend(None, p, CPU) for p in (pt, onnx, xml)] == ["torch", "onnxruntime", "openvino"]
    assert [resolve_backend("auto", p, CPU) for p in (pt, onnx, xml)] == ["onnxruntime", "onnxruntime", "openvino"]
    assert resolve_backend("auto", pt, CPU, precision="bf16") == "openvino"  # onnxruntime: no bf16 on CPU
    assert resolve_backend("auto", pt, CPU, torch_only=True) == "torch"  # e.g. --attention-maps
    assert [resolve_backend("auto", p, CUDA) for p in (pt, onnx)] == ["torch", "onnxruntime"]  # CUDA: no export
    assert resolve_backend("onnxruntime", pt, CPU) == "onnxruntime" and resolve_backend("openvino", onnx, CPU)
    monkeypatch.setattr(backends, "installed", lambda b: b != "onnxruntime")
    assert [resolve_backend("auto", p, CPU) for p in (pt, xml)] == ["openvino", "openvino"]
    monkeypatch.setattr(backends, "installed", lambda b: b == "torch")
    assert resolve_backend("auto", pt, CPU) == "torch"
    for backend, path, msg in [("torch", onnx, "runs .pt checkpoints"), ("onnxruntime", xml, "cannot run an OpenVINO"),
                               ("openvino", pt, "runs on the CPU"), ("tensorrt", pt, "unknown backend")]:
        with pytest.raises(ValueError, match=msg):
            resolve_backend(backend, path, CUDA if backend == "openvino" else CPU)


def test_backend_config_key():
    assert load_config(None, {}, mode="predict").backend == "auto"
    assert load_config(None, {"backend": "openvino"}, mode="val").backend == "openvino"
    with pytest.raises(ConfigError, match="'backend'.*auto, torch, onnxruntime, openvino"):
        load_config(None, {"backend": "tensorrt"}, mode="predict")


def _dets(pred: Predictor, imgs):
    return [{k: v.numpy() for k, v in d.items()} for d in pred(imgs)]


@pytest.mark.parametrize("backend", ["onnxruntime", pytest.param("openvino", marks=pytest.mark.skipif(
    not HAS_OV, reason="openvino not installed"))])
def test_cached_export_is_made_once_and_rebuilt_when_stale_or_foreign(backend, tmp_path):
    fmt = backends.EXPORT_FORMAT[backend]
    ckpt = write_ckpt(tmp_path / "a" / "best.pt", seed=0)
    rng = np.random.default_rng(0)
    # at 64 px the first two share a 64x64 input (one batch of 2), the third is a 32x64 rect input
    imgs = [rng.integers(0, 255, shape, dtype=np.uint8) for shape in [(60, 90, 3), (64, 64, 3), (30, 90, 3)]]

    def check(expect_export: bool) -> None:
        logs: list[str] = []
        pred = Predictor.from_weights(ckpt, device="cpu", backend=backend, conf_thres=0.2, log=logs.append)
        assert pred.exported and pred.model.backend == backend and pred.model.path.parent == cache.cache_dir(ckpt, fmt)
        assert pred.model.batch is None and pred.model.fixed_hw is None and pred.rect  # dynamic batch, height, width
        assert any(m.startswith("exporting") for m in logs) == expect_export, logs
        ref = _dets(Predictor.from_weights(ckpt, device="cpu", backend="torch", conf_thres=0.2), imgs)
        got = _dets(pred, imgs)
        assert sum(len(d["labels"]) for d in ref) > 0
        for r, g in zip(ref, got):
            np.testing.assert_array_equal(g["labels"], r["labels"])
            np.testing.assert_allclose(g["boxes"], r["boxes"], atol=1e-3)

    check(expect_export=True)
    check(expect_export=False)  # reused as is
    folder = cache.cache_dir(ckpt, fmt)
    write_ckpt(ckpt, seed=1)  # retrained: same path, new weights -> the old export is stale
    check(expect_export=True)
    other = write_ckpt(tmp_path / "b" / "best.pt", seed=2)  # a foreign export copied in
    Predictor.from_weights(other, device="cpu", backend=backend, log=lambda m: None)
    shutil.rmtree(folder)
    shutil.copytree(cache.cache_dir(other, fmt), folder)
    check(expect_export=True)
    main = folder / cache.CACHE_FILES[fmt][-1]  # an edited file (same manifest)
    data = bytearray(main.read_bytes())
    data[len(data) // 2] ^= 0xFF
    main.write_bytes(bytes(data))
    check(expect_export=True)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["source_sha256"] == cache.sha256(ckpt) and manifest["opset"] == 17
    assert cache.is_valid(folder, cache.expected_manifest(ckpt, fmt, 17, True))
    assert not cache.is_valid(folder, cache.expected_manifest(ckpt, fmt, 18, True))  # other settings: rebuilt
    assert not cache.is_valid(folder, cache.expected_manifest(ckpt, fmt, 17, False))


def test_two_processes_build_the_cached_export_once(tmp_path):
    """predict.py twice at once on the same .pt (backend auto: its cached export): the second waits for the
    first one's build under the file lock and uses it; both succeed, one build, a valid cache, no leftovers."""
    import cv2

    ckpt = write_ckpt(tmp_path / "best.pt")
    img = tmp_path / "a.png"
    cv2.imwrite(str(img), np.full((48, 64, 3), 127, np.uint8))
    procs = [subprocess.Popen([sys.executable, str(ROOT / "predict.py"), str(img), "--weights", str(ckpt),
                               "--backend", "auto", "--project", str(tmp_path / f"runs{i}")],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV) for i in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    backend = backends.AUTO_ORDER["fp32"][0]
    assert all(f"{backend} fp32" in out for out, _ in outs), outs
    assert sum(out.count("exporting ") for out, _ in outs) == 1, outs
    fmt = backends.EXPORT_FORMAT[backend]
    assert cache.is_valid(cache.cache_dir(ckpt, fmt), cache.expected_manifest(ckpt, fmt, 17, True))
    assert sorted(p.name for p in cache.cache_dir(ckpt, fmt).parent.iterdir()) == [f".{fmt}.lock", fmt]


def test_auto_falls_back_to_torch_when_no_exported_runtime_works(monkeypatch, tmp_path):
    ckpt = write_ckpt(tmp_path / "best.pt")

    def fail(*args, **kwargs):
        raise ImportError("the openvino package is not installed: pip install openvino")

    monkeypatch.setattr(backends, "installed", lambda b: True)
    monkeypatch.setattr("utils.infer.predictor.cached_export", fail)
    logs: list[str] = []
    pred = Predictor.from_weights(ckpt, device="cpu", backend="auto", log=logs.append)
    assert not pred.exported and "pip install openvino" in logs[0] and "running torch" in logs[0]
    with pytest.raises(ImportError, match="pip install openvino"):  # asked for by name: no silent fallback
        Predictor.from_weights(ckpt, device="cpu", backend="openvino")


@pytest.mark.slow
def test_get_map_scores_the_same_on_every_backend(tiny_voc, tmp_path):
    """get_map.py as a user runs it: the log names the backend, and the numbers equal torch's."""
    ckpt = write_ckpt(tmp_path / "best.pt", img_size=96)
    numbers, logs, scores = {}, {}, {}
    for backend in ["torch", "onnxruntime"] + (["openvino"] if HAS_OV else []):
        out = tmp_path / backend
        res = subprocess.run([sys.executable, str(ROOT / "get_map.py"), "--weights", str(ckpt), "--data",
                              str(tiny_voc), "--backend", backend, "--out", str(out), "--no-plots"],
                             capture_output=True, text=True, timeout=300, env=ENV)
        assert res.returncode == 0, res.stdout + res.stderr
        numbers[backend], logs[backend] = json.loads((out / "metrics.json").read_text()), res.stdout
        scores[backend] = np.sort([d["score"] for d in json.loads((out / "detections.json").read_text())])[::-1]
    assert "torch float32" in logs["torch"]
    for backend in numbers:
        assert backend in logs[backend].split("evaluating")[1].splitlines()[0]
        np.testing.assert_allclose(numbers[backend]["coco"]["AP"], numbers["torch"]["coco"]["AP"], atol=1e-4)
        np.testing.assert_allclose(numbers[backend]["voc"]["mAP"], numbers["torch"]["voc"]["mAP"], atol=1e-4)
        assert len(scores["torch"]) > 100  # the same detections, not just the same (near-zero) mAP
        np.testing.assert_allclose(scores[backend][:100], scores["torch"][:100], atol=1e-4)
