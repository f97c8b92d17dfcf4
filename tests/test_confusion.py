"""Detection confusion matrix (utils/eval/confusion.py): a hand-computed case, a plain-Python reference on
random cases, and get_map.py writing confusion_matrix.{json,png} as a real subprocess."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from utils.eval.confusion import ConfusionMatrix, confusion_counts, detection_confusion, resolve_matches
from utils.eval.metrics import tables_from_lists

ROOT = Path(__file__).resolve().parent.parent
BG = 3  # background index for the 3-class hand case


def confusion_from_lists(preds, gts, class_names, conf=0.25, iou=0.45) -> ConfusionMatrix:
    """The library's path: per-image dicts -> tables -> matrix."""
    return detection_confusion(*tables_from_lists(preds, gts), class_names, conf, iou)


def image(gt=(), det=(), ignored=()):
    """Per-image dicts of the metrics API. gt: [(box, cls)], det: [(box, cls, score)], ignored: gt indices
    flagged difficult (VOC)."""
    return ({"boxes": torch.tensor([d[0] for d in det], dtype=torch.float32).reshape(-1, 4),
             "scores": torch.tensor([d[2] for d in det], dtype=torch.float32),
             "labels": torch.tensor([d[1] for d in det], dtype=torch.int64)},
            {"boxes": torch.tensor([g[0] for g in gt], dtype=torch.float32).reshape(-1, 4),
             "labels": torch.tensor([g[1] for g in gt], dtype=torch.int64),
             "difficult": torch.tensor([i in ignored for i in range(len(gt))], dtype=torch.bool)})


def hand_case():
    return [
        # match; class confusion (dog taken for cat); GT missed because its detection is below conf; FP
        image(gt=[([0, 0, 10, 10], 0), ([20, 0, 30, 10], 1), ([40, 0, 50, 10], 2)],
              det=[([0, 0, 10, 10], 0, 0.9), ([20, 0, 30, 10], 0, 0.8), ([40, 0, 50, 10], 2, 0.1),
                   ([100, 100, 110, 110], 1, 0.5)]),
        # two detections compete for one GT: the higher IoU (0.9) wins, not the higher score (0.95)
        image(gt=[([0, 0, 10, 10], 1)], det=[([0, 0, 10, 9], 1, 0.6), ([0, 0, 10, 8], 1, 0.95)]),
        image(),  # empty image
        image(gt=[([0, 0, 10, 10], 0)]),  # GT only: missed
        image(det=[([5, 5, 20, 20], 2, 0.3)]),  # detection only: FP
        # Ultralytics' two passes: A = [0,90] prefers E (0.9) but E goes to B (0.95); A stays unmatched even
        # though it overlaps F (0.727 > 0.45); F is missed.
        image(gt=[([0, 0, 100, 10], 0), ([10, 0, 110, 10], 2)],
              det=[([0, 0, 90, 10], 1, 0.7), ([0, 0, 95, 10], 0, 0.6)]),
        # a detection on a difficult GT: the GT is left out, the detection is a background FP
        image(gt=[([0, 0, 10, 10], 0)], det=[([0, 0, 10, 10], 0, 0.9)], ignored=(0,)),
    ]


HAND_EXPECTED = np.array([
    # true: cat dog bird background
    [2, 1, 0, 1],  # predicted cat
    [0, 1, 0, 3],  # predicted dog
    [0, 0, 0, 1],  # predicted bird
    [1, 0, 2, 0],  # predicted background
], dtype=np.int64)


def test_hand_computed_case():
    preds, gts = zip(*hand_case())
    cm = confusion_from_lists(preds, gts, ["cat", "dog", "bird"])
    assert cm.matrix.dtype == np.int64 and cm.matrix.shape == (4, 4)
    np.testing.assert_array_equal(cm.matrix, HAND_EXPECTED)
    assert cm.names == ["cat", "dog", "bird", "background"]
    assert cm.matrix[:BG].sum() == 9  # detections with score >= 0.25
    assert cm.matrix[:, :BG].sum() == 7  # GT that is not difficult
    norm = cm.normalized()
    np.testing.assert_allclose(norm[:, 0], [2 / 3, 0, 0, 1 / 3])
    np.testing.assert_allclose(norm.sum(0), 1.0)
    assert "4 matched (3 right class, 1 confused), 3 missed, 5 false positives" in cm.summary()


def test_detection_order_and_image_order_do_not_matter():
    preds, gts = zip(*hand_case())
    dets, gtab = tables_from_lists(preds, gts)
    perm = torch.randperm(dets.labels.numel(), generator=torch.Generator().manual_seed(0))
    dets.image, dets.boxes, dets.scores, dets.labels = (t[perm] for t in (dets.image, dets.boxes, dets.scores,
                                                                            dets.labels))
    np.testing.assert_array_equal(confusion_counts(dets, gtab, 3), HAND_EXPECTED)


def test_thresholds_are_score_at_least_conf_and_iou_above_thr():
    # IoU([0,0,10,10], [0,0,10,5]) = 0.5 exactly; score 0.25 exactly
    preds, gts = zip(image(gt=[([0, 0, 10, 10], 0)], det=[([0, 0, 10, 5], 0, 0.25)]))
    at = confusion_from_lists(preds, gts, ["a"], conf=0.25, iou=0.5).matrix
    np.testing.assert_array_equal(at, [[0, 1], [1, 0]])  # kept (score >= conf), not matched (IoU not > 0.5)
    below = confusion_from_lists(preds, gts, ["a"], conf=0.25, iou=0.49).matrix
    np.testing.assert_array_equal(below, [[1, 0], [0, 0]])
    dropped = confusion_from_lists(preds, gts, ["a"], conf=0.26, iou=0.49).matrix
    np.testing.assert_array_equal(dropped, [[0, 0], [1, 0]])


def test_resolve_matches_ties_go_to_the_higher_index():
    g, d = resolve_matches(np.array([0, 1, 0, 1]), np.array([0, 0, 1, 1]), np.array([0.5, 0.5, 0.7, 0.7]))
    # pass 1: det 0 -> gt 1, det 1 -> gt 1 (ties: higher gt); pass 2: gt 1 -> det 1 (tie: higher det)
    assert g.tolist() == [1] and d.tolist() == [1]


def test_class_index_out_of_range_is_an_error():
    preds, gts = zip(image(gt=[([0, 0, 10, 10], 5)]))
    with pytest.raises(ValueError, match="class index out of range"):
        confusion_from_lists(preds, gts, ["a", "b"])


# ----------------------------------------------------------------------------- independent reference
def iou_py(a, b) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def reference_matrix(cases, nc: int, conf: float, thr: float) -> list[list[int]]:
    """Plain Python: each detection picks its best GT (IoU > thr), then each GT its best detection among
    those that picked it; ties to the higher index. Ignored GT is dropped first."""
    m = [[0] * (nc + 1) for _ in range(nc + 1)]
    for gt, det in cases:  # gt: [(box, cls, ignored)], det: [(box, cls, score)]
        G = [(b, c) for b, c, ign in gt if not ign]
        D = [(b, c) for b, c, s in det if s >= conf]
        pick = {}  # det -> (iou, gt)
        for di, (db, _) in enumerate(D):
            for gi, (gb, _) in enumerate(G):
                v = iou_py(gb, db)
                if v > thr and (di not in pick or (v, gi) > pick[di]):
                    pick[di] = (v, gi)
        won = {}  # gt -> (iou, det)
        for di, (v, gi) in pick.items():
            if gi not in won or (v, di) > won[gi]:
                won[gi] = (v, di)
        for gi, (_, di) in won.items():
            m[D[di][1]][G[gi][1]] += 1
        for gi, (_, c) in enumerate(G):
            if gi not in won:
                m[nc][c] += 1
        matched = {di for _, di in won.values()}
        for di, (_, c) in enumerate(D):
            if di not in matched:
                m[c][nc] += 1
    return m


def random_cases(seed: int, nc: int, n_img: int = 12):
    rng = np.random.default_rng(seed)
    cases = []
    for _ in range(n_img):
        gt, det = [], []
        for _ in range(int(rng.integers(0, 7))):
            x, y = rng.uniform(0, 200, 2)
            w, h = rng.uniform(8, 60, 2)
            c = int(rng.integers(0, nc))
            gt.append(([x, y, x + w, y + h], c, bool(rng.random() < 0.1)))
            for _ in range(int(rng.integers(0, 4))):  # jittered detections, some of another class
                j = rng.normal(0, 0.12, 4) * [w, h, w, h]
                det.append(([x + j[0], y + j[1], x + w + j[2], y + h + j[3]],
                            c if rng.random() < 0.75 else int(rng.integers(0, nc)), float(rng.random())))
        for _ in range(int(rng.integers(0, 3))):  # clutter
            x, y = rng.uniform(0, 200, 2)
            det.append(([x, y, x + 15, y + 15], int(rng.integers(0, nc)), float(rng.random())))
        det = [det[k] for k in rng.permutation(len(det))]
        cases.append((gt, det))
    return cases


def to_lists(cases):
    preds, gts = [], []
    for gt, det in cases:
        preds.append({"boxes": torch.tensor([d[0] for d in det], dtype=torch.float64).reshape(-1, 4),
                      "scores": torch.tensor([d[2] for d in det], dtype=torch.float64),
                      "labels": torch.tensor([d[1] for d in det], dtype=torch.int64)})
        gts.append({"boxes": torch.tensor([g[0] for g in gt], dtype=torch.float64).reshape(-1, 4),
                    "labels": torch.tensor([g[1] for g in gt], dtype=torch.int64),
                    "iscrowd": torch.tensor([g[2] for g in gt], dtype=torch.bool)})
    return preds, gts


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("conf, thr", [(0.25, 0.45), (0.1, 0.3), (0.5, 0.7)])
def test_matches_plain_python_reference(seed, conf, thr):
    nc = 2 + seed % 4
    cases = random_cases(seed, nc)
    preds, gts = to_lists(cases)
    cm = confusion_from_lists(preds, gts, [f"c{k}" for k in range(nc)], conf=conf, iou=thr)
    ref = np.array(reference_matrix(cases, nc, conf, thr), np.int64)
    np.testing.assert_array_equal(cm.matrix, ref)
    n_gt = sum(not g[2] for gt, _ in cases for g in gt)
    n_det = sum(d[2] >= conf for _, det in cases for d in det)
    assert cm.matrix[:, :nc].sum() == n_gt and cm.matrix[:nc].sum() == n_det and cm.matrix[nc, nc] == 0
    assert np.trace(cm.matrix[:nc, :nc]) > 0  # the jitter gives real matches


# ----------------------------------------------------------------------------- get_map.py
def write_coco_fixture(tmp: Path, seed: int = 3, nc: int = 3) -> tuple[Path, Path, list, list[str]]:
    """A COCO instances json (with crowd boxes) and a results json built from the same random case."""
    cases = random_cases(seed, nc, n_img=10)
    names = [f"cls{k}" for k in range(nc)]
    images, anns, res = [], [], []
    for i, (gt, det) in enumerate(cases):
        iid = 100 + 7 * i
        images.append({"id": iid, "width": 320, "height": 320, "file_name": f"{iid}.jpg"})
        for b, c, crowd in gt:
            w, h = b[2] - b[0], b[3] - b[1]
            anns.append({"id": len(anns) + 1, "image_id": iid, "category_id": 10 * (c + 1),
                         "bbox": [b[0], b[1], w, h], "area": w * h, "iscrowd": int(crowd)})
        for b, c, s in det:
            res.append({"image_id": iid, "category_id": 10 * (c + 1),
                        "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]], "score": s})
    gt_file, res_file = tmp / "instances_val.json", tmp / "results.json"
    gt_file.write_text(json.dumps({"images": images, "annotations": anns, "categories": [
        {"id": 10 * (k + 1), "name": n} for k, n in enumerate(names)]}))
    res_file.write_text(json.dumps(res))
    return gt_file, res_file, cases, names


def test_get_map_subprocess_writes_confusion_matrix(tmp_path):
    gt_file, res_file, cases, names = write_coco_fixture(tmp_path)
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, str(ROOT / "get_map.py"), "--detections", str(res_file), "--ground-truth",
                        str(gt_file), "--out", str(out), "--device", "cpu", "--metric", "voc",
                        "--cm-conf", "0.3", "--cm-iou", "0.5"], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=240)
    assert r.returncode == 0, r.stderr
    assert "confusion matrix (score >= 0.3, IoU > 0.5)" in r.stdout
    assert (out / "confusion_matrix.png").stat().st_size > 0
    data = json.loads((out / "confusion_matrix.json").read_text())
    assert data["names"] == names + ["background"]
    assert (data["rows"], data["columns"], data["conf"], data["iou"]) == ("predicted", "true", 0.3, 0.5)
    m = np.array(data["matrix"], np.int64)
    nc = len(names)
    n_gt = sum(not g[2] for gt, _ in cases for g in gt)
    assert n_gt < sum(len(gt) for gt, _ in cases)  # the fixture has crowd boxes, left out
    n_det = sum(d[2] >= 0.3 for _, det in cases for d in det)
    n_matched = int(m[:nc, :nc].sum())
    assert n_matched > 0
    assert m.sum() == n_gt + (n_det - n_matched)  # every GT once, plus every unmatched detection
    np.testing.assert_array_equal(m, reference_matrix(cases, nc, 0.3, 0.5))


def import_get_map():
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import get_map

    return get_map


def test_get_map_no_plots_still_writes_json_and_bad_flag(tmp_path, capsys):
    get_map = import_get_map()

    gt_file, res_file, _, _ = write_coco_fixture(tmp_path, seed=4)
    out = tmp_path / "o"
    assert get_map.main(["--detections", str(res_file), "--ground-truth", str(gt_file), "--out", str(out),
                         "--metric", "voc", "--no-plots"]) == 0
    assert (out / "confusion_matrix.json").is_file() and not (out / "confusion_matrix.png").exists()
    with pytest.raises(SystemExit):
        get_map.parse_args(["--cm-iou", "1.5"])
    assert "--cm-iou" in capsys.readouterr().err


def test_get_map_after_inference_writes_confusion_matrix(tiny_voc, tmp_path):
    """Model mode (a random model on the tiny VOC set): the matrix counts every val GT box once."""
    from nets.weights.checkpoint import save_model_checkpoint
    from nets.yolo import YoloBody
    from utils.data.load import load_records
    from utils.data.spec import load_data_spec

    torch.manual_seed(0)
    model = YoloBody(2, 0)
    model.class_names, model.img_size = ["square", "disc"], 64
    save_model_checkpoint(model, tmp_path / "m.pt")
    out = tmp_path / "o"
    assert import_get_map().main(["--weights", str(tmp_path / "m.pt"), "--data", str(tiny_voc), "--split", "val",
                         "--device", "cpu", "--out", str(out), "--metric", "voc",
                         "--cm-conf", "0.0", "--no-plots"]) == 0
    data = json.loads((out / "confusion_matrix.json").read_text())
    m = np.array(data["matrix"])
    records, _ = load_records(load_data_spec(str(tiny_voc)), "val")
    assert m[:, :2].sum() == sum(len(r.boxes) for r in records)
    dets = json.loads((out / "detections.json").read_text())
    assert m[:2].sum() == len(dets)  # --cm-conf 0: every detection is in the matrix


def test_plot_many_classes_without_annotations(tmp_path):
    from utils.eval.confusion import plot_confusion_matrix

    rng = np.random.default_rng(0)
    nc = 31
    cm = ConfusionMatrix(rng.integers(0, 5, (nc + 1, nc + 1)).astype(np.int64), [f"c{k}" for k in range(nc)],
                         0.25, 0.45)
    assert plot_confusion_matrix(cm, tmp_path / "cm.png").stat().st_size > 0
