"""The network: layout, shapes, exact parameter counts, FLOPs, and one training step."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nets.summary import count_flops, count_parameters
from nets.yolo import YoloBody

ROOT = Path(__file__).resolve().parent.parent

# Parameter counts of the reference layout (80 classes); a different count is a different network.
EXPECTED_PARAMS = {0: 6_056_606, 1: 6_099_614, 2: 6_142_916, 3: 6_056_621, 4: 6_121_230}


@pytest.mark.parametrize("phi,expected", EXPECTED_PARAMS.items())
def test_exact_parameter_counts(phi, expected):
    assert count_parameters(YoloBody(80, phi)) == expected


def test_flops_at_416():
    flops, per_module = count_flops(YoloBody(80, 0), 416)
    assert round(flops / 1e9, 2) == 6.91
    # analytic check of the first conv: 3x3x3 -> 32 at 208x208, 2 FLOPs per MAC
    assert per_module["backbone.conv1.conv"] == 2 * 3 * 3 * 3 * 32 * 208 * 208


@pytest.mark.parametrize("phi", [0, 1, 2, 3, 4, 5, "cse", "sse"])
@pytest.mark.parametrize("hw", [(64, 64), (96, 160)])
def test_output_shapes(phi, hw):
    model = YoloBody(3, phi).eval()
    out = model(torch.rand(2, 3, *hw))
    h, w = hw
    assert [tuple(o.shape) for o in out] == [(2, 24, h // 32, w // 32), (2, 24, h // 16, w // 16)]


@pytest.mark.parametrize("hw", [(100, 96), (64, 70)])
def test_size_not_multiple_of_32_is_a_clear_error(hw):
    with pytest.raises(ValueError, match="not a multiple of 32"):
        YoloBody(3).eval()(torch.rand(1, 3, *hw))


def test_backbone_follows_darknet_cfg():
    m = YoloBody(80, 0)
    # the 21 convolutions of yolov4-tiny.cfg, in cfg order (output channels)
    convs = [mod for mod in m.modules() if isinstance(mod, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [
        32, 64, 64, 32, 32, 64, 128, 64, 64, 128, 256, 128, 128, 256, 512, 256, 512, 255, 128, 256, 255]
    # the CSP split takes the second half of the channels (route groups=2 group_id=1)
    blk = m.backbone.resblock_body1
    x = torch.randn(1, 64, 16, 16)
    y = blk.conv1(x)
    torch.testing.assert_close(blk.conv2(y[:, 32:]), blk.conv2(y.chunk(2, 1)[1]))
    assert blk.conv2.conv.in_channels == 32


def test_attention_sites_are_configurable():
    full = YoloBody(80, "se")
    assert set(full.attention_blocks()) == {"feat1", "feat2", "upsample"}
    only = YoloBody(80, "se", attention_sites=["feat2"])
    assert set(only.attention_blocks()) == {"feat2"} and only.feat1_att is None
    assert count_parameters(full) - count_parameters(only) == 2 * 256 * 16 + 2 * 128 * 8
    assert YoloBody(80, 0).attention_blocks() == {}
    with pytest.raises(ValueError, match="unknown attention site"):
        YoloBody(80, "se", attention_sites=["neck"])


@pytest.mark.parametrize("batch", [1, 4])
@pytest.mark.parametrize("phi", [0, 2, 4, 5])
def test_one_training_step_on_cpu(phi, batch):
    torch.manual_seed(0)
    model = YoloBody(2, phi).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.rand(batch, 3, 64, 64)
    before = [p.detach().clone() for p in model.parameters()]
    out = model(x)
    loss = sum((o ** 2).mean() for o in out)
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    opt.step()
    changed = sum(not torch.equal(b, p) for b, p in zip(before, model.parameters()))
    assert changed == len(before)


def test_summary_cli_prints_counts():
    r = subprocess.run([sys.executable, "-m", "nets.summary", "--phi", "3"], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert "6,056,621" in r.stdout and "6.91" in r.stdout and "ECA" in r.stdout
    r = subprocess.run([sys.executable, "-m", "nets.summary", "--phi", "7"], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode != 0 and "phi=7" in r.stderr
