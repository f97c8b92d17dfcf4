"""The training data set (augmented), its collate function and the one training DataLoader
(worker seeding, epoch-seeded shuffling, sharded across DDP processes).

Determinism: a training sample is a pure function of (seed, epoch, index): each __getitem__ builds
its own np.random.Generator from those three numbers, so worker count, prefetch order and restarts
do not change what the model sees. Epoch and the mosaic switch live in shared memory, so
`set_epoch` and `mosaic_enabled = False` reach persistent worker processes too (fork or spawn).
"""
from __future__ import annotations

import logging
import random
from typing import Callable

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from utils.config import Config

from .augment import (ColourJitter, affine_matrix, clip_and_filter, hflip, mixup, mosaic_canvas, source_window,
                      transform_boxes, warp)
from .ram_cache import LOAD_ERRORS, ImageCache, load_resized_bgr, long_side_size
from .records import DataError, Record

log = logging.getLogger(__name__)
MAX_SUBSTITUTES = 16  # consecutive unreadable samples tolerated before giving up


def seed_worker(worker_id: int) -> None:
    """DataLoader worker_init_fn: global generators seeded from the loader (augmentation itself does
    not use them). Deliberately no cv2.setNumThreads here: in a forked worker it deadlocks once the
    parent has used OpenCV's thread pool."""
    s = torch.initial_seed() % 2**32
    np.random.seed(s)
    random.seed(s)


class TrainDataset(Dataset):
    """Augmented training samples: (image uint8 (3, S, S) RGB, targets float32 (n, 5) [cls, x1, y1, x2, y2]
    in network-input pixels). The augmentation settings are the config's mosaic, mixup, scale, translate,
    hsv_h, hsv_s, hsv_v and fliplr (Ultralytics-like meanings). Difficult and crowd boxes are not
    targets unless `include_difficult`. An image that fails to load is replaced by the next readable
    one (deterministic) and counted in `load_failures`. cfg.cache_images: decode and resize every image
    once, here, before the workers start (utils/data/ram_cache.py); `log` gets the line saying what it chose."""

    def __init__(self, records: list[Record], img_size: int, cfg: Config, seed: int = 0,
                 include_difficult: bool = False, log: Callable[[str], None] | None = None):
        if not records:
            raise DataError("TrainDataset: no records (the training split is empty)")
        self.records = list(records)
        self.img_size = int(img_size)
        self.seed = int(seed) % 2**63
        self.p_mosaic, self.p_mixup, self.p_flip = float(cfg.mosaic), float(cfg.mixup), float(cfg.fliplr)
        self.scale, self.translate = float(cfg.scale), float(cfg.translate)
        self._colour_args = (float(cfg.hsv_h), float(cfg.hsv_s), float(cfg.hsv_v))
        self._colour: ColourJitter | None = None  # built lazily: once per worker process
        self._canvas: np.ndarray | None = None  # mosaic buffer (2S x 2S x 3 bytes), per process
        keep = [~r.iscrowd if include_difficult else r.train_mask for r in self.records]
        self._boxes = [_scaled(r.boxes[k], r.width, r.height, self.img_size) for r, k in zip(self.records, keep)]
        self._classes = [r.classes[k] for r, k in zip(self.records, keep)]
        self.images = ImageCache(self.records, self.img_size, cfg.cache_images, int(cfg.workers))
        if log is not None:
            log(self.images.summary)
        # [epoch, mosaic on, load failures] in shared memory: seen by worker processes (fork or spawn,
        # persistent or not); a tensor because torch's pickler shares it in any start method
        self._state = torch.tensor([0, 1, 0], dtype=torch.int64).share_memory_()
        self._bad: set[int] = set()  # per process: indices known to fail

    # -- trainer controls ---------------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        """Augmentation randomness is f(seed, epoch, index): call at the start of every epoch."""
        self._state[0] = int(epoch)

    @property
    def epoch(self) -> int:
        return int(self._state[0])

    @property
    def mosaic_enabled(self) -> bool:
        return bool(self._state[1])

    @mosaic_enabled.setter
    def mosaic_enabled(self, on: bool) -> None:
        self._state[1] = 1 if on else 0

    @property
    def load_failures(self) -> int:
        """How many times an unreadable image was replaced (over all worker processes)."""
        return int(self._state[2])

    # -- samples -----------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.epoch, int(index)])
        if self.mosaic_enabled and self.p_mosaic > 0 and rng.random() < self.p_mosaic:
            img, boxes, cls = self._mosaic(index, rng)
            if self.p_mixup > 0 and rng.random() < self.p_mixup:
                img2, boxes2, cls2 = self._mosaic(int(rng.integers(len(self))), rng)
                img = mixup(img, img2, rng)
                boxes, cls = np.concatenate([boxes, boxes2]), np.concatenate([cls, cls2])
        else:
            img, boxes, cls = self._single(index, rng)
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)  # tiles stay BGR until here: one conversion a sample
        if self._colour is None:
            self._colour = ColourJitter(*self._colour_args)
        img = self._colour(img, rng)
        if self.p_flip > 0 and rng.random() < self.p_flip:
            img, boxes = hflip(img, boxes)
        targets = np.concatenate([cls.astype(np.float32)[:, None], boxes.astype(np.float32)], 1)
        return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))), torch.from_numpy(targets)

    def load_resized(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(image with its long side = img_size, training boxes scaled alike, classes); substitutes
        the next readable sample when this one fails."""
        n = len(self)
        for attempt in range(min(n, MAX_SUBSTITUTES)):
            j = (index + attempt) % n
            if j not in self._bad:
                try:
                    return self._load_resized(j)
                except LOAD_ERRORS as e:
                    self._bad.add(j)
                    log.warning("skipping unreadable training image (replaced by another): %s", e)
            self._state[2] += 1  # not atomic across workers: a count for the log, not a lock
        raise DataError(f"{MAX_SUBSTITUTES} training images in a row failed to load, starting at "
                        f"{self.records[index].image}; run python -m utils.data.check_dataset --deep on the data")

    def _load_resized(self, j: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        img = self.images.get(j)  # the RAM copy (read-only), or None: decode now
        if img is None:
            rec = self.records[j]
            img = load_resized_bgr(rec.image, (rec.width, rec.height), self.img_size)
        return img, self._boxes[j], self._classes[j]

    def _single(self, index: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One image, centred as a letterbox would be, randomly scaled and shifted."""
        img, boxes, cls = self.load_resized(index)
        h, w = img.shape[:2]
        m = affine_matrix(rng, self.img_size, (w / 2, h / 2), self.scale, self.translate)
        return self._warp(img, boxes, cls, m)

    def _mosaic(self, index: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Four images around a random centre of a 2S canvas, then the random affine down to S; only the
        window of the canvas that the affine reads is built."""
        s = self.img_size
        others = rng.integers(0, len(self), size=3)
        xc, yc = (int(v) for v in rng.uniform(s / 2, 3 * s / 2, size=2))
        tiles = [self.load_resized(int(j)) for j in (index, *others)]
        m = affine_matrix(rng, s, (s, s), self.scale, self.translate)
        if self._canvas is None:
            self._canvas = np.empty(4 * s * s * 3, np.uint8)
        window = source_window(m, s, 2 * s, 2 * s)
        canvas, boxes, cls = mosaic_canvas(tiles, s, (xc, yc), self._canvas, window)
        # the area a box keeps is judged against the part pasted into the mosaic (as Ultralytics does)
        return self._warp(canvas, boxes, cls, m, window[:2])

    def _warp(self, img, boxes, cls, m, origin=(0, 0)):
        s = self.img_size
        out = warp(img, m, s, origin)
        if len(boxes) == 0:
            return out, np.zeros((0, 4), np.float32), np.zeros((0,), np.int64)
        b, keep = clip_and_filter(transform_boxes(boxes, m), s, s)
        return out, b[keep], cls[keep]


def _scaled(boxes: np.ndarray, width: int, height: int, img_size: int) -> np.ndarray:
    """Boxes of a width x height image on the image resized by load_resized_bgr (once, not per sample)."""
    nw, nh = long_side_size(width, height, img_size)
    if (nw, nh) == (width, height):
        return boxes
    return boxes * np.array([nw / width, nh / height, nw / width, nh / height], np.float32)


def train_collate(batch: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """-> images uint8 (B, 3, S, S), targets float32 (M, 6) [batch_index, cls, x1, y1, x2, y2]."""
    images = torch.stack([b[0] for b in batch])
    targets = [torch.cat([torch.full((len(t), 1), float(i)), t], 1) for i, (_, t) in enumerate(batch)]
    return images, torch.cat(targets) if targets else torch.zeros((0, 6))


def build_loader(dataset: TrainDataset, batch_size: int, workers: int, seed: int = 0, rank: int = 0,
                 world_size: int = 1, pin_memory: bool = False) -> DataLoader:
    """The training DataLoader (the trainer and the benchmarks): `batch_size` samples per process, shuffled by
    a DistributedSampler (order = f(seed, epoch), this process's share of it), seeded workers. At the start of
    each epoch call `loader.sampler.set_epoch(e)` and `dataset.set_epoch(e)`."""
    sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed, drop_last=False)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers, collate_fn=train_collate,
                      pin_memory=pin_memory, drop_last=len(dataset) > batch_size, persistent_workers=workers > 0,
                      worker_init_fn=seed_worker)
