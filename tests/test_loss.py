"""YoloLoss: a hand-computed case, a plain-loop reference, invariances, ignore threshold, edge cases."""
import math

import pytest
import torch
from torchvision.ops import box_iou, complete_box_iou_loss

from nets.loss import YoloLoss, init_head_biases

ANCHORS = torch.tensor([[10, 14], [23, 27], [37, 58], [81, 82], [135, 169], [344, 319]], dtype=torch.float32)
MASKS = ((3, 4, 5), (1, 2, 3))
STRIDES = (32, 16)
GAINS = dict(box_gain=0.05, obj_gain=1.0, cls_gain=0.5, balance=(0.4, 1.0))


def zeros_outputs(batch, num_classes, h=64, w=64, requires_grad=False):
    return [torch.zeros(batch, 3 * (5 + num_classes), h // s, w // s, requires_grad=requires_grad) for s in STRIDES]


def bce(x, y):
    """Binary cross-entropy of a logit, written out."""
    p = 1 / (1 + math.exp(-x))
    return -(y * math.log(p) + (1 - y) * math.log(1 - p))


def ciou_by_hand(a, b):
    """CIoU of two xyxy boxes (Zheng et al. 2020), plain arithmetic."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    wa, ha, wb, hb = a[2] - a[0], a[3] - a[1], b[2] - b[0], b[3] - b[1]
    iou = inter / (wa * ha + wb * hb - inter)
    rho2 = ((a[0] + a[2]) / 2 - (b[0] + b[2]) / 2) ** 2 + ((a[1] + a[3]) / 2 - (b[1] + b[3]) / 2) ** 2
    c2 = (max(a[2], b[2]) - min(a[0], b[0])) ** 2 + (max(a[3], b[3]) - min(a[1], b[1])) ** 2
    v = 4 / math.pi**2 * (math.atan(wb / hb) - math.atan(wa / ha)) ** 2
    alpha = v / (1 - iou + v)
    return iou - rho2 / c2 - alpha * v


@pytest.mark.parametrize("obj_iou_ratio,scale_x_y", [(0.0, 1.0), (1.0, 1.0), (1.0, 1.1)])
def test_hand_computed_single_box(obj_iou_ratio, scale_x_y):
    # GT 40x32 centred at (36, 20) in a 64x64 input: best anchor is #2 (37x58, shape IoU 0.528),
    # which is slot 1 of the stride-16 head; the centre lies in cell (gx=2, gy=1) there.
    C = 2
    gt = [16.0, 4.0, 56.0, 36.0]
    targets = torch.tensor([[0, 1, *gt]])
    out = zeros_outputs(1, C)
    raw = [0.3, -0.2, 0.1, -0.4, 0.7, -0.5, 1.2]  # tx ty tw th obj cls0 cls1
    a, gx, gy, stride = 1, 2, 1, 16
    out[1][0, a * (5 + C): (a + 1) * (5 + C), gy, gx] = torch.tensor(raw)
    crit = YoloLoss(ANCHORS, C, MASKS, STRIDES, match_iou_thresh=1.0, neighbor_cells=False, ignore_thresh=2.0,
                    obj_iou_ratio=obj_iou_ratio, scale_x_y=scale_x_y, **GAINS)
    total, items = crit(out, targets)

    s = scale_x_y  # Darknet: offset = s * sigmoid(t) - (s - 1) / 2
    off = lambda v: s / (1 + math.exp(-v)) - (s - 1) / 2  # noqa: E731
    cx, cy = (off(raw[0]) + gx) * stride, (off(raw[1]) + gy) * stride
    w, h = 37 * math.exp(raw[2]), 58 * math.exp(raw[3])
    pred = [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]
    ciou = ciou_by_hand(pred, gt)
    tv = complete_box_iou_loss(torch.tensor([pred]), torch.tensor([gt]))
    assert 1 - ciou == pytest.approx(tv.item(), abs=1e-5)  # the hand formula agrees with torchvision

    box = 1 - ciou  # only the stride-16 level has a positive; stride 32 adds 0
    cls = (bce(raw[5], 0) + bce(raw[6], 1)) / 2
    t_obj = 1.0 if obj_iou_ratio == 0 else max(ciou, 0.0)
    obj16 = (47 * math.log(2) + bce(raw[4], t_obj)) / 48  # 3 anchors x 4 x 4 cells, logits 0 elsewhere
    obj32 = math.log(2)  # 3 x 2 x 2 cells, all negatives at logit 0
    obj_scale = 1.0 * 64 * 64 / 416**2
    expected = [0.05 * box, obj_scale * (0.4 * obj32 + 1.0 * obj16), 0.5 * cls]
    assert items.tolist() == pytest.approx(expected, rel=1e-5)
    assert total.item() == pytest.approx(sum(expected), rel=1e-5)


def positive_slots(crit, C, targets):
    """Which (level, anchor slot, gy, gx) get a box gradient: the assignment as the loss sees it."""
    out = zeros_outputs(1, C, requires_grad=True)
    total, _ = crit(out, targets)
    total.backward()
    slots = set()
    for level, o in enumerate(out):
        g = o.grad.view(1, 3, 5 + C, *o.shape[2:])[0, :, 0].abs()  # tx channel
        for a, y, x in (g > 0).nonzero().tolist():
            slots.add((level, a, y, x))
    return slots


def test_assignment_options():
    C = 2
    targets = torch.tensor([[0, 1, 16.0, 4.0, 56.0, 36.0]])  # 40x32 centred (36, 20)
    # shape IoU with anchors 1..5: 0.485, 0.528, 0.193, 0.056, 0.012; best = #2 (s16 slot 1)
    best_only = YoloLoss(ANCHORS, C, match_iou_thresh=1.0, neighbor_cells=False)
    assert positive_slots(best_only, C, targets) == {(1, 1, 1, 2)}
    multi = YoloLoss(ANCHORS, C, match_iou_thresh=0.3, neighbor_cells=False)  # + anchor #1 (s16 slot 0)
    assert positive_slots(multi, C, targets) == {(1, 0, 1, 2), (1, 1, 1, 2)}
    # + anchor #3, which is in both heads (s32 slot 0, s16 slot 2)
    low = YoloLoss(ANCHORS, C, match_iou_thresh=0.15, neighbor_cells=False)
    assert positive_slots(low, C, targets) == {(1, 0, 1, 2), (1, 1, 1, 2), (1, 2, 1, 2), (0, 0, 0, 1)}
    # centre (2.25, 1.25) in s16 cells: nearest neighbours (1, 1) and (2, 0); at s32 (1.125, 0.625): (0, 0), (1, 1)
    nb = YoloLoss(ANCHORS, C, match_iou_thresh=1.0, neighbor_cells=True)
    assert positive_slots(nb, C, targets) == {(1, 1, 1, 2), (1, 1, 1, 1), (1, 1, 0, 2)}
    nb_low = YoloLoss(ANCHORS, C, match_iou_thresh=0.15, neighbor_cells=True)
    assert {s for s in positive_slots(nb_low, C, targets) if s[0] == 0} == {(0, 0, 0, 1), (0, 0, 0, 0), (0, 0, 1, 1)}
    # YOLOv5 ratio rule (w and h within 4x): anchors #1 (23x27), #2, #3 (81x82), #4 (135x169: 3.4x, 5.3x -> no)
    ratio = YoloLoss(ANCHORS, C, match_ratio_thresh=4.0, neighbor_cells=False)
    assert positive_slots(ratio, C, targets) == {(1, 0, 1, 2), (1, 1, 1, 2), (1, 2, 1, 2), (0, 0, 0, 1)}


def reference_loss(outputs, targets, num_classes, ignore_thresh, obj_iou_ratio, match_iou_thresh,
                   label_smoothing=0.0, neighbor_cells=False):
    """Plain loops over levels, boxes, anchors and images: the rules of the docstring, read literally."""
    C = num_classes
    B = outputs[0].shape[0]
    in_h, in_w = outputs[0].shape[2] * STRIDES[0], outputs[0].shape[3] * STRIDES[0]
    used = sorted({k for m in MASKS for k in m})
    box_sum = obj_sum = cls_sum = 0.0
    for level, (out, stride) in enumerate(zip(outputs, STRIDES)):
        H, W = out.shape[2:]
        p = out.view(B, 3, 5 + C, H, W)
        tobj = torch.zeros(B, 3, H, W)
        pos = torch.zeros(B, 3, H, W, dtype=torch.bool)
        box_terms, cls_terms = [], []
        for row in targets.tolist():
            b, c, x1, y1, x2, y2 = row
            b, c, tw, th = int(b), int(c), x2 - x1, y2 - y1
            if tw <= 0 or th <= 0:
                continue
            ious = {}
            for k in used:
                aw, ah = ANCHORS[k].tolist()
                inter = min(tw, aw) * min(th, ah)
                ious[k] = inter / (tw * th + aw * ah - inter)
            best = max(used, key=lambda k: ious[k])
            fx, fy = (x1 + x2) / 2 / stride, (y1 + y2) / 2 / stride
            cells = [(min(int(fx), W - 1), min(int(fy), H - 1))]
            if neighbor_cells:  # the adjacent cell on the centre's side, in x and in y, if inside the map
                nx = int(fx) - 1 if fx - int(fx) < 0.5 else int(fx) + 1
                ny = int(fy) - 1 if fy - int(fy) < 0.5 else int(fy) + 1
                cells += [(nx, int(fy))] if 0 <= nx < W else []
                cells += [(int(fx), ny)] if 0 <= ny < H else []
            for a, k in enumerate(MASKS[level]):
                if k != best and not ious[k] > match_iou_thresh:
                    continue
                for gx, gy in cells:
                    r = p[b, a, :, gy, gx]
                    cx = (torch.sigmoid(r[0]) + gx) * stride
                    cy = (torch.sigmoid(r[1]) + gy) * stride
                    w = ANCHORS[k, 0] * torch.exp(r[2])
                    h = ANCHORS[k, 1] * torch.exp(r[3])
                    pred = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
                    lb = complete_box_iou_loss(pred, torch.tensor([x1, y1, x2, y2]))
                    box_terms.append(lb)
                    tcls = torch.full((C,), label_smoothing / 2)
                    tcls[c] = 1 - label_smoothing / 2
                    cls_terms.append(torch.nn.functional.binary_cross_entropy_with_logits(r[5:], tcls))
                    t = (1 - obj_iou_ratio) + obj_iou_ratio * float((1 - lb.detach()).clamp(0, 1))
                    tobj[b, a, gy, gx] = max(float(tobj[b, a, gy, gx]), t)
                    pos[b, a, gy, gx] = True
        if box_terms:
            box_sum = box_sum + torch.stack(box_terms).sum() / len(box_terms)
            cls_sum = cls_sum + torch.stack(cls_terms).sum() / len(cls_terms)
        obj_level = 0.0
        for b in range(B):
            gts = [r[2:] for r in targets.tolist() if int(r[0]) == b and r[4] > r[2] and r[5] > r[3]]
            for a in range(3):
                aw, ah = ANCHORS[MASKS[level][a]]
                for y in range(H):
                    for x in range(W):
                        r = p[b, a, :, y, x]
                        keep = True
                        if gts and not pos[b, a, y, x]:
                            cx = (torch.sigmoid(r[0]) + x) * stride
                            cy = (torch.sigmoid(r[1]) + y) * stride
                            w, h = aw * torch.exp(r[2]), ah * torch.exp(r[3])
                            pred = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]).detach()
                            keep = float(box_iou(pred[None], torch.tensor(gts)).max()) <= ignore_thresh
                        if keep:
                            obj_level = obj_level + torch.nn.functional.binary_cross_entropy_with_logits(
                                r[4], tobj[b, a, y, x])
        obj_sum = obj_sum + GAINS["balance"][level] * obj_level / (B * 3 * H * W)
    obj_scale = GAINS["obj_gain"] * in_h * in_w / 416**2
    return GAINS["box_gain"] * box_sum + obj_scale * obj_sum + GAINS["cls_gain"] * cls_sum


def random_batch(batch=3, num_classes=3, boxes=5, h=64, w=96, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    outputs = [scale * torch.randn(batch, 3 * (5 + num_classes), h // s, w // s, generator=g) for s in STRIDES]
    n = batch * boxes
    xy = torch.rand(n, 2, generator=g) * torch.tensor([w, h])
    wh = 4 + torch.rand(n, 2, generator=g) * torch.tensor([w, h]) * 0.8
    boxes_xyxy = torch.cat([xy - wh / 2, xy + wh / 2], 1).clamp(min=0)
    boxes_xyxy = torch.minimum(boxes_xyxy, torch.tensor([w, h, w, h]))
    b = torch.randint(0, batch, (n, 1), generator=g).float()
    c = torch.randint(0, num_classes, (n, 1), generator=g).float()
    return outputs, torch.cat([b, c, boxes_xyxy], 1)


@pytest.mark.parametrize("ignore,gr,match,nb", [(0.5, 1.0, 0.213, False), (0.3, 0.0, 1.0, False),
                                                 (2.0, 0.5, 0.1, True), (0.5, 0.0, 0.213, True)])
def test_matches_plain_loop_reference(ignore, gr, match, nb):
    outputs, targets = random_batch(scale=0.5)
    targets = torch.cat([targets, targets[:2], torch.tensor([[1, 0, 5.0, 5.0, 5.0, 9.0]])])  # duplicates, degenerate
    crit = YoloLoss(ANCHORS, 3, MASKS, STRIDES, ignore_thresh=ignore, obj_iou_ratio=gr, match_iou_thresh=match,
                    neighbor_cells=nb, label_smoothing=0.1, **GAINS)
    ref = reference_loss(outputs, targets, 3, ignore, gr, match, label_smoothing=0.1, neighbor_cells=nb)
    total, items = crit(outputs, targets)
    assert total.item() == pytest.approx(float(ref), rel=1e-5)
    assert items.sum().item() == pytest.approx(total.item(), rel=1e-6)


def test_invariant_to_box_order_and_memory_format():
    outputs, targets = random_batch(batch=4, boxes=12, seed=1)
    targets = torch.cat([targets, targets[:5]])  # duplicate boxes compete for the same slots
    crit = YoloLoss(ANCHORS, 3, neighbor_cells=True)

    def run(outs, t):
        outs = [o.clone().requires_grad_(True) for o in outs]
        total, items = crit(outs, t)
        total.backward()
        return total.detach(), items, [o.grad for o in outs]

    base = run(outputs, targets)
    perm = run(outputs, targets[torch.randperm(len(targets), generator=torch.Generator().manual_seed(3))])
    cl = run([o.contiguous(memory_format=torch.channels_last) for o in outputs], targets)
    for other in (perm, cl):
        torch.testing.assert_close(other[0], base[0], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(other[1], base[1], rtol=1e-5, atol=1e-6)
        for g0, g1 in zip(base[2], other[2]):
            torch.testing.assert_close(g1, g0, rtol=1e-4, atol=1e-7)


def test_mean_over_batch():
    """Documented scale: the same images twice give the same loss (a mean, not a sum over images)."""
    outputs, targets = random_batch(batch=2, seed=2)
    crit = YoloLoss(ANCHORS, 3)
    doubled = [torch.cat([o, o]) for o in outputs]
    t2 = torch.cat([targets, targets + torch.tensor([2.0, 0, 0, 0, 0, 0])])
    torch.testing.assert_close(crit(doubled, t2)[0], crit(outputs, targets)[0], rtol=1e-5, atol=1e-6)


def test_ignore_threshold_per_image():
    C = 1
    gt = [20.0, 10.0, 60.0, 50.0]  # 40x40 centred (40, 30): best anchor #2 -> s16 slot 1, cell (2, 1)
    # a confident negative: s32 cell (gx=1, gy=0), slot 1 (anchor #4, 135x169) decoded to
    # (22, 10, 58, 50): IoU 0.9 with the GT. With zero outputs no other negative exceeds IoU 0.66.
    out = zeros_outputs(2, C)
    logit = 3.0
    raw = [math.log(0.25 / 0.75), math.log(0.9375 / 0.0625), math.log(36 / 135), math.log(40 / 169), logit, 0.0]
    out[0][0, 1 * (5 + C): 2 * (5 + C), 0, 1] = torch.tensor(raw)
    neg_term = 0.4 * bce(logit, 0) / (2 * 3 * 2 * 2) * 64 * 64 / 416**2  # balance * BCE / cells * obj scale

    def obj(ignore, image):
        crit = YoloLoss(ANCHORS, C, match_iou_thresh=1.0, neighbor_cells=False, ignore_thresh=ignore, **GAINS)
        return crit(out, torch.tensor([[image, 0, *gt]]))[1][1].item()

    # IoU above the threshold: exactly that one negative term disappears
    assert obj(2.0, 0) - obj(0.85, 0) == pytest.approx(neg_term, rel=1e-4)
    # below the threshold: kept
    assert obj(2.0, 0) == pytest.approx(obj(0.95, 0), rel=1e-6)
    # the GT belongs to the other image: nothing of image 0 is ignored
    assert obj(2.0, 1) == pytest.approx(obj(0.85, 1), rel=1e-6)


def test_empty_targets_and_empty_images():
    outputs, targets = random_batch(batch=3, seed=4)
    outputs = [o.requires_grad_(True) for o in outputs]
    crit = YoloLoss(ANCHORS, 3)
    total, items = crit(outputs, torch.zeros(0, 6))
    total.backward()
    assert torch.isfinite(total) and items[0] == 0 and items[2] == 0 and items[1] > 0
    assert all(torch.isfinite(o.grad).all() for o in outputs)
    # images 1 and 2 without boxes: their obj loss is the all-negative one
    only0 = targets[targets[:, 0] == 0]
    assert len(only0) > 0
    total, items = crit([o.detach() for o in outputs], only0)
    assert torch.isfinite(total) and (items > 0).all()


def test_gradients_finite_at_extreme_outputs():
    outputs, targets = random_batch(batch=2, seed=5, scale=40.0)  # saturated sigmoids, exp(40)
    outputs = [o.requires_grad_(True) for o in outputs]
    total, _ = YoloLoss(ANCHORS, 3, neighbor_cells=True)(outputs, targets)
    total.backward()
    assert torch.isfinite(total)
    assert all(torch.isfinite(o.grad).all() for o in outputs)


def test_overfit_decodes_to_the_target():
    """Optimising raw head maps on one image: loss falls, and the YOLOv4 decode of the best cell hits the GT."""
    C = 2
    gt = torch.tensor([16.0, 4.0, 56.0, 36.0])
    targets = torch.cat([torch.tensor([0.0, 1.0]), gt])[None]
    outs = [torch.nn.Parameter(o) for o in zeros_outputs(1, C)]
    crit = YoloLoss(ANCHORS, C)
    opt = torch.optim.Adam(outs, lr=0.1)
    first = None
    for _ in range(150):
        total, _ = crit(outs, targets)
        first = total.item() if first is None else first
        opt.zero_grad()
        total.backward()
        opt.step()
    assert total.item() < 0.2 * first
    p = outs[1].detach().view(3, 5 + C, 4, 4)[1, :, 1, 2]  # best slot: s16, anchor #2, cell (2, 1)
    cx, cy = (p[0].sigmoid() + 2) * 16, (p[1].sigmoid() + 1) * 16
    w, h = 37 * p[2].exp(), 58 * p[3].exp()
    pred = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
    assert box_iou(pred[None], gt[None]).item() > 0.9
    assert p[4].sigmoid() > 0.5 and p[6].sigmoid() > 0.8 and p[5].sigmoid() < 0.2
    confident = {(level, a, y, x) for level, o in enumerate(outs)
                 for a, y, x in (o.detach().view(3, 5 + C, *o.shape[2:])[:, 4].sigmoid() > 0.5).nonzero().tolist()}
    assert (1, 1, 1, 2) in confident and confident <= positive_slots(crit, C, targets)  # all else pushed down


def test_init_head_biases():
    C = 6
    convs = [torch.nn.Conv2d(8, 3 * (5 + C), 1), torch.nn.Conv2d(8, 3 * (5 + C), 1)]
    init_head_biases(convs, C, strides=(32, 16), img_size=416, objects_per_image=8.0)
    for conv, cells in zip(convs, (13 * 13, 26 * 26)):
        b = conv.bias.detach().view(3, 5 + C)
        torch.testing.assert_close(b[:, 4].sigmoid(), torch.full((3,), 8.0 / (3 * cells)))
        torch.testing.assert_close(b[:, 5:].sigmoid(), torch.full((3, C), 1.0 / C))
    init_head_biases(convs, C, prior_obj=0.01, prior_cls=0.1)
    torch.testing.assert_close(convs[1].bias.detach().view(3, 5 + C)[:, 4].sigmoid(), torch.full((3,), 0.01))
    with pytest.raises(ValueError, match="output channels"):
        init_head_biases(convs, 5)


def test_init_head_biases_on_yolobody():
    from nets.yolo import YoloBody

    model = YoloBody(2, 0)
    init_head_biases(model, 2, img_size=128)
    obj16 = model.heads[1].bias.detach().view(3, 7)[:, 4].sigmoid()
    torch.testing.assert_close(obj16, torch.full((3,), 8.0 / (3 * 64)))
    with torch.no_grad():
        out = model(torch.rand(1, 3, 128, 128))
    crit = YoloLoss(model.anchors, 2)
    total, items = crit(out, torch.tensor([[0, 1, 10.0, 10.0, 60.0, 70.0]]))
    assert torch.isfinite(total) and items[1] < 0.5  # no flood of p=0.5 negatives at the start


def test_ciou_matches_torchvision():
    from nets.loss import _ciou

    g = torch.Generator().manual_seed(7)
    xy = torch.rand(500, 2, 2, generator=g) * 100
    wh = 0.5 + torch.rand(500, 2, 2, generator=g) * 60
    boxes = torch.cat([xy - wh / 2, xy + wh / 2], -1)  # pairs, many of them disjoint
    a, b = boxes[:, 0].clone().requires_grad_(True), boxes[:, 1]
    ours = 1 - _ciou(a, b)
    ours.sum().backward()
    ga = a.grad.clone()
    a.grad = None
    ref = complete_box_iou_loss(a, b)
    ref.sum().backward()
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ga, a.grad, rtol=1e-4, atol=1e-6)


@pytest.mark.gpu  # on CPU too; the CUDA half needs a GPU
def test_no_host_device_sync_ops():
    """No data-dependent shapes: nothing in forward or backward calls nonzero / item (a sync on CUDA)."""
    outputs, targets = random_batch(batch=2, seed=8)
    outputs = [o.requires_grad_(True) for o in outputs]
    crit = YoloLoss(ANCHORS, 3, neighbor_cells=True)
    with torch.profiler.profile() as prof:
        crit(outputs, targets)[0].backward()
    names = {e.name for e in prof.events()}
    assert not names & {"aten::nonzero", "aten::item", "aten::_local_scalar_dense", "aten::masked_select"}
    if torch.cuda.is_available():
        crit = crit.cuda()
        outs = [o.detach().cuda().requires_grad_(True) for o in outputs]
        t = targets.cuda()
        torch.cuda.set_sync_debug_mode("error")
        try:
            crit(outs, t)[0].backward()
        finally:
            torch.cuda.set_sync_debug_mode("default")


def test_a_cells_objectness_weight_is_the_same_at_any_input_size():
    """Multi-scale batches: the obj term is a mean over cells, scaled by the batch's own input area, so one
    positive (and one negative) cell pulls with the same gradient at 64 px and at 128 px: BCE'(0) = sigmoid(0) - t
    times obj_gain * (S/416)^2 * balance / cells."""
    C = 2
    grads = []
    for size in (64, 128):
        out = zeros_outputs(1, C, size, size, requires_grad=True)
        crit = YoloLoss(ANCHORS, C, MASKS, STRIDES, match_iou_thresh=1.0, neighbor_cells=False, ignore_thresh=2.0,
                        **GAINS)
        crit(out, torch.tensor([[0, 1, 16.0, 4.0, 56.0, 36.0]]))[0].backward()
        g = out[1].grad[0, 4::5 + C]  # the obj logits of the stride-16 level, (A, H, W)
        grads.append((g.min().item(), g.max().item()))
        cells = 3 * (size // 16) ** 2
        expect = GAINS["obj_gain"] * size**2 / 416**2 * GAINS["balance"][1] / cells
        assert g.min().item() == pytest.approx(-0.5 * expect) and g.max().item() == pytest.approx(0.5 * expect)
    assert grads[0] == pytest.approx(grads[1])
