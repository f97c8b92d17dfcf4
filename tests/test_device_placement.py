"""Device placement of the code that runs on the GPU, checked on a CPU: a tensor created on the host inside a CUDA
path (a `torch.zeros(n)` without `device=`, a `torch.tensor(...)`, an explicit "cpu") must fail here.

Two cheap mechanisms, each of which raises on a mixed-device op:
- fixed-shape code (model, loss forward + backward, decode) runs whole on "meta" tensors (shapes, no data):
  any CPU tensor it creates and mixes in raises "Tensor on device cpu is not on the expected device meta";
- data-dependent code (NMS, the metrics: nonzero, sort-and-cut, .tolist()) cannot run on meta, so it runs on
  real CPU data while every tensor factory called from the project's own code without `device=` makes a meta
  tensor (`project_factories_on_meta`): it raises as soon as it meets the data. An explicit "cpu" is not caught
  there (the review in issue #17 covers those lines), nor are factories inside torch or torchvision.
Each test also compares with the plain run, so a mechanism that silently did nothing would show.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._device import _device_constructors

from nets.decode import decode_outputs, non_max_suppression
from nets.loss import YoloLoss
from nets.yolo import YoloBody
from utils.eval.metrics import coco_evaluate_tables, tables_from_lists, voc_evaluate_tables

META = torch.device("meta")
ROOT = str(Path(__file__).resolve().parent.parent)
VENV = str(Path(sys.prefix).resolve())


class project_factories_on_meta(TorchFunctionMode):  # lower case: used like a function, `with ...():`
    """`with torch.device("meta")`, but only for factories called from the project's files: torchvision's own
    `torch.tensor(1).to(boxes)` is correct (if wasteful) and must not trip the check."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _device_constructors() and kwargs.get("device") is None:
            caller = str(Path(sys._getframe(1).f_code.co_filename).resolve())
            if caller.startswith(ROOT) and not caller.startswith(VENV):
                kwargs["device"] = META
        return func(*args, **kwargs)


def cases(n_img: int = 6, num_classes: int = 3, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """Per-image detections (jittered copies of the ground truth plus misses) and ground truth."""
    g = torch.Generator().manual_seed(seed)
    preds, gts = [], []
    for _ in range(n_img):
        xy = torch.rand(4, 2, generator=g) * 60
        boxes = torch.cat([xy, xy + 8 + torch.rand(4, 2, generator=g) * 30], 1)
        labels = torch.randint(0, num_classes, (4,), generator=g)
        det = torch.cat([boxes + torch.randn(4, 4, generator=g) * 2, torch.rand(3, 4, generator=g).cumsum(1) * 40])
        preds.append({"boxes": det, "scores": torch.rand(7, generator=g),
                      "labels": torch.cat([labels, torch.randint(0, num_classes, (3,), generator=g)])})
        gts.append({"boxes": boxes, "labels": labels})
    return preds, gts


@pytest.mark.parametrize("phi", ["none", "se", "cbam", "eca", "ca", "scse"])
def test_model_loss_and_backward_run_on_meta(phi):
    torch.manual_seed(0)
    model = YoloBody(3, phi).train()
    criterion = YoloLoss(model.anchors, 3)
    model.to(META)
    images = torch.empty(2, 3, 64, 64, device=META)
    targets = torch.empty(5, 6, device=META)  # [b, cls, x1, y1, x2, y2] rows
    outputs = model(images)
    loss, items = criterion(outputs, targets)
    loss.backward()
    assert [tuple(o.shape) for o in outputs] == [(2, 24, 2, 2), (2, 24, 4, 4)]
    assert loss.device == META and loss.shape == () and items.shape == (3,)
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and g.device == META for g in grads)


def test_decode_runs_on_meta_with_the_models_anchors():
    model = YoloBody(3, "eca").eval().to(META)
    outputs = [torch.empty(2, 24, 2, 2, device=META), torch.empty(2, 24, 4, 4, device=META)]
    pred = decode_outputs(outputs, model.anchors, model.masks, model.strides, model.scale_x_y)
    assert pred.device == META and tuple(pred.shape) == (2, 3 * (4 + 16), 8)


@pytest.mark.parametrize("multi_label, classes", [(False, None), (True, None), (False, [0, 2])])
def test_nms_creates_no_tensor_off_its_inputs_device(multi_label, classes):
    torch.manual_seed(0)
    model = YoloBody(3, "eca").eval()
    with torch.no_grad():
        pred = decode_outputs(model(torch.rand(2, 3, 64, 64)), model.anchors, model.masks, model.strides)
    plain = non_max_suppression(pred, 0.001, 0.5, max_det=20, classes=classes, multi_label=multi_label, max_nms=50)
    with project_factories_on_meta():
        strict = non_max_suppression(pred, 0.001, 0.5, max_det=20, classes=classes, multi_label=multi_label,
                                     max_nms=50)
    assert sum(len(d["scores"]) for d in plain) > 0  # a real run: boxes survived, every branch was taken
    for a, b in zip(plain, strict):
        for k in ("boxes", "scores", "labels"):
            assert b[k].device.type == "cpu" and torch.equal(a[k], b[k])


def test_metrics_create_no_tensor_off_the_given_device():
    preds, gts = cases()
    dets, gtab = tables_from_lists(preds, gts)  # host-side by design: per-image lists in, CPU tables out
    coco = coco_evaluate_tables(dets, gtab, len(preds), 3, device="cpu")
    voc = voc_evaluate_tables(dets, gtab, len(preds), 3, device="cpu")
    with project_factories_on_meta():
        coco_strict = coco_evaluate_tables(dets, gtab, len(preds), 3, device="cpu")
        voc_strict = voc_evaluate_tables(dets, gtab, len(preds), 3, device="cpu")
    assert 0 < coco.stats["AP50"] < 1  # a real case: some matches, some misses
    assert coco_strict.stats == coco.stats
    np.testing.assert_array_equal(coco_strict.precision, coco.precision)
    assert voc_strict.ap == voc.ap and voc_strict.ap07 == voc.ap07


def test_both_mechanisms_raise_on_a_host_tensor():
    """The premise of the tests above, in this torch: a CPU tensor mixed into a meta op raises (a 0-dim one does
    not, as CUDA takes it too), and a factory called here without `device=` makes a tensor that cannot meet CPU
    data. (Planting `torch.zeros(n)` in nets/loss.py, nets/decode.py or utils/eval/coco.py fails the tests above.)"""
    with pytest.raises(RuntimeError, match="device"):
        torch.empty(3, device=META) + torch.zeros(3)
    data = torch.ones(3)
    with project_factories_on_meta():
        assert torch.zeros(1, device="cpu").device.type == "cpu"
        with pytest.raises(RuntimeError, match="device"):
            torch.cat([data, torch.zeros(1)])
