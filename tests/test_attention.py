"""Attention blocks against the papers' definitions, written out independently here."""

import pytest
import torch
import torch.nn.functional as F

from nets.attention import (
    ATTENTION,
    CBAM,
    ECA,
    PHI_NAMES,
    SCSE,
    SE,
    CoordAtt,
    build_attention,
    eca_kernel_size,
    resolve_attention,
)

torch.manual_seed(0)
NAMES = [n for n in ATTENTION if n != "none"]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("shape", [(2, 128, 8, 8), (1, 256, 5, 7)])
def test_block_keeps_shape_and_gates_in_unit_interval(name, shape):
    block = build_attention(name, shape[1]).eval()
    x = torch.randn(*shape) * 3
    y = block(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    for g in block.gates(x).values():
        assert g.min() >= 0 and g.max() <= 1


@pytest.mark.parametrize("name", NAMES)
def test_channel_gates_constant_over_hw_and_spatial_gates_constant_over_c(name):
    block = build_attention(name, 64).eval()
    x = torch.randn(2, 64, 6, 9)
    for kind, g in block.gates(x).items():
        full = g.expand_as(x)
        if kind == "channel":
            assert torch.equal(full, full[:, :, :1, :1].expand_as(x))
        elif kind == "spatial":
            assert torch.equal(full, full[:, :1].expand_as(x))
        else:  # coordinate attention: one gate per row (h) and per column (w), per channel
            assert kind in ("h", "w")
            assert g.shape == ((2, 64, 6, 1) if kind == "h" else (2, 64, 1, 9))


@pytest.mark.parametrize("channels,k", [(32, 3), (64, 3), (128, 5), (256, 5), (512, 5), (1024, 5)])
def test_eca_kernel_size(channels, k):
    # ECA-Net: k = |(log2 C + b) / gamma|_odd with b=1, gamma=2
    assert eca_kernel_size(channels) == k
    assert ECA(channels).conv.kernel_size == (k,)


def test_se_matches_definition():
    blk = SE(64).eval()
    x = torch.randn(2, 64, 5, 5)
    z = x.mean(dim=(2, 3))
    w1, w2 = blk.fc[0].weight, blk.fc[2].weight
    assert w1.shape == (4, 64)  # r = 16
    s = torch.sigmoid(F.relu(z @ w1.T) @ w2.T)
    torch.testing.assert_close(blk(x), x * s[:, :, None, None])


def test_cbam_matches_definition():
    blk = CBAM(64).eval()
    x = torch.randn(2, 64, 7, 6)
    w1 = blk.channelattention.fc1.weight[:, :, 0, 0]
    w2 = blk.channelattention.fc2.weight[:, :, 0, 0]
    assert w1.shape == (8, 64)  # r = 8

    def mlp(v):
        return F.relu(v @ w1.T) @ w2.T

    # shared MLP applied to each pooled descriptor separately, outputs summed, then sigmoid
    mc = torch.sigmoid(mlp(x.mean(dim=(2, 3))) + mlp(x.amax(dim=(2, 3))))[:, :, None, None]
    xc = x * mc
    pooled = torch.cat([xc.mean(1, keepdim=True), xc.amax(1, keepdim=True)], 1)
    ms = torch.sigmoid(F.conv2d(pooled, blk.spatialattention.conv1.weight, padding=3))
    assert blk.spatialattention.conv1.kernel_size == (7, 7)
    # the spatial gate multiplies the (channel-refined) input, not the conv output
    torch.testing.assert_close(blk(x), xc * ms)


def test_eca_matches_definition():
    blk = ECA(128).eval()
    x = torch.randn(2, 128, 4, 4)
    z = x.mean(dim=(2, 3))
    w = blk.conv.weight[0, 0]  # k = 5
    zp = F.pad(z, (2, 2))
    y = torch.stack([(zp[:, i:i + 5] * w).sum(1) for i in range(128)], dim=1)
    torch.testing.assert_close(blk(x), x * torch.sigmoid(y)[:, :, None, None])


def test_coordinate_attention_matches_definition():
    blk = CoordAtt(64).eval()
    with torch.no_grad():  # non-trivial BN statistics
        blk.bn.running_mean.uniform_(-0.5, 0.5)
        blk.bn.running_var.uniform_(0.5, 2.0)
    x = torch.randn(2, 64, 6, 9)
    zh = x.mean(dim=3)  # (B, C, H): pool along W
    zw = x.mean(dim=2)  # (B, C, W): pool along H
    f = torch.cat([zh, zw], dim=2)  # (B, C, H+W)
    w1 = blk.conv_1x1.weight[:, :, 0, 0]
    bn = blk.bn
    f = torch.einsum("mc,bcl->bml", w1, f)
    f = (f - bn.running_mean[:, None]) / torch.sqrt(bn.running_var[:, None] + bn.eps) * bn.weight[:, None] + bn.bias[:, None]
    f = F.relu(f)
    gh = torch.sigmoid(torch.einsum("cm,bml->bcl", blk.F_h.weight[:, :, 0, 0], f[:, :, :6]))
    gw = torch.sigmoid(torch.einsum("cm,bml->bcl", blk.F_w.weight[:, :, 0, 0], f[:, :, 6:]))
    torch.testing.assert_close(blk(x), x * gh[:, :, :, None] * gw[:, :, None, :])


def test_scse_is_sum_of_cse_and_sse():
    blk = SCSE(64).eval()
    x = torch.randn(2, 64, 5, 5)
    z = x.mean(dim=(2, 3))
    c1, c2 = blk.cse.fc1, blk.cse.fc2
    assert c1.out_channels == 32  # r = 2 as in Roy et al.
    sc = torch.sigmoid(F.relu(z @ c1.weight[:, :, 0, 0].T + c1.bias) @ c2.weight[:, :, 0, 0].T + c2.bias)
    ss = torch.sigmoid(torch.einsum("c,bchw->bhw", blk.sse.conv.weight[0, :, 0, 0], x) + blk.sse.conv.bias)
    torch.testing.assert_close(blk(x), x * sc[:, :, None, None] + x * ss[:, None])


def test_registry_numbers_and_names():
    assert PHI_NAMES == ["none", "se", "cbam", "eca", "ca", "scse"]
    assert [resolve_attention(i) for i in range(6)] == PHI_NAMES
    assert resolve_attention("3") == "eca" and resolve_attention("CBAM") == "cbam"
    assert resolve_attention("cse") == "cse" and resolve_attention("sse") == "sse"
    assert build_attention(0, 64) is None
    with pytest.raises(ValueError, match="phi=9"):
        resolve_attention(9)
    with pytest.raises(ValueError, match="unknown attention 'foo'"):
        resolve_attention("foo")


def test_spatial_maps_are_recorded_for_blocks_that_have_them():
    x = torch.randn(1, 64, 6, 6)
    for name, expect in [("cbam", True), ("sse", True), ("scse", True), ("ca", True), ("se", False), ("eca", False)]:
        blk = build_attention(name, 64).eval()
        blk.keep_maps = True
        blk(x)
        assert (blk.last_maps is not None) == expect, name
        if expect:
            assert blk.last_maps.shape == (1, 1, 6, 6)
