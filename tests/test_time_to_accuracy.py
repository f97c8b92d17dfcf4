"""benchmarks/time_to_accuracy.py: the curve arithmetic and the table against hand-computed values, the scoring
against pycocotools on hand-made boxes, the parts that read and write the peers' files; a slow end-to-end run of
ours on a tiny generated set, its curve re-scored here with pycocotools directly."""
from __future__ import annotations

import contextlib
import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import time_to_accuracy as tta  # noqa: E402
from time_to_accuracy_systems import DataSet, Epoch, Ours, by_path, rewrite_settings  # noqa: E402
from time_to_accuracy_ultralytics import Ultralytics  # noqa: E402

from utils.data.records import Record  # noqa: E402
from utils.eval.evaluate import predictions_to_table  # noqa: E402


def record(image: str, boxes: list[list[float]], classes: list[int], w: int = 200, h: int = 100) -> Record:
    return Record(image, w, h, np.array(boxes, np.float32).reshape(-1, 4), np.array(classes), None, None)


# ---------------------------------------------------------------------------------------------- curves
CURVE = [[2.0, 0.2, 0.4, 1], [4.0, 0.6, 0.8, 2], [6.0, 0.5, 0.9, 3]]


def test_ap_at_interpolates_from_the_origin_and_stops_at_the_end():
    assert tta.ap_at(CURVE, 1.0) == pytest.approx(0.1)  # half way from (0, 0) to (2, 0.2)
    assert tta.ap_at(CURVE, 3.0) == pytest.approx(0.4)
    assert tta.ap_at(CURVE, 5.0) == pytest.approx(0.55)
    assert tta.ap_at(CURVE, 6.0) == pytest.approx(0.5)
    assert tta.ap_at(CURVE, 3.0, col=2) == pytest.approx(0.6)  # AP50
    assert tta.ap_at(CURVE, 6.5) is None
    assert tta.ap_at(CURVE, 6.5, budget=7.0) == pytest.approx(0.5)  # finished inside its budget: its final AP
    assert tta.ap_at(CURVE, 7.5, budget=7.0) is None


def test_minutes_to_reach_is_the_first_crossing():
    assert tta.minutes_to_reach(CURVE, 0.1) == pytest.approx(1.0)
    assert tta.minutes_to_reach(CURVE, 0.4) == pytest.approx(3.0)
    assert tta.minutes_to_reach(CURVE, 0.55) == pytest.approx(3.75)  # before the later dip to 0.5
    assert tta.minutes_to_reach(CURVE, 0.6) == pytest.approx(4.0)
    assert tta.minutes_to_reach(CURVE, 0.61) is None
    assert tta.minutes_to_reach(CURVE, 0.85, col=2) == pytest.approx(5.0)


def test_table_by_hand():
    runs = {
        "ours": {"0": {"curve": [[4.0, 0.3, 0.5, 3], [10.0, 0.6, 0.8, 7]]},
                 "1": {"curve": [[5.0, 0.1, 0.2, 4], [10.0, 0.6, 0.7, 8]]}},
        "reference": {"0": {"curve": [[4.0, 0.2, 0.3, 2], [8.0, 0.4, 0.6, 4]]}},
        "yolo11n": {"0": {"curve": [[3.0, 0.1, 0.2, 5], [12.0, 0.3, 0.5, 20]]}},
        "yolo26n": {"0": {"curve": []}},
    }
    lines = tta.set_table("toy", runs, [5, 10, 25]).splitlines()
    assert lines[2] == ("| system | runs | epochs | minutes | final AP | final AP50 | min to AP 0.400 (reference's "
                        "final) | AP @ 5 min | AP @ 10 min | AP @ 25 min |")
    # ours: reaches 0.4 at 4 + 6 * 0.1 / 0.3 = 6.0 and 5 + 5 * 0.3 / 0.5 = 8.0; at 5 min 0.3 + 0.3 / 6 = 0.35 and 0.1
    assert lines[4] == ("| ours | 2 | 7, 8 | 10.0 (10.0-10.0) | 0.600 (0.600-0.600) | 0.750 (0.700-0.800) | "
                        "7.0 (6.0-8.0) | 0.225 (0.100-0.350) | 0.600 (0.600-0.600) | - |")
    assert lines[5] == "| reference | 1 | 4 | 8.0 | 0.400 | 0.600 | 8.0 | 0.250 | - | - |"
    # 0.1 + 0.2 * 2 / 9 and 0.1 + 0.2 * 7 / 9; never reaches 0.4
    assert lines[6] == "| yolo11n | 1 | 20 | 12.0 | 0.300 | 0.500 | - | 0.144 | 0.256 | - |"
    assert lines[7].startswith("| yolo26n | 1 | no checkpoint |")
    # a 10-minute budget: the reference ended at 8.0 inside it, so at 10 min it holds its final 0.400
    lines = tta.set_table("toy", runs, [5, 10, 25], budget=10).splitlines()
    assert lines[5] == "| reference | 1 | 4 | 8.0 | 0.400 | 0.600 | 8.0 | 0.250 | 0.400 | - |"


def test_table_without_the_reference_has_no_target():
    lines = tta.set_table("toy", {"ours": {"0": {"curve": [[2.0, 0.2, 0.4, 1]]}}}, [1]).splitlines()
    assert "min to AP - (reference's final)" in lines[2]
    assert lines[4] == "| ours | 1 | 1 | 2.0 | 0.200 | 0.400 | - | 0.100 |"


# ---------------------------------------------------------------------------------------------- scoring
def test_scores_are_pycocotools_on_hand_made_boxes(tmp_path):
    recs = [record("a.jpg", [[10, 10, 110, 60], [120, 20, 180, 90]], [0, 1]),
            record("b.jpg", [[0, 0, 100, 100]], [1], w=150, h=120)]
    evalset = tta.ground_truth(recs, ["cat", "dog"], tmp_path / "gt.json")

    def dets(per_image):
        return predictions_to_table([{"boxes": torch.tensor(b, dtype=torch.float64).reshape(-1, 4),
                                      "scores": torch.tensor(s, dtype=torch.float64),
                                      "labels": torch.tensor(c, dtype=torch.int64)} for b, s, c in per_image])

    perfect = dets([([[10, 10, 110, 60], [120, 20, 180, 90]], [0.9, 0.8], [0, 1]), ([[0, 0, 100, 100]], [0.7], [1])])
    assert tta.score(evalset, perfect, tmp_path / "p.json") == (1.0, 1.0)
    # b.jpg's box at IoU 100 x 62 / 100 x 100 = 0.62: a match at IoU 0.50, 0.55, 0.60 only; at the 7 higher thresholds
    # the dog's first-ranked box (a.jpg, perfect) still gives precision 1 up to recall 0.5: 51 of the 101 recall points
    shifted = dets([([[10, 10, 110, 60], [120, 20, 180, 90]], [0.9, 0.8], [0, 1]), ([[0, 0, 100, 62]], [0.7], [1])])
    ap, ap50 = tta.score(evalset, shifted, tmp_path / "s.json")
    assert ap50 == pytest.approx(1.0)
    dog = (3 * 1.0 + 7 * 51 / 101) / 10
    assert ap == pytest.approx((1.0 + dog) / 2)
    written = json.loads((tmp_path / "s.json").read_text())
    assert {"image_id": 1, "category_id": 2, "bbox": [0.0, 0.0, 100.0, 62.0], "score": 0.7} in written
    gt = json.loads((tmp_path / "gt.json").read_text())
    assert [a["bbox"] for a in gt["annotations"]] == [[10, 10, 100, 50], [120, 20, 60, 70], [0, 0, 100, 100]]


def test_score_only_reuses_a_curve_while_its_checkpoints_and_ground_truth_are_unchanged(tmp_path):
    recs = [record("a.jpg", [[10, 10, 110, 60]], [0])]
    evalset = tta.ground_truth(recs, ["cat"], tmp_path / "gt.json")
    perfect = predictions_to_table([{"boxes": torch.tensor([[10.0, 10, 110, 60]], dtype=torch.float64),
                                     "scores": torch.tensor([0.9], dtype=torch.float64),
                                     "labels": torch.tensor([0])}])

    class Stub:  # a system whose every checkpoint predicts the perfect box; counts the checkpoints it predicted
        checkpoints = [Epoch(1, 60.0, tmp_path / "epoch1.pt")]
        predicted = 0

        def epochs(self, run_dir):
            return list(self.checkpoints)

        def detections(self, ds, run_dir, epochs, st):
            self.predicted += len(epochs)
            return [perfect for _ in epochs]

    stub, run_dir = Stub(), tmp_path / "run"
    run_dir.mkdir()
    curve = tta.score_run(stub, None, evalset, run_dir, None)
    assert curve == [[1.0, 1.0, 1.0, 1]] and stub.predicted == 1
    assert tta.score_run(stub, None, evalset, run_dir, None, reuse=True) == curve and stub.predicted == 1
    assert tta.score_run(stub, None, evalset, run_dir, None) == curve and stub.predicted == 2  # --rescore
    stub.checkpoints.append(Epoch(2, 120.0, tmp_path / "epoch2.pt"))  # the run went on: scored again
    assert tta.score_run(stub, None, evalset, run_dir, None, reuse=True) == [[1.0, 1.0, 1.0, 1], [2.0, 1.0, 1.0, 2]]
    assert stub.predicted == 4
    recs = [record("a.jpg", [[10, 10, 110, 60], [120, 20, 180, 90]], [0, 0])]  # a second cat: found half
    evalset = tta.ground_truth(recs, ["cat"], tmp_path / "gt.json")
    assert tta.score_run(stub, None, evalset, run_dir, None, reuse=True)[0][2] < 1.0  # other ground truth: again
    assert stub.predicted == 6


def test_by_path_orders_a_childs_predictions_as_the_records(tmp_path):
    recs = [record(str(tmp_path / "a.jpg"), [], []), record(str(tmp_path / "b.jpg"), [], [])]
    table = by_path(recs, {str(tmp_path / "b.jpg"): [[1, 2, 11, 22, 0.5, 1.0]], str(tmp_path / "a.jpg"): []}, "x")
    assert table.image.tolist() == [1] and table.labels.tolist() == [1]
    assert table.boxes.tolist() == [[1, 2, 10, 20]]  # xywh
    with pytest.raises(RuntimeError, match="no predictions"):
        by_path(recs, {}, "x")


# ---------------------------------------------------------------------------------------------- the peers' files
SOURCE = ("if __name__ == '__main__':\r\n    Cuda = True\r\n    seed = 11\r\n    Init_lr             = 1e-2\r\n"
          "    Min_lr              = Init_lr * 0.01\r\n    mosaic              = False\r\n"
          "    mosaic_prob         = 0.5\r\n    seed_everything(seed)\r\n    Init_lr_fit = 3\r\n")


def test_rewrite_settings_edits_only_the_settings_block():
    out = rewrite_settings(SOURCE, {"Cuda": False, "seed": 3, "Init_lr": 1e-3, "mosaic": True})
    assert out == ("if __name__ == '__main__':\r\n    Cuda = False\r\n    seed = 3\r\n"
                   "    Init_lr             = 0.001\r\n    Min_lr              = Init_lr * 0.01\r\n"
                   "    mosaic              = True\r\n"
                   "    mosaic_prob         = 0.5\r\n    seed_everything(seed)\r\n    Init_lr_fit = 3\r\n")
    with pytest.raises(RuntimeError, match="`Init_lr_fit` found 0 times"):
        rewrite_settings(SOURCE, {"Init_lr_fit": 1})  # after seed_everything: not a setting
    with pytest.raises(RuntimeError, match="seed_everything"):
        rewrite_settings("x = 1\n", {"x": 2})


def test_checkpoints_of_ours_and_ultralytics_runs(tmp_path):
    ours, ul = tmp_path / "ours", tmp_path / "ul"
    for d, names in ((ours, ["epoch1.pt", "epoch2.pt"]), (ul, ["epoch0.pt", "epoch1.pt"])):
        (d / "weights").mkdir(parents=True)
        for n in names:
            (d / "weights" / n).write_bytes(b"")
    with open(ours / "results.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["epoch", "mAP50", "epoch_time", "elapsed"])
        w.writerows([[0, 0.1, 30, 31.5], [1, 0.2, 30, 62.0], [2, 0.3, 30, 93.0]])  # epoch3.pt missing: left out
    got = Ours().epochs(ours)
    assert [(e.epoch, e.elapsed_s, e.weights.name) for e in got] == [(1, 31.5, "epoch1.pt"), (2, 62.0, "epoch2.pt")]
    # Ultralytics: epoch 1-based in its csv (headers padded in older versions), checkpoints numbered from 0
    (ul / "results.csv").write_text("  epoch,  time,  metrics/mAP50(B)\n1,12.5,0.1\n2,25.0,0.2\n")
    got = Ultralytics("yolo11n").epochs(ul)
    assert [(e.epoch, e.elapsed_s, e.weights.name) for e in got] == [(1, 12.5, "epoch0.pt"), (2, 25.0, "epoch1.pt")]


def test_yolo_copy_has_normalised_labels_without_difficult_boxes(tmp_path):
    img = tmp_path / "img.jpg"
    img.write_bytes(b"x")
    r = Record(str(img), 200, 100, np.array([[10, 20, 50, 60], [0, 0, 10, 10]], np.float32), np.array([1, 0]),
               np.array([False, True]), None)
    ds = DataSet("toy", "toy.yaml", tmp_path / "toy", ["a", "b"], [r], [r], [r])
    yaml_path = tta.write_yolo_copy(ds)
    root = yaml_path.parent
    assert (root / "labels" / "train" / "000000_img.txt").read_text() == "1 0.150000 0.400000 0.200000 0.400000\n"
    assert (root / "images" / "test" / "000000_img.jpg").resolve() == img
    assert yaml_path.read_text().endswith('names:\n  0: "a"\n  1: "b"\n')


def test_unseen_sets_are_synthetic_data_yamls(tmp_path):
    paths = tta.unseen_sets("11:outline,12:small", "32,8,8", tmp_path)
    assert [Path(p).name for p in paths] == ["synthetic_s11_outline.yaml", "synthetic_s12_small.yaml"]
    assert Path(paths[1]).read_text() == (f"format: synthetic\npath: {tmp_path.resolve()}/data/synthetic_s12_small\n"
                                          "seed: 12\nstyle: small\nnum_train: 32\nnum_val: 8\nnum_test: 8\n")


def test_reference_without_a_checkout_is_a_one_line_error(capsys):
    with pytest.raises(SystemExit) as e:
        tta.parse_args(["--systems", "ours,reference"])
    assert e.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(
        "error: --systems has 'reference': pass --reference-dir DIR, a clone of "
        "https://github.com/bubbliiiing/yolov4-tiny-pytorch (or leave 'reference' out)")


# ---------------------------------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_ours_end_to_end_on_a_tiny_set(tmp_path):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    out = tmp_path / "tta"
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "time_to_accuracy.py"), "--systems", "ours",
                        "--unseen", "3:small", "--unseen-sizes", "16,8,8", "--budget", "0.02", "--seeds", "0",
                        "--img", "64", "--batch", "4", "--workers", "0", "--at", "0.01", "--out", str(out)],
                       capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    doc = json.loads((out / "time_to_accuracy.json").read_text())
    run = doc["runs"]["ours"]["synthetic_s3_small"]["0"]
    assert run["train"]["rc"] == 0 and "--save-period" in run["train"]["command"]
    assert len(run["curve"]) == 1  # the first epoch outlasts the budget: one epoch, one checkpoint
    minutes, ap, ap50, epoch = run["curve"][0]
    with open(Path(run["run_dir"]) / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert epoch == 1 and minutes == round(float(rows[0]["elapsed"]) / 60, 3)
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools itself on the two files the script wrote
        gt = COCO(str(out / "synthetic_s3_small" / "test_ground_truth.json"))
        results = json.loads((Path(run["run_dir"]) / "tta_scores" / "detections_epoch1.json").read_text())
        ev = COCOeval(gt, gt.loadRes(results), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert (ap, ap50) == (round(ev.stats[0], 4), round(ev.stats[1], 4))
    assert len(gt.getImgIds()) == 8
    assert (out / "synthetic_s3_small.png").stat().st_size > 0
    table = (out / "time_to_accuracy.md").read_text()
    assert f"| ours | 1 | 1 | {minutes:.1f} | {ap:.3f} | {ap50:.3f} | - |" in table
    assert table == doc["table"] and r.stdout.strip() == table.strip()
