"""Test-time augmentation: each view's geometry checked against the pixels of a drawn rectangle, and the
Predictor's augmented boxes against its plain ones on a model that sees the same thing in every view."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from nets.decode import decode_outputs, non_max_suppression, unletterbox
from utils.infer.tta import VIEWS, boxes_to_input, make_view


def _frame(img: torch.Tensor) -> list[float]:
    """Bounding box (pixel edges) of the bright pixels of a (3, H, W) image."""
    ys, xs = torch.nonzero(img[0] > 0.75, as_tuple=True)
    return [xs.min().item(), ys.min().item(), xs.max().item() + 1.0, ys.max().item() + 1.0]


@pytest.mark.parametrize("hw", [(96, 160), (128, 128)])
@pytest.mark.parametrize("scale,mirror", [*VIEWS, (0.83, True), (0.5, True)])
def test_views_and_boxes_map_back_onto_the_input(hw, scale, mirror):
    x = torch.zeros(1, 3, *hw)
    rect = (20, 30, 70, 62)  # x1, y1, x2, y2
    x[:, :, rect[1]:rect[3], rect[0]:rect[2]] = 1.0
    view, (h, w) = make_view(x, scale, mirror)
    assert view.shape[2] % 32 == 0 and view.shape[3] % 32 == 0  # the network takes it
    assert (h, w) == (round(hw[0] * scale), round(hw[1] * scale))
    assert torch.allclose(view[0, :, h:, :], torch.tensor(114 / 255)) if view.shape[2] > h else True  # grey padding
    found = torch.tensor(_frame(view[0]), dtype=torch.float32)  # where the rectangle is in the view
    back = boxes_to_input(found, hw, (h, w), mirror).tolist()
    np.testing.assert_allclose(back, rect, atol=1.5 / scale)  # within a view pixel of where it was drawn


def test_predictor_augment_adds_the_views_to_one_nms():
    from helpers import random_detector

    from utils.infer.predictor import Predictor

    model = random_detector("none", 2)
    img = np.random.default_rng(0).integers(0, 255, (100, 140, 3), dtype=np.uint8)
    plain = Predictor(model, img_size=128, conf_thres=0.2, device="cpu")
    aug = Predictor(model, img_size=128, conf_thres=0.2, device="cpu", augment=True)
    x, _ = plain.preprocess([img])
    extra = aug.augmented(x)
    assert len(extra) == len(VIEWS)
    raw = plain.infer(x)
    n = sum(r.shape[1] // 7 * r.shape[2] * r.shape[3] for r in raw)  # 3 anchors x (5 + 2) channels
    assert all(e.shape[0] == 1 and e.shape[2] == 7 for e in extra)
    assert [e.shape[1] > n for e in extra] == [s > 1 for s, _ in VIEWS]  # an enlarged view has more cells
    d_plain, d_aug = plain([img])[0], aug([img])[0]
    # reference: the plain candidates and every view's, in one NMS, mapped back to the image by hand
    x, infos = plain.preprocess([img])
    pred = torch.cat([decode_outputs(raw, model.anchors, model.masks, model.strides), *extra], 1)
    ref = non_max_suppression(pred, 0.2, plain.iou_thres, plain.max_det)[0]
    ref["boxes"] = unletterbox(ref["boxes"], infos[0].scale, infos[0].pad, (100, 140))
    for k in ("boxes", "scores", "labels"):
        torch.testing.assert_close(d_aug[k], ref[k])
    assert len(d_plain["boxes"]) > 0 and not torch.equal(d_aug["scores"], d_plain["scores"])  # the views count
    assert (d_aug["boxes"][:, 0::2] <= 140).all() and (d_aug["boxes"][:, 1::2] <= 100).all()  # clipped to the image
    assert "test-time augmentation" in aug.describe()
