"""Training throughput (images/s) of our training step and of our whole training loop, optionally side
by side with bubbliiiing/yolov4-tiny-pytorch's own loop; prints one JSON document.

    python benchmarks/bench_train.py                        # CPU, 416 px, batch 16, phi 3, step + loop
    python benchmarks/bench_train.py --device cuda --amp bf16 --compile --channels-last on
    python benchmarks/bench_train.py --reference-dir ~/src/yolov4-tiny-pytorch --workers 2   # side by side

Modes: `step` feeds one fixed batch (the loader's first: mosaic, real targets) again and again to model +
loss + backward + optimizer (+ EMA, grad clip, AMP): the compute alone. `loop` feeds the same step from the
real DataLoader (mosaic, --workers processes): what a user sees. Our side is set up by utils.engine.trainer.Trainer
itself (setup_data + setup_model: train.py's loader, model, loss, optimizer, EMA, scaler, autocast dtype) and
each step is Trainer.train_step, the body of Trainer.train_one_epoch (less the lr schedule and the progress bar).

`--reference-dir DIR` (a checkout of bubbliiiing/yolov4-tiny-pytorch; nothing of it is in this project):
a driver generated here runs in a child process, DIR first on sys.path. It builds what their train.py
builds (YoloBody(anchors_mask, num_classes, phi), weights_init, YOLOLoss summed over both heads, Adam with
their three parameter groups and batch-scaled lr, YoloDataset with mosaic + yolo_dataset_collate in a
DataLoader with the same workers) and times the fp32 branch of their utils_fit.fit_one_epoch at the same
phi, size and batch on the same images (our records as their lines `path x1,y1,x2,y2,cls ...`). It adapts
to the API in DIR (YoloDataset with or without epoch_length/mosaic_prob; YOLOLoss.forward(l, input,
targets) or forward(input, targets)) and reports what it found under reference.api.

Timing: after --warmup steps, --runs windows of --steps steps; images/s per window -> median, min, max,
p10, p90 (one function, injected into the driver, times both sides; CUDA synchronised at window edges).
Peak memory: CUDA max_memory_allocated per mode; CPU the process's peak RSS (monotonic: it covers every
mode run so far; loader worker processes not included). Prefer an idle machine.
"""
from __future__ import annotations

import argparse
import inspect
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))  # probes.py, also when this file is imported, not run

from nets.assets import read_anchors  # noqa: E402
from utils.config import DEFAULT_CONFIG, load_config, resolve_path  # noqa: E402
from utils.engine.trainer import Trainer  # noqa: E402


# --- shared with the reference driver (injected as source): keep these self-contained ---------------
def time_windows(step: Callable[[], int], warmup: int, steps: int, runs: int, sync: Callable[[], None]) -> list[float]:
    """images/s of `runs` windows of `steps` calls each, after `warmup` calls; `step` returns its image count."""
    for _ in range(warmup):
        step()
    rates = []
    for _ in range(runs):
        sync()
        t0, n = time.perf_counter(), 0
        for _ in range(steps):
            n += step()
        sync()
        rates.append(n / (time.perf_counter() - t0))
    return rates


def summarize(rates: list[float], peak_mib: float) -> dict:
    """Median and spread of the windows' images/s (p10/p90 interpolate between windows)."""
    p10, med, p90 = np.percentile(rates, [10, 50, 90])
    return {"images_per_s": round(float(med), 3), "min": round(min(rates), 3), "max": round(max(rates), 3),
            "p10": round(float(p10), 3), "p90": round(float(p90), 3), "runs": [round(r, 3) for r in rates],
            "peak_memory_mib": round(peak_mib, 1)}


def peak_memory_mib(device: str) -> float:
    """CUDA: peak allocated since the last reset. CPU: this process's peak RSS, VmHWM (ru_maxrss, the
    fallback, would carry the parent's peak into a child started by fork + exec)."""
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    try:
        with open("/proc/self/status") as f:
            return next(int(ln.split()[1]) for ln in f if ln.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- our side ------------------------------------------------------------------------------------------
def build_trainer(args: argparse.Namespace, project: str) -> Trainer:
    """The trainer's own set-up: same loader, model, loss, optimizer, EMA, scaler as `train.py`."""
    cfg = load_config(DEFAULT_CONFIG, {
        "data": args.data, "phi": args.phi, "img_size": args.img, "batch_size": args.batch, "workers": args.workers,
        "device": args.device, "amp": args.amp, "channels_last": args.channels_last == "on", "compile": args.compile,
        "deterministic": args.deterministic == "on", "project": project, "name": "bench", "exist_ok": True})
    tr = Trainer(cfg, log=lambda *a, **k: None, distributed=False)
    tr.setup_data()
    tr.setup_model()
    tr.train_model.train()
    return tr


def train_step(tr: Trainer, images: torch.Tensor, targets: torch.Tensor) -> int:
    """One optimisation step exactly as the trainer runs it (with its one host sync); returns the batch size."""
    tr.train_step(images, targets)
    return images.shape[0]


def batches(tr: Trainer) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The trainer's loader over as many epochs as asked for, with its per-epoch calls."""
    epoch = 0
    while True:
        tr.train_loader.sampler.set_epoch(epoch)
        tr.train_set.set_epoch(epoch)
        yield from tr.train_loader
        epoch += 1


def bench_ours(args: argparse.Namespace) -> tuple[dict, Trainer]:
    with tempfile.TemporaryDirectory() as project:
        tr = build_trainer(args, project)
    dev = tr.device.type
    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
    it = batches(tr)
    fixed = next(it)
    out = {}
    for mode in args.modes:
        if dev == "cuda":
            torch.cuda.reset_peak_memory_stats()
        step = (lambda: train_step(tr, *fixed)) if mode == "step" else (lambda: train_step(tr, *next(it)))
        out[mode] = summarize(time_windows(step, args.warmup, args.steps, args.runs, sync), peak_memory_mib(dev))
    return out, tr


# --- reference side --------------------------------------------------------------------------------------
REFERENCE_DRIVER = '''
import inspect, json, resource, sys, time
from functools import partial
import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

a = json.loads(sys.argv[1])
sys.path.insert(0, a["dir"])
import nets.yolo_training as yt
import utils.utils as uu
from nets.yolo import YoloBody
from utils.dataloader import YoloDataset, yolo_dataset_collate

cuda, bs, nc = a["device"] == "cuda", a["batch"], a["num_classes"]
mask, shape = [[3, 4, 5], [1, 2, 3]], [a["img"], a["img"]]
anchors = np.array(a["anchors"], np.float64).reshape(-1, 2)
api = {}
model = YoloBody(mask, nc, phi=a["phi"]) if "phi" in inspect.signature(YoloBody).parameters else YoloBody(mask, nc)
if a["phi"] and not hasattr(model, "feat1_att"):
    api["model"] = "this checkout builds no attention for phi %d" % a["phi"]
if hasattr(yt, "weights_init"):
    yt.weights_init(model)  # train.py with pretrained = False
if "l" in inspect.signature(yt.YOLOLoss.forward).parameters:
    crit, api["loss"] = yt.YOLOLoss(anchors, nc, shape, cuda, mask, 0), "YOLOLoss(...).forward(l, input, targets)"
    loss_fn = lambda outs, t: sum(crit(l, outs[l], t) for l in range(len(outs)))
else:
    crit, api["loss"] = yt.YOLOLoss(anchors, nc, (shape[1], shape[0]), 0, cuda), "YOLOLoss(...).forward(input, targets)[0]"
    loss_fn = lambda outs, t: sum(crit(o, t)[0] for o in outs)
model_train = model.train()
if cuda:
    torch.backends.cudnn.benchmark = True
    model_train = nn.DataParallel(model).cuda()
# train.py with optimizer_type = "adam", Init_lr = 1e-3, weight_decay = 0 (its Adam recipe), nbs = 64
pg0, pg1, pg2 = [], [], []
for k, v in model.named_modules():
    if hasattr(v, "bias") and isinstance(v.bias, nn.Parameter):
        pg2.append(v.bias)
    if isinstance(v, nn.BatchNorm2d) or "bn" in k:
        pg0.append(v.weight)
    elif hasattr(v, "weight") and isinstance(v.weight, nn.Parameter):
        pg1.append(v.weight)
optimizer = torch.optim.Adam(pg0, min(max(bs / 64 * 1e-3, 3e-4), 1e-3), betas=(0.937, 0.999))
optimizer.add_param_group({"params": pg1, "weight_decay": 0})
optimizer.add_param_group({"params": pg2})

lines = open(a["annotations"], encoding="utf-8").readlines()
if "epoch_length" in inspect.signature(YoloDataset).parameters:
    ds = YoloDataset(lines, shape, nc, epoch_length=300, mosaic=True, mixup=False, mosaic_prob=a["mosaic"],
                     mixup_prob=0, train=True, special_aug_ratio=0.7)
    ds.epoch_now, api["dataset"] = 0, "YoloDataset(..., epoch_length, mosaic, mosaic_prob=%g, ...)" % a["mosaic"]
else:
    ds, api["dataset"] = YoloDataset(lines, shape, mosaic=True), "YoloDataset(lines, shape, mosaic=True): mosaic on every other sample"
kw = {"worker_init_fn": partial(uu.worker_init_fn, rank=0, seed=11)} if hasattr(uu, "worker_init_fn") else {}
gen = DataLoader(ds, shuffle=True, batch_size=bs, num_workers=a["workers"], pin_memory=True, drop_last=True,
                 collate_fn=yolo_dataset_collate, **kw)

def batches():
    while True:
        for images, targets in gen:
            if isinstance(images, np.ndarray):  # older collate: the older train loop converted here
                images = torch.from_numpy(images).type(torch.FloatTensor)
                targets = [torch.from_numpy(ann).type(torch.FloatTensor) for ann in targets]
            yield images, targets

def step(images, targets):  # utils_fit.fit_one_epoch, fp16 = False
    with torch.no_grad():
        if cuda:
            images = images.cuda(0)
            targets = [ann.cuda(0) for ann in targets]
    optimizer.zero_grad()
    outputs = model_train(images)
    loss_value = loss_fn(outputs, targets)
    loss_value.backward()
    optimizer.step()
    loss_value.item()
    return images.shape[0]

sync = torch.cuda.synchronize if cuda else (lambda: None)
it = batches()
fixed = next(it)
out = {"api": api, "threads": torch.get_num_threads(), "lr": optimizer.param_groups[0]["lr"]}
for mode in a["modes"]:
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    fn = (lambda: step(*fixed)) if mode == "step" else (lambda: step(*next(it)))
    out[mode] = summarize(time_windows(fn, a["warmup"], a["steps"], a["runs"], sync), peak_memory_mib(a["device"]))
json.dump(out, open(a["result"], "w"))
'''


def annotation_lines(records) -> list[str]:
    """Our records as their annotation lines: VOC-style integer corners (x1 + 1, y1 + 1, x2, y2), class."""
    lines = []
    for r in records:
        if any(c.isspace() for c in str(Path(r.image).resolve())):
            raise SystemExit(f"{r.image}: their annotation format splits on white space; use a path without spaces")
        keep = r.train_mask
        boxes = [f"{round(b[0]) + 1},{round(b[1]) + 1},{round(b[2])},{round(b[3])},{int(c)}"
                 for b, c in zip(r.boxes[keep], r.classes[keep])]
        lines.append(" ".join([str(Path(r.image).resolve()), *boxes]) + "\n")
    return lines


def bench_reference(args: argparse.Namespace, tr: Trainer) -> dict:
    """Their loop in a child process (their `nets`/`utils` packages would clash with ours in this one)."""
    ref = Path(args.reference_dir).expanduser().resolve()
    missing = [p for p in ("nets/yolo.py", "nets/yolo_training.py", "utils/dataloader.py", "utils/utils.py")
               if not (ref / p).is_file()]
    if missing:
        raise SystemExit(f"--reference-dir {ref}: not a bubbliiiing/yolov4-tiny-pytorch checkout (missing {missing})")
    with tempfile.TemporaryDirectory() as tmp:
        ann, result = Path(tmp) / "train.txt", Path(tmp) / "result.json"
        ann.write_text("".join(annotation_lines(tr.train_records)), encoding="utf-8")
        payload = {"dir": str(ref), "annotations": str(ann), "result": str(result), "device": tr.device.type,
                   "num_classes": len(tr.class_names), "phi": args.ref_phi, "img": args.img, "batch": args.batch,
                   "workers": args.workers, "mosaic": tr.cfg.mosaic, "modes": args.modes, "steps": args.steps,
                   "warmup": args.warmup, "runs": args.runs,
                   "anchors": read_anchors(resolve_path(tr.cfg.anchors)).reshape(-1).tolist()}
        source = ("from __future__ import annotations\n" + "\n".join(
            inspect.getsource(f) for f in (time_windows, summarize, peak_memory_mib)) + REFERENCE_DRIVER)
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        proc = subprocess.run([sys.executable, "-c", source, json.dumps(payload)], cwd=ref, env=env,
                              capture_output=True, text=True)
        if proc.returncode != 0 or not result.is_file():
            raise SystemExit(f"reference run in {ref} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
        out = json.loads(result.read_text())
    return {"dir": str(ref), "phi": args.ref_phi, "amp": "off", "optimizer": "adam (their train.py recipe)", **out}


def machine_info(device: torch.device) -> dict:
    from probes import cpu_model  # the suite's reader of /proc/cpuinfo (standard library only)

    return {"torch": torch.__version__, "python": platform.python_version(), "cpu": cpu_model(),
            "cpu_count": os.cpu_count(),
            "threads": torch.get_num_threads(), "device": str(device),
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--img", type=int, default=416)
    ap.add_argument("--batch", type=int, default=None, help="default 16 on cpu, 64 on cuda")
    ap.add_argument("--phi", default="3", help="attention (number or name), as train.py --phi")
    ap.add_argument("--amp", choices=["auto", "off", "fp16", "bf16"], default="off")
    ap.add_argument("--compile", action="store_true", help="torch.compile our model")
    ap.add_argument("--channels-last", choices=["on", "off"], default="off")
    ap.add_argument("--deterministic", choices=["on", "off"], default="on", help="as the config key (default on)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--modes", nargs="+", choices=["step", "loop"], default=["step", "loop"])
    ap.add_argument("--steps", type=int, default=10, help="timed steps per window")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--runs", type=int, default=3, help="timed windows")
    ap.add_argument("--data", default="synthetic")
    ap.add_argument("--reference-dir", default="", help="checkout of bubbliiiing/yolov4-tiny-pytorch to time too")
    ap.add_argument("--json-out", default="", help="also write the JSON here")
    args = ap.parse_args(argv)
    args.batch = args.batch or (64 if args.device == "cuda" else 16)
    if args.compile:  # compilation happens in the first steps: keep it out of the timed windows
        args.warmup = max(args.warmup, 2)
    ours, tr = bench_ours(args)
    result = {
        "benchmark": "train_throughput", "machine": machine_info(tr.device),
        "settings": {"data": args.data, "train_images": len(tr.train_set), "img_size": args.img, "batch_size": args.batch,
                     "phi": tr.model.phi, "amp": args.amp, "compile": args.compile,
                     "channels_last": args.channels_last == "on", "deterministic": args.deterministic == "on",
                     "workers": args.workers, "mosaic": tr.cfg.mosaic, "optimizer": tr.cfg.optimizer,
                     "ema": tr.ema is not None, "grad_clip": tr.cfg.grad_clip, "steps": args.steps,
                     "warmup": args.warmup, "runs": args.runs},
        "ours": ours,
    }
    if args.reference_dir:
        # their phi numbering: 1 se, 2 cbam, 3 eca (4 ca in newer checkouts); others -> no attention, said so
        args.ref_phi = {"none": 0, "se": 1, "cbam": 2, "eca": 3, "ca": 4}.get(tr.model.phi, 0)
        result["reference"] = bench_reference(args, tr)
        if args.ref_phi == 0 and tr.model.phi != "none":
            result["reference"]["phi_note"] = f"their code has no '{tr.model.phi}': reference runs without attention"
        result["speedup"] = {m: round(ours[m]["images_per_s"] / result["reference"][m]["images_per_s"], 3)
                             for m in args.modes}
    text = json.dumps(result, indent=2)
    print(text)
    if args.json_out:
        Path(args.json_out).write_text(text + "\n")
    return result


if __name__ == "__main__":
    main()
