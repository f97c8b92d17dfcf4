"""Multi-scale training: the per-step sizes (range, determinism) and the batch resize, checked against
the pixels of a drawn rectangle; then a short training run that really trains at several sizes."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from utils.engine.multiscale import input_size_at, rescale_batch, size_range


@pytest.mark.parametrize("img_size,ratio,expected", [(320, 0.5, (160, 480)), (64, 0.9, (32, 96)),
                                                     (416, 0.3, (320, 512)), (96, 0.1, (96, 96))])
def test_size_range_hand_computed(img_size, ratio, expected):
    # 320 * 0.5 = 160, 320 * 1.5 = 480; 64 * 0.1 = 6.4 -> at least 32, 64 * 1.9 = 121.6 -> 96;
    # 416 * 0.7 = 291.2 -> 320, 416 * 1.3 = 540.8 -> 512; 96 * (1 -/+ 0.1) holds only 96
    assert size_range(img_size, ratio) == expected


def test_sizes_cover_the_range_and_depend_only_on_seed_and_step():
    sizes = [input_size_at(320, 0.5, seed=0, step=s) for s in range(600)]
    assert set(sizes) == set(range(160, 481, 32))  # every multiple of 32 in range, nothing else
    counts = np.bincount(sizes)[160::32]
    assert counts.min() > 600 / 11 / 2  # roughly uniform
    assert sizes == [input_size_at(320, 0.5, seed=0, step=s) for s in range(600)]  # a resumed run: same sizes
    assert sizes != [input_size_at(320, 0.5, seed=1, step=s) for s in range(600)]
    assert {input_size_at(320, 0.0, seed=0, step=s) for s in range(50)} == {320}  # off


@pytest.mark.parametrize("size", [32, 96, 160])
def test_rescale_moves_boxes_with_the_pixels(size):
    """Filled rectangles at known pixels: after the resize each target box still frames its rectangle."""
    images = torch.zeros(2, 3, 64, 64)
    boxes = {0: (8, 16, 40, 48), 1: (20, 4, 60, 28)}  # x1, y1, x2, y2 (pixel edges)
    rows = []
    for b, (x1, y1, x2, y2) in boxes.items():
        images[b, :, y1:y2, x1:x2] = 1.0
        rows.append([b, b + 3, x1, y1, x2, y2])
    targets = torch.tensor(rows, dtype=torch.float32)
    out, t = rescale_batch(images, targets, size)
    assert out.shape == (2, 3, size, size)
    assert torch.equal(t[:, :2], targets[:, :2])  # image index and class untouched
    for b in boxes:
        ys, xs = torch.nonzero(out[b, 0] > 0.5, as_tuple=True)
        found = [xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1]
        np.testing.assert_allclose(t[b, 2:].numpy(), found, atol=1.0)
        np.testing.assert_allclose(t[b, 2:].numpy(), np.array(boxes[b]) * size / 64, rtol=1e-6)
    same, t_same = rescale_batch(images, targets, 64)
    assert same is images and t_same is targets  # the loader's size: nothing to do


def test_training_runs_at_several_sizes(tiny_voc, tmp_path, monkeypatch):
    from test_train import make_cfg, run

    import utils.engine.trainer as trainer_module

    seen = []
    real = trainer_module.rescale_batch

    def recording(images, targets, size):
        out = real(images, targets, size)
        seen.append(out[0].shape[-1])
        return out

    monkeypatch.setattr(trainer_module, "rescale_batch", recording)
    cfg = make_cfg(tiny_voc, tmp_path, epochs=2, img_size=64, multi_scale=0.5, name="ms")
    res = run(cfg)
    rows = list(csv.DictReader(open(Path(res["save_dir"]) / "results.csv")))
    assert [int(r["epoch"]) for r in rows] == [0, 1]  # both epochs ran and were evaluated
    assert float(rows[-1]["mAP50"]) == pytest.approx(res["mAP50"], abs=1e-5)  # the returned value is the last eval
    steps = len(seen)
    assert seen == [input_size_at(64, 0.5, cfg.seed, s) for s in range(steps)]
    assert set(seen) <= {32, 64, 96} and len(set(seen)) > 1, seen  # really several sizes
