"""The run's pictures: batch previews put each box where its object is; the label plot counts what it is given."""
from __future__ import annotations

import cv2
import numpy as np
import torch

from utils.viz.draw import class_color
from utils.viz.plots import plot_labels, plot_train_batch


def test_batch_preview_draws_each_box_on_its_image(tmp_path):
    """Boxes on black images: the box outline appears in the class colour at the box's place in the grid."""
    images = torch.zeros(5, 3, 64, 64, dtype=torch.uint8)  # 5 images -> a 3 x 2 grid of 64 px cells, 2 px apart
    targets = torch.tensor([[0, 0, 10, 12, 40, 50], [3, 2, 5, 30, 60, 58], [4, 1, 20, 20, 30, 30]], dtype=torch.float32)
    out = plot_train_batch(images, targets, ["a", "b", "c"], tmp_path / "b.png")  # lossless: exact colours
    bgr = cv2.imread(str(out))
    assert bgr.shape == (2 * 64 + 2, 3 * 64 + 4, 3)
    rgb = bgr[..., ::-1].astype(int)
    for img, cls, x1, y1, x2, y2 in targets.int().tolist():
        r, c = divmod(img, 3)
        oy, ox = r * 66, c * 66
        bottom_mid = rgb[oy + y2, ox + (x1 + x2) // 2]  # the lower edge (the label sits at the top)
        assert np.abs(bottom_mid - np.array(class_color(cls))).max() <= 2, (img, bottom_mid)
        assert rgb[oy + (y1 + y2) // 2, ox + (x1 + x2) // 2].max() < 40  # inside stays black
    assert rgb[66 + 32, 66 + 32].max() < 40  # image 4 (row 1, col 1) has no box of its own there


def test_labels_plot_is_written(tmp_path):
    boxes = [np.array([[0, 0, 50, 50], [10, 10, 20, 40]], np.float32), np.zeros((0, 4), np.float32)]
    out = plot_labels(boxes, [(100, 100), (80, 60)], [np.array([0, 2]), np.zeros(0, np.int64)], ["a", "b", "c"],
                      tmp_path / "labels.png")
    img = cv2.imread(str(out))
    assert img is not None and img.shape[1] > 1000
