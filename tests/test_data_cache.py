"""The RAM cache of decoded training images (cache_images): what it holds equals a fresh decode and resize,
samples are bit-identical with and without it (also with unreadable files and in worker processes), and
auto chooses by the size it computes."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from fixtures import default_images, random_images, write_voc

from utils.config import Config, ConfigError, load_config
from utils.data import TrainDataset, build_loader, load_data_spec, load_records
from utils.data import ram_cache
from utils.data.ram_cache import ImageCache

SIZE = 96


def _records(root: Path, images) -> list:
    devkit = write_voc(root, images, splits={"train": [i.name for i in images]})
    return load_records(load_data_spec(str(devkit), cache=False), "train")[0]


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    """Flat and noisy images, smaller, larger and equal to SIZE on the long side (a0 is 96 x 64: no resize)."""
    return _records(tmp_path_factory.mktemp("cache"), default_images() + random_images(3, size=150, seed=3))


def test_cached_image_is_the_decoded_image_resized(records):
    cache = ImageCache(records, SIZE, "ram")
    assert cache.buffer is not None and not cache.errors
    for j, r in enumerate(records):
        img = cv2.imread(r.image)  # independent of the loader: OpenCV's own decode and bilinear resize
        k = SIZE / max(r.width, r.height)
        if k != 1:
            img = cv2.resize(img, (round(r.width * k), round(r.height * k)), interpolation=cv2.INTER_LINEAR)
        got = cache.get(j)
        assert got.shape == img.shape and np.array_equal(got, img), r.image
        assert not got.flags.writeable  # augmentation can never alter the shared copy
    assert cache.nbytes == sum(cache.get(j).size for j in range(len(records)))
    assert ImageCache(records, SIZE, "off").get(0) is None


def _epochs(ds: TrainDataset, epochs=(0, 1, 2)) -> list[tuple[torch.Tensor, torch.Tensor]]:
    out = []
    for e in epochs:
        ds.set_epoch(e)
        out += [ds[i] for i in range(len(ds))]
    return out


def _assert_same(a, b):
    assert len(a) == len(b)
    for (ia, ta), (ib, tb) in zip(a, b):
        assert torch.equal(ia, ib) and torch.equal(ta, tb)


@pytest.mark.parametrize("mosaic", [0.0, 1.0])
def test_samples_identical_with_and_without_the_cache(records, mosaic):
    """The default augmentation (colour jitter, flips) with mixup: pixels and targets bit-identical."""
    cfg = {"mosaic": mosaic, "mixup": 0.5}
    ram = TrainDataset(records, SIZE, Config(**cfg, cache_images="ram"), seed=3)
    off = TrainDataset(records, SIZE, Config(**cfg, cache_images="off"), seed=3)
    assert ram.images.buffer is not None and off.images.buffer is None
    _assert_same(_epochs(ram), _epochs(off))


def test_unreadable_images_replaced_alike_with_the_cache(tmp_path):
    recs = _records(tmp_path, default_images())
    Path(recs[1].image).unlink()
    Path(recs[2].image).write_bytes(b"garbage")
    ram = TrainDataset(recs, 64, Config(cache_images="ram"), seed=1)
    off = TrainDataset(recs, 64, Config(cache_images="off"), seed=1)
    assert sorted(ram.images.errors) == [1, 2] and "failed to load" in ram.images.summary
    _assert_same(_epochs(ram, (0,)), _epochs(off, (0,)))
    assert ram.load_failures == off.load_failures > 0


def test_worker_processes_read_the_cache(records):
    """Forked workers read the parent's cache: the same batches as in-process loading without a cache."""
    ram = TrainDataset(records, SIZE, Config(cache_images="ram"), seed=2)
    off = TrainDataset(records, SIZE, Config(cache_images="off"), seed=2)
    got = [b for b in build_loader(ram, batch_size=3, workers=2, seed=1)]
    ref = [b for b in build_loader(off, batch_size=3, workers=0, seed=1)]
    _assert_same(got, ref)


def test_auto_caches_when_the_set_fits(records, monkeypatch):
    need = sum(h * w * 3 for w, h in (ram_cache.long_side_size(r.width, r.height, SIZE) for r in records))
    monkeypatch.setattr(ram_cache.multiprocessing, "get_start_method", lambda allow_none=False: "fork")
    monkeypatch.setattr(ram_cache, "available_memory", lambda: int(need / ram_cache.RAM_SHARE) + 1)
    fits = ImageCache(records, SIZE, "auto")
    assert fits.nbytes == need and fits.buffer is not None and fits.summary.startswith("cache_images auto: ")
    monkeypatch.setattr(ram_cache, "available_memory", lambda: int(need / ram_cache.RAM_SHARE))
    over = ImageCache(records, SIZE, "auto")
    assert over.buffer is None and "decoding every sample's images from disk" in over.summary
    assert "force with --cache-images ram" in over.summary
    assert ImageCache(records, SIZE, "ram").buffer is not None  # ram: cached whatever memory says
    monkeypatch.setattr(ram_cache, "available_memory", lambda: None)
    assert ImageCache(records, SIZE, "auto").buffer is None  # unknown memory: auto does not risk it
    # spawned workers each unpickle a copy: auto counts 1 + workers copies
    monkeypatch.setattr(ram_cache, "available_memory", lambda: int(2 * need / ram_cache.RAM_SHARE) + 1)
    monkeypatch.setattr(ram_cache.multiprocessing, "get_start_method", lambda allow_none=False: "spawn")
    assert ImageCache(records, SIZE, "auto", workers=1).buffer is not None
    assert ImageCache(records, SIZE, "auto", workers=2).buffer is None


def test_cache_images_key_is_checked():
    assert load_config(overrides={"cache_images": "off"}).cache_images == "off"
    with pytest.raises(ConfigError, match="cache_images"):
        load_config(overrides={"cache_images": "disk"})
