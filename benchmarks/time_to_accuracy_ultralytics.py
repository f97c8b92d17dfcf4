"""Ultralytics (yolo26n, yolo11n) as a time_to_accuracy.py system, in a venv of its own (made on first use, sharing
this venv's torch build so timing compares the same kernels):

`YOLO("yolo26n.yaml").train(time=hours, pretrained=False, save_period=1, ...)`. Curve points: results.csv's `time`
and weights/epoch{N-1}.pt (it numbers checkpoints from 0). Predictions: `YOLO(weights).predict(conf=0.001,
max_det=300)` (its NMS IoU 0.7; yolo26 is NMS-free). Its code runs in child processes only: the `ultralytics`
package never enters this process.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

from time_to_accuracy_systems import (
    DEFAULT_ULTRALYTICS_VENV,
    DataSet,
    Epoch,
    Settings,
    by_path,
    check_run,
    child_env,
    image_paths,
    read_csv,
    run_logged,
)

from utils.eval.metrics import DetTable

ULTRALYTICS_MODELS = {"yolo26n": "yolo26n.yaml", "yolo11n": "yolo11n.yaml"}
ULTRALYTICS_CONF = 0.001

ULTRALYTICS_TRAIN = r'''
import json, sys
from ultralytics import YOLO
a = json.loads(sys.argv[1])
YOLO(a["model"]).train(**a["train"])
'''

ULTRALYTICS_PREDICT = r'''
import json, sys
import torch
from ultralytics import YOLO
a = json.loads(sys.argv[1])
out = {}
for weights in a["weights"]:
    dets = {}
    for r in YOLO(weights).predict(source=a["images"], conf=a["conf"], imgsz=a["img"], device=a["device"],
                                   max_det=300, batch=8, stream=True, verbose=False):
        b = r.boxes
        dets[r.path] = torch.cat([b.xyxy, b.conf[:, None], b.cls[:, None]], 1).double().tolist()
    out[weights] = dets
json.dump(out, open(a["result"], "w"))
'''


def ultralytics_env(st: Settings) -> dict[str, str]:
    """Offline: no online checks or telemetry (YOLO_OFFLINE), no pip installs at run time (YOLO_AUTOINSTALL); its
    settings file in the output folder instead of ~/.config (YOLO_CONFIG_DIR). Plots are off, so no font is fetched."""
    return child_env(YOLO_OFFLINE="1", YOLO_AUTOINSTALL="false", YOLO_CONFIG_DIR=str(st.config_dir))


class Ultralytics:
    def __init__(self, name: str):
        self.name, self.model = name, ULTRALYTICS_MODELS[name]
        self.about = {"recipe": f"YOLO('{self.model}').train(time, imgsz, batch, pretrained=False, save_period=1, "
                                "device, workers, seed, plots=False), its defaults otherwise (on a CPU it always "
                                "loads data in the main process)",
                      "predictions": f"YOLO(weights).predict(conf={ULTRALYTICS_CONF}, max_det=300): its NMS IoU 0.7 "
                                     "(yolo26: NMS-free)"}

    def train_args(self, ds: DataSet, seed: int, run_dir: Path, st: Settings) -> dict[str, Any]:
        return {"data": str(ds.yolo_yaml), "time": st.budget_min / 60, "imgsz": st.img, "batch": st.batch,
                "pretrained": False, "save_period": 1, "device": st.device if st.device == "cpu" else "0",
                "workers": st.workers, "seed": seed, "plots": False, "project": str(run_dir.parent),
                "name": run_dir.name, "exist_ok": True}

    def train(self, ds: DataSet, seed: int, run_dir: Path, st: Settings) -> dict[str, Any]:
        args = {"model": self.model, "train": self.train_args(ds, seed, run_dir, st)}
        run_dir.mkdir(parents=True)
        cmd = [str(st.ultralytics_python), "-c", ULTRALYTICS_TRAIN, json.dumps(args)]
        info = run_logged(cmd, run_dir / "tta_train.log", run_dir, ultralytics_env(st), st.budget_min * 120 + 900)
        check_run(f"{self.name} ({ds.name}, seed {seed})", info)
        return {"command": [str(st.ultralytics_python), "-c", "YOLO(model).train(**train)"], **args, **info}

    def epochs(self, run_dir: Path) -> list[Epoch]:
        """results.csv rows (epoch 1-based, `time` seconds since its loop started) with weights/epoch{epoch - 1}.pt."""
        rows = [{k.strip(): v for k, v in r.items()} for r in read_csv(run_dir / "results.csv")]
        out = [Epoch(n, float(r["time"]), run_dir / "weights" / f"epoch{n - 1}.pt")
               for r in rows for n in [int(float(r["epoch"]))]]
        return [e for e in out if e.weights.is_file()]

    def detections(self, ds: DataSet, run_dir: Path, epochs: list[Epoch], st: Settings) -> list[DetTable]:
        result = run_dir / "tta_predictions.json"
        payload = {"weights": [str(e.weights) for e in epochs], "images": image_paths(ds),
                   "conf": ULTRALYTICS_CONF, "img": st.img, "device": st.device if st.device == "cpu" else "0",
                   "result": str(result)}
        info = run_logged([str(st.ultralytics_python), "-c", ULTRALYTICS_PREDICT, json.dumps(payload)],
                          run_dir / "tta_predict.log", run_dir, ultralytics_env(st), 3600)
        check_run(f"{self.name} predictions ({run_dir})", info)
        dets = {w: {str(Path(p).resolve()): v for p, v in d.items()} for w, d in json.loads(result.read_text()).items()}
        result.unlink()
        return [by_path(ds.test, dets[str(e.weights)], f"{self.name} {e.weights}") for e in epochs]


def ensure_ultralytics(python: Path, st: Settings) -> str:
    """Ultralytics' version in the venv of `python`. The default venv is made when missing: a plain venv whose .pth
    file puts this venv's site-packages (torch, torchvision, numpy, ...) on its path, so both sides run the same
    torch build and no second torch is installed; pip then adds ultralytics and what it lacks."""
    check = [str(python), "-c", "import ultralytics; print(ultralytics.__version__)"]
    if python.is_file():
        r = subprocess.run(check, capture_output=True, text=True, env=ultralytics_env(st))
        if r.returncode == 0:
            return r.stdout.strip().splitlines()[-1]
    if python != DEFAULT_ULTRALYTICS_VENV / "bin" / "python":
        raise RuntimeError(f"--ultralytics-python {python}: no Python with ultralytics there; pip install ultralytics "
                           f"into that environment, or leave the flag out to make {DEFAULT_ULTRALYTICS_VENV}")
    print(f"making {DEFAULT_ULTRALYTICS_VENV} (ultralytics, sharing this venv's torch) ...", file=sys.stderr,
          flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(DEFAULT_ULTRALYTICS_VENV)], check=True)
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "zz_shared_torch.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    for cmd, what in (([str(python), "-m", "pip", "install", "-q", "ultralytics"], "pip install ultralytics into"),
                      (check, "import ultralytics in")):
        r = subprocess.run(cmd, capture_output=True, text=True, env=ultralytics_env(st))
        if r.returncode != 0:
            last = (r.stderr.strip().splitlines() or ["no message"])[-1]
            raise RuntimeError(f"{what} {DEFAULT_ULTRALYTICS_VENV} failed: {last}; remove that folder to start over, "
                               "or pass --ultralytics-python")
    return r.stdout.strip().splitlines()[-1]


def write_yolo_copy(ds: DataSet) -> Path:
    """The data set in Ultralytics' layout: images/<split>/ (links to our files), labels/<split>/*.txt (class cx cy
    w h, normalised; difficult and crowd boxes left out, as our training does), data.yaml. Returns the YAML."""
    root = ds.dir / "yolo"
    shutil.rmtree(root, ignore_errors=True)  # rebuilt every time (links and small files): never a stale copy
    for split, records in (("train", ds.train), ("val", ds.val), ("test", ds.test)):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for i, r in enumerate(records):
            src = Path(r.image).resolve()
            name = f"{i:06d}_{src.stem}"
            (root / "images" / split / f"{name}{src.suffix}").symlink_to(src)
            keep = r.train_mask
            lines = [f"{int(c)} {(b[0] + b[2]) / 2 / r.width:.6f} {(b[1] + b[3]) / 2 / r.height:.6f} "
                     f"{(b[2] - b[0]) / r.width:.6f} {(b[3] - b[1]) / r.height:.6f}\n"
                     for b, c in zip(r.boxes[keep].tolist(), r.classes[keep].tolist())]
            (root / "labels" / split / f"{name}.txt").write_text("".join(lines))
    names = "".join(f"  {i}: {json.dumps(n)}\n" for i, n in enumerate(ds.class_names))
    yaml_path = root / "data.yaml"
    yaml_path.write_text(f"path: {root}\ntrain: images/train\nval: images/val\ntest: images/test\nnames:\n{names}")
    return yaml_path
