"""Planning a run: how many epochs fit a --time budget, and the schedule lengths that follow the plan.

A time budget does not know the epoch count until it has timed some steps. The trainer probes the
first steps of epoch 1 (`PROBE_STEPS`), plans the run from them, and re-plans after every epoch from
the median epoch time. Warm-up length and the EMA ramp are set from the planned run, so a run of a
few hundred steps gets a warm-up and an average sized for it rather than for a 1000-epoch placeholder.
"""
from __future__ import annotations

import math

PROBE_STEPS = (2, 8)  # time batches 3..8 of the first epoch (the first ones pay for start-up)
EVAL_COST = 0.35  # an evaluated image costs about this share of a trained one (forward only, no augmentation)
WARMUP_MIN_ITERS = 50
WARMUP_MAX_SHARE = 0.5  # warm-up: at most this share of the planned iterations
EMA_WINDOW_SHARE = 0.1  # at its end the EMA averages over about this share of the run (utils/engine/torch_utils)
CLOSE_MOSAIC_SHARE = 0.25  # under a time budget: at most this share of the planned epochs without mosaic
PLACEHOLDER_EPOCHS = 1000  # a time budget's epoch count before the probe


def warmup_iters(warmup_epochs: float, batches_per_epoch: int, planned_iters: int) -> int:
    """Linear warm-up length: `warmup_epochs` of batches, at least WARMUP_MIN_ITERS, at most WARMUP_MAX_SHARE of
    the planned run (0 when warm-up is off)."""
    if warmup_epochs <= 0:
        return 0
    want = max(round(warmup_epochs * batches_per_epoch), WARMUP_MIN_ITERS)
    return max(1, min(want, int(WARMUP_MAX_SHARE * planned_iters)))


def epochs_from_probe(step_seconds: float, batches_per_epoch: int, n_train: int, n_val: int, eval_interval: int,
                      budget_s: float, elapsed_s: float) -> int:
    """The epochs a budget holds, from the time of a training step early in epoch 1. An epoch is its batches plus
    its share of evaluation (n_val images at EVAL_COST of a trained image, every `eval_interval` epochs)."""
    train_s = step_seconds * batches_per_epoch
    eval_s = train_s * EVAL_COST * n_val / max(n_train, 1) / max(eval_interval, 1)
    return max(1, int((budget_s - elapsed_s) // max(train_s + eval_s, 1e-9)))


def epochs_that_fit(epoch: int, epoch_times: list[float], budget_s: float, elapsed_s: float) -> int:
    """After epoch `epoch` (0-based): the run's epoch count, from the median epoch time so far."""
    per_epoch = sorted(epoch_times)[len(epoch_times) // 2]
    return max(epoch + 1, epoch + 1 + int((budget_s - elapsed_s) // per_epoch))


def close_mosaic_epochs(close_mosaic: int, time_budget: bool, epochs: int) -> int:
    """Epochs at the end without mosaic. A time budget plans few epochs (often ~10 on a CPU), where a fixed 10
    would switch mosaic off after the first; there it is capped at a share of the planned epochs (at least 1)."""
    if time_budget and close_mosaic > 0:
        return min(close_mosaic, max(1, round(CLOSE_MOSAIC_SHARE * epochs)))
    return close_mosaic


def ema_tau(steps: int, window_share: float = EMA_WINDOW_SHARE, cap: float = 2000.0) -> float:
    """The EMA ramp's time constant for a run of `steps` optimizer steps: at the last step the average spans about
    `window_share` of the run (window 1 / (1 - decay_t) ~ exp(steps / tau)). A fixed tau of 2000 (YOLOv5's) leaves a
    run of a few hundred steps with decay ~0.2 at its end, nearly the raw weights; long runs keep the 2000."""
    return min(cap, steps / math.log(max(window_share * steps, math.e)))
