"""predict.py as a user runs it (a subprocess on real files), plus the pieces it is built from:
weights discovery, run folders, conv+BN fusion, drawing, and the one Predictor code path."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from helpers import random_detector

from nets.weights.checkpoint import checkpoint_dict, save_checkpoint
from nets.yolo import YoloBody
from utils.engine.runs import WeightsNotFoundError, increment_dir, latest_weights

ROOT = Path(__file__).resolve().parent.parent
NAMES = ["square", "disc", "tri"]


def tiny_model(phi: str = "cbam", num_classes: int = 3, seed: int = 0) -> YoloBody:
    return random_detector(phi, num_classes, seed, zero_head_bias=True)


def write_checkpoint(path: Path, phi: str = "cbam", img_size: int = 96) -> Path:
    m = tiny_model(phi)
    save_checkpoint(path, checkpoint_dict(m, class_names=NAMES, img_size=img_size))
    return path


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """A user's folder: runs/train/exp/weights/best.pt, images (one corrupt) and a short video."""
    ws = tmp_path_factory.mktemp("predict_ws")
    write_checkpoint(ws / "runs" / "train" / "exp" / "weights" / "best.pt")
    rng = np.random.default_rng(0)
    imgs = ws / "imgs"
    imgs.mkdir()
    for name, (h, w) in {"a.jpg": (80, 120), "b.png": (100, 64), "c.jpg": (90, 90)}.items():
        img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        cv2.rectangle(img, (10, 10), (w // 2, h // 2), (255, 255, 255), -1)
        cv2.imwrite(str(imgs / name), img)
    (imgs / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG")
    (imgs / "notes.txt").write_text("ignored: not an image")
    vw = cv2.VideoWriter(str(ws / "clip.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10, (80, 60))
    assert vw.isOpened()
    for _ in range(6):
        vw.write(rng.integers(0, 255, (60, 80, 3), dtype=np.uint8))
    vw.release()
    return ws


def run_cli(args: list[str], cwd: Path, timeout: int = 180) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, str(ROOT / "predict.py"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def cli_run(workspace):
    """One full CLI run (no --weights: it must find runs/train/exp/weights/best.pt)."""
    res = run_cli(["imgs", "clip.avi", "--conf", "0.3", "--batch-size", "2", "--project", "out", "--name", "t",
                   "--save-txt", "--save-voc", "--save-crop", "--count", "--heatmap", "--attention-maps"], workspace)
    assert res.returncode == 0, res.stdout + res.stderr
    return res


def test_cli_writes_the_run_folder(workspace, cli_run):
    out = workspace / "out" / "t"
    lines = cli_run.stdout.strip().splitlines()
    assert lines[-1] == f"results saved to {Path('out') / 't'}"
    assert "runs/train/exp/weights/best.pt" in cli_run.stdout  # discovered, not passed
    assert "broken.jpg" in cli_run.stderr and "does not decode" in cli_run.stderr
    entries = json.loads((out / "predictions.json").read_text())
    stills = [e for e in entries if "frame" not in e]
    frames = [e for e in entries if "frame" in e]
    assert sorted(Path(e["image"]).name for e in stills) == ["a.jpg", "b.png", "c.jpg"]
    assert [e["frame"] for e in frames] == list(range(6)) and {e["width"] for e in frames} == {80}
    n = 0
    for e in entries:
        assert set(e) >= {"image", "width", "height", "detections"}
        for d in e["detections"]:
            assert set(d) == {"class_id", "class", "score", "xyxy"} and d["class"] == NAMES[d["class_id"]]
            x1, y1, x2, y2 = d["xyxy"]
            assert 0 <= x1 <= x2 <= e["width"] and 0 <= y1 <= y2 <= e["height"] and d["score"] >= 0.3
            n += 1
    assert n > 0
    for name in ("a.jpg", "b.png", "c.jpg"):
        assert cv2.imread(str(out / name)).shape[:2] == cv2.imread(str(workspace / "imgs" / name)).shape[:2]
        stem = Path(name).stem
        assert (out / "heatmaps" / f"{stem}.jpg").is_file() and (out / "attention" / f"{stem}.jpg").is_file()
        assert (out / "labels" / f"{stem}.txt").is_file() and (out / "voc" / f"{stem}.xml").is_file()
    videos = list(out.glob("clip.*"))
    assert len(videos) == 1
    cap = cv2.VideoCapture(str(videos[0]))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 6
    cap.release()
    counts = json.loads((out / "counts.json").read_text())
    assert sum(counts["total"].values()) == n
    crops = list((out / "crops").rglob("*.jpg"))
    assert 0 < len(crops) <= n


def test_cli_txt_and_voc_match_the_json(workspace, cli_run):
    out = workspace / "out" / "t"
    entry = next(e for e in json.loads((out / "predictions.json").read_text()) if e["image"].endswith("a.jpg"))
    rows = [list(map(float, line.split())) for line in (out / "labels" / "a.txt").read_text().splitlines()]
    assert len(rows) == len(entry["detections"])
    for row, d in zip(rows, entry["detections"]):
        x1, y1, x2, y2 = d["xyxy"]
        w, h = entry["width"], entry["height"]
        np.testing.assert_allclose(row[:5], [d["class_id"], (x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w,
                                             (y2 - y1) / h], atol=1e-4)
    xml = (out / "voc" / "a.xml").read_text()
    assert xml.count("<object>") == len(entry["detections"])


def test_cli_boxes_are_the_predictor_boxes(workspace, cli_run):
    """The boxes in predictions.json are exactly what the shared Predictor (used by evaluation) returns."""
    from utils.data.image import load_image
    from utils.infer.predictor import Predictor

    pred = Predictor.from_weights(workspace / "runs/train/exp/weights/best.pt", device="cpu", conf_thres=0.3)
    entries = json.loads((workspace / "out" / "t" / "predictions.json").read_text())
    for e in (e for e in entries if "frame" not in e):
        det = pred([load_image(workspace / e["image"])])[0]
        got = np.array([d["xyxy"] for d in e["detections"]]).reshape(-1, 4)
        np.testing.assert_allclose(got, det["boxes"].numpy(), atol=2e-3)
        assert [d["class_id"] for d in e["detections"]] == det["labels"].tolist()


def test_cli_without_weights_says_how_to_get_them(tmp_path):
    img = tmp_path / "x.jpg"
    cv2.imwrite(str(img), np.zeros((32, 32, 3), np.uint8))
    res = run_cli([str(img)], tmp_path)
    assert res.returncode != 0
    assert "python train.py" in res.stderr and "--weights" in res.stderr and "runs/train" in res.stderr


def test_cli_reports_missing_sources(workspace, tmp_path):
    res = run_cli(["nope.jpg", "--weights", str(workspace / "runs/train/exp/weights/best.pt")], tmp_path)
    assert res.returncode != 0 and "nope.jpg: no such file" in res.stderr


# ---------------------------------------------------------------- weights discovery and run folders
def test_latest_weights_prefers_newest_run_and_best_over_last(tmp_path):
    proj = tmp_path / "runs" / "train"
    with pytest.raises(WeightsNotFoundError, match="train.py"):
        latest_weights(proj)
    old = proj / "exp" / "weights"
    old.mkdir(parents=True)
    (old / "last.pt").write_bytes(b"x")
    assert latest_weights(proj) == old / "last.pt"
    (old / "best.pt").write_bytes(b"x")
    assert latest_weights(proj) == old / "best.pt"
    time.sleep(0.02)
    new = proj / "exp2" / "weights"
    new.mkdir(parents=True)
    (new / "last.pt").write_bytes(b"x")
    os.utime(old / "best.pt", (1, 1))
    os.utime(old / "last.pt", (1, 1))
    assert latest_weights(proj) == new / "last.pt"
    (new / "best.pt").write_bytes(b"")  # an empty (interrupted) file is not weights
    assert latest_weights(proj) == new / "last.pt"


def test_increment_dir(tmp_path):
    a = increment_dir(tmp_path / "predict" / "exp")
    b = increment_dir(tmp_path / "predict" / "exp")
    c = increment_dir(tmp_path / "predict" / "exp")
    assert [p.name for p in (a, b, c)] == ["exp", "exp2", "exp3"] and all(p.is_dir() for p in (a, b, c))
    assert increment_dir(tmp_path / "predict" / "exp", exist_ok=True) == a


def test_collect_sources(workspace):
    from utils.infer.predict_run import collect_sources

    srcs, problems = collect_sources([str(workspace / "imgs"), str(workspace / "*.avi"), "0", "missing.png"])
    kinds = [(s.kind, Path(s.path).name) for s in srcs]
    assert kinds == [("image", "a.jpg"), ("image", "b.png"), ("image", "broken.jpg"), ("image", "c.jpg"),
                     ("video", "clip.avi"), ("camera", "0")]
    assert problems == ["missing.png: no such file or folder"]


# ---------------------------------------------------------------- fusion, predictor, drawing
@pytest.mark.parametrize("phi", ["none", "cbam", "ca"])
def test_fused_model_matches_unfused(phi):
    from nets.fuse import fuse_conv_bn

    m = tiny_model(phi)
    fused = fuse_conv_bn(m)
    assert fused is not m and fused.fused_layers >= 19
    assert not any(isinstance(x, torch.nn.BatchNorm2d) for x in fused.modules())
    assert any(isinstance(x, torch.nn.BatchNorm2d) for x in m.modules())  # the original is untouched
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(m(x), fused(x)):
            torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_from_config_reads_the_shared_keys_with_predict_defaults(workspace):
    """predict.py, get_map.py and the API build the Predictor from the same Config keys; predict's own
    defaults (conf 0.25, iou 0.45, the trained size) sit under the flags."""
    from utils.config import DEFAULT_CONFIG, load_config
    from utils.infer.predictor import Predictor

    weights = workspace / "runs/train/exp/weights/best.pt"
    cfg = load_config(DEFAULT_CONFIG, {"classes": ["disc", "2"], "rect": False, "max_det": 7, "fuse": False,
                                       "backend": "torch"}, mode="predict")
    pred = Predictor.from_config(weights, cfg)
    assert (pred.conf_thres, pred.iou_thres, pred.img_size, pred.max_det) == (0.25, 0.45, 96, 7)
    assert pred.classes == [1, 2] and pred.rect is False and not pred.multi_label
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in pred.model.modules())  # fuse false
    val = Predictor.from_config(weights, load_config(DEFAULT_CONFIG, {"img_size": 64}, mode="val"), multi_label=True)
    assert (val.conf_thres, val.iou_thres, val.img_size, val.multi_label) == (0.001, 0.45, 64, True)


def test_rect_input_shapes_and_batching_independence():
    from utils.infer.predictor import Predictor

    pred = Predictor(tiny_model(), img_size=416, conf_thres=0.3)
    assert pred.input_shape(576, 768) == (320, 416)  # 4:3 photo
    assert pred.input_shape(720, 1280) == (256, 416)  # 16:9 video frame
    assert pred.input_shape(500, 500) == (416, 416)
    assert Predictor(tiny_model(), img_size=416, rect=False).input_shape(576, 768) == (416, 416)
    pred = Predictor(tiny_model(), img_size=96, conf_thres=0.3)
    rng = np.random.default_rng(5)
    wide, tall = rng.integers(0, 255, (60, 120, 3), dtype=np.uint8), rng.integers(0, 255, (120, 50, 3), dtype=np.uint8)
    together = pred([wide, tall, wide])
    alone = [pred([wide])[0], pred([tall])[0]]
    for got, want in zip(together, [alone[0], alone[1], alone[0]]):  # batch mates never change an image's boxes
        torch.testing.assert_close(got["boxes"], want["boxes"], atol=1e-4, rtol=0)


@pytest.mark.gpu  # on CPU too; fp16 inference runs on a GPU
def test_bf16_keeps_float32_anchors_and_fp16_needs_a_gpu(workspace):
    from utils.infer.predictor import Predictor

    weights = workspace / "runs/train/exp/weights/best.pt"
    pred = Predictor.from_weights(weights, device="cpu", dtype="bf16", conf_thres=0.3)
    assert pred.anchors.dtype == torch.float32 and pred.anchors[5].tolist() == [344.0, 319.0]  # bf16: 320
    img = np.random.default_rng(4).integers(0, 255, (80, 96, 3), dtype=np.uint8)
    det = pred([img])[0]
    assert det["boxes"].dtype == torch.float32
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            Predictor.from_weights(weights, device="cpu", dtype="fp16")


def test_predictor_class_filter_by_name_and_errors():
    from utils.infer.predictor import Predictor

    pred = Predictor(tiny_model(), class_names=NAMES, img_size=96, conf_thres=0.2, classes=["disc", 2])
    assert pred.classes == [1, 2]
    img = np.random.default_rng(2).integers(0, 255, (96, 96, 3), dtype=np.uint8)
    assert set(pred([img])[0]["labels"].tolist()) <= {1, 2}
    with pytest.raises(ValueError, match="unknown class 'cat'"):
        Predictor(tiny_model(), class_names=NAMES, classes=["cat"])
    with pytest.raises(ValueError, match="RGB uint8"):
        pred([img.astype(np.float32)])


def test_drawing_colours_and_overlays():
    from utils.viz.draw import class_color, draw_detections, map_to_image, overlay_heatmap, text_color

    assert text_color((255, 230, 0)) == (0, 0, 0) and text_color((20, 40, 160)) == (255, 255, 255)
    assert len({class_color(i) for i in range(80)}) == 80
    img = np.zeros((50, 80, 3), np.uint8)
    out = draw_detections(img, np.array([[5, 20, 40, 45]]), np.array([0.9]), np.array([1]), NAMES)
    assert img.max() == 0 and out.shape == img.shape
    assert tuple(out[30, 5]) == class_color(1)  # box edge in the class colour
    heat = map_to_image(np.ones((4, 4)), 0.8, (0, 12), (50, 80), (64, 64))
    assert heat.shape == (50, 80)
    # a map that is 1 over the letterboxed image and 0 over the padding comes back as all ones
    from utils.data.letterbox import letterbox

    _, scale, (px, py) = letterbox(np.zeros((50, 80, 3), np.uint8), (64, 96))
    m = np.zeros((64, 96), np.float32)
    m[py:py + round(50 * scale), px:px + round(80 * scale)] = 1
    np.testing.assert_allclose(map_to_image(m, scale, (px, py), (50, 80), (64, 96)), 1.0, atol=1e-6)
    assert overlay_heatmap(img, heat).shape == img.shape
