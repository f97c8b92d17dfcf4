"""utils/eval/metrics.py against independent references: pycocotools' COCOeval on the same files, and
VOC cases worked out by hand from the devkit's rules (voc_eval.py as ported in py-faster-rcnn)."""
from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
import torch

from utils.eval.metrics import COCO_STAT_NAMES, coco_evaluate_tables, tables_from_lists, voc_evaluate_tables

pycocotools = pytest.importorskip("pycocotools")
from pycocotools.coco import COCO  # noqa: E402
from pycocotools.cocoeval import COCOeval  # noqa: E402


# ----------------------------------------------------------------------------- helpers
def coco_metrics(preds, gts, num_classes, **kw):
    """The library's path: per-image dicts -> tables -> COCO evaluation."""
    return coco_evaluate_tables(*tables_from_lists(preds, gts), len(preds), num_classes, **kw)


def voc_metrics(preds, gts, num_classes, **kw):
    return voc_evaluate_tables(*tables_from_lists(preds, gts), len(preds), num_classes, **kw)


def det(boxes, scores, labels):
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "scores": torch.tensor(scores, dtype=torch.float32).reshape(-1),
            "labels": torch.tensor(labels, dtype=torch.int64).reshape(-1)}


def gt(boxes, labels, difficult=None, iscrowd=None):
    out = {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
           "labels": torch.tensor(labels, dtype=torch.int64).reshape(-1)}
    if difficult is not None:
        out["difficult"] = torch.tensor(difficult, dtype=torch.bool)
    if iscrowd is not None:
        out["iscrowd"] = torch.tensor(iscrowd, dtype=torch.bool)
    return out


def random_case(seed: int, n_img: int = 16, K: int = 4, max_gt: int = 12, max_det: int = 40, small: bool = False,
                crowd_p: float = 0.1, integer: bool = False, dup_p: float = 0.0, empty_cls: int | None = None):
    """Detector-like random data: jittered copies of the ground truth plus clutter, seeded.
    Class K-1 never has ground truth; `empty_cls` has ground truth but no detection."""
    rng = np.random.default_rng(seed)
    preds, gts = [], []
    scale = 14 if small else 110
    for _ in range(n_img):
        ng = int(rng.integers(0, max_gt + 1)) if rng.random() > 0.2 else 0  # some images have no GT
        xy = rng.uniform(0, 180, (ng, 2))
        b = np.concatenate([xy, xy + rng.uniform(2, scale, (ng, 2))], 1)
        if integer:
            b = np.round(b)
            b[:, 2:] = np.maximum(b[:, 2:], b[:, :2] + 1)
        if ng > 1 and dup_p:
            dup = rng.random(ng) < dup_p
            b[dup] = b[rng.integers(0, ng, int(dup.sum()))]  # identical boxes: IoU ties
        gl = rng.integers(0, K - 1, ng)
        crowd = rng.random(ng) < crowd_p
        big = crowd & (rng.random(ng) < 0.5)
        b[big] = [0, 0, 200, 200]  # large crowd regions
        nd = int(rng.integers(0, max_det + 1))
        src = rng.integers(0, max(ng, 1), nd)
        if ng:
            d = b[src] + rng.normal(0, 1.5 if small else 5, (nd, 4))
            dl = np.where(rng.random(nd) < 0.85, gl[src], rng.integers(0, K, nd))
        else:
            d = np.zeros((nd, 4))
            dl = rng.integers(0, K, nd)
        clutter = (rng.random(nd) < 0.3) | (ng == 0)
        cxy = rng.uniform(0, 180, (nd, 2))
        d[clutter] = np.concatenate([cxy, cxy + rng.uniform(2, scale, (nd, 2))], 1)[clutter]
        if integer:
            d = np.round(d)
        d[:, 2:] = np.maximum(d[:, 2:], d[:, :2] + 0.5)
        sc = np.round(rng.random(nd) * 10) / 10 if integer else rng.random(nd)  # integer cases: tied scores
        if empty_cls is not None:
            keep = dl != empty_cls
            d, sc, dl = d[keep], sc[keep], dl[keep]
        preds.append(det(d, sc, dl))
        gts.append(gt(b, gl, iscrowd=crowd))
    return preds, gts


def official(preds, gts, K, image_ids, tmp_path, iou_thrs=None, with_area=True):
    """Write the case as a COCO instances json + results json and run COCOeval (bbox) on the files."""
    images = [{"id": int(i), "width": 200, "height": 200, "file_name": f"{i}.jpg"} for i in image_ids]
    anns, res = [], []
    for i, g in zip(image_ids, gts):
        for b, lab, c, a in zip(g["boxes"].double().tolist(), g["labels"].tolist(), g["iscrowd"].tolist(),
                                g.get("area", torch.full((len(g["labels"]),), -1.0)).double().tolist()):
            w, h = b[2] - b[0], b[3] - b[1]
            anns.append({"id": len(anns) + 1, "image_id": int(i), "category_id": lab + 1, "bbox": [b[0], b[1], w, h],
                         "area": a if ("area" in g and with_area) else w * h, "iscrowd": int(c)})
    for i, p in zip(image_ids, preds):
        for b, s, lab in zip(p["boxes"].double().tolist(), p["scores"].double().tolist(), p["labels"].tolist()):
            res.append({"image_id": int(i), "category_id": lab + 1, "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]],
                        "score": s})
    gt_file, res_file = tmp_path / "instances.json", tmp_path / "results.json"
    gt_file.write_text(json.dumps({"images": images, "annotations": anns,
                                   "categories": [{"id": k + 1, "name": f"c{k}"} for k in range(K)]}))
    res_file.write_text(json.dumps(res))
    with contextlib.redirect_stdout(io.StringIO()):
        cg = COCO(str(gt_file))
        cd = cg.loadRes(str(res_file))
        ev = COCOeval(cg, cd, "bbox")
        if iou_thrs is not None:
            ev.params.iouThrs = np.asarray(iou_thrs)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def per_class_official(ev) -> list[float]:
    p = ev.eval["precision"]
    out = []
    for k in range(p.shape[2]):
        s = p[:, :, k, 0, -1]
        out.append(float(s[s > -1].mean()) if (s > -1).any() else -1.0)
    return out


def assert_coco_parity(m, ev):
    ours = m.stats_array()
    np.testing.assert_allclose(ours, ev.stats, atol=1e-4, rtol=0,
                               err_msg=f"ours {dict(zip(COCO_STAT_NAMES, ours))}\npycocotools {ev.stats}")
    np.testing.assert_allclose(m.per_class, per_class_official(ev), atol=1e-4, rtol=0)
    # stronger: the whole precision / recall arrays
    np.testing.assert_allclose(m.precision, ev.eval["precision"], atol=1e-9, rtol=0)
    np.testing.assert_allclose(m.recall, ev.eval["recall"], atol=1e-9, rtol=0)


# ----------------------------------------------------------------------------- COCO parity
CASES = {
    "plain": dict(seed=0),
    "many_small": dict(seed=1, small=True, max_gt=40, max_det=120),
    "crowd_and_ties": dict(seed=2, crowd_p=0.3, integer=True, dup_p=0.25),
    "over_100_dets": dict(seed=3, n_img=6, K=3, max_det=400),
    "class_without_dets": dict(seed=4, empty_cls=1),
    "small_integer": dict(seed=5, small=True, integer=True, dup_p=0.2, crowd_p=0.2, max_gt=30, max_det=200),
}


@pytest.mark.parametrize("name", list(CASES))
def test_coco_matches_pycocotools(name, tmp_path):
    kw = dict(CASES[name])
    K = kw.pop("K", 4)
    preds, gts = random_case(K=K, **kw)
    rng = np.random.default_rng(kw["seed"])
    ids = (rng.permutation(900)[:len(gts)] + 1).tolist()  # unsorted ids: ordering follows COCOeval's
    ev = official(preds, gts, K, ids, tmp_path)
    m = coco_metrics(preds, gts, K, image_ids=ids, device="cpu")
    assert_coco_parity(m, ev)
    assert m.per_class[K - 1] == -1.0  # no ground truth -> -1, as pycocotools
    if name == "class_without_dets":
        assert m.per_class[1] == 0.0


def test_coco_area_field_and_custom_iou_thresholds(tmp_path):
    preds, gts = random_case(7, n_img=10)
    rng = np.random.default_rng(7)
    for g in gts:  # a COCO "area" (segment area) smaller than the box, so area ranges differ from w*h
        b = g["boxes"].double()
        g["area"] = ((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) * torch.from_numpy(rng.uniform(0.3, 1.0, len(b))))
    thrs = [0.3, 0.5, 0.75, 0.9]
    ev = official(preds, gts, 4, list(range(1, 11)), tmp_path, iou_thrs=thrs)
    m = coco_metrics(preds, gts, 4, iou_thrs=thrs, device="cpu")
    assert_coco_parity(m, ev)


def test_coco_exact_iou_half_matches_and_crowd_absorbs_duplicates():
    # gt 10x10; det [0,0,5,10] has IoU exactly 0.5: COCO matches at >= 0.5
    m = coco_metrics([det([[0, 0, 5, 10]], [0.9], [0])], [gt([[0, 0, 10, 10]], [0])], 1, device="cpu")
    assert m.stats["AP50"] == pytest.approx(1.0, abs=1e-9)
    assert m.stats["AP75"] == pytest.approx(0.0, abs=1e-12)
    # a crowd region swallows any number of detections (IoU = intersection / detection area): no FP
    p = det([[0, 0, 10, 10], [50, 50, 60, 60], [52, 52, 62, 62]], [0.9, 0.8, 0.7], [0, 0, 0])
    g = gt([[0, 0, 10, 10], [40, 40, 100, 100]], [0, 0], iscrowd=[False, True])
    m = coco_metrics([p], [g], 1, device="cpu")
    assert m.stats["AP50"] == pytest.approx(1.0, abs=1e-9)


def test_coco_no_detections_and_no_ground_truth():
    g = [gt([[0, 0, 50, 50]], [0]), gt(np.zeros((0, 4)), [])]
    empty = [det(np.zeros((0, 4)), [], []), det(np.zeros((0, 4)), [], [])]
    m = coco_metrics(empty, g, 2, device="cpu")
    assert m.stats["AP"] == 0.0 and m.stats["AR100"] == 0.0 and m.per_class == [0.0, -1.0]
    assert m.stats["APs"] == -1.0 and m.stats["APm"] == 0.0  # no small GT at all -> -1
    m = coco_metrics([det([[0, 0, 5, 5]], [0.5], [0])], [gt(np.zeros((0, 4)), [])], 1, device="cpu")
    assert all(v == -1.0 for v in m.stats.values())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_coco_gpu_equals_cpu():
    preds, gts = random_case(11, n_img=30, crowd_p=0.2, integer=True, dup_p=0.2, max_det=150)
    a = coco_metrics(preds, gts, 4, device="cpu")
    b = coco_metrics(preds, gts, 4, device="cuda")
    np.testing.assert_allclose(a.precision, b.precision, atol=1e-12)
    np.testing.assert_allclose(a.recall, b.recall, atol=1e-12)


# ----------------------------------------------------------------------------- VOC, by hand
def _tp_fp_case():
    """4 objects, one per image; detections in score order: TP, FP, TP, FP, TP.
    precision 1, 1/2, 2/3, 2/4, 3/5 at recall .25, .25, .5, .5, .75."""
    obj, miss = [0, 0, 10, 10], [50, 50, 60, 60]
    gts = [gt([obj], [0]) for _ in range(4)]
    preds = [det([obj, miss], [0.9, 0.8], [0, 0]), det([obj, miss], [0.7, 0.6], [0, 0]),
             det([obj], [0.5], [0]), det(np.zeros((0, 4)), [], [])]
    return preds, gts


def test_voc_all_point_and_11_point_on_a_known_pr_curve():
    preds, gts = _tp_fp_case()
    m = voc_metrics(preds, gts, 1)
    # all-point: envelope 1, 2/3, 2/3, .6, .6 -> .25 * 1 + .25 * 2/3 + .25 * .6
    assert m.ap[0] == pytest.approx(0.25 + 0.25 * 2 / 3 + 0.25 * 0.6, abs=1e-12)
    # 11-point: recall >= 0, .1, .2 -> 1; .3, .4, .5 -> 2/3; .6, .7 -> .6; .8, .9, 1 -> 0
    assert m.ap07[0] == pytest.approx((3 * 1 + 3 * 2 / 3 + 2 * 0.6) / 11, abs=1e-12)
    assert m.mAP == m.ap[0] and m.mAP07 == m.ap07[0]
    # P / R / F1 at score >= 0.5: all five detections, 3 TP of 4 objects
    assert m.precision[0] == pytest.approx(0.6) and m.recall[0] == pytest.approx(0.75)
    assert m.f1[0] == pytest.approx(2 * 0.6 * 0.75 / 1.35)
    m = voc_metrics(preds, gts, 1, score_thr=0.65)  # top three: 2 TP, 1 FP
    assert m.precision[0] == pytest.approx(2 / 3) and m.recall[0] == pytest.approx(0.5)


def test_voc_recall_exactly_point_three_misses_the_11_point_threshold():
    # voc_eval.py's thresholds are np.arange(0, 1.1, 0.1): 0.30000000000000004 > 3/10.
    g = [gt([[0, 0, 10, 10]], [0]) for _ in range(10)]
    p = [det([[0, 0, 10, 10]], [0.9 - 0.01 * i], [0]) if i < 3 else det(np.zeros((0, 4)), [], []) for i in range(10)]
    m = voc_metrics(p, g, 1)
    assert m.ap07[0] == pytest.approx(3 / 11, abs=1e-12)  # t = 0, .1, .2 only
    assert m.ap[0] == pytest.approx(0.3, abs=1e-12)


def test_voc_difficult_is_neither_tp_nor_fp():
    # object A (normal), B (difficult). det1 on B (ignored), det2 on A (TP), det3 on A again (FP).
    g = [gt([[0, 0, 20, 20], [100, 100, 120, 120]], [0, 0], difficult=[False, True])]
    p = [det([[100, 100, 120, 120], [0, 0, 20, 20], [1, 1, 20, 20]], [0.9, 0.8, 0.7], [0, 0, 0])]
    m = voc_metrics(p, g, 1)
    assert m.npos == [1]
    assert m.ap[0] == pytest.approx(1.0)  # the recall step happens at precision 1/1
    assert m.precision[0] == pytest.approx(0.5)  # 1 TP, 1 FP; the difficult hit does not count
    # the same data with B not difficult: det1 becomes a TP, AP stays 1 but recall 2/2 and npos 2
    g2 = [gt([[0, 0, 20, 20], [100, 100, 120, 120]], [0, 0])]
    m2 = voc_metrics(p, g2, 1)
    assert m2.npos == [2] and m2.recall[0] == pytest.approx(1.0) and m2.precision[0] == pytest.approx(2 / 3)


def test_voc_plus_one_pixel_convention_and_strict_threshold():
    # VOC XML xmin=1..xmax=10 (10 pixels) is our [0, 10]. A devkit detection 1..5 (5 px) is our
    # [0, 5]: devkit overlap = 5*10 / (5*10 + 10*10 - 50) = 0.5, not > 0.5 -> false positive.
    g = [gt([[0, 0, 10, 10]], [0])]
    assert voc_metrics([det([[0, 0, 5, 10]], [0.9], [0])], g, 1).ap[0] == 0.0
    # 1..6 (6 px): 60 / 100 = 0.6 -> true positive
    assert voc_metrics([det([[0, 0, 6, 10]], [0.9], [0])], g, 1).ap[0] == pytest.approx(1.0)
    # a 1-pixel object (devkit xmin = xmax = 5) is our [4, 5]; a detection on exactly it matches
    g1 = [gt([[4, 4, 5, 5]], [0])]
    assert voc_metrics([det([[4, 4, 5, 5]], [0.9], [0])], g1, 1).ap[0] == pytest.approx(1.0)


def test_voc_takes_the_best_overlap_even_when_taken_unlike_coco():
    # A and B overlap; both detections overlap A best. VOC: the second one is a duplicate of A (FP);
    # COCO's greedy matching gives it B (IoU 70/130 = .54 >= .5) instead.
    a, b = [0, 0, 10, 10], [4, 0, 14, 10]
    g = [gt([a, b], [0, 0])]
    p = [det([[0, 0, 10, 10], [1, 0, 11, 10]], [0.9, 0.8], [0, 0])]  # det2: IoU(A) = 9/11, IoU(B) = 7/13
    m = voc_metrics(p, g, 1)
    assert m.recall[0] == pytest.approx(0.5) and m.precision[0] == pytest.approx(0.5)
    c = coco_metrics(p, g, 1, device="cpu")
    assert c.recall[0, 0, 0, 2] == pytest.approx(1.0)  # IoU .5: both matched


def _voc_loop_reference(preds, gts, K, thr=0.5):
    """The devkit's rules written as plain loops (per class, detections in score order)."""
    aps, aps07 = [], []
    for k in range(K):
        recs = {}
        npos = 0
        for i, g in enumerate(gts):
            sel = g["labels"].numpy() == k
            bb = g["boxes"].double().numpy()[sel] + np.array([1, 1, 0, 0])  # back to 1-based inclusive
            dif = g.get("difficult", torch.zeros(len(sel), dtype=torch.bool)).numpy()[sel]
            recs[i] = {"bb": bb, "dif": dif, "det": [False] * len(bb)}
            npos += int((~dif).sum())
        dets = [(float(s), i, b + np.array([1, 1, 0, 0])) for i, p in enumerate(preds)
                for b, s, lab in zip(p["boxes"].double().numpy(), p["scores"].double().numpy(), p["labels"].numpy())
                if lab == k]
        dets.sort(key=lambda t: -t[0])  # stable
        tp, fp = [], []
        for _, i, b in dets:
            r = recs[i]
            ovmax, jmax = -np.inf, -1
            for j, g in enumerate(r["bb"]):
                iw = max(min(b[2], g[2]) - max(b[0], g[0]) + 1, 0)
                ih = max(min(b[3], g[3]) - max(b[1], g[1]) + 1, 0)
                inter = iw * ih
                uni = (b[2] - b[0] + 1) * (b[3] - b[1] + 1) + (g[2] - g[0] + 1) * (g[3] - g[1] + 1) - inter
                if inter / uni > ovmax:
                    ovmax, jmax = inter / uni, j
            if ovmax > thr:
                if r["dif"][jmax]:
                    tp.append(0), fp.append(0)
                elif not r["det"][jmax]:
                    r["det"][jmax] = True
                    tp.append(1), fp.append(0)
                else:
                    tp.append(0), fp.append(1)
            else:
                tp.append(0), fp.append(1)
        if npos == 0:
            aps.append(-1.0), aps07.append(-1.0)
            continue
        tp, fp = np.cumsum(tp), np.cumsum(fp)
        rec = tp / npos
        prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
        ap07 = sum((prec[rec >= t].max() if (rec >= t).any() else 0.0) for t in np.arange(0.0, 1.1, 0.1)) / 11
        mrec = np.concatenate([[0.0], rec, [1.0]])
        mpre = np.concatenate([[0.0], prec, [0.0]])
        for i in range(len(mpre) - 2, -1, -1):
            mpre[i] = max(mpre[i], mpre[i + 1])
        idx = np.nonzero(mrec[1:] != mrec[:-1])[0]
        aps.append(float(np.sum((mrec[idx + 1] - mrec[idx]) * mpre[idx + 1])))
        aps07.append(float(ap07))
    return aps, aps07


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_voc_matches_loop_reference_on_random_cases(seed):
    preds, gts = random_case(seed, n_img=12, integer=seed == 2, max_det=50)
    rng = np.random.default_rng(seed)
    for g in gts:
        g["difficult"] = torch.from_numpy(rng.random(len(g["labels"])) < 0.2)
        g["iscrowd"] = torch.zeros(len(g["labels"]), dtype=torch.bool)
    aps, aps07 = _voc_loop_reference(preds, gts, 4)
    m = voc_metrics(preds, gts, 4)
    np.testing.assert_allclose(m.ap, aps, atol=1e-9)
    np.testing.assert_allclose(m.ap07, aps07, atol=1e-9)
    assert m.ap[3] == -1.0


def test_tables_reject_bad_labels():
    dets, gts = tables_from_lists([det([[0, 0, 5, 5]], [0.5], [3])], [gt([[0, 0, 5, 5]], [0])])
    with pytest.raises(ValueError, match="labels must be in 0..1"):
        voc_evaluate_tables(dets, gts, 1, 2)
    with pytest.raises(ValueError, match="one of each per image"):
        coco_metrics([], [gt([[0, 0, 5, 5]], [0])], 1)
