"""Command-line tools as a user runs them (real subprocesses): check_dataset and anchors."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fixtures import default_images, write_voc, write_yolo

from utils.data.anchors import anchor_metrics, box_sizes, compute_anchors, wh_iou

ROOT = Path(__file__).resolve().parent.parent


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_check_dataset_reports_bad_files(tmp_path):
    root = write_yolo(tmp_path / "y", default_images())
    (root / "labels" / "train" / "a0.txt").write_text("0 0.5 0.5 0.2\n")
    (root / "images" / "train" / "a1.jpg").write_bytes(b"")
    p = _run("utils.data.check_dataset", "--data", str(root), "--no-cache")
    assert p.returncode == 0, p.stderr
    assert "labels/train/a0.txt: malformed label row" in p.stdout
    assert "images/train/a1.jpg: zero-byte image file" in p.stdout
    assert "[train]" in p.stdout and "[val]" in p.stdout and "boxes per class: cat" in p.stdout


def test_check_dataset_fails_without_usable_samples(tmp_path):
    devkit = write_voc(tmp_path, default_images())
    for f in (devkit / "VOC2007" / "JPEGImages").glob("*.jpg"):
        f.write_bytes(b"broken")
    p = _run("utils.data.check_dataset", "--data", str(devkit), "--no-cache")
    assert p.returncode == 1 and "no usable sample" in p.stdout and "a0.jpg" in p.stdout
    p = _run("utils.data.check_dataset", "--data", str(tmp_path / "does_not_exist"))
    assert p.returncode == 2 and "path not found" in p.stderr


def test_anchors_cli(tmp_path):
    devkit = write_voc(tmp_path, default_images() * 1, splits={"train": [i.name for i in default_images()]})
    out = tmp_path / "anchors.txt"
    p = _run("utils.data.anchors", "--data", str(devkit), "--img", "416", "--out", str(out), "--generations", "200")
    assert p.returncode == 0, p.stderr
    assert "current" in p.stdout and "new" in p.stdout and p.stdout.count("BPR") >= 4 and "mean IoU" in p.stdout
    from nets.assets import read_anchors

    a = read_anchors(out)
    assert a.shape == (6, 2) and (np.diff(a.prod(1)) >= 0).all()


def test_wh_iou_by_hand():
    wh = np.array([[10, 20], [30, 30]], np.float64)
    anchors = np.array([[10, 10], [30, 30]], np.float64)
    # [10x20 vs 10x10] = 100 / 200; [10x20 vs 30x30] = 200 / 900; [30x30 vs 10x10] = 100 / 900; same = 1
    np.testing.assert_allclose(wh_iou(wh, anchors), [[0.5, 200 / 900], [100 / 900, 1.0]])
    m = anchor_metrics(wh, anchors, thr=0.6)
    assert m["bpr"] == 0.5 and m["mean_iou"] == pytest.approx(0.75)


def test_kmeans_finds_clusters():
    rng = np.random.default_rng(0)
    centres = np.array([[12, 16], [30, 60], [64, 40], [100, 110], [200, 150], [320, 300]], np.float64)
    wh = np.concatenate([c * rng.uniform(0.95, 1.05, (200, 2)) for c in centres])
    a = compute_anchors(wh, 6, seed=0, generations=100)
    np.testing.assert_allclose(a, centres, rtol=0.06)
    assert anchor_metrics(wh, a)["mean_iou"] > 0.9


def _records(wh: np.ndarray, size: int = 320) -> list:
    from utils.data.records import Record

    n = len(wh)
    boxes = np.concatenate([np.full((n, 2), 10.0), 10.0 + wh], 1).astype(np.float32)
    return [Record(f"{i}.jpg", size, size, boxes[i:i + 1], np.zeros(1, np.int64), np.zeros(1, bool),
                   np.zeros(1, bool)) for i in range(n)]


def test_check_anchors_keeps_fitting_anchors_and_refits_poor_ones():
    from nets.assets import read_anchors
    from utils.data.anchors import check_anchors

    default = read_anchors(ROOT / "model_data" / "yolo_anchors.txt")
    rng = np.random.default_rng(0)
    fitting = _records(default[1:][rng.integers(0, 5, 60)] * rng.uniform(0.9, 1.1, (60, 1)))
    logs = []
    assert np.array_equal(check_anchors(fitting, default, 320, refit=True, log=logs.append), default)
    assert "100.0% of 60 training boxes fit" in logs[-1]

    tiny = _records(rng.uniform(3, 6, (60, 2)))  # 3-6 px boxes: IoU with 23x27 is < 0.06
    kept = check_anchors(tiny, default, 320, refit=False, data="my.yaml", log=logs.append)
    assert np.array_equal(kept, default) and "python -m utils.data.anchors --data my.yaml --img 320" in logs[-1]
    new = check_anchors(tiny, default, 320, refit=True, seed=3, log=logs.append)
    assert "fitted to the boxes" in logs[-1]
    assert new.shape == (6, 2) and anchor_metrics(box_sizes(tiny, 320), new[1:])["bpr"] >= 0.98
    assert np.array_equal(new, check_anchors(tiny, default, 320, refit=True, seed=3, log=logs.append))  # DDP ranks
