"""Reference-repository (bubbliiiing/yolov4-tiny-pytorch) state dicts: key mapping for phi 0-4.

The reference state dict is built here from the documented names and shapes of that repository's
modules, independently of our model, with random values; loading must put every value at the
matching place of ours, with no key left over on either side.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nets import load_model
from nets.weights.checkpoint import CheckpointError
from nets.weights.loader import load_pretrained
from nets.weights.reference import to_project_keys, to_reference_keys
from nets.yolo import YoloBody

ROOT = Path(__file__).resolve().parent.parent
BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def reference_shapes(num_classes: int, phi: int) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the reference YoloBody(anchors_mask, num_classes, phi)."""
    shapes: dict[str, tuple[int, ...]] = {}

    def basic(name: str, cin: int, cout: int, k: int) -> None:  # BasicConv: conv (no bias) + bn
        shapes[f"{name}.conv.weight"] = (cout, cin, k, k)
        for p in BN:
            shapes[f"{name}.bn.{p}"] = () if p == "num_batches_tracked" else (cout,)

    basic("backbone.conv1", 3, 32, 3)
    basic("backbone.conv2", 32, 64, 3)
    for i, c in enumerate((64, 128, 256), 1):  # Resblock_body(in=c, out=c)
        basic(f"backbone.resblock_body{i}.conv1", c, c, 3)
        basic(f"backbone.resblock_body{i}.conv2", c // 2, c // 2, 3)
        basic(f"backbone.resblock_body{i}.conv3", c // 2, c // 2, 3)
        basic(f"backbone.resblock_body{i}.conv4", c, c, 1)
    basic("backbone.conv3", 512, 512, 3)
    out = 3 * (5 + num_classes)
    basic("conv_for_P5", 512, 256, 1)
    basic("yolo_headP5.0", 256, 512, 3)
    shapes["yolo_headP5.1.weight"], shapes["yolo_headP5.1.bias"] = (out, 512, 1, 1), (out,)
    basic("upsample.upsample.0", 256, 128, 1)  # Upsample: self.upsample = Sequential(BasicConv, nn.Upsample)
    basic("yolo_headP4.0", 384, 256, 3)
    shapes["yolo_headP4.1.weight"], shapes["yolo_headP4.1.bias"] = (out, 256, 1, 1), (out,)
    for site, c in (("feat1_att", 256), ("feat2_att", 512), ("upsample_att", 128)):
        if phi == 1:  # se_block(c, ratio=16): fc = Sequential(Linear, ReLU, Linear, Sigmoid), no biases
            shapes[f"{site}.fc.0.weight"] = (c // 16, c)
            shapes[f"{site}.fc.2.weight"] = (c, c // 16)
        elif phi == 2:  # cbam_block(c, ratio=8, kernel_size=7)
            shapes[f"{site}.channelattention.fc1.weight"] = (c // 8, c, 1, 1)
            shapes[f"{site}.channelattention.fc2.weight"] = (c, c // 8, 1, 1)
            shapes[f"{site}.spatialattention.conv1.weight"] = (1, 2, 7, 7)
        elif phi == 3:  # eca_block: Conv1d(1, 1, k), k = 5 for 128, 256 and 512 channels
            shapes[f"{site}.conv.weight"] = (1, 1, 5)
        elif phi == 4:  # CA_Block(c, reduction=16)
            shapes[f"{site}.conv_1x1.weight"] = (c // 16, c, 1, 1)
            for p in BN:
                shapes[f"{site}.bn.{p}"] = () if p == "num_batches_tracked" else (c // 16,)
            shapes[f"{site}.F_h.weight"] = (c, c // 16, 1, 1)
            shapes[f"{site}.F_w.weight"] = (c, c // 16, 1, 1)
    return shapes


def reference_state(num_classes: int, phi: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    state = {}
    for k, shape in reference_shapes(num_classes, phi).items():
        if k.endswith("num_batches_tracked"):
            state[k] = torch.tensor(1000 + len(state))
        elif k.endswith("running_var"):
            state[k] = torch.rand(shape, generator=g) + 0.5
        else:
            state[k] = torch.randn(shape, generator=g) * 0.1
    return state


def ours(key: str) -> str:
    return key.replace("upsample.upsample.0.", "upsample.0.")


@pytest.mark.parametrize("phi,name", [(0, "none"), (1, "se"), (2, "cbam"), (3, "eca"), (4, "ca")])
def test_reference_keys_map_one_to_one(tmp_path, phi, name):
    ref = reference_state(20, phi, seed=phi)
    own_keys = set(YoloBody(20, phi).state_dict())
    assert {ours(k) for k in ref} == own_keys  # no key left over on either side
    path = tmp_path / "ref.pth"
    torch.save(ref, path)
    model = load_model(path)
    assert model.phi == name and model.num_classes == 20 and not model.training
    assert model.class_names[0] == "aeroplane"  # 20 classes: VOC names
    state = model.state_dict()
    for k, v in ref.items():
        assert torch.equal(state[ours(k)], v), k
    assert set(to_reference_keys(state)) == set(ref)


def test_dataparallel_prefix_and_wrapper(tmp_path):
    ref = reference_state(80, 3)
    path = tmp_path / "wrapped.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in ref.items()}, "epoch": 3}, path)
    model = load_model(path, num_classes=80, phi=3)
    assert model.class_names[0] == "person"
    assert torch.equal(model.upsample[0].conv.weight, ref["upsample.upsample.0.conv.weight"])


def test_reference_into_other_attention_and_classes(tmp_path):
    ref = reference_state(80, 1)  # SE, COCO
    path = tmp_path / "yolov4_tiny_weights_coco.pth"
    torch.save(ref, path)
    model = YoloBody(3, "eca")
    att_before = model.feat1_att.conv.weight.clone()
    lines: list[str] = []
    report = load_pretrained(model, path, log=lines.append)
    heads = {"yolo_headP5.1.weight", "yolo_headP5.1.bias", "yolo_headP4.1.weight", "yolo_headP4.1.bias"}
    assert set(report["reinitialised"]) == heads
    assert {k for k, *_ in report["skipped"]} == heads
    assert {k.split(".")[0] for k in report["fresh_attention"]} == {"feat1_att", "feat2_att", "upsample_att"}
    assert len(report["unexpected"]) == 6  # the SE weights have no place in an ECA model
    assert torch.equal(model.feat1_att.conv.weight, att_before)
    loaded = set(report["loaded"])
    for k, v in ref.items():
        if ours(k) in loaded:
            assert torch.equal(model.state_dict()[ours(k)], v)
    assert len(loaded) == len(ref) - 4 - 6
    text = "\n".join(lines)
    assert "yolov4_tiny_weights_coco.pth" in text and "the file has 80 classes, the model 3" in text
    assert "skipped yolo_headP5.1.weight: file [255, 512, 1, 1] vs model [24, 512, 1, 1]" in text
    assert "attention 'se', the model 'eca'" in text


def test_mismatches_are_errors_for_inference(tmp_path):
    path = tmp_path / "ref.pth"
    torch.save(reference_state(20, 2), path)
    with pytest.raises(CheckpointError, match=r"ref\.pth: trained for 20 classes, asked for 80"):
        load_model(path, num_classes=80)
    with pytest.raises(CheckpointError, match=r"ref\.pth: holds attention 'cbam', asked for 'eca'"):
        load_model(path, phi=3)
    broken = reference_state(20, 0)
    broken["backbone.conv3.conv.weight"] = torch.zeros(256, 512, 3, 3)
    torch.save(broken, tmp_path / "broken.pth")
    with pytest.raises(CheckpointError, match=r"broken\.pth: reference state dict.*do not fit"):
        load_model(tmp_path / "broken.pth")


def test_key_mapping_helpers():
    assert to_project_keys({"upsample.upsample.0.bn.weight": 1, "upsample_att.conv.weight": 2}) == {
        "upsample.0.bn.weight": 1, "upsample_att.conv.weight": 2}
    assert to_reference_keys({"upsample.0.bn.weight": 1, "upsample_att.conv.weight": 2}) == {
        "upsample.upsample.0.bn.weight": 1, "upsample_att.conv.weight": 2}


def test_cli_converts_to_project_checkpoint(tmp_path):
    ref = reference_state(20, 4)
    torch.save(ref, tmp_path / "yolov4_tiny_weights_voc.pth")
    r = subprocess.run([sys.executable, "-m", "nets.weights.convert", "--weights", str(tmp_path / "yolov4_tiny_weights_voc.pth"),
                        "--out", str(tmp_path / "m.pt")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    model = load_model(tmp_path / "m.pt")
    assert model.phi == "ca" and model.num_classes == 20
    assert torch.equal(model.feat2_att.F_h.weight, ref["feat2_att.F_h.weight"])
