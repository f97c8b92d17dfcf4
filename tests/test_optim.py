"""Optimizer set-up, lr scaling and schedule, warm-up and the EMA of weights, against numbers worked out by hand."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from utils.engine.optim import build_optimizer, lr_factor, scaled_lr, set_learning_rates
from utils.engine.torch_utils import ModelEMA


def tiny_model() -> nn.Sequential:
    """conv (no bias) -> BN -> conv (bias): two decayed weights, one norm weight, two biases."""
    return nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.Conv2d(4, 2, 1))


def test_lr_scaling_rules():
    assert scaled_lr(0.01, 32, 16, "sgd") == pytest.approx(0.02)  # linear: twice the batch, twice the lr
    assert scaled_lr(0.01, 8, 16, "sgd") == pytest.approx(0.005)
    assert scaled_lr(0.001, 64, 16, "adam") == pytest.approx(0.002)  # square root: 4x the batch, 2x the lr
    assert scaled_lr(0.001, 4, 16, "adamw") == pytest.approx(0.0005)
    assert scaled_lr(0.003, 16, 16, "adamw") == 0.003


def test_schedules_by_hand():
    lrf = 0.01
    assert lr_factor(0, 10, "cosine", lrf) == 1.0
    assert lr_factor(5, 10, "cosine", lrf) == pytest.approx(0.505)  # lrf + (1 - lrf) * (1 + cos(pi / 2)) / 2
    assert lr_factor(2.5, 10, "cosine", lrf) == pytest.approx(0.01 + 0.99 * 0.5 * (1 + math.sqrt(0.5)))
    assert lr_factor(10, 10, "cosine", lrf) == pytest.approx(lrf)
    assert lr_factor(2.5, 10, "linear", lrf) == pytest.approx(1 - 0.99 * 0.25)
    assert [lr_factor(e, 10, "step", 0.05) for e in (6.9, 7, 8.9, 9)] == pytest.approx([1, 0.1, 0.1, 0.05])
    with pytest.raises(ValueError, match="unknown scheduler"):
        lr_factor(0, 10, "exp", lrf)


def test_parameter_groups_decay_only_conv_weights():
    m = tiny_model()
    m[0].weight.requires_grad_(False)  # frozen: in no group
    opt = build_optimizer(m, "sgd", lr=0.1, momentum=0.9, weight_decay=0.01)
    groups = {g["name"]: g for g in opt.param_groups}
    ids = {name: {id(p) for p in g["params"]} for name, g in groups.items()}
    assert ids == {"weights": {id(m[2].weight)}, "norm": {id(m[1].weight)}, "bias": {id(m[1].bias), id(m[2].bias)}}
    assert [groups[n]["weight_decay"] for n in ("weights", "norm", "bias")] == [0.01, 0.0, 0.0]
    assert isinstance(opt, torch.optim.SGD) and opt.defaults["nesterov"] and opt.defaults["momentum"] == 0.9
    # one SGD step with zero gradients moves only the decayed weights: nesterov with a fresh buffer steps by
    # lr * wd * p * (1 + momentum)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    for p in m.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    torch.testing.assert_close(m[2].weight, before["2.weight"] * (1 - 0.1 * 0.01 * 1.9))
    for k in ("0.weight", "1.weight", "1.bias", "2.bias"):
        assert torch.equal(m.state_dict()[k], before[k]), k
    adam = build_optimizer(tiny_model(), "adam", 0.001, 0.937, 5e-4)
    adamw = build_optimizer(tiny_model(), "adamw", 0.001, 0.937, 5e-4)
    assert type(adam) is torch.optim.Adam and type(adamw) is torch.optim.AdamW
    assert adam.defaults["betas"] == (0.937, 0.999) and adamw.param_groups[0]["weight_decay"] == 5e-4
    with pytest.raises(ValueError, match="unknown optimizer"):
        build_optimizer(tiny_model(), "lion", 0.001, 0.9, 0.0)


def test_warmup_values_at_known_iterations():
    """base lr 0.01, 100 warm-up iterations, biases from 0.1, momentum from 0.8 to 0.937."""
    opt = build_optimizer(tiny_model(), "sgd", lr=0.01, momentum=0.937, weight_decay=5e-4)

    def at(it: int, factor: float = 1.0) -> dict:
        set_learning_rates(opt, 0.01, factor, it, 100, 0.1, 0.937)
        return {g["name"]: (g["lr"], g["momentum"]) for g in opt.param_groups}

    start = at(0)
    assert start["weights"] == start["norm"] == (0.0, 0.8) and start["bias"] == (0.1, 0.8)
    quarter = at(25)  # w = 0.25
    assert quarter["weights"] == pytest.approx((0.0025, 0.83425))
    assert quarter["bias"] == pytest.approx((0.1 - 0.09 * 0.25, 0.83425))
    done = at(150, factor=0.5)  # after warm-up: the schedule alone, every group alike
    assert [lr for lr, _ in done.values()] == [0.005] * 3
    assert [m for _, m in done.values()] == [0.937] * 3  # exactly the configured momentum, not 0.8 + 0.137 * 99/100
    adam = build_optimizer(tiny_model(), "adam", lr=0.001, momentum=0.937, weight_decay=0.0)
    set_learning_rates(adam, 0.001, 1.0, 50, 100, 0.0, 0.937)  # Adam: bias starts at 0 too, beta1 warms up
    assert [g["lr"] for g in adam.param_groups] == pytest.approx([0.0005] * 3)
    assert adam.param_groups[2]["betas"] == pytest.approx((0.8685, 0.999))


def test_model_ema_is_the_exponential_average_by_hand():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    w0 = model[0].weight.detach().clone()
    ema = ModelEMA(model, decay=0.9, tau=2.0)
    assert ema.ema is not model and not any(p.requires_grad for p in ema.ema.parameters())
    expected = w0.clone()
    for k, value in enumerate((1.0, -2.0, 3.0), start=1):
        with torch.no_grad():
            model[0].weight.fill_(value)
            model[1].running_mean.fill_(value)
        model[1].num_batches_tracked.fill_(10 * k)
        ema.update(model)
        d = 0.9 * (1 - math.exp(-k / 2.0))  # the decay warms up with the update count
        expected = d * expected + (1 - d) * value
        assert ema.current_decay() == pytest.approx(d)
    assert ema.updates == 3
    torch.testing.assert_close(ema.ema[0].weight, expected)
    # float buffers (BN statistics) are averaged like weights; integer ones are copied
    mean = 0.0  # BatchNorm's initial running_mean
    for k, value in enumerate((1.0, -2.0, 3.0), start=1):
        d = 0.9 * (1 - math.exp(-k / 2.0))
        mean = d * mean + (1 - d) * value
    torch.testing.assert_close(ema.ema[1].running_mean, torch.full((2,), mean))
    assert int(ema.ema[1].num_batches_tracked) == 30
