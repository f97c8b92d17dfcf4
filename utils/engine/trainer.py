"""The training engine behind `train.py`: one object that owns the run.

    Trainer(cfg).train()  ->  runs/train/<name>/{weights/last.pt, weights/best.pt, config.yaml,
                               results.csv, results.png, events.out.tfevents...}

Exact resume: data order and augmentation are functions of (seed, epoch, index), and the
checkpoint carries optimizer, scaler, EMA, RNG states and the epoch, so a run stopped after
epoch k and resumed ends bitwise equal (on CPU) to one run straight through.
"""
from __future__ import annotations

import contextlib
import csv
import math
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile, schedule
from torch.utils.data import DataLoader, DistributedSampler
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from nets.assets import read_anchors
from nets.loss import YoloLoss, init_head_biases
from nets.weights.checkpoint import CheckpointError, load_checkpoint, model_cfg_of, save_checkpoint
from nets.weights.loader import load_pretrained
from nets.yolo import YoloBody
from utils.config import Config, config_to_dict, format_config, load_config, resolve_path, save_config
from utils.data import TrainDataset, load_data_spec, load_records, train_collate
from utils.data.anchors import check_anchors
from utils.device import select_device
from utils.engine.distributed import DistInfo, broadcast_object, cleanup, init_distributed
from utils.engine.multiscale import input_size_at, rescale_batch
from utils.engine.optim import build_optimizer, lr_factor, scaled_lr, set_learning_rates
from utils.engine.runs import increment_dir
from utils.engine.torch_utils import ModelEMA, de_parallel, rng_state, seed_everything, set_rng_state
from utils.eval.evaluate import evaluate_model
from utils.viz.plots import plot_labels, plot_results, plot_train_batch

CLOSE_MOSAIC_SHARE = 0.25  # under a time budget: at most this share of the planned epochs without mosaic
PROFILE_STEPS = (3, 8)  # --profile records training steps 3..7 of the first epoch
PREVIEW_BATCHES = 3  # --plots draws the first batches of the first epoch (train_batch0..2.jpg)
RESULT_FIELDS = ["epoch", "box_loss", "obj_loss", "cls_loss", "lr", "mAP50", "mAP50-95", "epoch_time", "elapsed"]


def accumulation_group(i: int, nb: int, accumulate: int) -> tuple[int, bool]:
    """For batch i of an epoch of nb: the size of its accumulation group and whether the optimizer steps
    after it. Groups never cross an epoch's end (the last one may be shorter), so a checkpoint written
    after an epoch holds no half-accumulated gradient and resume stays exact."""
    start = i - i % accumulate
    group = min(accumulate, nb - start)
    return group, i == start + group - 1


def cpp_compiler() -> str | None:
    """The C++ compiler torch.compile's CPU backend would call ($CXX, else the usual names on PATH)."""
    return os.environ.get("CXX") or next(filter(None, map(shutil.which, ("g++", "clang++", "c++", "cl"))), None)


class TrainingDiverged(RuntimeError):
    """Loss became NaN or inf; the message says what to try."""


def resolve_resume(path: str) -> Path:
    """A run directory or a checkpoint file -> the checkpoint to resume from."""
    p = resolve_path(path)
    if p.is_dir():
        p = p / "weights" / "last.pt"
    if not p.is_file():
        raise FileNotFoundError(f"--resume {path}: no checkpoint at {p} (pass a run directory like runs/train/exp)")
    return p


class Trainer:
    def __init__(self, cfg: Config, log=print, distributed: bool = True):
        """`distributed=False` trains in this process alone even under torchrun (the ablation
        spreads whole runs over GPUs that way)."""
        self.log = log
        self.resume_ckpt = None
        if cfg.resume:
            ckpt_path = resolve_resume(cfg.resume)
            self.resume_ckpt = load_checkpoint(ckpt_path)
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
        self.train_set = TrainDataset(self.train_records, cfg.img_size, cfg, seed=cfg.seed)
        per_rank = max(1, cfg.batch_size // self.dist.world_size)
        self.sampler = DistributedSampler(self.train_set, num_replicas=self.dist.world_size, rank=self.dist.rank,
                                          shuffle=True, seed=cfg.seed, drop_last=False)
        self.train_loader = DataLoader(
            self.train_set, batch_size=per_rank, sampler=self.sampler, num_workers=cfg.workers,
            collate_fn=train_collate, pin_memory=self.device.type == "cuda", drop_last=len(self.train_set) > per_rank,
            persistent_workers=cfg.workers > 0, worker_init_fn=getattr(self.train_set, "worker_init_fn", None),
        )

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
        self.criterion = YoloLoss(model.anchors, model.num_classes, img_size=cfg.img_size,
                                  box_gain=cfg.box_gain, obj_gain=cfg.obj_gain, cls_gain=cfg.cls_gain,
                                  label_smoothing=cfg.label_smoothing, ignore_thresh=cfg.ignore_thresh,
                                  match_iou_thresh=cfg.match_iou_thresh, neighbor_cells=cfg.neighbor_cells,
                                  obj_iou_ratio=cfg.obj_iou_ratio, scale_x_y=model.scale_x_y).to(self.device)
        self.base_lr = scaled_lr(cfg.lr0, cfg.batch_size * cfg.accumulate, cfg.nbs, cfg.optimizer)  # per step
        self.optimizer = build_optimizer(model, cfg.optimizer, self.base_lr, cfg.momentum, cfg.weight_decay)
        self.ema = ModelEMA(model, cfg.ema_decay) if cfg.ema else None
        self.amp_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(cfg.amp)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=cfg.amp == "fp16" and self.device.type == "cuda")
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
        set_rng_state(st["rng"])
        if self.is_main:
            self.log(f"resuming {self.save_dir} from epoch {self.start_epoch} of {self.epochs}")

    def checkpoint(self, epoch: int, with_train_state: bool) -> dict:
        model = de_parallel(self.train_model)
        obj = {"version": 1, "epoch": epoch, "model": model.state_dict(),
               "ema": self.ema.ema.state_dict() if self.ema else None,
               "model_cfg": model_cfg_of(model, self.class_names, self.cfg.img_size), "train": None}
        if with_train_state:
            obj["train"] = {
                "config": config_to_dict(self.cfg), "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict(), "ema_updates": self.ema.updates if self.ema else 0,
                "epochs": self.epochs, "best_fitness": self.best_fitness, "bad_evals": self.bad_evals,
                "elapsed": self.elapsed(), "rng": rng_state(),
            }
        return obj

    def elapsed(self) -> float:
        return self.elapsed_before + time.time() - self.t0

    # ----------------------------------------------------------------------------- loop
    def train(self) -> dict:
        cfg = self.cfg
        self.setup_data()
        self.setup_model()
        self.start_epoch, self.epochs, self.best_fitness, self.bad_evals, self.elapsed_before = 0, cfg.epochs, -1.0, 0, 0.0
        if cfg.time > 0 and cfg.epochs == 0:
            self.epochs = 1000  # re-planned after the first epoch
        if self.resume_ckpt:
            self.restore()
        self.t0 = time.time()
        writer = None
        if self.is_main:
            self.weights_dir.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.save_dir / "config.yaml")
            self.log(format_config(cfg))
            self.log(f"{len(self.train_records)} train / {len(self.val_records)} val images, "
                     f"{len(self.class_names)} classes, device {self.device}, world size {self.dist.world_size}")
            writer = SummaryWriter(str(self.save_dir))
            if cfg.plots and not self.resume_ckpt:
                recs = self.train_records
                plot_labels([r.boxes for r in recs], [(r.width, r.height) for r in recs], [r.classes for r in recs],
                            self.class_names, self.save_dir / "labels.png")
        nb = len(self.train_loader)
        warmup_iters = min(max(round(cfg.warmup_epochs * nb), 50 if cfg.warmup_epochs > 0 else 0), max(1, nb * max(self.epochs, 1) // 2))
        epoch_times: list[float] = []
        metrics = {}
        epoch = self.start_epoch - 1
        while (epoch := epoch + 1) < self.epochs:  # not range(): a --time budget re-plans self.epochs
            t_epoch = time.time()
            self.set_freeze(epoch < cfg.freeze_epochs)
            self.sampler.set_epoch(epoch)
            self.train_set.set_epoch(epoch)
            self.train_set.mosaic_enabled = epoch < self.epochs - self.close_mosaic_epochs()
            mean_items = self.train_one_epoch(epoch, nb, warmup_iters)
            stop = False
            final = epoch == self.epochs - 1
            if self.is_main:
                if (epoch + 1) % cfg.eval_interval == 0 or final:
                    metrics = self.evaluate(plots=final and cfg.plots)
                    fitness = metrics["mAP50-95" if cfg.best_metric == "map50_95" else "mAP50"]
                    improved = fitness > self.best_fitness
                    self.best_fitness = max(self.best_fitness, fitness)
                    self.bad_evals = 0 if improved else self.bad_evals + 1
                    stop = cfg.patience > 0 and self.bad_evals >= cfg.patience
                    if stop:
                        self.log(f"early stop: no improvement in {cfg.patience} evaluations (best {self.best_fitness:.4f})")
                else:
                    improved = False
                epoch_times.append(time.time() - t_epoch)
                if cfg.time > 0:
                    self.epochs = self.plan_epochs(epoch, epoch_times)
                row = {"epoch": epoch, "box_loss": mean_items[0], "obj_loss": mean_items[1], "cls_loss": mean_items[2],
                       "lr": self.optimizer.param_groups[0]["lr"], "mAP50": metrics.get("mAP50", float("nan")),
                       "mAP50-95": metrics.get("mAP50-95", float("nan")), "epoch_time": epoch_times[-1],
                       "elapsed": self.elapsed()}
                self.log_epoch(row, writer)
                save_checkpoint(self.weights_dir / "last.pt", self.checkpoint(epoch, with_train_state=True))
                if improved:
                    save_checkpoint(self.weights_dir / "best.pt", self.checkpoint(epoch, with_train_state=False))
            stop, self.epochs = broadcast_object((stop, self.epochs), self.dist)
            if stop:
                break
        result = {"save_dir": str(self.save_dir), "best_fitness": self.best_fitness, **metrics}
        if self.is_main:
            writer.close()
            if cfg.plots:
                plot_results(self.save_dir / "results.csv")
            self.log(f"done in {self.elapsed() / 60:.1f} min; weights in {self.weights_dir}")
        cleanup(self.dist)
        return result

    def plan_epochs(self, epoch: int, epoch_times: list[float]) -> int:
        """With a --time budget: as many epochs as fit, from the median epoch time so far."""
        per_epoch = sorted(epoch_times)[len(epoch_times) // 2]
        left = self.cfg.time * 60 - self.elapsed()
        return max(epoch + 1, epoch + 1 + int(left // per_epoch))

    def close_mosaic_epochs(self) -> int:
        """Epochs at the end without mosaic. A time budget plans few epochs (often ~10 on a CPU), where a fixed 10
        would switch mosaic off after the first; there it is capped at a share of the planned epochs (at least 1)."""
        if self.cfg.time > 0 and self.cfg.close_mosaic > 0:
            return min(self.cfg.close_mosaic, max(1, round(CLOSE_MOSAIC_SHARE * self.epochs)))
        return self.cfg.close_mosaic

    def set_freeze(self, frozen: bool) -> None:
        for p in de_parallel(self.train_model).backbone.parameters():
            p.requires_grad_(not frozen)

    def train_one_epoch(self, epoch: int, nb: int, warmup_iters: int) -> list[float]:
        cfg, device = self.cfg, self.device
        self.train_model.train()
        totals = torch.zeros(3, device=device)
        seen = 0
        bar = tqdm(self.train_loader, total=nb, desc=f"epoch {epoch + 1}/{self.epochs}", disable=not self.is_main,
                   dynamic_ncols=True, leave=True)
        t_last = time.time()
        profiler = self.start_profiler() if cfg.profile and epoch == self.start_epoch and self.is_main else None
        for i, (images, targets) in enumerate(bar):
            if profiler is not None:
                profiler.step()
                if i == PROFILE_STEPS[1]:
                    self.finish_profiler(profiler)
                    profiler = None
            it = epoch * nb + i
            set_learning_rates(self.optimizer, self.base_lr, lr_factor(epoch + i / nb, self.epochs, cfg.scheduler, cfg.lrf),
                               it, warmup_iters, cfg.warmup_bias_lr if cfg.optimizer == "sgd" else 0.0, cfg.momentum)
            if cfg.plots and self.is_main and epoch == 0 and i < PREVIEW_BATCHES:
                plot_train_batch(images, targets, self.class_names, self.save_dir / f"train_batch{i}.jpg")
            size = input_size_at(cfg.img_size, cfg.multi_scale, cfg.seed, it) if cfg.multi_scale > 0 else None
            group, step_now = accumulation_group(i, nb, cfg.accumulate)
            # between optimizer steps DDP need not all-reduce: the gradients only add up locally
            with self.ddp.no_sync() if self.ddp is not None and not step_now else contextlib.nullcontext():
                loss, items = self.forward_loss(images, targets, size)
                totals += items
                seen += 1
                # the one host sync of the step: the finiteness check and the progress numbers share it
                loss_value, *mean = torch.cat([loss.detach().reshape(1), totals / seen]).tolist()
                if not math.isfinite(loss_value):
                    raise TrainingDiverged(
                        f"loss became {loss_value} at epoch {epoch + 1}, batch {i}: training diverged. Try a lower "
                        f"--lr0 (now {cfg.lr0}), --amp off, a longer --warmup-epochs, and check the data with "
                        f"`python -m utils.data.check_dataset --data {cfg.data}`")
                self.backward(loss / group)  # the group's mean: as one batch `group` times as large
            if step_now:
                self.step()
            if self.is_main:
                now = time.time()
                mem = (torch.cuda.memory_reserved(device) / 2**30 if device.type == "cuda" else 0.0)
                bar.set_postfix_str(f"box {mean[0]:.4f} obj {mean[1]:.4f} cls {mean[2]:.4f} "
                                    f"lr {self.optimizer.param_groups[0]['lr']:.2e} "
                                    f"{images.shape[0] * self.dist.world_size / max(now - t_last, 1e-9):.1f} img/s"
                                    + (f" {mem:.1f}G" if mem else ""))
                t_last = now
        if profiler is not None:  # epoch shorter than the profiling window
            self.finish_profiler(profiler)
        return (totals / max(seen, 1)).tolist()

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

    def optimizer_step(self, loss: torch.Tensor) -> None:
        """Backward and step for one batch (no accumulation)."""
        self.backward(loss)
        self.step()

    def backward(self, loss: torch.Tensor) -> None:
        self.scaler.scale(loss).backward()

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

    def start_profiler(self):
        """torch.profiler over a few training steps (after `PROFILE_STEPS[0]` warm-up steps)."""
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if self.device.type == "cuda" else [])
        wait, active = PROFILE_STEPS[0], PROFILE_STEPS[1] - PROFILE_STEPS[0]
        prof = profile(activities=activities, schedule=schedule(wait=wait - 1, warmup=1, active=active, repeat=1),
                       record_shapes=False, profile_memory=True)
        prof.start()
        return prof

    def finish_profiler(self, prof) -> None:
        prof.stop()
        trace = self.save_dir / "profile_trace.json"
        prof.export_chrome_trace(str(trace))
        key = "self_cuda_time_total" if self.device.type == "cuda" else "self_cpu_time_total"
        table = prof.key_averages().table(sort_by=key, row_limit=15)
        (self.save_dir / "profile_top_ops.txt").write_text(table)
        self.log(f"profile of training steps {PROFILE_STEPS[0]}-{PROFILE_STEPS[1] - 1} (top ops by {key}):\n{table}\n"
                 f"trace: {trace} (open in https://ui.perfetto.dev or chrome://tracing)")

    @torch.no_grad()
    def evaluate(self, plots: bool = False) -> dict:
        """mAP of the EMA model on the val split; `plots`: also its PR curve and confusion matrix in the run."""
        cfg = self.cfg
        model = self.ema.ema if self.ema is not None else de_parallel(self.train_model)
        if not self.val_records:
            return {"mAP50": float("nan"), "mAP50-95": float("nan")}
        res = evaluate_model(model, self.val_records, self.class_names, cfg.img_size, cfg.batch_size, self.device,
                             cfg.conf_thres, cfg.iou_thres, metric="coco", workers=cfg.workers,
                             plots_dir=self.save_dir if plots else None)
        coco = res["coco"]
        return {"mAP50": coco["AP50"], "mAP50-95": coco["AP"]}

    def log_epoch(self, row: dict, writer) -> None:
        path = self.save_dir / "results.csv"
        new = not path.exists()
        with open(path, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=RESULT_FIELDS)
            if new:
                w.writeheader()
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
        for k, v in row.items():
            if k != "epoch" and not (isinstance(v, float) and math.isnan(v)):
                writer.add_scalar(k, v, row["epoch"])
        writer.flush()
        self.log(f"epoch {row['epoch'] + 1}/{self.epochs}: box {row['box_loss']:.4f} obj {row['obj_loss']:.4f} "
                 f"cls {row['cls_loss']:.4f}  mAP50 {row['mAP50']:.4f}  mAP50-95 {row['mAP50-95']:.4f}  "
                 f"({row['epoch_time']:.0f} s)")


def set_threads_from_env() -> None:
    """Respect OMP_NUM_THREADS when set (torchrun sets 1 per process by default)."""
    n = os.environ.get("OMP_NUM_THREADS")
    if n and n.isdigit():
        torch.set_num_threads(int(n))
