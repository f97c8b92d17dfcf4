"""Decode, NMS and un-letterbox against hand-computed cases and independent references
(torchvision.ops.nms run per image and per class, and a plain-Python greedy NMS)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torchvision

from nets.decode import decode_boxes, decode_outputs, head_view, non_max_suppression, objectness_maps, unletterbox
from utils.data.letterbox import letterbox

ANCHORS = torch.tensor([[10, 14], [23, 27], [37, 58], [81, 82], [135, 169], [344, 319]], dtype=torch.float32)
MASKS = [[3, 4, 5], [1, 2, 3]]
STRIDES = [32, 16]
NEG = -30.0  # logit whose sigmoid is ~1e-13: "nothing here"


def logit(p: float) -> float:
    return math.log(p / (1 - p))


def blank_outputs(batch: int, num_classes: int, size: int) -> list[torch.Tensor]:
    """Raw heads with every objectness and class logit at NEG and box logits at 0."""
    outs = []
    for stride in STRIDES:
        o = torch.zeros(batch, 3, 5 + num_classes, size // stride, size // stride)
        o[:, :, 4:] = NEG
        outs.append(o.view(batch, 3 * (5 + num_classes), size // stride, size // stride))
    return outs


def set_cell(outs, head, b, a, gy, gx, values):
    """Write raw values (tx, ty, tw, th, obj, cls...) for anchor slot `a` of cell (gx, gy), Darknet layout."""
    c = outs[head].shape[1] // 3
    for k, v in enumerate(values):
        outs[head][b, a * c + k, gy, gx] = v


# ---------------------------------------------------------------- decode: hand-computed
def test_decode_hand_computed_box_and_score():
    C = 2
    outs = blank_outputs(1, C, 64)  # s32 head 2x2, s16 head 4x4
    # s32 head, slot 1 = anchor #4 (135 x 169), cell gx=0, gy=1:
    # tx=0 -> 0.5, ty=logit(.75) -> .75, tw=ln 2 -> w=270, th=0 -> h=169, obj=.5, cls=(.8, ~0)
    set_cell(outs, 0, 0, 1, 1, 0, [0.0, logit(0.75), math.log(2), 0.0, 0.0, logit(0.8), NEG])
    pred = decode_outputs(outs, ANCHORS, MASKS, STRIDES)
    assert pred.shape == (1, 3 * 4 + 3 * 16, 5 + C)
    # cx = (0.5 + 0) * 32 = 16, cy = (0.75 + 1) * 32 = 56
    expected = torch.tensor([16 - 135, 56 - 84.5, 16 + 135, 56 + 84.5])
    row = 1 * 4 + 1 * 2 + 0  # head 0: anchor-major, then row, then column
    torch.testing.assert_close(pred[0, row, :4], expected)
    torch.testing.assert_close(pred[0, row, 4], torch.tensor(0.5))
    torch.testing.assert_close(pred[0, row, 5], torch.tensor(0.8))

    dets = non_max_suppression(pred, conf_thres=0.3, iou_thres=0.5)
    assert len(dets) == 1 and len(dets[0]["boxes"]) == 1
    torch.testing.assert_close(dets[0]["boxes"][0], expected)
    torch.testing.assert_close(dets[0]["scores"][0], torch.tensor(0.4))  # 0.5 * 0.8
    assert dets[0]["labels"].tolist() == [0]
    assert non_max_suppression(pred, conf_thres=0.41)[0]["boxes"].shape == (0, 4)


def test_decode_second_head_uses_its_mask_and_stride():
    C = 3
    outs = blank_outputs(2, C, 64)
    # image 1, s16 head, slot 0 = anchor #1 (23 x 27), cell gx=3, gy=2, tw=th=0, class 2
    set_cell(outs, 1, 1, 0, 2, 3, [logit(0.25), 0.0, 0.0, 0.0, logit(0.9), NEG, NEG, logit(0.5)])
    pred = decode_outputs(outs, ANCHORS, MASKS, STRIDES)
    dets = non_max_suppression(pred, conf_thres=0.1)
    assert [len(d["boxes"]) for d in dets] == [0, 1]
    cx, cy = (0.25 + 3) * 16, (0.5 + 2) * 16  # 52, 40
    torch.testing.assert_close(dets[1]["boxes"][0], torch.tensor([cx - 11.5, cy - 13.5, cx + 11.5, cy + 13.5]))
    torch.testing.assert_close(dets[1]["scores"][0], torch.tensor(0.45))
    assert dets[1]["labels"].tolist() == [2]


def test_decode_boxes_matches_formula_on_random_input():
    torch.manual_seed(0)
    p = torch.randn(2, 3, 4, 5, 7)
    anchors = torch.tensor([[10.0, 20.0], [30.0, 40.0], [50.0, 60.0]])
    got = decode_boxes(p, anchors, 8)
    for b, a, gy, gx in [(0, 0, 0, 0), (1, 2, 3, 4), (0, 1, 2, 1)]:
        t = p[b, a, gy, gx]
        want = torch.stack([(torch.sigmoid(t[0]) + gx) * 8, (torch.sigmoid(t[1]) + gy) * 8,
                            anchors[a, 0] * torch.exp(t[2]), anchors[a, 1] * torch.exp(t[3])])
        torch.testing.assert_close(got[b, a, gy, gx], want)


def test_scale_x_y_hand_computed():
    """Darknet's yolo layer: x = s * sigmoid(tx) - (s - 1) / 2, so a saturated tx reaches past the cell edge."""
    C = 1
    outs = blank_outputs(1, C, 64)
    # s32 head, slot 0 = anchor #3 (81 x 82), cell gx=1, gy=0: tx saturated high, ty saturated low, tw=th=0
    set_cell(outs, 0, 0, 0, 0, 1, [30.0, -30.0, 0.0, 0.0, 0.0, 0.0])
    row = 0 * 4 + 0 * 2 + 1
    plain = decode_outputs(outs, ANCHORS, MASKS, STRIDES)[0, row, :4]
    scaled = decode_outputs(outs, ANCHORS, MASKS, STRIDES, scale_x_y=1.05)[0, row, :4]
    # s = 1:    cx = (1 + 1) * 32 = 64,              cy = (0 + 0) * 32 = 0
    # s = 1.05: cx = (1.05 - 0.025 + 1) * 32 = 64.8, cy = (0 - 0.025 + 0) * 32 = -0.8
    torch.testing.assert_close(plain, torch.tensor([64 - 40.5, 0 - 41, 64 + 40.5, 0 + 41]))
    torch.testing.assert_close(scaled, torch.tensor([64.8 - 40.5, -0.8 - 41, 64.8 + 40.5, -0.8 + 41]))
    # tx = 0 is the cell centre whatever s is
    p = torch.zeros(1, 1, 2, 2, 4)
    torch.testing.assert_close(decode_boxes(p, ANCHORS[:1], 8, scale_x_y=1.2), decode_boxes(p, ANCHORS[:1], 8))


def test_head_view_layout_is_anchor_major():
    C = 2
    out = torch.arange(3 * (5 + C) * 2 * 2, dtype=torch.float32).view(1, 3 * (5 + C), 2, 2)
    v = head_view(out)
    assert v.shape == (1, 3, 2, 2, 5 + C)
    assert v[0, 2, 1, 0, 4].item() == out[0, 2 * (5 + C) + 4, 1, 0].item()


def test_objectness_maps_take_max_over_anchors():
    outs = blank_outputs(1, 1, 64)
    set_cell(outs, 1, 0, 2, 3, 1, [0, 0, 0, 0, logit(0.7), 0])
    set_cell(outs, 1, 0, 0, 3, 1, [0, 0, 0, 0, logit(0.2), 0])
    maps = objectness_maps(outs)
    assert [tuple(m.shape) for m in maps] == [(1, 2, 2), (1, 4, 4)]
    assert maps[1][0, 3, 1].item() == pytest.approx(0.7)
    assert maps[0].max().item() < 1e-6


def test_fp16_outputs_decode_in_float32_without_overflow():
    outs = [o.half() for o in blank_outputs(1, 1, 64)]
    set_cell(outs, 0, 0, 0, 0, 0, [0, 0, 50.0, 50.0, 5.0, 5.0])  # exp(50) overflows fp16 and fp32
    pred = decode_outputs(outs, ANCHORS, MASKS, STRIDES)
    assert pred.dtype == torch.float32 and torch.isfinite(pred).all()


# ---------------------------------------------------------------- NMS against references
def reference_nms(pred, conf, iou, max_det, classes=None, agnostic=False):
    """Per image, per class: torchvision.ops.nms; then best max_det. Independent of batched_nms."""
    out = []
    for p in pred:
        score, label = (p[:, 4:5] * p[:, 5:]).max(1)
        keep = score >= conf
        if classes is not None:
            keep &= torch.isin(label, torch.tensor(classes))
        boxes, score, label = p[keep, :4], score[keep], label[keep]
        kept = []
        for c in ([None] if agnostic else label.unique().tolist()):
            idx = torch.arange(len(score)) if c is None else torch.nonzero(label == c).flatten()
            kept.append(idx[torchvision.ops.nms(boxes[idx], score[idx], iou)])
        kept = torch.cat(kept) if kept else torch.zeros(0, dtype=torch.long)
        kept = kept[torch.argsort(score[kept], descending=True)][:max_det]
        out.append((boxes[kept], score[kept], label[kept]))
    return out


def python_greedy_nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> list[int]:
    """Textbook greedy NMS in plain Python (no torchvision) for a second, independent reference."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    keep = []
    for i in order:
        ok = True
        for j in keep:
            xx1, yy1 = max(boxes[i][0], boxes[j][0]), max(boxes[i][1], boxes[j][1])
            xx2, yy2 = min(boxes[i][2], boxes[j][2]), min(boxes[i][3], boxes[j][3])
            inter = max(0.0, xx2 - xx1) * max(0.0, yy2 - yy1)
            area = lambda b: (b[2] - b[0]) * (b[3] - b[1])  # noqa: E731
            if inter / (area(boxes[i]) + area(boxes[j]) - inter) > iou:
                ok = False
                break
        if ok:
            keep.append(i)
    return keep


def random_pred(batch=3, n=400, num_classes=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(batch, n, 2, generator=g) * 200
    wh = torch.rand(batch, n, 2, generator=g) * 60 + 4
    obj = torch.rand(batch, n, 1, generator=g)
    cls = torch.rand(batch, n, num_classes, generator=g)
    return torch.cat([xy, xy + wh, obj, cls], -1)


def as_set(boxes, scores, labels):
    return sorted((round(s, 5), int(l), tuple(round(v, 3) for v in b))
                  for b, s, l in zip(boxes.tolist(), scores.tolist(), labels.tolist()))


@pytest.mark.parametrize("agnostic", [False, True])
@pytest.mark.parametrize("classes", [None, [1, 3]])
def test_nms_matches_torchvision_per_image_per_class(agnostic, classes):
    pred = random_pred(seed=1 + agnostic)
    got = non_max_suppression(pred, conf_thres=0.2, iou_thres=0.45, max_det=1000, classes=classes, agnostic=agnostic)
    ref = reference_nms(pred, 0.2, 0.45, 1000, classes, agnostic)
    assert len(got) == len(ref) == 3
    for g, (rb, rs, rl) in zip(got, ref):
        assert len(g["boxes"]) > 10
        assert as_set(g["boxes"], g["scores"], g["labels"]) == as_set(rb, rs, rl)
        assert torch.all(g["scores"][:-1] >= g["scores"][1:])  # best first
        if classes:
            assert set(g["labels"].tolist()) <= set(classes)


def test_nms_matches_plain_python_greedy_nms():
    pred = random_pred(batch=1, n=150, num_classes=1, seed=7)
    got = non_max_suppression(pred, conf_thres=0.0, iou_thres=0.3, max_det=10_000)[0]
    score = (pred[0, :, 4] * pred[0, :, 5]).numpy()
    keep = python_greedy_nms(pred[0, :, :4].numpy(), score, 0.3)
    np.testing.assert_allclose(np.sort(got["scores"].numpy()), np.sort(score[keep]), rtol=1e-6)


def test_images_never_suppress_each_other_and_max_det_is_per_image():
    pred = random_pred(batch=2, n=300, num_classes=2, seed=3)
    pred[1] = pred[0]  # identical images: identical results, as if run one at a time
    dets = non_max_suppression(pred, conf_thres=0.05, iou_thres=0.5, max_det=7)
    single = non_max_suppression(pred[:1], conf_thres=0.05, iou_thres=0.5, max_det=7)[0]
    assert [len(d["boxes"]) for d in dets] == [7, 7]
    for d in dets:
        torch.testing.assert_close(d["boxes"], single["boxes"])
        torch.testing.assert_close(d["scores"], single["scores"])
    full = non_max_suppression(pred[:1], conf_thres=0.05, iou_thres=0.5, max_det=10_000)[0]
    torch.testing.assert_close(single["scores"], full["scores"][:7])  # the 7 best survive


def test_multi_label_keeps_every_class_over_threshold():
    pred = torch.tensor([[[0, 0, 10, 10, 0.9, 0.8, 0.6, 0.1]]])
    single = non_max_suppression(pred, conf_thres=0.3)[0]
    multi = non_max_suppression(pred, conf_thres=0.3, multi_label=True)[0]
    assert single["labels"].tolist() == [0]
    assert multi["labels"].tolist() == [0, 1]
    torch.testing.assert_close(multi["scores"], torch.tensor([0.72, 0.54]))


def test_empty_and_bad_inputs():
    dets = non_max_suppression(torch.zeros(2, 10, 7), conf_thres=0.1)
    assert [d["boxes"].shape for d in dets] == [(0, 4), (0, 4)]
    assert dets[0]["labels"].dtype == torch.int64
    with pytest.raises(ValueError, match="out of range"):
        non_max_suppression(random_pred(num_classes=2), classes=[5])
    with pytest.raises(ValueError, match="expected"):
        non_max_suppression(torch.zeros(10, 7))


def test_max_nms_caps_candidates_per_image():
    pred = random_pred(batch=2, n=500, num_classes=1, seed=4)
    capped = non_max_suppression(pred, conf_thres=0.0, iou_thres=0.99, max_nms=50, max_det=1000)
    assert all(len(d["boxes"]) <= 50 for d in capped)
    full = non_max_suppression(pred, conf_thres=0.0, iou_thres=0.99, max_det=1000)
    torch.testing.assert_close(capped[0]["scores"][:10], full[0]["scores"][:10])


# ---------------------------------------------------------------- un-letterbox
def test_unletterbox_hand_computed_and_clipped():
    # a 200x100 (w x h) image letterboxed to 64: scale 0.32, resized 64x32, pad_y = 16
    boxes = torch.tensor([[0.0, 16.0, 32.0, 32.0], [-10.0, 0.0, 70.0, 60.0]])
    out = unletterbox(boxes, 0.32, (0, 16), (100, 200))
    torch.testing.assert_close(out[0], torch.tensor([0.0, 0.0, 100.0, 50.0]))
    torch.testing.assert_close(out[1], torch.tensor([0.0, 0.0, 200.0, 100.0]))  # clipped


@pytest.mark.parametrize("wh", [(333, 250), (250, 333)])
def test_unletterbox_finds_a_letterboxed_rectangle(wh):
    """A white rectangle reaching the far corner of a w x h image, letterboxed by the real function: its edges,
    read from the letterboxed pixels, map back to the drawn ones. 250 * 128/333 = 96.1 is resized to 96, so
    dividing by the nominal scale put the far edge at 249.75, not 250."""
    w, h = wh
    x0, y0 = 100, 60
    img = np.zeros((h, w, 3), np.uint8)
    img[y0:, x0:] = 255
    out, scale, (px, py) = letterbox(img, 128, color=0)  # black padding: only the rectangle is lit
    white = out[..., 0].astype(np.float64) / 255
    rows, cols = np.nonzero(white > 0.5)
    x1, y1 = cols.max() + 1.0, rows.max() + 1.0  # the image's own edge: sharp, no interpolation
    # near edges: INTER_AREA keeps the covered area, so a line's sum of coverage is the rectangle's extent
    nx0 = x1 - white[int(rows.mean())].sum()
    ny0 = y1 - white[:, int(cols.mean())].sum()
    back = unletterbox(torch.tensor([[nx0, ny0, x1, y1]]), scale, (px, py), (h, w))[0].double()
    torch.testing.assert_close(back[2:], torch.tensor([w, h], dtype=torch.float64), atol=1e-3, rtol=0)
    torch.testing.assert_close(back[:2], torch.tensor([x0, y0], dtype=torch.float64), atol=0.05, rtol=0)


def test_decode_on_model_output_is_consistent_per_image():
    """Batch-of-2 decode+NMS equals decoding each image alone (no cross-image leakage)."""
    from nets.yolo import YoloBody

    torch.manual_seed(0)
    m = YoloBody(3, 0).eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        both = non_max_suppression(decode_outputs(m(x), m.anchors, m.masks, m.strides), 0.01, 0.5, 20)
        one = non_max_suppression(decode_outputs(m(x[1:]), m.anchors, m.masks, m.strides), 0.01, 0.5, 20)
    torch.testing.assert_close(both[1]["boxes"], one[0]["boxes"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(both[1]["scores"], one[0]["scores"], atol=1e-5, rtol=1e-5)
