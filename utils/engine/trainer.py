"""The training engine behind `train.py`: one object that owns the run.

    Trainer(cfg).train()  ->  runs/train/<name>/{weights/last.pt, weights/best.pt, config.yaml,
                               results.csv, results.png, events.out.tfevents...}

The loop (`train`) reads like torchvision's train_one_epoch / evaluate: before_train, then per epoch
before_epoch, train_one_epoch, evaluate_when_due, after_epoch (logs, checkpoints, --time re-planning,
early stop), then after_train. Logging, plots and the profiler are callbacks on named events
(utils/engine/callbacks.py); `trainer.add_callback("on_epoch_end", fn)` adds a logger.

Exact resume: data order and augmentation are functions of (seed, epoch, index), and the
checkpoint carries optimizer, scaler, EMA, RNG states and the epoch, so a run stopped after
epoch k and resumed ends bitwise equal (on CPU) to one run straight through.
"""
from __future__ import annotations

import contextlib
import math
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from nets.assets import read_anchors
from nets.loss import YoloLoss, init_head_biases
from nets.weights.checkpoint import CheckpointError, checkpoint_dict, load_checkpoint, save_checkpoint
from nets.weights.loader import load_pretrained
from nets.yolo import YoloBody
from utils.config import Config, config_to_dict, format_config, load_config, resolve_path, save_config
from utils.data import load_data_spec, load_records
from utils.data.anchors import check_anchors
from utils.data.dataset import TrainDataset, build_loader
from utils.device import select_device
from utils.engine.callbacks import RESULT_FIELDS, Callback, add_callback, default_callbacks, run_callbacks
from utils.engine.distributed import DistInfo, broadcast_object, cleanup, init_distributed
from utils.engine.multiscale import input_size_at, rescale_batch
from utils.engine.optim import build_optimizer, lr_factor, scaled_lr, set_learning_rates
from utils.engine.plan import (PLACEHOLDER_EPOCHS, PROBE_STEPS, close_mosaic_epochs, ema_tau, epochs_from_probe,
                               epochs_that_fit, warmup_iters)
from utils.engine.runs import increment_dir, resolve_resume
from utils.engine.torch_utils import (AMP_NAMES, ModelEMA, amp_setup, cpp_compiler, de_parallel, rng_state,
                                      seed_everything, set_rng_state)
from utils.eval.evaluate import evaluate_model


def accumulation_group(i: int, nb: int, accumulate: int) -> tuple[int, bool]:
    """For batch i of an epoch of nb: the size of its accumulation group and whether the optimizer steps
    after it. Groups never cross an epoch's end (the last one may be shorter), so a checkpoint written
    after an epoch holds no half-accumulated gradient and resume stays exact."""
    start = i - i % accumulate
    group = min(accumulate, nb - start)
    return group, i == start + group - 1


class TrainingDiverged(RuntimeError):
    """Loss became NaN or inf; the message says what to try."""


class Trainer:
    def __init__(self, cfg: Config, log=print, distributed: bool = True):
        """`distributed=False` trains in this process alone even under torchrun (the ablation
        spreads whole runs over GPUs that way)."""
        self.log = log
        self.resume_ckpt = None
        if cfg.resume:
            ckpt_path = resolve_resume(resolve_path(cfg.resume))
            try:
                self.resume_ckpt = load_checkpoint(ckpt_path)
            except CheckpointError as e:
                raise CheckpointError(f"--resume {cfg.resume}: {e} Only a run's weights/last.pt can be resumed: if it "
                                      "is damaged, train again without --resume") from None
            train_state = self.resume_ckpt.get("train")
            if not train_state:
                raise CheckpointError(f"{ckpt_path}: holds no training state (a best.pt or exported file?); "
                                      "resume from the run's weights/last.pt")
            saved = dict(train_state["config"])
            overrides = {k: getattr(cfg, k) for k in ("device", "workers") if getattr(cfg, k) != getattr(Config(), k)}
            cfg = load_config(None, {**saved, **overrides, "resume": "", "weights": ""})
            self.save_dir = ckpt_path.parent.parent
        self.cfg = cfg
        self.device = select_device(cfg.device)
        self.dist: DistInfo = init_distributed(self.device.type) if distributed else DistInfo()
        if self.dist.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
        seed_everything(cfg.seed + self.dist.rank, cfg.deterministic)
        if not self.resume_ckpt:
            base = resolve_path(cfg.project) if Path(cfg.project).is_absolute() else Path(cfg.project)
            run_dir = increment_dir(base / cfg.name, cfg.exist_ok) if self.dist.is_main else None  # rank 0 creates it
            self.save_dir = broadcast_object(run_dir, self.dist)
        self.weights_dir = self.save_dir / "weights"
        self.is_main = self.dist.is_main
        self.callbacks = default_callbacks()
        self.epoch, self.i, self.metrics, self.row = 0, 0, {}, {}  # what callbacks read (utils/engine/callbacks.py)

    def add_callback(self, event: str, fn: Callback) -> None:
        """Call `fn(trainer)` at `event` (the names and what a callback can read: utils/engine/callbacks.py)."""
        add_callback(self.callbacks, event, fn)

    def fire(self, event: str) -> None:
        if self.is_main:
            run_callbacks(self.callbacks, event, self)

    # ----------------------------------------------------------------------------- set-up
    def setup_data(self) -> None:
        cfg = self.cfg
        self.spec = load_data_spec(cfg.data)
        self.class_names = list(self.spec.names)
        self.train_records, train_report = load_records(self.spec, "train")
        self.val_records, val_report = load_records(self.spec, "val")
        if self.is_main:
            for name, rep in (("train", train_report), ("val", val_report)):
                summary = rep.summary()
                if summary:
                    self.log(summary)
        if not self.train_records:
            raise ValueError(f"data '{cfg.data}': the train split has no usable image; "
                             "run `python -m utils.data.check_dataset --data ...` to see why")
        self.train_set = TrainDataset(self.train_records, cfg.img_size, cfg, seed=cfg.seed,
                                      log=self.log if self.is_main else None)
        self.train_loader = build_loader(self.train_set, max(1, cfg.batch_size // self.dist.world_size), cfg.workers,
                                         cfg.seed, self.dist.rank, self.dist.world_size, self.device.type == "cuda")

    def setup_model(self) -> None:
        cfg = self.cfg
        if self.resume_ckpt:  # the anchors the run trained with (autoanchor may have replaced the file's)
            anchors = np.asarray(self.resume_ckpt["model_cfg"]["anchors"], np.float32)
        else:
            anchors = check_anchors(self.train_records, read_anchors(resolve_path(cfg.anchors)), cfg.img_size,
                                    refit=cfg.autoanchor, seed=cfg.seed, data=cfg.data,
                                    log=self.log if self.is_main else lambda *a: None)
        model = YoloBody(len(self.class_names), cfg.phi, cfg.attention_sites, anchors=anchors, scale_x_y=cfg.scale_x_y)
        model.class_names, model.img_size = self.class_names, cfg.img_size
        init_head_biases(model, model.num_classes, img_size=cfg.img_size)
        if cfg.weights and not self.resume_ckpt:
            load_pretrained(model, resolve_path(cfg.weights), log=self.log if self.is_main else lambda *a: None)
        model.to(self.device)
        if cfg.channels_last:
            model.to(memory_format=torch.channels_last)
        self.model = model
        self.criterion = YoloLoss(model.anchors, model.num_classes,
                                  box_gain=cfg.box_gain, obj_gain=cfg.obj_gain, cls_gain=cfg.cls_gain,
                                  label_smoothing=cfg.label_smoothing, ignore_thresh=cfg.ignore_thresh,
                                  match_iou_thresh=cfg.match_iou_thresh, neighbor_cells=cfg.neighbor_cells,
                                  obj_iou_ratio=cfg.obj_iou_ratio, scale_x_y=model.scale_x_y).to(self.device)
        self.base_lr = scaled_lr(cfg.lr0, cfg.batch_size * cfg.accumulate, cfg.nbs, cfg.optimizer)  # per step
        self.optimizer = build_optimizer(model, cfg.optimizer, self.base_lr, cfg.momentum, cfg.weight_decay)
        self.ema = ModelEMA(model, cfg.ema_decay) if cfg.ema else None
        self.amp_dtype, self.scaler = amp_setup(cfg.amp, self.device.type)
        self.train_model: nn.Module = model
        self.ddp: nn.parallel.DistributedDataParallel | None = None  # for no_sync() while accumulating
        if self.dist.enabled:
            if cfg.sync_bn and self.device.type == "cuda":
                self.train_model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
            self.train_model = self.ddp = nn.parallel.DistributedDataParallel(
                self.train_model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        if cfg.compile:  # outermost, so DDP's bucketing is compiled with it; checkpoints and EMA read self.model
            if self.device.type == "cpu" and not cpp_compiler():
                raise RuntimeError("--compile true on CPU needs a C++ compiler for torch.compile's CPU backend and "
                                   "none was found (set CXX, or install g++ / clang++); or train without --compile")
            self.train_model = torch.compile(self.train_model)

    # ----------------------------------------------------------------------------- state
    def restore(self) -> None:
        """Load model, EMA, optimizer, scaler, RNG, epoch and bookkeeping from the resume checkpoint."""
        ck = self.resume_ckpt
        st = ck["train"]
        de_parallel(self.train_model).load_state_dict(ck["model"])
        self.optimizer.load_state_dict(st["optimizer"])
        self.scaler.load_state_dict(st["scaler"])
        if self.ema is not None and ck.get("ema") is not None:
            self.ema.ema.load_state_dict(ck["ema"])
            self.ema.updates = st["ema_updates"]
        self.start_epoch = ck["epoch"] + 1
        self.epochs = st["epochs"]
        self.best_fitness = st["best_fitness"]
        self.bad_evals = st["bad_evals"]
        self.elapsed_before = st["elapsed"]
        self.warmup_iters = st.get("warmup_iters", self.warmup_iters)  # absent in checkpoints before plan.py
        set_rng_state(st["rng"])
        if self.is_main:
            self.log(f"resuming {self.save_dir} from epoch {self.start_epoch} of {self.epochs}")

    def checkpoint(self, epoch: int, with_train_state: bool) -> dict:
        """last.pt (with the resume state) or best.pt (without); the schema: nets/weights/checkpoint.py."""
        train = {
            "config": config_to_dict(self.cfg), "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(), "ema_updates": self.ema.updates if self.ema else 0,
            "epochs": self.epochs, "best_fitness": self.best_fitness, "bad_evals": self.bad_evals,
            "elapsed": self.elapsed(), "rng": rng_state(), "warmup_iters": self.warmup_iters,
        } if with_train_state else None
        return checkpoint_dict(de_parallel(self.train_model), ema=self.ema.ema.state_dict() if self.ema else None,
                               epoch=epoch, train=train, class_names=self.class_names, img_size=self.cfg.img_size)

    def elapsed(self) -> float:
        return self.elapsed_before + time.time() - self.t0

    # ----------------------------------------------------------------------------- loop
    def train(self) -> dict:
        """Set up, then per epoch: train, evaluate when due (rank 0), log, checkpoint, re-plan; then finish."""
        self.before_train()
        epoch = self.start_epoch - 1
        while (epoch := epoch + 1) < self.epochs:  # not range(): a --time budget re-plans self.epochs
            self.before_epoch(epoch)
            losses = self.train_one_epoch(epoch)
            self.fire("on_train_epoch_end")
            improved = self.evaluate_when_due(epoch) if self.is_main else False
            if self.after_epoch(epoch, losses, improved):
                break
        return self.after_train()

    def before_train(self) -> None:
        cfg = self.cfg
        self.setup_data()
        self.setup_model()
        self.start_epoch, self.epochs, self.best_fitness, self.bad_evals = 0, cfg.epochs, -1.0, 0
        self.elapsed_before = 0.0
        self.nb = len(self.train_loader)
        self.probing = cfg.time > 0  # a budget plans the epochs (cfg.epochs then unused) from the first steps' time
        if self.probing:
            self.epochs = PLACEHOLDER_EPOCHS
        self.size_warmup()
        if self.resume_ckpt:
            self.probing = False
            self.restore()
            if self.start_epoch >= self.epochs:
                raise ValueError(f"--resume {cfg.resume}: the run already finished its {self.epochs} epochs, nothing "
                                 f"to resume; to train on from its weights: --weights {self.weights_dir / 'best.pt'}")
        self.t0 = time.time()
        self.epoch_times: list[float] = []
        self.set_ema_ramp()
        if self.is_main:
            self.weights_dir.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.save_dir / "config.yaml")
            self.log(format_config(cfg))
            self.log(f"{len(self.train_records)} train / {len(self.val_records)} val images, "
                     f"{len(self.class_names)} classes, device {self.device}, world size {self.dist.world_size}, "
                     f"autocast {AMP_NAMES.get(self.amp_dtype, 'off')}{' (--amp auto)' if cfg.amp == 'auto' else ''}")
        self.fire("on_train_start")

    def before_epoch(self, epoch: int) -> None:
        self.epoch, self.t_epoch = epoch, time.time()
        self.set_freeze(epoch < self.cfg.freeze_epochs)
        self.train_loader.sampler.set_epoch(epoch)
        self.train_set.set_epoch(epoch)
        self.train_set.mosaic_enabled = epoch < self.epochs - close_mosaic_epochs(self.cfg.close_mosaic,
                                                                                   self.cfg.time > 0, self.epochs)
        self.fire("on_epoch_start")

    def train_one_epoch(self, epoch: int) -> list[float]:
        """One pass over the loader: lr schedule, (multi-scale) forward, loss, backward, an optimizer step every
        `accumulate` batches. Returns the epoch's mean [box, obj, cls] losses."""
        cfg, nb = self.cfg, self.nb
        self.train_model.train()
        sums, seen = [0.0, 0.0, 0.0], 0
        bar = tqdm(self.train_loader, total=nb, desc=f"epoch {epoch + 1}/{self.epochs}", disable=not self.is_main,
                   dynamic_ncols=True, leave=True)
        t_last = time.time()
        for self.i, self.batch in enumerate(bar):
            self.fire("on_batch_start")
            it = epoch * nb + self.i
            factor = lr_factor(epoch + self.i / nb, self.epochs, cfg.scheduler, cfg.lrf)
            set_learning_rates(self.optimizer, self.base_lr, factor, it, self.warmup_iters,
                               cfg.warmup_bias_lr if cfg.optimizer == "sgd" else 0.0, cfg.momentum)
            size = input_size_at(cfg.img_size, cfg.multi_scale, cfg.seed, it) if cfg.multi_scale > 0 else None
            group, step_now = accumulation_group(self.i, nb, cfg.accumulate)
            parts = self.train_step(*self.batch, size=size, group=group, step_now=step_now)
            sums, seen = [a + b for a, b in zip(sums, parts)], seen + 1
            if self.probing and self.i in PROBE_STEPS:
                self.probe(time.time())
            self.mean_items = [a / seen for a in sums]
            self.fire("on_batch_end")
            if self.is_main:
                t_last = self.show_progress(bar, self.batch[0].shape[0], t_last)
        return [a / max(seen, 1) for a in sums]

    def train_step(self, images: torch.Tensor, targets: torch.Tensor, size: int | None = None, group: int = 1,
                   step_now: bool = True) -> list[float]:
        """One loader batch as the loop runs it: forward, loss, backward of loss / `group` (the group's mean: as one
        batch `group` times as large), and the optimizer step when `step_now`. Returns [box, obj, cls]."""
        # between optimizer steps DDP need not all-reduce: the gradients only add up locally
        with self.ddp.no_sync() if self.ddp is not None and not step_now else contextlib.nullcontext():
            loss, items = self.forward_loss(images, targets, size)
            # the one host sync of the step: the finiteness check and the progress numbers share it
            loss_value, *parts = torch.cat([loss.detach().reshape(1), items]).tolist()
            if not math.isfinite(loss_value):
                raise TrainingDiverged(
                    f"loss became {loss_value} at epoch {self.epoch + 1}, batch {self.i}: training diverged. Try a "
                    f"lower --lr0 (now {self.cfg.lr0}), --amp off, a longer --warmup-epochs, and check the data with "
                    f"`python -m utils.data.check_dataset --data {self.cfg.data}`")
            self.scaler.scale(loss / group).backward()
        if step_now:
            self.step()
        return parts

    def show_progress(self, bar: tqdm, batch_size: int, t_last: float) -> float:
        now = time.time()
        mem = torch.cuda.memory_reserved(self.device) / 2**30 if self.device.type == "cuda" else 0.0
        box, obj, cls = self.mean_items
        bar.set_postfix_str(f"box {box:.4f} obj {obj:.4f} cls {cls:.4f} lr {self.optimizer.param_groups[0]['lr']:.2e} "
                            f"{batch_size * self.dist.world_size / max(now - t_last, 1e-9):.1f} img/s"
                            + (f" {mem:.1f}G" if mem else ""))
        return now

    def evaluate_when_due(self, epoch: int) -> bool:
        """Every `eval_interval` epochs and at the last: score the EMA model, track the best and the evaluations
        without improvement (early stop). True when this epoch is the best so far."""
        cfg, final = self.cfg, epoch == self.epochs - 1
        if (epoch + 1) % cfg.eval_interval and not final:
            return False
        self.metrics = self.evaluate(plots=final and cfg.plots)
        fitness = self.metrics["mAP50-95" if cfg.best_metric == "map50_95" else "mAP50"]
        improved = fitness > self.best_fitness
        self.best_fitness = max(self.best_fitness, fitness)
        self.bad_evals = 0 if improved else self.bad_evals + 1
        return improved

    def after_epoch(self, epoch: int, losses: list[float], improved: bool) -> bool:
        """Rank 0: early-stop check, --time re-planning, the epoch's row to the loggers, checkpoints; then every
        rank gets rank 0's decision. True: stop now."""
        cfg, stop = self.cfg, False
        if self.is_main:
            stop = cfg.patience > 0 and self.bad_evals >= cfg.patience
            if stop:
                self.log(f"early stop: no improvement in {cfg.patience} evaluations (best {self.best_fitness:.4f})")
            self.epoch_times.append(time.time() - self.t_epoch)
            if cfg.time > 0:
                self.epochs = epochs_that_fit(epoch, self.epoch_times, cfg.time * 60, self.elapsed())
            nan = float("nan")
            self.row = dict(zip(RESULT_FIELDS, [epoch, *losses, self.optimizer.param_groups[0]["lr"],
                                                self.metrics.get("mAP50", nan), self.metrics.get("mAP50-95", nan),
                                                self.epoch_times[-1], self.elapsed()]))
            self.fire("on_epoch_end")
            save_checkpoint(self.weights_dir / "last.pt", self.checkpoint(epoch, with_train_state=True))
            if improved:
                save_checkpoint(self.weights_dir / "best.pt", self.checkpoint(epoch, with_train_state=False))
            if cfg.save_period > 0 and (epoch + 1) % cfg.save_period == 0:
                save_checkpoint(self.weights_dir / f"epoch{epoch + 1}.pt", self.checkpoint(epoch, with_train_state=False))
        stop, self.epochs = broadcast_object((stop, self.epochs), self.dist)
        if self.probing:  # an epoch shorter than the probe: the warm-up follows the plan from the whole epoch
            self.probing = False
            self.size_warmup()
        self.set_ema_ramp()
        return stop

    def after_train(self) -> dict:
        self.fire("on_train_end")
        if self.is_main:
            self.log(f"done in {self.elapsed() / 60:.1f} min; weights in {self.weights_dir}")
        cleanup(self.dist)
        return {"save_dir": str(self.save_dir), "best_fitness": self.best_fitness, **self.metrics}

    def probe(self, now: float) -> None:
        """Under a time budget, at batches PROBE_STEPS of epoch 1: plan the run from the step time (rank 0's plan for
        every rank), then size the warm-up for it. Re-planned after each epoch from whole epochs (after_epoch)."""
        if self.i == PROBE_STEPS[0]:
            self.t_probe = now
            return
        cfg = self.cfg
        step_s = (now - self.t_probe) / (PROBE_STEPS[1] - PROBE_STEPS[0])
        epochs = epochs_from_probe(step_s, self.nb, len(self.train_records), len(self.val_records), cfg.eval_interval,
                                   cfg.time * 60, self.elapsed())
        self.epochs = broadcast_object(epochs, self.dist)
        self.size_warmup()
        self.probing = False
        self.set_ema_ramp()
        if self.is_main:
            self.log(f"time budget {cfg.time:g} min: ~{self.epochs} epochs ({step_s:.2f} s a batch), warm-up "
                     f"{self.warmup_iters} batches")

    def size_warmup(self) -> None:
        """Warm-up length from the planned run (plan.warmup_iters)."""
        self.warmup_iters = warmup_iters(self.cfg.warmup_epochs, self.nb, self.nb * self.epochs)

    def set_ema_ramp(self) -> None:
        """The EMA ramp follows the planned run's optimizer steps (plan.ema_tau)."""
        if self.ema is not None:
            self.ema.tau = ema_tau(self.nb * self.epochs // self.cfg.accumulate)

    def set_freeze(self, frozen: bool) -> None:
        for p in de_parallel(self.train_model).backbone.parameters():
            p.requires_grad_(not frozen)

    def forward_loss(self, images: torch.Tensor, targets: torch.Tensor,
                     size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Loss and its (box, obj, cls) parts for a loader batch (uint8 images, targets rows of 6),
        trained at `size` x `size` when given (multi-scale)."""
        images = images.to(self.device, non_blocking=True).float().div_(255)
        targets = targets.to(self.device, non_blocking=True)
        if size is not None:
            images, targets = rescale_batch(images, targets, size)
        if self.cfg.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None):
            outputs = self.train_model(images)
        return self.criterion([o.float() for o in outputs], targets)

    def step(self) -> None:
        """Clip, step, EMA. EMA reads the bare model (a DDP or compile wrapper renames keys)."""
        if self.cfg.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.train_model.parameters(), self.cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update(self.model)

    @torch.no_grad()
    def evaluate(self, plots: bool = False) -> dict:
        """mAP of the EMA model on the val split; `plots`: also its PR curve and confusion matrix in the run."""
        cfg = self.cfg
        model = self.ema.ema if self.ema is not None else de_parallel(self.train_model)
        if not self.val_records:
            return {"mAP50": float("nan"), "mAP50-95": float("nan")}
        res = evaluate_model(model, self.val_records, self.class_names, cfg.img_size, cfg.batch_size, self.device,
                             cfg.conf_thres, cfg.iou_thres, metric="coco", max_det=cfg.max_det,
                             plots_dir=self.save_dir if plots else None)
        coco = res["coco"]
        return {"mAP50": coco["AP50"], "mAP50-95": coco["AP"]}

