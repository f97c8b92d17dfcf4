"""The systems benchmarks/time_to_accuracy.py trains and scores, each with its own code and recipe:

- `Ours`: `python train.py --data D --time M --save-period 1 --seed S` (defaults otherwise). Curve points: results.csv's
  `elapsed` (seconds since the loop started, evaluation included) and weights/epoch{N}.pt (EMA weights).
  Predictions: get_map.py's path (`detections_of_model` at its val defaults, multi-label), torch backend.
- `Reference`: bubbliiiing/yolov4-tiny-pytorch's own train.py, copied into the run folder with its settings block
  rewritten (from scratch, Adam, Init_lr 1e-3 with its nbs-64 rule and limits, weight decay 0, cosine decay, mosaic
  0.5 for the first 70% of epochs, save_period 1, its eval off) and run by a small driver that wraps its
  `fit_one_epoch` to note the wall-clock after each epoch (nothing else of its loop is touched). Its epoch count is
  fixed up front (its cosine schedule needs it): planned from a 1-epoch probe run of the same recipe, or given.
  Predictions: YOLO.get_map_txt's steps (its resize, decode and NMS) at its get_map.py settings, conf 0.001, NMS IoU
  0.5, with full-precision boxes and scores instead of its text file's truncated ones.
- `Ultralytics` (yolo26n, yolo11n): time_to_accuracy_ultralytics.py.

Each system returns one DetTable per checkpoint (test split, record order, original pixels); the caller scores them.
The reference's and Ultralytics' code runs in child processes only: their `nets`/`utils`/`ultralytics` packages
never enter this process.
"""
from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from bench_train import annotation_lines
from reference_pipelines import REFERENCE_PRELUDE

from nets.assets import read_anchors
from utils.config import DEFAULT_CONFIG, Config, load_config, resolve_path
from utils.data.anchors import check_anchors, format_anchors
from utils.data.records import Record
from utils.eval.evaluate import predictions_to_table
from utils.eval.metrics import DetTable
from utils.eval.val_run import detections_of_model

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_ULTRALYTICS_VENV = ROOT / ".venv-ultralytics"  # Settings' default; made by time_to_accuracy_ultralytics.py
REFERENCE_CONF, REFERENCE_NMS_IOU = 0.001, 0.5  # its get_map.py's settings


@dataclass
class Settings:
    """What every system gets alike."""
    budget_min: float
    img: int = 320
    batch: int = 16
    workers: int = 2
    device: str = "cpu"
    reference_dir: Path | None = None
    reference_epochs: int = 0  # 0: planned from a 1-epoch probe run
    reference_phi: int = 3  # their numbering: 0 none, 1 se, 2 cbam, 3 eca (ours' default)
    ultralytics_python: Path = DEFAULT_ULTRALYTICS_VENV / "bin" / "python"
    config_dir: Path = ROOT / "runs" / "ultralytics_settings"  # YOLO_CONFIG_DIR


@dataclass
class DataSet:
    """One data set: what train.py's --data gets, its splits as records and a folder for files made from it."""
    name: str
    data: str
    dir: Path
    class_names: list[str]
    train: list[Record]
    val: list[Record]
    test: list[Record]
    yolo_yaml: Path | None = None  # the YOLO-format copy (Ultralytics' layout), when a peer trains


@dataclass
class Epoch:
    """One saved checkpoint: its epoch (1-based), wall-clock seconds of training so far, the weights file."""
    epoch: int
    elapsed_s: float
    weights: Path


def run_logged(cmd: list[str], log: Path, cwd: Path, env: dict[str, str], timeout_s: float) -> dict[str, Any]:
    """Run a command in its own process group with its output in `log`; on timeout (or Ctrl-C) the whole group
    (data-loader workers too) is killed. The checkpoints written so far stay and are scored."""
    t = time.perf_counter()
    with open(log, "w") as f:
        f.write(" ".join(cmd)[:4000] + "\n")
        f.flush()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
        timed_out = False
        try:
            rc = proc.wait(timeout=timeout_s)
        except BaseException as e:  # the timeout, or Ctrl-C: no orphaned trainers on a shared machine
            os.killpg(proc.pid, signal.SIGKILL)
            rc = proc.wait()
            if not isinstance(e, subprocess.TimeoutExpired):
                raise
            timed_out = True
    return {"rc": rc, "process_s": round(time.perf_counter() - t, 1), "timed_out": timed_out, "log": str(log)}


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a peer's process: ours' PYTHONPATH removed (their `nets`/`utils` would clash)."""
    return {**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, "MPLBACKEND": "Agg", **extra}


def check_run(name: str, info: dict[str, Any]) -> None:
    if info["rc"] != 0 and not info["timed_out"]:
        lines = [ln for ln in Path(info["log"]).read_text(errors="replace").splitlines() if ln.strip()]
        raise RuntimeError(f"{name} failed (exit {info['rc']}); see {info['log']} (last line: "
                           f"{lines[-1][-300:] if lines else 'none'})")


def read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def image_paths(ds: DataSet) -> list[str]:
    return [str(Path(r.image).resolve()) for r in ds.test]


def by_path(records: list[Record], dets: dict[str, list[list[float]]], what: str) -> DetTable:
    """A child's {image path: [[x1, y1, x2, y2, score, class], ...]} as a DetTable in record order."""
    preds = []
    for r in records:
        key = str(Path(r.image).resolve())
        if key not in dets:
            raise RuntimeError(f"{what}: no predictions for {key}")
        d = torch.tensor(dets[key], dtype=torch.float64).reshape(-1, 6)
        preds.append({"boxes": d[:, :4], "scores": d[:, 4], "labels": d[:, 5].round().long()})
    return predictions_to_table(preds)


# ----------------------------------------------------------------------------------------------------- ours
VAL = load_config(DEFAULT_CONFIG, mode="val")  # get_map.py's defaults: what Ours' predictions use


class Ours:
    name = "ours"
    about = {"recipe": "train.py's defaults with --time, --save-period 1, --seed",
             "predictions": f"get_map.py's path: conf {VAL.conf_thres:g}, NMS IoU {VAL.iou_thres:g}, multi-label, "
                            "torch backend"}

    def command(self, ds: DataSet, seed: int, run_dir: Path, st: Settings) -> list[str]:
        return [sys.executable, str(ROOT / "train.py"), "--data", ds.data, "--time", f"{st.budget_min:g}",
                "--save-period", "1", "--seed", str(seed), "--img", str(st.img), "--batch-size", str(st.batch),
                "--workers", str(st.workers), "--device", st.device, "--project", str(run_dir.parent),
                "--name", run_dir.name, "--exist-ok", "true"]

    def train(self, ds: DataSet, seed: int, run_dir: Path, st: Settings) -> dict[str, Any]:
        cmd = self.command(ds, seed, run_dir, st)
        run_dir.mkdir(parents=True)
        info = run_logged(cmd, run_dir / "tta_train.log", ROOT, {**os.environ, "PYTHONPATH": str(ROOT)},
                          st.budget_min * 120 + 900)
        check_run(f"ours ({ds.name}, seed {seed})", info)
        return {"command": cmd, **info}

    def epochs(self, run_dir: Path) -> list[Epoch]:
        """results.csv rows (epoch 0-based) with their weights/epoch{epoch + 1}.pt."""
        out = [Epoch(n, float(r["elapsed"]), run_dir / "weights" / f"epoch{n}.pt")
               for r in read_csv(run_dir / "results.csv") for n in [int(r["epoch"]) + 1]]
        return [e for e in out if e.weights.is_file()]

    def detections(self, ds: DataSet, run_dir: Path, epochs: list[Epoch], st: Settings) -> list[DetTable]:
        cfg = load_config(DEFAULT_CONFIG, {"data": ds.data, "split": "test", "device": st.device, "backend": "torch"},
                          mode="val")
        out = []
        for e in epochs:
            ev = detections_of_model(cfg, e.weights, progress=False, log=lambda *a: None)
            if ev.evalset.num_images != len(ds.test):
                raise RuntimeError(f"{e.weights}: scored {ev.evalset.num_images} test images, expected {len(ds.test)}")
            out.append(ev.dets)
        return out



# ------------------------------------------------------------------------------------------------ reference
# train.py's own settings for the comparison (its README's from-scratch recipe; the rest stays as it ships)
def reference_settings(ds: DataSet, run_dir: Path, seed: int, epochs: int, st: Settings) -> dict[str, Any]:
    return {
        "Cuda": st.device == "cuda", "seed": seed, "classes_path": str(run_dir / "classes.txt"),
        "anchors_path": str(run_dir / "anchors.txt"), "model_path": "", "input_shape": [st.img, st.img],
        "phi": st.reference_phi, "pretrained": False, "mosaic": True, "mosaic_prob": 0.5, "mixup": False,
        "special_aug_ratio": 0.7, "Init_Epoch": 0, "UnFreeze_Epoch": epochs, "Unfreeze_batch_size": st.batch,
        "Freeze_Train": False, "Init_lr": 1e-3, "optimizer_type": "adam", "weight_decay": 0, "lr_decay_type": "cos",
        "save_period": 1, "save_dir": str(run_dir / "logs"), "eval_flag": False, "num_workers": st.workers,
        "train_annotation_path": str(run_dir / "train.txt"), "val_annotation_path": str(run_dir / "val.txt"),
    }


def rewrite_settings(source: str, settings: dict[str, Any], where: str = "train.py") -> str:
    """Their train.py with each `NAME = value` line of the settings block (before `seed_everything(seed)`) set to
    repr(settings[NAME]); a setting not found exactly once there is an error (a checkout this was not written for)."""
    head, sep, tail = source.partition("seed_everything(seed)")
    if not sep:
        raise RuntimeError(f"{where}: no `seed_everything(seed)` line; not the train.py this benchmark drives")
    for key, value in settings.items():
        found = list(re.finditer(rf"^([ \t]+{re.escape(key)}[ \t]*=[ \t]*)[^\r\n]*", head, flags=re.M))
        if len(found) != 1:
            raise RuntimeError(f"{where}: setting `{key}` found {len(found)} times in the settings block, not once")
        m = found[0]
        head = head[:m.start()] + m.group(1) + repr(value) + head[m.end():]
    return head + sep + tail


# Runs the rewritten train.py as __main__; only `fit_one_epoch` is wrapped, to note the time after each epoch.
REFERENCE_DRIVER = r'''
import glob, inspect, json, os, runpy, sys, time
a = json.loads(sys.argv[1])
sys.path.insert(0, a["dir"])
import utils.utils_fit as fit
fit_one_epoch, t_start, t_first = fit.fit_one_epoch, time.time(), []

def timed_fit_one_epoch(*args, **kwargs):
    bound = inspect.signature(fit_one_epoch).bind(*args, **kwargs).arguments
    if not t_first:
        t_first.append(time.time())
    fit_one_epoch(*args, **kwargs)
    now, epoch = time.time(), bound["epoch"] + 1
    saved = sorted(glob.glob(os.path.join(bound["save_dir"], "ep%03d-*.pth" % epoch)))
    with open(a["epochs_file"], "a") as f:
        f.write(json.dumps({"epoch": epoch, "elapsed_s": now - t_first[0], "since_start_s": now - t_start,
                            "weights": saved[-1] if saved else None}) + "\n")

fit.fit_one_epoch = timed_fit_one_epoch
runpy.run_path(a["train_py"], run_name="__main__")
'''

# YOLO.get_map_txt's steps (get_map.py's confidence and nms_iou) with the boxes and scores unrounded
REFERENCE_PREDICT = REFERENCE_PRELUDE + r'''
import contextlib, io, json, sys
import numpy as np
import torch
from utils.utils import cvtColor, preprocess_input, resize_image
a = json.loads(sys.argv[1])
out = {}
for weights in a["weights"]:
    with contextlib.redirect_stdout(io.StringIO()):
        yolo = YOLO(model_path=weights, classes_path=a["classes"], anchors_path=a["anchors"], phi=a["phi"],
                    input_shape=[a["img"], a["img"]], confidence=a["conf"], nms_iou=a["iou"], cuda=False)
    dets = {}
    for path in a["images"]:
        image = Image.open(path)
        image_shape = np.array(np.shape(image)[0:2])
        image = cvtColor(image)
        data = resize_image(image, (yolo.input_shape[1], yolo.input_shape[0]), yolo.letterbox_image)
        data = np.expand_dims(np.transpose(preprocess_input(np.array(data, dtype="float32")), (2, 0, 1)), 0)
        with torch.no_grad():
            outputs = yolo.bbox_util.decode_box(yolo.net(torch.from_numpy(data)))
            r = yolo.bbox_util.non_max_suppression(torch.cat(outputs, 1), yolo.num_classes, yolo.input_shape,
                    image_shape, yolo.letterbox_image, conf_thres=yolo.confidence, nms_thres=yolo.nms_iou)[0]
        # their rows: top, left, bottom, right, obj, class score, class
        dets[path] = [] if r is None else np.stack([r[:, 1], r[:, 0], r[:, 3], r[:, 2], r[:, 4] * r[:, 5], r[:, 6]],
                                                   1).astype(float).tolist()
    out[weights] = dets
json.dump(out, open(a["result"], "w"))
'''


def reference_anchors(ds: DataSet, st: Settings) -> str:
    """The anchors ours starts from for this data (its default file, refitted when the boxes fit it poorly), in the
    reference's anchors-file format: the same prior for both."""
    anchors = check_anchors(ds.train, read_anchors(resolve_path(Config().anchors)), st.img, refit=True, seed=0,
                            log=lambda *a: None)
    return format_anchors(anchors)


class Reference:
    name = "reference"
    about = {"recipe": "its train.py with the settings block rewritten (each run's `settings`); epochs planned from a "
                       "1-epoch probe run unless --reference-epochs",
             "predictions": f"YOLO.get_map_txt's steps (resize, its decode and per-class NMS): conf {REFERENCE_CONF}, "
                            f"NMS IoU {REFERENCE_NMS_IOU} (its get_map.py)"}

    def checkout(self, st: Settings) -> Path:
        ref = st.reference_dir
        missing = [] if ref is None else [p for p in ("train.py", "yolo.py", "utils/utils_fit.py", "nets/yolo.py")
                                          if not (ref / p).is_file()]
        if ref is None or missing:
            raise RuntimeError(f"--reference-dir {ref}: not a bubbliiiing/yolov4-tiny-pytorch checkout "
                               f"(missing {missing or 'the folder'}); clone it and pass its folder")
        return ref

    def prepare(self, ds: DataSet, seed: int, run_dir: Path, epochs: int, st: Settings) -> list[str]:
        """Its files in `run_dir` (classes, anchors, annotation lines, the rewritten train.py, the driver)."""
        ref = self.checkout(st)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "classes.txt").write_text("".join(f"{n}\n" for n in ds.class_names))
        (run_dir / "anchors.txt").write_text(reference_anchors(ds, st) + "\n")
        (run_dir / "train.txt").write_text("".join(annotation_lines(ds.train)), encoding="utf-8")
        (run_dir / "val.txt").write_text("".join(annotation_lines(ds.val)), encoding="utf-8")
        settings = reference_settings(ds, run_dir, seed, epochs, st)
        with open(ref / "train.py", encoding="utf-8", newline="") as f:  # its line endings kept: diff shows the edit
            source = rewrite_settings(f.read(), settings, str(ref / "train.py"))
        with open(run_dir / "train.py", "w", encoding="utf-8", newline="") as f:
            f.write(source)
        (run_dir / "driver.py").write_text(REFERENCE_DRIVER)
        (run_dir / "epochs.jsonl").unlink(missing_ok=True)
        payload = {"dir": str(ref), "train_py": str(run_dir / "train.py"), "epochs_file": str(run_dir / "epochs.jsonl")}
        return [sys.executable, str(run_dir / "driver.py"), json.dumps(payload)]

    def plan_epochs(self, ds: DataSet, seed: int, run_dir: Path, st: Settings) -> dict[str, Any]:
        """Its epoch count: given, or as many as fit the budget at the time of one probe epoch (same recipe)."""
        if st.reference_epochs:
            return {"epochs": st.reference_epochs, "planned_from": "--reference-epochs"}
        probe = run_dir / "probe"
        cmd = self.prepare(ds, seed, probe, 1, st)
        info = run_logged(cmd, probe / "train.log", probe, child_env(), 1800)
        check_run(f"reference probe ({ds.name})", info)
        epoch_s = self.epochs(probe)[0].elapsed_s
        shutil.rmtree(probe / "logs", ignore_errors=True)  # its weights; the log and epochs.jsonl stay
        return {"epochs": max(1, int(st.budget_min * 60 // epoch_s)), "planned_from": "a 1-epoch probe run",
                "probe_epoch_s": round(epoch_s, 1), "probe_process_s": info["process_s"]}

    def train(self, ds: DataSet, seed: int, run_dir: Path, st: Settings) -> dict[str, Any]:
        run_dir.mkdir(parents=True)
        plan = self.plan_epochs(ds, seed, run_dir, st)
        cmd = self.prepare(ds, seed, run_dir, plan["epochs"], st)
        info = run_logged(cmd, run_dir / "train.log", run_dir, child_env(), st.budget_min * 120 + 900)
        check_run(f"reference ({ds.name}, seed {seed})", info)
        return {"command": cmd[:2], "settings": reference_settings(ds, run_dir, seed, plan["epochs"], st),
                "anchors": (run_dir / "anchors.txt").read_text().strip(), "plan": plan, **info}

    def epochs(self, run_dir: Path) -> list[Epoch]:
        path = run_dir / "epochs.jsonl"
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
        return [Epoch(r["epoch"], r["elapsed_s"], Path(r["weights"])) for r in rows
                if r["weights"] and Path(r["weights"]).is_file()]

    def detections(self, ds: DataSet, run_dir: Path, epochs: list[Epoch], st: Settings) -> list[DetTable]:
        ref = self.checkout(st)
        result = run_dir / "tta_predictions.json"
        payload = {"weights": [str(e.weights) for e in epochs], "images": image_paths(ds),
                   "classes": str(run_dir / "classes.txt"), "anchors": str(run_dir / "anchors.txt"),
                   "phi": st.reference_phi, "img": st.img, "conf": REFERENCE_CONF, "iou": REFERENCE_NMS_IOU,
                   "result": str(result)}
        info = run_logged([sys.executable, "-c", REFERENCE_PREDICT, json.dumps(payload)], run_dir / "tta_predict.log",
                          ref, child_env(PYTHONPATH=str(ref)), 3600)
        check_run(f"reference predictions ({run_dir})", info)
        dets = json.loads(result.read_text())
        result.unlink()
        return [by_path(ds.test, dets[str(e.weights)], f"reference {e.weights}") for e in epochs]
