"""Named events of the training loop, and the loggers that hang on them (so the loop shows only the algorithm).

    trainer = Trainer(cfg)
    trainer.add_callback("on_epoch_end", lambda t: print(t.epoch, t.row["mAP50"]))
    trainer.callbacks["on_epoch_end"].remove(write_csv)      # no results.csv
    trainer.train()

A callback is `fn(trainer)`; it reads what it needs from the trainer. Events fire on the main process only
(rank 0, which evaluates and writes the run's files), in this order:

    on_train_start      set-up done, before the first epoch: t.start_epoch, t.epochs, t.resume_ckpt (None unless
                        resuming)
    on_epoch_start      t.epoch (0-based)
    on_batch_start      t.i (batch index in the epoch), t.batch = (images uint8 (B, 3, S, S), targets (M, 6))
    on_batch_end        after the batch's step (or accumulation): t.mean_items, the epoch's mean [box, obj, cls]
    on_train_epoch_end  the epoch's batches are done, before evaluation
    on_epoch_end        t.row: the epoch's results (RESULT_FIELDS), after evaluation and before the checkpoints
    on_train_end        after the last epoch (or an early stop)

The defaults (`default_callbacks`): results.csv, TensorBoard scalars, the console line of each epoch, the plots of
a run (labels.png, train_batch0-2.jpg, results.png; with cfg.plots) and the --profile profiler.
"""
from __future__ import annotations

import csv
import math
from collections.abc import Callable
from typing import Any

from torch.profiler import ProfilerActivity, profile, schedule
from torch.utils.tensorboard import SummaryWriter

from utils.viz.plots import plot_labels, plot_results, plot_train_batch

EVENTS = ("on_train_start", "on_epoch_start", "on_batch_start", "on_batch_end", "on_train_epoch_end", "on_epoch_end",
          "on_train_end")
RESULT_FIELDS = ["epoch", "box_loss", "obj_loss", "cls_loss", "lr", "mAP50", "mAP50-95", "epoch_time", "elapsed"]
PROFILE_STEPS = (3, 8)  # --profile records training steps 3..7 of the first epoch
PREVIEW_BATCHES = 3  # --plots draws the first batches of the first epoch (train_batch0..2.jpg)

Callback = Callable[[Any], None]


def add_callback(callbacks: dict[str, list[Callback]], event: str, fn: Callback) -> None:
    """Append `fn` to `event`'s callbacks; an unknown event name is an error, not a callback that never runs."""
    if event not in callbacks:
        raise ValueError(f"unknown training event '{event}'; choose from {', '.join(EVENTS)}")
    callbacks[event].append(fn)


def run_callbacks(callbacks: dict[str, list[Callback]], event: str, trainer: Any) -> None:
    for fn in callbacks[event]:
        fn(trainer)


def write_csv(t) -> None:
    """on_epoch_end: append the epoch's row to results.csv (header first)."""
    path = t.save_dir / "results.csv"
    new = not path.exists()
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=RESULT_FIELDS)
        if new:
            w.writeheader()
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in t.row.items()})


def trim_csv(t) -> None:
    """on_train_start of a resumed run: drop rows of epochs the checkpoint does not hold. A kill between an
    epoch's row and its last.pt leaves such a row; that epoch trains again and writes it anew (no duplicate)."""
    path = t.save_dir / "results.csv"
    if not (t.resume_ckpt and path.is_file()):
        return
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    kept = [r for r in rows if int(r["epoch"]) < t.start_epoch]
    if len(kept) < len(rows):
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=RESULT_FIELDS)
            w.writeheader()
            w.writerows(kept)


def print_epoch(t) -> None:
    """on_epoch_end: one console line per epoch."""
    r = t.row
    t.log(f"epoch {r['epoch'] + 1}/{t.epochs}: box {r['box_loss']:.4f} obj {r['obj_loss']:.4f} cls {r['cls_loss']:.4f}"
          f"  mAP50 {r['mAP50']:.4f}  mAP50-95 {r['mAP50-95']:.4f}  ({r['epoch_time']:.0f} s)")


class TensorBoard:
    """Every number of the epoch's row as a scalar (NaN, i.e. not evaluated this epoch, left out)."""

    def __init__(self):
        self.writer: SummaryWriter | None = None

    def start(self, t) -> None:
        self.writer = SummaryWriter(str(t.save_dir))

    def epoch_end(self, t) -> None:
        for k, v in t.row.items():
            if k != "epoch" and not (isinstance(v, float) and math.isnan(v)):
                self.writer.add_scalar(k, v, t.row["epoch"])
        self.writer.flush()

    def end(self, t) -> None:
        self.writer.close()


def plot_run_labels(t) -> None:
    """on_train_start: labels.png of the training split (not again on resume)."""
    if t.cfg.plots and not t.resume_ckpt:
        recs = t.train_records
        plot_labels([r.boxes for r in recs], [(r.width, r.height) for r in recs], [r.classes for r in recs],
                    t.class_names, t.save_dir / "labels.png")


def plot_first_batches(t) -> None:
    """on_batch_start: train_batch0..2.jpg, the first batches of the first epoch as the model sees them."""
    if t.cfg.plots and t.epoch == 0 and t.i < PREVIEW_BATCHES:
        plot_train_batch(*t.batch, t.class_names, t.save_dir / f"train_batch{t.i}.jpg")


def plot_run_results(t) -> None:
    """on_train_end: results.png from results.csv."""
    if t.cfg.plots:
        plot_results(t.save_dir / "results.csv")


class Profiler:
    """--profile: torch.profiler over training steps PROFILE_STEPS of the run's first epoch; writes
    profile_trace.json and profile_top_ops.txt into the run."""

    def __init__(self):
        self.prof: profile | None = None

    def epoch_start(self, t) -> None:
        if t.cfg.profile and t.epoch == t.start_epoch:
            activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if t.device.type == "cuda" else [])
            wait, active = PROFILE_STEPS[0], PROFILE_STEPS[1] - PROFILE_STEPS[0]
            self.prof = profile(activities=activities, record_shapes=False, profile_memory=True,
                                schedule=schedule(wait=wait - 1, warmup=1, active=active, repeat=1))
            self.prof.start()

    def batch_start(self, t) -> None:
        if self.prof is not None:
            self.prof.step()
            if t.i == PROFILE_STEPS[1]:
                self.finish(t)

    def finish(self, t) -> None:
        """Also on_train_epoch_end: an epoch shorter than the profiling window."""
        if self.prof is None:
            return
        prof, self.prof = self.prof, None
        prof.stop()
        trace = t.save_dir / "profile_trace.json"
        prof.export_chrome_trace(str(trace))
        key = "self_cuda_time_total" if t.device.type == "cuda" else "self_cpu_time_total"
        table = prof.key_averages().table(sort_by=key, row_limit=15)
        (t.save_dir / "profile_top_ops.txt").write_text(table)
        t.log(f"profile of training steps {PROFILE_STEPS[0]}-{PROFILE_STEPS[1] - 1} (top ops by {key}):\n{table}\n"
              f"trace: {trace} (open in https://ui.perfetto.dev or chrome://tracing)")


def default_callbacks() -> dict[str, list[Callback]]:
    """A fresh registry holding the default loggers (fresh TensorBoard and profiler state per trainer)."""
    tb, prof = TensorBoard(), Profiler()
    callbacks: dict[str, list[Callback]] = {e: [] for e in EVENTS}
    for event, fn in (("on_train_start", trim_csv), ("on_train_start", tb.start), ("on_train_start", plot_run_labels),
                      ("on_epoch_start", prof.epoch_start), ("on_batch_start", prof.batch_start),
                      ("on_batch_start", plot_first_batches), ("on_train_epoch_end", prof.finish),
                      ("on_epoch_end", write_csv), ("on_epoch_end", tb.epoch_end), ("on_epoch_end", print_epoch),
                      ("on_train_end", tb.end), ("on_train_end", plot_run_results)):
        add_callback(callbacks, event, fn)
    return callbacks
