"""get_map.py as a user runs it: a subprocess on real files (COCO json, VOC folder, a saved model)."""
from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
TINY_CLASSES = ["square", "disc"]  # what tests/conftest.py's tiny VOC set holds
SCRIPT = ROOT / "get_map.py"
COCO_KEYS = {"AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "per_class"}


def get_map_main(argv: list[str]) -> int:
    """The script's main() in this process (the quick way for checks that need no fresh interpreter)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import get_map

    return get_map.main(argv)


def run_get_map(*args: str, cwd: Path | None = None, timeout: int = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=cwd or ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def write_coco_case(tmp: Path, seed: int = 0, n_img: int = 30, K: int = 3) -> tuple[Path, Path, list[dict]]:
    rng = np.random.default_rng(seed)
    images, anns, res = [], [], []
    for i in range(n_img):
        iid = int(rng.integers(1, 10**6))
        while any(im["id"] == iid for im in images):
            iid += 1
        images.append({"id": iid, "width": 320, "height": 240, "file_name": f"{iid}.jpg"})
        for _ in range(int(rng.integers(0, 6))):
            x, y = rng.uniform(0, 250), rng.uniform(0, 180)
            w, h = rng.uniform(4, 70), rng.uniform(4, 60)
            c = int(rng.integers(0, K))
            crowd = int(rng.random() < 0.05)
            anns.append({"id": len(anns) + 1, "image_id": iid, "category_id": 10 * (c + 1), "bbox": [x, y, w, h],
                         "area": w * h, "iscrowd": crowd})
            for _ in range(int(rng.integers(0, 4))):  # detections near the object, some wrong class
                j = rng.normal(0, 4, 4)
                res.append({"image_id": iid, "category_id": 10 * (c + 1) if rng.random() < 0.8 else 10,
                            "bbox": [x + j[0], y + j[1], max(w + j[2], 1.0), max(h + j[3], 1.0)],
                            "score": float(rng.random())})
        for _ in range(int(rng.integers(0, 5))):  # clutter
            res.append({"image_id": iid, "category_id": 10 * int(rng.integers(1, K + 1)),
                        "bbox": [float(rng.uniform(0, 250)), float(rng.uniform(0, 180)), 20.0, 20.0],
                        "score": float(rng.random() * 0.5)})
    gt_file, res_file = tmp / "instances_val.json", tmp / "results.json"
    gt_file.write_text(json.dumps({"images": images, "annotations": anns,
                                   "categories": [{"id": 10 * (k + 1), "name": f"cls{k}"} for k in range(K)]}))
    res_file.write_text(json.dumps(res))
    return gt_file, res_file, res


def check_shape(numbers: dict, names: list[str]) -> None:
    assert set(numbers) == {"coco", "voc"}
    assert set(numbers["coco"]) == COCO_KEYS
    assert set(numbers["voc"]) == {"mAP", "mAP07", "per_class"}
    assert list(numbers["coco"]["per_class"]) == names and list(numbers["voc"]["per_class"]) == names
    for sec in ("coco", "voc"):
        for k, v in numbers[sec].items():
            vals = v.values() if k == "per_class" else [v]
            assert all(x is None or x == -1 or 0 <= x <= 1 for x in vals), (sec, k, v)
    coco = numbers["coco"]  # relations every COCO evaluation obeys (a mixed-up key breaks one of them)
    assert coco["AP50"] >= coco["AP75"] and coco["AP50"] >= coco["AP"] and coco["AR1"] <= coco["AR10"] <= coco["AR100"]


def test_detections_file_against_coco_json_matches_pycocotools(tmp_path):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt_file, res_file, _ = write_coco_case(tmp_path)
    out = tmp_path / "out"
    r = run_get_map("--detections", str(res_file), "--ground-truth", str(gt_file), "--official",
                    "--save-json", str(tmp_path / "m.json"), "--out", str(out), "--device", "cpu")
    assert r.returncode == 0, r.stderr
    assert "AP@[.50:.95]" in r.stdout and "cls0" in r.stdout
    numbers = json.loads((tmp_path / "m.json").read_text())
    check_shape(numbers, ["cls0", "cls1", "cls2"])
    assert json.loads((out / "metrics.json").read_text()) == numbers
    assert (out / "pr_curve.png").stat().st_size > 0 and (out / "pr_curves" / "cls0.png").is_file()
    diff = float(re.search(r"max \|ours - pycocotools\| over the 12 stats = (\S+)", r.stdout).group(1))
    assert diff <= 1e-4
    with contextlib.redirect_stdout(io.StringIO()):
        cg = COCO(str(gt_file))
        ev = COCOeval(cg, cg.loadRes(str(res_file)), "bbox")
        ev.evaluate(), ev.accumulate(), ev.summarize()
    keys = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100"]
    np.testing.assert_allclose([numbers["coco"][k] for k in keys], ev.stats[:9], atol=1e-4)
    # VOC all-point AP at IoU > 0.5 and COCO AP50 (101-point, IoU >= 0.5) measure the same thing
    assert numbers["voc"]["mAP"] == pytest.approx(ev.stats[1], abs=0.03)


@pytest.mark.parametrize("bad, message", [
    ({"image_id": 424242, "category_id": 10, "bbox": [1, 1, 5, 5], "score": 0.5}, "unknown image_id 424242"),
    ({"image_id": None, "category_id": 10, "bbox": [10, 10, -5, 5], "score": 0.5}, "negative width"),
])
def test_bad_detection_entry_gives_a_clear_error(tmp_path, bad, message, capsys):
    gt_file, res_file, res = write_coco_case(tmp_path, n_img=3)
    if bad["image_id"] is None:
        bad["image_id"] = json.loads(gt_file.read_text())["images"][0]["id"]
    res.insert(1, bad)
    res_file.write_text(json.dumps(res))
    rc = get_map_main(["--detections", str(res_file), "--ground-truth", str(gt_file), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2
    assert message in err and str(res_file) in err and "detection 1" in err
    assert not (tmp_path / "o").exists()


def test_detections_file_against_voc_folder(tiny_voc, tmp_path):
    """Perfect detections written from the XML files score 1.0; image_id is the file stem."""
    from utils.data.voc import parse_voc_xml

    year = tiny_voc / "VOC2007"
    res = []
    for stem in (year / "ImageSets/Main/val.txt").read_text().split():
        names, boxes, _, _, _ = parse_voc_xml(year / "Annotations" / f"{stem}.xml")
        for n, (x1, y1, x2, y2) in zip(names, boxes.tolist()):
            # VOC 1-based inclusive -> COCO [x, y, w, h] in continuous pixels
            res.append({"image_id": stem if len(res) % 2 else int(stem), "category_id": TINY_CLASSES.index(n) + 1,
                        "bbox": [x1 - 1, y1 - 1, x2 - x1 + 1, y2 - y1 + 1], "score": 0.9})
    res_file = tmp_path / "dets.json"
    res_file.write_text(json.dumps(res))
    r = run_get_map("--detections", str(res_file), "--ground-truth", str(tiny_voc), "--split", "val",
                    "--save-json", str(tmp_path / "m.json"), "--out", str(tmp_path / "o"), "--no-plots")
    assert r.returncode == 0, r.stderr
    numbers = json.loads((tmp_path / "m.json").read_text())
    check_shape(numbers, TINY_CLASSES)
    assert numbers["voc"]["mAP"] == pytest.approx(1.0) and numbers["voc"]["mAP07"] == pytest.approx(1.0)
    assert numbers["coco"]["AP"] == pytest.approx(1.0, abs=1e-6)


@pytest.fixture(scope="module")
def run_project(tiny_voc, tmp_path_factory) -> Path:
    """A project folder with runs/train/exp/{weights/best.pt, config.yaml}: a randomly initialised model."""
    from nets.weights.checkpoint import save_model_checkpoint
    from nets.yolo import YoloBody

    root = tmp_path_factory.mktemp("project")
    torch.manual_seed(0)
    model = YoloBody(len(TINY_CLASSES), 0)
    model.class_names, model.img_size = list(TINY_CLASSES), 96
    weights = root / "runs" / "train" / "exp" / "weights"
    weights.mkdir(parents=True)
    save_model_checkpoint(model, weights / "best.pt")
    (root / "runs" / "train" / "exp" / "config.yaml").write_text(f"data: {tiny_voc}\nimg_size: 96\n")
    return root


def test_model_mode_newest_run_official_and_round_trip(run_project, tiny_voc, tmp_path):
    r = run_get_map("--device", "cpu", "--batch-size", "3", "--official", cwd=run_project)
    assert r.returncode == 0, r.stderr
    out = run_project / "runs" / "train" / "exp" / "map_out"
    numbers = json.loads((out / "metrics.json").read_text())
    check_shape(numbers, TINY_CLASSES)
    assert (out / "pr_curve.png").is_file()
    diff = float(re.search(r"max \|ours - pycocotools\| over the 12 stats = (\S+)", r.stdout).group(1))
    assert diff <= 1e-4  # parity on a real model's output (conf 0.001: hundreds of boxes an image)
    dets = json.loads((out / "detections.json").read_text())
    assert dets and {"image_id", "category_id", "bbox", "score"} <= set(dets[0])
    # the saved detections, scored as a file, give the same numbers
    rc = get_map_main(["--detections", str(out / "detections.json"), "--ground-truth", str(tiny_voc),
                       "--save-json", str(tmp_path / "again.json"), "--out", str(tmp_path / "o"), "--no-plots"])
    assert rc == 0
    again = json.loads((tmp_path / "again.json").read_text())
    assert again["voc"]["mAP"] == pytest.approx(numbers["voc"]["mAP"], abs=1e-4)
    assert again["coco"]["AP"] == pytest.approx(numbers["coco"]["AP"], abs=1e-4)


def test_evaluate_model_in_process_keeps_training_mode(tiny_voc):
    from nets.yolo import YoloBody
    from utils.data.load import load_records
    from utils.data.spec import load_data_spec
    from utils.eval.evaluate import evaluate_model

    spec = load_data_spec(str(tiny_voc))
    records, _ = load_records(spec, "val")
    torch.manual_seed(0)
    model = YoloBody(2, 0).train()
    res = evaluate_model(model, records, spec.names, 64, 2, "cpu", conf=0.001, iou=0.6, metric="both")
    check_shape(res, spec.names)
    assert model.training
    assert res["coco"]["AP"] is not None and res["voc"]["mAP"] is not None


def test_no_weights_gives_a_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert get_map_main(["--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "weights" in err.lower()
