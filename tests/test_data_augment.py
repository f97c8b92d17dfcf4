"""Augmentation and data sets: boxes stay on the objects, letterbox contract, collate shapes,
difficult boxes, and determinism under a seed (also across worker processes and epochs)."""
from __future__ import annotations

from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
from fixtures import default_images, write_voc

from nets.decode import unletterbox
from utils.config import Config
from utils.data import (
    TrainDataset,
    build_loader,
    letterbox,
    letterbox_params,
    load_data_spec,
    load_records,
    train_collate,
)
from utils.data.augment import (ColourJitter, affine_matrix, clip_and_filter, hflip, mosaic_canvas, source_window,
                                transform_boxes, warp)

RGB = np.array([[255, 255, 255], [255, 200, 0], [0, 80, 255]])  # fixtures.COLOURS (BGR) as RGB, per class


def hyp(**kw) -> Config:
    """The default augmentation (mosaic 1, mixup 0, scale 0.5, translate 0.1, hsv 0.015/0.7/0.4, fliplr 0.5), changed
    by `kw`."""
    return Config(**kw)


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    root = tmp_path_factory.mktemp("aug")
    devkit = write_voc(root, default_images(), splits={"train": [i.name for i in default_images()]})
    recs, _ = load_records(load_data_spec(str(devkit), cache=False), "train")
    return recs


def _box_checks(img: np.ndarray, targets: np.ndarray) -> tuple[float, float, float]:
    """(worst share of a box's interior in its class colour, worst share of the 2-px ring just outside a box
    in that colour, share of object-coloured pixels inside a box of their class)."""
    hwc = img.transpose(1, 2, 0).astype(int)
    size = hwc.shape[0]
    worst_in, worst_out, covered, total = 1.0, 0.0, 0, 0
    for c in range(3):
        colour = np.abs(hwc - RGB[c]).max(2) < 40
        inside = np.zeros_like(colour)
        for cls, x1, y1, x2, y2 in targets[targets[:, 0] == c]:
            xa, ya, xb, yb = int(np.ceil(x1)) + 1, int(np.ceil(y1)) + 1, int(x2) - 1, int(y2) - 1
            if xb > xa and yb > ya:
                worst_in = min(worst_in, colour[ya:yb, xa:xb].mean())
            ring = []  # pixels 2 px outside each edge, where that is inside the image
            xo1, yo1, xo2, yo2 = int(np.floor(x1)) - 2, int(np.floor(y1)) - 2, int(np.ceil(x2)) + 1, int(np.ceil(y2)) + 1
            if yo1 >= 0:
                ring.append(colour[yo1, xa:xb])
            if yo2 < size:
                ring.append(colour[yo2, xa:xb])
            if xo1 >= 0:
                ring.append(colour[ya:yb, xo1])
            if xo2 < size:
                ring.append(colour[ya:yb, xo2])
            if ring:
                worst_out = max(worst_out, np.concatenate(ring).mean())
            inside[max(0, int(y1) - 1):int(np.ceil(y2)) + 1, max(0, int(x1) - 1):int(np.ceil(x2)) + 1] = True
        covered += (colour & inside).sum()
        total += colour.sum()
    return worst_in, worst_out, covered / total if total else 1.0


@pytest.mark.parametrize("mosaic", [0.0, 1.0])
def test_boxes_stay_on_objects(records, mosaic):
    """Filled rectangles, augmented: every target box is filled with its class colour and the coloured
    pixels lie inside boxes of their class (colour jitter off so colours stay recognisable)."""
    ds = TrainDataset(records, 96, hyp(mosaic=mosaic, hsv_h=0, hsv_s=0, hsv_v=0, fliplr=0.5), seed=0,
                      include_difficult=True)
    covered, total = 0.0, 0
    for epoch in range(3):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            img, t = ds[i]
            assert img.dtype == torch.uint8 and img.shape == (3, 96, 96)
            assert t.dtype == torch.float32 and t.shape[1] == 5
            t = t.numpy()
            assert (t[:, 1:] >= 0).all() and (t[:, 1:] <= 96).all()  # clipped to the image
            assert ((t[:, 3] - t[:, 1]) > 2).all() and ((t[:, 4] - t[:, 2]) > 2).all()  # no tiny boxes
            inner, outer, cov = _box_checks(img.numpy(), t)
            assert inner > 0.9, (epoch, i, inner)  # the box lies on its object ...
            assert outer < 0.2, (epoch, i, outer)  # ... and the object does not extend past the box
            covered += cov
            total += 1
    # object pixels without a box: only slivers of boxes dropped as tiny or mostly cut away
    assert covered / total > 0.9


def test_mixup_keeps_boxes_of_both(records):
    ds = TrainDataset(records, 96, hyp(mixup=1.0), seed=0)
    counts = [len(ds[i][1]) for i in range(len(ds))]
    ds_plain = TrainDataset(records, 96, hyp(mixup=0.0), seed=0)
    assert sum(counts) > sum(len(ds_plain[i][1]) for i in range(len(ds)))


def test_geometry_without_randomness_matches_letterbox(records):
    """scale = translate = 0, no mosaic/flip: training geometry is the letterbox geometry."""
    ds = TrainDataset(records, 128, hyp(mosaic=0, scale=0, translate=0, fliplr=0, hsv_h=0, hsv_s=0, hsv_v=0),
                      include_difficult=True)
    for i, r in enumerate(records):
        scale, (px, py) = letterbox_params(r.width, r.height, 128)
        _, t = ds[i]
        want = r.boxes * scale + np.array([px, py, px, py], np.float32)
        np.testing.assert_allclose(t[:, 1:].numpy(), want, atol=1.0)
        assert t[:, 0].long().tolist() == r.classes.tolist()


def test_difficult_not_a_training_target(records):
    r = next(i for i, r in enumerate(records) if r.difficult.any())
    h = hyp(mosaic=0, scale=0, translate=0, fliplr=0)
    assert len(TrainDataset(records, 64, h)[r][1]) == int((~records[r].difficult).sum())
    assert len(TrainDataset(records, 64, h, include_difficult=True)[r][1]) == len(records[r])


def test_letterbox_contract():
    img = np.zeros((50, 100, 3), np.uint8)
    out, scale, (px, py) = letterbox(img, 64)
    assert out.shape == (64, 64, 3) and scale == pytest.approx(0.64) and (px, py) == (0, 16)
    assert (out[:16] == 114).all() and (out[48:] == 114).all() and (out[16:48] == 0).all()
    out, scale, (px, py) = letterbox(np.zeros((33, 17, 3), np.uint8), (64, 96))  # (h, w) target
    nw, nh = round(17 * scale), round(33 * scale)
    assert scale == pytest.approx(min(64 / 33, 96 / 17)) and (px, py) == ((96 - nw) // 2, (64 - nh) // 2)
    assert letterbox_params(17, 33, (64, 96)) == (scale, (px, py))
    box = np.array([[10, 5, 90, 45]], np.float32)  # original pixels of the 100x50 image
    s, pad = letterbox_params(100, 50, 64)
    net = box * s + np.array([pad[0], pad[1]] * 2)
    np.testing.assert_allclose(unletterbox(torch.from_numpy(net), s, pad, (50, 100)).numpy(), box, atol=1e-4)


def test_train_collate(records):
    tr = TrainDataset(records, 64, hyp())
    samples = [tr[0], tr[1], tr[2]]
    imgs, targets = train_collate(samples)
    assert imgs.dtype == torch.uint8 and torch.equal(imgs, torch.stack([im for im, _ in samples]))
    assert targets.dtype == torch.float32 and targets.shape == (sum(len(t) for _, t in samples), 6)
    for k, (_, t) in enumerate(samples):  # each image's rows, in order, behind its batch index
        assert torch.equal(targets[targets[:, 0] == k], torch.cat([torch.full((len(t), 1), float(k)), t], 1))


def test_box_helpers_by_hand():
    m = np.array([[2.0, 0, 10], [0, 0.5, -4]])
    np.testing.assert_allclose(transform_boxes(np.array([[1, 10, 3, 20]], np.float32), m), [[12, 1, 16, 6]])
    boxes = np.array([[-10, 0, 10, 10], [0, 0, 2, 50], [80, 80, 120, 120], [50, 50, 60, 60]], np.float32)
    clipped, keep = clip_and_filter(boxes, 100, 100)
    np.testing.assert_allclose(clipped[0], [0, 0, 10, 10])
    assert keep.tolist() == [True, False, True, True]  # 2 px wide box dropped
    far = np.array([[90, 90, 130, 130], [0, 0, 100, 4], [0, 0, 100, 5]], np.float32)
    # 6% of its area left inside; aspect 25; aspect 20 (the limit, exclusive)
    assert clip_and_filter(far, 100, 100)[1].tolist() == [False, False, False]


def test_flip_moves_boxes():
    img = np.zeros((32, 64, 3), np.uint8)
    img[:, :10] = 255
    out, b = hflip(img, np.array([[0, 0, 10, 32]], np.float32))
    assert (out[:, 54:] == 255).all() and (out[:, :54] == 0).all() and b.tolist() == [[54, 0, 64, 32]]


def test_colour_jitter_seeded():
    img = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    cj = ColourJitter(0.015, 0.7, 0.4)
    a = cj(img, np.random.default_rng(1))
    assert np.array_equal(a, cj(img, np.random.default_rng(1))) and not np.array_equal(a, img)
    assert ColourJitter(0, 0, 0)(img, np.random.default_rng(1)) is img


def test_deterministic_under_seed(records):
    h = hyp(mixup=0.5)
    a, b = TrainDataset(records, 64, h, seed=7), TrainDataset(records, 64, h, seed=7)
    for epoch in (0, 3):
        a.set_epoch(epoch)
        b.set_epoch(epoch)
        for i in range(len(a)):
            x, y = a[i], b[i]
            assert torch.equal(x[0], y[0]) and torch.equal(x[1], y[1])
    a.set_epoch(0)
    first = [a[i][0] for i in range(len(a))]
    a.set_epoch(1)
    assert any(not torch.equal(f, a[i][0]) for i, f in enumerate(first))  # epochs differ
    c = TrainDataset(records, 64, h, seed=8)
    assert any(not torch.equal(f, c[i][0]) for i, f in enumerate(first))  # seeds differ


def test_augmentation_keys_are_read_as_attributes(records):
    """A settings object without a key is an error, not a silent 0 (the old getattr(hyp, k, 0.0))."""
    with pytest.raises(AttributeError, match="hsv_h"):
        TrainDataset(records, 64, SimpleNamespace(mosaic=1.0, mixup=0.0, scale=0.5, translate=0.1, fliplr=0.5))


def _run_epochs(ds, workers):
    loader = build_loader(ds, batch_size=2, workers=workers, seed=5)
    out = []
    for epoch, mosaic in ((0, True), (1, False)):
        ds.set_epoch(epoch)
        ds.mosaic_enabled = mosaic
        loader.sampler.set_epoch(epoch)
        out.append([(im.clone(), t.clone()) for im, t in loader])
    return out


def test_worker_processes_do_not_change_samples(records):
    """Same batches with 0 and 2 (persistent) workers; set_epoch and mosaic_enabled reach the workers."""
    ref = _run_epochs(TrainDataset(records, 64, hyp(), seed=2), 0)
    got = _run_epochs(TrainDataset(records, 64, hyp(), seed=2), 2)
    for e in range(2):
        assert len(ref[e]) == len(got[e])
        for (ia, ta), (ib, tb) in zip(ref[e], got[e]):
            assert torch.equal(ia, ib) and torch.equal(ta, tb)
    # epoch 1 ran without mosaic in the workers: it differs from epoch 1 with mosaic
    ds = TrainDataset(records, 64, hyp(), seed=2)
    ds.set_epoch(1)
    loader = build_loader(ds, batch_size=2, workers=0, seed=5)
    loader.sampler.set_epoch(1)
    with_mosaic = [im for im, _ in loader]
    assert any(not torch.equal(a, b[0]) for a, b in zip(with_mosaic, got[1]))


_FORK_AFTER_OPENCV = """
import sys
sys.path.insert(0, {root!r})
import cv2, numpy as np
from utils.config import Config
from utils.data import TrainDataset, build_loader, load_data_spec, load_records
big = np.zeros((2000, 2000, 3), np.uint8)
for _ in range(3):  # start OpenCV's thread pool in the parent before the workers fork
    cv2.resize(big, (1000, 1000)), cv2.warpAffine(big, np.eye(2, 3), (1500, 1500))
recs, _ = load_records(load_data_spec({devkit!r}, cache=False), "train")
ds = TrainDataset(recs, 64, Config())
print(sum(len(x) for x, _ in build_loader(ds, 2, workers=2)))
"""


def test_workers_start_after_parent_used_opencv(tmp_path):
    """Regression: cv2.setNumThreads in a forked worker deadlocks once the parent used OpenCV's pool."""
    import subprocess
    import sys
    from pathlib import Path

    devkit = write_voc(tmp_path, default_images(), splits={"train": [i.name for i in default_images()]})
    root = str(Path(__file__).resolve().parent.parent)
    p = subprocess.run([sys.executable, "-c", _FORK_AFTER_OPENCV.format(root=root, devkit=str(devkit))],
                       capture_output=True, text=True, timeout=90)
    assert p.returncode == 0 and p.stdout.strip() == "6", p.stderr


@pytest.mark.slow
def test_spawned_workers_see_epoch_and_mosaic(records):
    """The shared state also reaches workers started with 'spawn' (macOS / Windows default)."""
    ds = TrainDataset(records, 64, hyp(), seed=4)
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2, collate_fn=train_collate,
                                         multiprocessing_context="spawn", persistent_workers=True)
    list(loader)
    ds.set_epoch(3)
    ds.mosaic_enabled = False
    got = torch.cat([x for x, _ in loader])
    ref = TrainDataset(records, 64, hyp(), seed=4)
    ref.set_epoch(3)
    ref.mosaic_enabled = False
    assert all(torch.equal(got[i], ref[i][0]) for i in range(len(ref)))


def test_mosaic_window_warp_equals_the_full_canvas_warp():
    """Building only the window of the mosaic canvas the warp reads gives the pixels and boxes of the whole
    canvas warped by OpenCV from the plain matrix (the pre-window way), at the extremes of scale and shift."""
    s, rng = 64, np.random.default_rng(0)
    for trial in range(200):
        tiles = []
        for _ in range(4):
            h, w = (int(v) for v in rng.integers(8, s + 1, 2))
            x, y = np.sort(rng.uniform(0, w, (2, 2)), 1), np.sort(rng.uniform(0, h, (2, 2)), 1)
            boxes = np.stack([x[:, 0], y[:, 0], x[:, 1], y[:, 1]], 1).astype(np.float32)
            tiles.append((rng.integers(0, 256, (h, w, 3), dtype=np.uint8), boxes, np.arange(2)))
        center = tuple(int(v) for v in rng.uniform(s / 2, 3 * s / 2, 2))
        scale = [0.0, 0.5, 0.9][trial % 3]
        m = affine_matrix(rng, s, (s, s), scale, 0.1 + 0.2 * (trial % 2))
        full, b_full, c_full = mosaic_canvas(tiles, s, center)
        want = cv2.warpAffine(full, m, (s, s), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                              borderValue=(114, 114, 114))
        window = source_window(m, s, 2 * s, 2 * s)
        part, b, c = mosaic_canvas(tiles, s, center, np.empty(4 * s * s * 3, np.uint8), window)
        assert part.shape == (window[3] - window[1], window[2] - window[0], 3)
        assert np.array_equal(warp(part, m, s, window[:2]), want), trial
        assert np.array_equal(b, b_full) and np.array_equal(c, c_full)
        assert np.array_equal(warp(full, m, s), want)  # origin (0, 0): exactly warpAffine from m
