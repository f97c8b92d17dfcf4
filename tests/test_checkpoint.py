"""Project checkpoints: plain data only, atomic writes, clear errors for bad or hostile files."""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from nets import load_model
from nets.weights.checkpoint import (
    CheckpointError,
    checkpoint_dict,
    load_checkpoint,
    save_checkpoint,
    save_model_checkpoint,
)
from nets.weights.loader import load_pretrained
from nets.yolo import YoloBody


def make_checkpoint(path: Path, phi="eca", num_classes=3, ema_shift: float | None = 1.0) -> YoloBody:
    torch.manual_seed(0)
    model = YoloBody(num_classes, phi, anchors=np.arange(1, 13, dtype=np.float32).reshape(6, 2) * 7)
    model.class_names = ["cat", "dog", "bird"][:num_classes]
    model.img_size = 320
    state = model.state_dict()
    ema = {k: (v + ema_shift if v.is_floating_point() else v) for k, v in state.items()} if ema_shift else None
    save_checkpoint(path, checkpoint_dict(model, ema=ema, epoch=7,
                                          train={"optimizer": {"lr": 0.01, "steps": [1, 2]}, "best_map": 0.5}))
    return model


class Payload:
    """Pickles to a call of os.system: what a malicious checkpoint does."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_round_trip_plain_data(tmp_path):
    path = tmp_path / "w" / "last.pt"
    model = make_checkpoint(path)
    raw = torch.load(path, weights_only=True)  # opens without unpickling any code
    assert raw["model_cfg"] == {"phi": "eca", "num_classes": 3, "class_names": ["cat", "dog", "bird"],
                                "anchors": model.anchors.tolist(), "masks": [[3, 4, 5], [1, 2, 3]],
                                "img_size": 320, "attention_sites": ["feat1", "feat2", "upsample"],
                                "scale_x_y": 1.0}
    assert raw["epoch"] == 7 and raw["train"]["best_map"] == 0.5 and raw["version"] == 1
    assert set(raw) == {"version", "model", "ema", "model_cfg", "epoch", "train"}  # `source` only when given
    loaded = load_model(path)
    assert not loaded.training and loaded.class_names == ["cat", "dog", "bird"] and loaded.img_size == 320
    assert torch.equal(loaded.anchors, model.anchors)
    w = model.backbone.conv1.conv.weight
    assert torch.equal(loaded.backbone.conv1.conv.weight, w + 1)  # EMA weights preferred
    assert torch.equal(load_model(path, use_ema=False).backbone.conv1.conv.weight, w)
    assert list(tmp_path.joinpath("w").iterdir()) == [path]  # no temp file left behind


def test_checkpoint_from_before_masks_and_scale_x_y_loads(tmp_path):
    """A version-1 file written before model_cfg had masks and scale_x_y, built by hand as the old trainer did."""
    torch.manual_seed(0)
    model = YoloBody(2, "se", anchors=np.arange(1, 13, dtype=np.float32).reshape(6, 2) * 5)
    legacy_cfg = {"phi": "se", "num_classes": 2, "class_names": ["a", "b"], "anchors": model.anchors.tolist(),
                  "img_size": 256, "attention_sites": ["feat1", "feat2", "upsample"]}
    torch.save({"version": 1, "model": model.state_dict(), "ema": None, "model_cfg": legacy_cfg, "train": None,
                "epoch": 4}, tmp_path / "old.pt")
    loaded = load_model(tmp_path / "old.pt")
    assert loaded.masks == [[3, 4, 5], [1, 2, 3]] and loaded.scale_x_y == 1.0 and loaded.img_size == 256
    assert loaded.class_names == ["a", "b"] and torch.equal(loaded.anchors, model.anchors)
    x = torch.rand(1, 3, 64, 64)
    for a, b in zip(loaded(x), model.eval()(x)):
        torch.testing.assert_close(a, b)


def test_scale_x_y_travels_with_the_checkpoint(tmp_path):
    path = tmp_path / "m.pt"
    model = make_checkpoint(path)
    model.scale_x_y = 1.05
    save_model_checkpoint(model, path)
    assert load_model(path).scale_x_y == pytest.approx(1.05)
    raw = torch.load(path, weights_only=True)
    del raw["model_cfg"]["scale_x_y"]  # a checkpoint written before the key existed
    save_checkpoint(path, raw)
    assert load_model(path).scale_x_y == 1.0
    # fine-tuning a model that decodes otherwise: the log says how to keep the file's decoding
    raw["model_cfg"]["scale_x_y"] = 1.05
    save_checkpoint(path, raw)
    lines = []
    load_pretrained(YoloBody(3, "eca"), path, log=lines.append)
    assert any("scale_x_y 1.05" in s and "--scale-x-y 1.05" in s for s in lines), lines


def test_converter_checkpoint_loads_and_pretrains(tmp_path):
    model = YoloBody(2, 0)
    save_model_checkpoint(model, tmp_path / "m.pt", source="test")
    assert load_checkpoint(tmp_path / "m.pt")["source"] == "test"
    target = YoloBody(2, "se")
    lines: list[str] = []
    report = load_pretrained(target, tmp_path / "m.pt", log=lines.append)
    assert report["kind"] == "checkpoint" and not report["skipped"] and not report["reinitialised"]
    assert {k.split(".")[0] for k in report["fresh_attention"]} == {"feat1_att", "feat2_att", "upsample_att"}
    assert any("start fresh" in ln for ln in lines)


@pytest.mark.parametrize("keep", [0.5, 0.98])
def test_truncated_file_is_rejected_with_its_name(tmp_path, keep):
    good = tmp_path / "good.pt"
    make_checkpoint(good)
    data = good.read_bytes()
    bad = tmp_path / "cut.pt"
    bad.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(CheckpointError, match=r"cut\.pt: not a readable PyTorch checkpoint, truncated or corrupt"):
        load_model(bad)
    with pytest.raises(CheckpointError, match=r"cut\.pt"):
        load_pretrained(YoloBody(3, 0), bad)


def test_empty_and_missing_and_garbage(tmp_path):
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"empty\.pt: empty file"):
        load_model(tmp_path / "empty.pt")
    with pytest.raises(CheckpointError, match=r"not found: .*nothing\.pt"):
        load_model(tmp_path / "nothing.pt")
    (tmp_path / "notes.pt").write_text("these are my notes, not weights\n")
    with pytest.raises(CheckpointError, match=r"notes\.pt: not a readable PyTorch checkpoint.*b'these are my not'"):
        load_model(tmp_path / "notes.pt")


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("fmt", ["torch.save", "raw pickle"])
def test_malicious_pickle_is_refused_without_running(tmp_path, fmt):
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.pt"
    obj = {"model": Payload(marker), "model_cfg": {"num_classes": 1}}
    if fmt == "torch.save":
        torch.save(obj, path)
    else:
        path.write_bytes(pickle.dumps(obj))
    for load in (load_checkpoint, load_model, lambda p: load_pretrained(YoloBody(1, 0), p)):
        with pytest.raises(CheckpointError, match=r"evil\.pt: refused to load: .*pickled Python objects"):
            load(path)
    assert not marker.exists()
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert "weights_only` set to `False`" not in str(info.value)  # no advice to switch the guard off


def test_wrong_architecture_is_named(tmp_path):
    path = tmp_path / "other.pt"
    make_checkpoint(path, phi="se", num_classes=3, ema_shift=None)
    obj = torch.load(path, weights_only=True)
    obj["model_cfg"]["phi"] = "cbam"  # cfg says CBAM, weights are SE
    torch.save(obj, path)
    with pytest.raises(CheckpointError, match=r"other\.pt: project checkpoint, phi cbam.*do not fit"):
        load_model(path)
    torch.save({"fc.weight": torch.zeros(10, 512), "fc.bias": torch.zeros(10)}, tmp_path / "resnet.pth")
    with pytest.raises(CheckpointError, match=r"resnet\.pth: holds a state dict of 2 tensors"):
        load_model(tmp_path / "resnet.pth")
    with pytest.raises(CheckpointError, match=r"resnet\.pth: .*none of its 2 tensors fit"):
        load_pretrained(YoloBody(3, 0), tmp_path / "resnet.pth")
    torch.save({"epoch": 3, "notes": "x"}, tmp_path / "dict.pt")
    with pytest.raises(CheckpointError, match=r"dict\.pt: holds a dict with keys \['epoch', 'notes'\]"):
        load_model(tmp_path / "dict.pt")
    make_checkpoint(tmp_path / "three.pt", phi=0)
    with pytest.raises(CheckpointError, match=r"three\.pt: trained for 3 classes, asked for 80"):
        load_model(tmp_path / "three.pt", num_classes=80)


def test_failed_save_keeps_the_old_file(tmp_path):
    path = tmp_path / "last.pt"
    make_checkpoint(path)
    before = path.read_bytes()
    with pytest.raises(Exception):
        save_checkpoint(path, {"model": lambda: None})  # cannot be pickled: the write fails midway
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]
