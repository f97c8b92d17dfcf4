"""Run planning (utils/engine/plan.py): hand-computed cases, and the trainer following its plan."""
from __future__ import annotations

import math

import pytest

from utils.engine import plan
from utils.engine.plan import close_mosaic_epochs, ema_tau, epochs_from_probe, epochs_that_fit, warmup_iters


def test_warmup_follows_the_planned_run():
    share = plan.WARMUP_MAX_SHARE
    assert warmup_iters(3.0, 50, 50 * 100) == 150  # a long run: 3 epochs of 50 batches
    assert warmup_iters(3.0, 50, 50 * 8) == min(150, int(share * 400))  # ~8 planned epochs: capped by the plan
    assert warmup_iters(0.1, 50, 50 * 100) == plan.WARMUP_MIN_ITERS  # at least 50 batches
    assert warmup_iters(3.0, 4, 4) == max(1, int(share * 4))  # a tiny run: never the whole run
    assert warmup_iters(0.0, 50, 5000) == 0


def test_epochs_from_the_probe_and_from_whole_epochs():
    # 0.5 s a batch, 50 batches: 25 s of training + 200 val images at 0.35 of 800 train images' cost: 2.1875 s
    assert plan.EVAL_COST == 0.35
    assert epochs_from_probe(0.5, 50, 800, 200, 1, budget_s=600, elapsed_s=10) == int(590 // 27.1875) == 21
    assert epochs_from_probe(0.5, 50, 800, 200, 4, budget_s=600, elapsed_s=10) == int(590 // (25 + 2.1875 / 4))
    assert epochs_from_probe(10.0, 50, 800, 200, 1, budget_s=60, elapsed_s=5) == 1  # never fewer than one
    assert epochs_that_fit(0, [30.0], budget_s=600, elapsed_s=30) == 20  # epoch 1 done, 19 more fit
    assert epochs_that_fit(2, [30.0, 50.0, 31.0], budget_s=600, elapsed_s=111) == 3 + int(489 // 31.0)  # median
    assert epochs_that_fit(4, [30.0] * 5, budget_s=60, elapsed_s=150) == 5  # over budget: stop after this one


@pytest.mark.parametrize("planned,closed", [(7, 2), (8, 2), (11, 3), (30, 8), (100, 10), (400, 10), (3, 1), (1, 1)])
def test_close_mosaic_is_capped_under_a_time_budget(planned, closed):
    """A budget that plans ~8 epochs must not switch mosaic off after the first (close_mosaic 10)."""
    assert close_mosaic_epochs(10, True, planned) == closed
    assert close_mosaic_epochs(10, False, planned) == 10  # an explicit epoch count keeps the literal setting
    assert close_mosaic_epochs(0, True, planned) == 0


def test_ema_window_at_the_end_is_the_asked_share_of_the_run():
    for steps, share in ((400, 0.1), (400, 0.3), (3000, 0.05)):
        tau = ema_tau(steps, share)
        decay = 0.9999 * (1 - math.exp(-steps / tau))
        assert 1 / (1 - decay) == pytest.approx(share * steps, rel=0.02)
    assert ema_tau(10**6) == 2000.0  # long runs keep YOLOv5's ramp
    assert ema_tau(5) == 5.0  # too short for a window: tau = the run


def test_time_budget_plans_warmup_and_ema_from_the_probe(tiny_voc, tmp_path, monkeypatch):
    """A budget shorter than this epoch on any machine (0.06 s; a fast CI machine runs it in 0.3 s, so a 1-second
    budget planned two): the probe after batch 2 plans one epoch, so warm-up and EMA ramp are sized for one epoch, not for
    the 1000-epoch placeholder (which would make the warm-up 3 epochs long)."""
    from test_train import make_cfg

    from utils.engine import trainer as trainer_mod
    monkeypatch.setattr(trainer_mod, "PROBE_STEPS", (0, 1))
    logs: list[str] = []
    # epochs=100 as in configs/default.yaml: under a budget it is not the plan (the main job's case)
    tr = trainer_mod.Trainer(make_cfg(tiny_voc, tmp_path, epochs=100, time=0.001, batch_size=2, warmup_epochs=3.0,
                                      name="probe"),
                             log=lambda *a: logs.append(" ".join(map(str, a))))
    tr.train()
    nb = tr.nb
    assert nb >= 2 and tr.epochs == 1
    assert tr.warmup_iters == warmup_iters(tr.cfg.warmup_epochs, nb, nb) < warmup_iters(tr.cfg.warmup_epochs, nb,
                                                                                          nb * 1000)
    assert tr.ema.tau == ema_tau(nb)
    assert any("time budget" in line and "~1 epochs" in line for line in logs), logs
