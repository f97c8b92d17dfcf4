"""Darknet cfg/weights: layout, round trip, OpenCV DNN as the independent reader, partial files, CLI."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from nets import load_model
from nets.assets import read_anchors, read_classes
from nets.decode import decode_outputs
from nets.weights.darknet import export_darknet, read_weights, write_weights
from nets.weights.darknet_cfg import BUILTIN_CFG, DarknetError, cfg_info, make_cfg
from nets.weights.loader import load_pretrained
from nets.yolo import YoloBody

ROOT = Path(__file__).resolve().parent.parent
# Sizes of the files Darknet publishes (AlexeyAB/darknet releases), header included.
YOLOV4_TINY_WEIGHTS_BYTES = 24_251_276
YOLOV4_TINY_CONV29_BYTES = 19_789_716


def random_model(num_classes: int, phi: int | str = 0, seed: int = 0) -> YoloBody:
    """A model whose every tensor (BN statistics too) is random, so a misplaced value shows."""
    torch.manual_seed(seed)
    m = YoloBody(num_classes, phi)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.Conv2d):  # variance-preserving, so deep layers still carry signal
                torch.nn.init.kaiming_normal_(mod.weight, a=0.1, nonlinearity="leaky_relu")
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.2, 0.2)
                mod.running_mean.uniform_(-0.2, 0.2)
                mod.running_var.uniform_(0.5, 2.0)
        for head in m.heads:
            head.bias.uniform_(-1, 1)
    return m.eval()


def rgb_image(size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def to_tensor(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255.0


def test_builtin_cfg_is_the_generated_layout():
    assert BUILTIN_CFG.read_text() == make_cfg(80)
    info = cfg_info(BUILTIN_CFG)
    assert info.num_classes == 80 and info.img_size == 416 and info.scale_x_y == pytest.approx(1.05)
    assert info.masks == [[3, 4, 5], [1, 2, 3]]
    np.testing.assert_array_equal(info.anchors, read_anchors())


def test_file_sizes_match_the_published_darknet_files(tmp_path):
    m = YoloBody(80, 0)
    write_weights(m, tmp_path / "full.weights")
    assert write_weights(m, tmp_path / "bb.conv.29", cutoff=29) == 17  # 15 backbone convs + layers 27, 28
    assert (tmp_path / "full.weights").stat().st_size == YOLOV4_TINY_WEIGHTS_BYTES
    assert (tmp_path / "bb.conv.29").stat().st_size == YOLOV4_TINY_CONV29_BYTES


def test_round_trip_identical_tensors(tmp_path):
    m = random_model(7)
    path = tmp_path / "m.weights"
    write_weights(m, path, seen=123456789012)
    dw = read_weights(path)
    assert dw.version == (0, 2, 5) and dw.seen == 123456789012 and dw.num_classes == 7 and not dw.partial
    own = m.state_dict()
    assert len(dw.state_dict) == 21 * 5 - 2 * 3  # 19 BN convs x 5 tensors + 2 heads x 2
    for key, value in dw.state_dict.items():
        assert torch.equal(value, own[key]), key
    again = tmp_path / "again.weights"
    write_weights(load_model(path), again, seen=123456789012)
    assert again.read_bytes() == path.read_bytes()
    x = to_tensor(rgb_image(64))
    with torch.no_grad():
        for a, b in zip(m(x), load_model(path)(x)):
            assert torch.equal(a, b)


def test_old_header_with_int32_seen(tmp_path):
    m = random_model(2)
    path = tmp_path / "new.weights"
    write_weights(m, path, seen=42)
    raw = path.read_bytes()
    old = tmp_path / "old.weights"
    old.write_bytes(np.array([0, 1, 0, 42], "<i4").tobytes() + raw[20:])  # version 0.1: int32 seen
    dw = read_weights(old)
    assert dw.version == (0, 1, 0) and dw.seen == 42
    assert torch.equal(dw.state_dict["yolo_headP4.1.weight"], m.state_dict()["yolo_headP4.1.weight"])


@pytest.mark.parametrize("num_classes,size", [(3, 128), (80, 160)])
def test_opencv_dnn_reads_our_cfg_and_weights(tmp_path, num_classes, size):
    """OpenCV's Darknet importer is an independent reader of the layout: same raw head maps."""
    m = random_model(num_classes, seed=num_classes)
    m.img_size = size
    cfg = export_darknet(m, tmp_path / "m.weights")
    net = cv2.dnn.readNetFromDarknet(str(cfg), str(tmp_path / "m.weights"))
    rgb = rgb_image(size, seed=1)
    blob = cv2.dnn.blobFromImage(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), 1 / 255.0, (size, size), swapRB=True)
    net.setInput(blob)
    theirs = net.forward(["conv_29", "conv_36"])  # the linear convs before the two [yolo] layers
    with torch.no_grad():
        ours = [o.numpy() for o in m(to_tensor(rgb))]
    for o, t, stride in zip(ours, theirs, (32, 16)):
        assert o.shape == t.shape == (1, 3 * (5 + num_classes), size // stride, size // stride)
        assert o.std(axis=(2, 3)).mean() > 0.1  # the maps vary across the image: a real signal
        diff = float(np.abs(o - t).max())
        print(f"OpenCV DNN vs ours, {num_classes} classes, stride {stride}: max abs diff {diff:.2e}")
        assert diff < 1e-3


@pytest.mark.parametrize("scale_x_y", [1.0, 1.05])
def test_opencv_dnn_yolo_layers_decode_like_ours(tmp_path, scale_x_y):
    """OpenCV's [yolo] layer (its own implementation of Darknet's decoding, scale_x_y included) gives
    the boxes and scores that nets/decode.py gives."""
    size, num_classes = 128, 3
    m = random_model(num_classes, seed=3)
    m.img_size, m.scale_x_y = size, scale_x_y
    cfg = export_darknet(m, tmp_path / "m.weights")
    assert cfg_info(cfg).scale_x_y == pytest.approx(scale_x_y)
    net = cv2.dnn.readNetFromDarknet(str(cfg), str(tmp_path / "m.weights"))
    rgb = rgb_image(size, seed=1)
    net.setInput(cv2.dnn.blobFromImage(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), 1 / 255.0, (size, size), swapRB=True))
    theirs = []
    for out, stride in zip(net.forward(["yolo_30", "yolo_37"]), (32, 16)):  # rows: cell row, column, anchor
        g = size // stride
        theirs.append(torch.from_numpy(out).view(g, g, 3, 5 + num_classes).permute(2, 0, 1, 3).reshape(-1, 5 + num_classes))
    theirs = torch.cat(theirs)
    with torch.no_grad():
        raw = m(to_tensor(rgb))
    for s, should_match in [(scale_x_y, True), (1.0 if scale_x_y != 1.0 else 1.05, False)]:
        pred = decode_outputs(raw, m.anchors, m.masks, m.strides, s)[0]
        ours = torch.cat([(pred[:, :2] + pred[:, 2:4]) / 2 / size, (pred[:, 2:4] - pred[:, :2]) / size], 1)
        diff = float(((ours - theirs[:, :4]).abs() / theirs[:, :4].abs().clamp(min=1)).max())
        print(f"cfg scale_x_y {scale_x_y}, decoded with {s}: max |ours - OpenCV| {diff:.2e} (normalised xywh, relative above 1)")
        assert (diff < 5e-4) == should_match  # 1.0 vs 1.05 differs by ~5e-3 here
    torch.testing.assert_close(pred[:, 4], theirs[:, 4], atol=1e-4, rtol=0)
    scores = pred[:, 4:5] * pred[:, 5:]
    shown = theirs[:, 5:] > 0  # OpenCV zeroes class scores under its threshold
    assert shown.any()
    torch.testing.assert_close(scores[shown], theirs[:, 5:][shown], atol=1e-4, rtol=0)


def test_conv29_backbone_into_attention_model_with_other_classes(tmp_path):
    src = random_model(80)
    path = tmp_path / "yolov4-tiny.conv.29"
    write_weights(src, path, cutoff=29)
    dw = read_weights(path)
    assert dw.partial and dw.num_classes is None and len(dw.convs) == 17
    assert [c.index for c in dw.convs][-3:] == [26, 27, 28]

    model = YoloBody(5, "eca")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    lines: list[str] = []
    report = load_pretrained(model, path, log=lines.append)
    after = model.state_dict()
    expected = set(dw.state_dict)
    assert set(report["loaded"]) == expected
    for k in after:
        if k in expected:
            assert torch.equal(after[k], src.state_dict()[k]), k
        else:
            assert torch.equal(after[k], before[k]), k
    assert all(k.startswith(("upsample.0", "yolo_headP4.0")) for k in report["missing"]
               if k not in report["reinitialised"] and k not in report["fresh_attention"])
    assert {k.split(".")[0] for k in report["fresh_attention"]} == {"feat1_att", "feat2_att", "upsample_att"}
    text = "\n".join(lines)
    assert "Darknet has no attention layers" in text and "no heads" in text

    with pytest.raises(Exception, match=r"conv\.29.*train\.py --weights"):
        load_model(path)


def test_full_weights_other_class_count_reinitialises_only_heads(tmp_path):
    src = random_model(80)
    path = tmp_path / "yolov4-tiny.weights"
    write_weights(src, path)
    model = YoloBody(20, 0)
    heads_before = [h.weight.clone() for h in model.heads]
    lines: list[str] = []
    report = load_pretrained(model, path, log=lines.append)
    assert sorted(k for k, *_ in report["skipped"]) == sorted(report["reinitialised"]) == sorted(
        ["yolo_headP5.1.weight", "yolo_headP5.1.bias", "yolo_headP4.1.weight", "yolo_headP4.1.bias"])
    assert report["fresh_attention"] == [] and report["file_num_classes"] == 80
    assert ("yolo_headP5.1.weight", (255, 512, 1, 1), (75, 512, 1, 1)) in report["skipped"]
    for h, b in zip(model.heads, heads_before):
        assert torch.equal(h.weight, b)
    assert torch.equal(model.yolo_headP4[0].conv.weight, src.yolo_headP4[0].conv.weight)
    text = "\n".join(lines)
    assert "the file has 80 classes, the model 20" in text and "[255, 512, 1, 1]" in text


def test_user_cfg_with_own_classes_and_masks(tmp_path):
    m = random_model(2)
    write_weights(m, tmp_path / "obj.weights")
    text = make_cfg(2, masks=[[3, 4, 5], [0, 1, 2]], img_size=320).replace("filters=21", "filters = 21")
    (tmp_path / "obj.cfg").write_text(text)
    loaded = load_model(tmp_path / "obj.weights", cfg=tmp_path / "obj.cfg")
    assert loaded.num_classes == 2 and loaded.masks == [[3, 4, 5], [0, 1, 2]] and loaded.img_size == 320
    # a cfg that is not yolov4-tiny is refused, naming the layer
    # a partial file with its cfg is still a backbone file: no heads, no inference
    write_weights(m, tmp_path / "obj.conv.29", cutoff=29)
    dw = read_weights(tmp_path / "obj.conv.29", cfg=tmp_path / "obj.cfg")
    assert dw.partial and dw.num_classes is None and len(dw.convs) == 17
    bad = text.replace("filters=512", "filters=1024", 1)
    (tmp_path / "bad.cfg").write_text(bad)
    with pytest.raises(DarknetError, match=r"bad\.cfg: layer 26 is \[convolutional\].*filters=1024"):
        read_weights(tmp_path / "obj.weights", cfg=tmp_path / "bad.cfg")


def test_bad_weights_files_are_named(tmp_path):
    m = YoloBody(1, 0)
    good = tmp_path / "x.weights"
    write_weights(m, good)
    cut = tmp_path / "truncated.weights"
    cut.write_bytes(good.read_bytes()[:-1000])
    with pytest.raises(DarknetError, match=r"truncated\.weights: holds .* no yolov4-tiny weights file.*"
                                           r"6062814 for 80 classes"):
        read_weights(cut)
    with pytest.raises(Exception, match=r"x\.weights: holds attention 'none', asked for 'eca'.*train\.py --weights"):
        load_model(good, phi=3)
    tiny = tmp_path / "tiny.weights"
    tiny.write_bytes(b"\x00" * 8)
    with pytest.raises(DarknetError, match="tiny.weights"):
        load_model(tiny)
    with pytest.raises(Exception, match=r"\.cfg: this is a Darknet cfg"):
        load_model(BUILTIN_CFG)


def test_cli_import_and_export(tmp_path):
    src = random_model(80)
    weights = tmp_path / "yolov4-tiny.weights"
    write_weights(src, weights, seen=64000)
    run = [sys.executable, "-m", "nets.weights.convert"]
    r = subprocess.run([*run, "--weights", str(weights), "--out", str(tmp_path / "m.pt"), "--classes", "80"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "scale_x_y=1.05" in r.stderr  # no cfg: the official cfg's decoding, and it says so
    model = load_model(tmp_path / "m.pt")
    assert model.class_names == read_classes(ROOT / "model_data" / "coco_classes.txt")
    assert model.scale_x_y == pytest.approx(1.05)
    x = to_tensor(rgb_image(64))
    with torch.no_grad():
        for a, b in zip(src(x), model(x)):
            assert torch.equal(a, b)
    r = subprocess.run([*run, "--weights", str(tmp_path / "m.pt"), "--out", str(tmp_path / "back.weights")],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "back.weights").read_bytes()[20:] == weights.read_bytes()[20:]
    back = cfg_info(tmp_path / "back.cfg")
    assert back.num_classes == 80 and back.scale_x_y == pytest.approx(1.05)
    r = subprocess.run([*run, "--weights", str(weights), "--out", str(tmp_path / "x.pt"), "--classes", "20"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "holds 80 classes" in r.stderr and "train.py --weights" in r.stderr


def test_attention_model_does_not_export(tmp_path):
    with pytest.raises(DarknetError, match="no Darknet layer"):
        export_darknet(YoloBody(3, "se"), tmp_path / "x.weights")
