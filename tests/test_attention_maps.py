"""Attention maps (utils/viz/attention_maps.py): one map per site for every variant, checked against the blocks'
own gates and against features computed by hand; predict.py --attention-maps draws channel-only models too."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from helpers import random_detector

from nets.attention import ATTENTION
from nets.yolo import ATTENTION_SITES
from utils.viz.attention_maps import attention_maps, overlay_panels

SPATIAL = {"cbam", "ca", "scse", "sse"}  # the blocks that weight positions, by the papers' definitions
H, W = 64, 96


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    return torch.rand(2, 3, H, W, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("phi", list(ATTENTION))
def test_every_variant_has_a_finite_map_per_site(phi, x):
    model = random_detector(phi, num_classes=2)
    with torch.no_grad():
        plain = model(x)
    raw, maps = attention_maps(model, x)
    assert list(maps) == list(ATTENTION_SITES)
    for site, sm in maps.items():
        assert sm.kind == ("gate" if phi in SPATIAL else "energy"), (phi, site)
        assert sm.drawn.shape == sm.energy.shape == (2, H, W)
        assert torch.isfinite(sm.drawn).all() and (sm.energy >= 0).all()
        if sm.gate is not None:
            assert ((sm.gate >= 0) & (sm.gate <= 1)).all()
        assert sm.block == phi
    # the capture only looks: same outputs, no hooks or keep_maps flags left behind
    for a, b in zip(raw, plain):
        torch.testing.assert_close(a, b)
    assert not model._forward_pre_hooks and not model.backbone._forward_hooks and not model.upsample._forward_hooks
    for block in model.attention_blocks().values():
        assert not block._forward_hooks and block.keep_maps is False and not hasattr(block, "last_maps")


def test_cbam_map_is_the_blocks_spatial_gate(x):
    model = random_detector("cbam", num_classes=2)
    inputs: dict[str, torch.Tensor] = {}
    handles = [b.register_forward_pre_hook(lambda m, a, s=s: inputs.__setitem__(s, a[0].detach()))
               for s, b in model.attention_blocks().items()]
    _, native = attention_maps(model, x, input_grid=False)
    _, full = attention_maps(model, x)
    for h in handles:
        h.remove()
    for site, block in model.attention_blocks().items():
        with torch.no_grad():
            gate = block.gates(inputs[site])["spatial"][:, 0]
        torch.testing.assert_close(native[site].gate, gate)
        # on the input grid: bilinear with pixel centres aligned, as OpenCV (and map_to_image) resize
        for i in range(x.shape[0]):
            ref = cv2.resize(gate[i].numpy(), (W, H), interpolation=cv2.INTER_LINEAR)
            np.testing.assert_allclose(full[site].gate[i].numpy(), ref, atol=1e-5)


def test_none_map_is_the_channel_mean_of_the_absolute_feature(x):
    model = random_detector("none", num_classes=2)
    assert model.attention_blocks() == {}
    _, maps = attention_maps(model, x, input_grid=False)
    with torch.no_grad():  # the network's forward, by hand, up to each site
        feat1, feat2 = model.backbone(x)
        up = model.upsample(model.conv_for_P5(feat2))
    for site, f in (("feat1", feat1), ("feat2", feat2), ("upsample", up)):
        assert maps[site].gate is None and maps[site].block == "none"
        torch.testing.assert_close(maps[site].energy, f.abs().mean(dim=1))
    assert maps["feat1"].energy.shape == (2, H // 16, W // 16) and maps["feat2"].energy.shape == (2, H // 32, W // 32)


def test_channel_only_map_is_the_energy_of_the_attended_feature(x):
    model = random_detector("se", num_classes=2)
    _, maps = attention_maps(model, x, input_grid=False)
    with torch.no_grad():
        feat1, feat2 = model.backbone(x)
        for site, f in (("feat1", feat1), ("feat2", feat2)):
            attended = f * model.attention_blocks()[site].gates(f)["channel"]
            torch.testing.assert_close(maps[site].energy, attended.abs().mean(dim=1))


def test_overlay_titles_say_what_is_drawn_and_its_range(x):
    from utils.infer.predictor import Predictor
    from utils.viz.attention_maps import detect_with_maps

    img = np.random.default_rng(0).integers(0, 255, (50, 90, 3), dtype=np.uint8)
    for phi, word in (("cbam", "gate"), ("eca", "|x|")):
        pred = Predictor(random_detector(phi, num_classes=2), img_size=64, conf_thres=0.5)
        det, info, maps = detect_with_maps(pred, img)
        assert det["boxes"].shape[1] == 4 and info.input_shape == (64, 64)  # 50 * 64/90 = 36 rows, padded to 64
        panels, titles = overlay_panels(img, info, maps)
        assert [p.shape for p in panels] == [img.shape] * 3
        assert [t.split()[:2] for t in titles] == [[s, word] for s in ATTENTION_SITES]
        lo, hi = (float(v) for v in titles[0].split()[2].split("-"))
        drawn = maps[ATTENTION_SITES[0]].drawn[0]  # the title's range is the map's, over the photo only
        assert float(drawn.min()) - 1e-3 <= lo < hi <= float(drawn.max()) + 1e-3, (titles[0], drawn.aminmax())
        # the detections equal those of the shared Predictor on the same image
        ref = pred([img])[0]
        torch.testing.assert_close(det["boxes"], ref["boxes"])


@pytest.mark.parametrize("phi", ["eca", "none"])
def test_predict_draws_channel_only_and_plain_models(phi, tmp_path):
    from utils.infer.predict_run import PredictOptions, Source, run_predict
    from utils.infer.predictor import Predictor

    img = np.random.default_rng(1).integers(0, 255, (80, 120, 3), dtype=np.uint8)
    path = tmp_path / "pic.jpg"
    cv2.imwrite(str(path), img)
    pred = Predictor(random_detector(phi, num_classes=2), img_size=64, conf_thres=0.5)
    logs: list[str] = []
    (tmp_path / "run").mkdir()
    opts = PredictOptions(save_img=False, attention_maps=True)
    run_predict(pred, [Source("image", str(path))], tmp_path / "run", opts, log=logs.append)
    assert not [m for m in logs if "warning" in m], logs
    out = cv2.imread(str(tmp_path / "run" / "attention" / "pic.jpg"))
    assert out is not None and out.shape == (80, 3 * 120 + 2 * 4, 3)  # one panel per site, 4 px apart


def test_capture_refuses_a_model_without_the_sites():
    from utils.viz.attention_maps import AttentionCapture

    with pytest.raises(ValueError, match="PyTorch YoloBody"):
        AttentionCapture(torch.nn.Conv2d(3, 3, 1))


def test_text_panel_and_grid_sizes():
    from utils.viz.draw import grid, text_panel

    rows = [np.zeros((40, 100, 3), np.uint8), text_panel("failed: a long reason " * 5, 40, 70)]
    g = grid(rows, ["cbam\nseed 0", "se"])
    assert g.shape[0] == 40 + 4 + 40 and g.shape[1] > 100 + 4
    assert (g[44:, -30:] == 255).all()  # the narrower row is padded white
