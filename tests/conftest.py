"""Shared fixture: a tiny VOC-layout data set written to disk by the one test writer (tests/fixtures.py)."""
from __future__ import annotations

from pathlib import Path

import pytest
from fixtures import random_images, write_voc

TINY_CLASSES = ["square", "disc"]


@pytest.fixture(scope="session")
def tiny_voc(tmp_path_factory) -> Path:
    """VOCdevkit (8 train, 4 val 96x96 images, classes.txt) with one or two filled boxes of 2 classes each."""
    images = random_images(12, size=96, seed=1, num_classes=len(TINY_CLASSES))
    splits = {"train": [i.name for i in images[:8]], "val": [i.name for i in images[8:]]}
    return write_voc(tmp_path_factory.mktemp("tiny_voc"), images, TINY_CLASSES, splits)
