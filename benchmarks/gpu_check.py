"""One command that runs every CUDA path of the project and writes what happened as one JSON document.

    python benchmarks/gpu_check.py --out runs/gpu_check.json                    # on a GPU machine (~8 min, H100-class)
    python benchmarks/gpu_check.py --device cpu --quick --out /tmp/check.json   # the plumbing, on any machine

Parts (each in its own child process with its own timeout; the document is rewritten after every part,
so a hang or a crash in one part still leaves the others' figures):
  tests       the GPU-only tests (`pytest -m gpu`)
  train_fp16  a short real training on the built-in set with --amp fp16, killed (-9) after its first epoch
              and resumed from its last.pt: every epoch logged once, the loss falls, nothing is NaN, best.pt loads
  train_bf16  the same with --amp bf16 (each skipped, with the reason, where this torch cannot autocast to it)
  ddp         train.py under torchrun, one process per GPU (NCCL; world size 1 still initialises the process
              group, the DistributedSampler and rank-0 writing), with SyncBN
  get_map     get_map.py on the fp16 run's best.pt with --device cuda and --device cpu: all 12 COCO numbers
              agree within 1e-4; and the metric alone for 5,000 images' detections on the device (goal < 1 s)
  predict     predict.py --half on a folder of the val images
  bench       benchmarks/run.py --sections loader,train,inference on the device (its own JSON, summarised)
On a CPU, parts that need CUDA are recorded as skipped with the reason (both training parts run there: fp16 with
its grad scaler as on a GPU); --quick shrinks every part (64 px, a few images, two epochs) so the plumbing is
checked in a few minutes, not the figures.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE), str(ROOT)]

from probes import run_child, tail  # noqa: E402

PARTS = ("tests", "train_fp16", "train_bf16", "ddp", "get_map", "predict", "bench")
COCO_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def settings(device: str, quick: bool) -> dict[str, Any]:
    """Sizes of every part: the real check on a GPU, a smoke run with --quick."""
    if quick:
        return {"img": 64, "batch": 4, "epochs": 2, "num_train": 16, "num_val": 8, "metric_images": 200,
                "timeout": 300, "bench_args": ["--quick", "--sections", "machine"]}
    return {"img": 416, "batch": 64, "epochs": 6, "num_train": 800, "num_val": 200, "metric_images": 5000,
            "timeout": 900, "bench_args": ["--sections", "machine,matmul,loader,train,inference"]}


def machine(device: str) -> dict[str, Any]:
    import torch  # here, not at the top: a usage error or --help answers without loading torch

    from utils.device import select_device
    from utils.engine.torch_utils import AMP_DTYPES, autocast_supported

    info = {"torch": torch.__version__, "cuda_available": torch.cuda.is_available(), "device": device,
            "cpu_count": os.cpu_count()}
    try:
        kind = select_device(device).type
    except ValueError:  # a CUDA device without CUDA: every part then fails and says why
        kind = None
    if kind:
        info["autocast"] = {amp: autocast_supported(kind, dtype) for amp, dtype in AMP_DTYPES.items()}
    if torch.cuda.is_available():
        info.update(gpus=[torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
                    cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(),
                    bf16_supported=torch.cuda.is_bf16_supported())
    return info


def write_data_yaml(tmp: Path, cfg: dict[str, Any]) -> Path:
    """The built-in generator, sized for the check, in a folder of its own."""
    path = tmp / "data.yaml"
    path.write_text(f"format: synthetic\npath: {tmp / 'synthetic'}\nseed: 0\nnum_train: {cfg['num_train']}\n"
                    f"num_val: {cfg['num_val']}\nnum_test: 4\n")
    return path


def child(cmd: list[str], timeout: float) -> dict[str, Any]:
    r = run_child(cmd, timeout)
    return {"command": " ".join(cmd), "rc": r["rc"], "seconds": r["seconds"], "timed_out": r["timed_out"],
            "tail": tail((r["stdout"] or "") + (r["stderr"] or ""), 15)}


def read_results(csv_path: Path) -> list[dict[str, float]]:
    if not csv_path.is_file():
        return []
    with open(csv_path) as f:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(f)]


def loads(weights: Path) -> str | None:
    """None when nets.load_model opens the file, else why not."""
    r = run_child([sys.executable, "-c", f"from nets import load_model; load_model({str(weights)!r})"], 120)
    return None if r["rc"] == 0 else tail(r["stderr"], 3)


def interrupted(cmd: list[str], run: Path, timeout: float) -> dict[str, Any]:
    """Run `cmd` and kill its whole process group (kill -9) once the run's first epoch is checkpointed: last.pt
    appears (written after that epoch's results.csv row, so a kill between the two cannot happen here)."""
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    killed = False
    while proc.poll() is None and time.perf_counter() - t < timeout:
        if (run / "weights" / "last.pt").is_file():
            os.killpg(proc.pid, signal.SIGKILL)
            killed = True
            break
        time.sleep(0.5)
    if proc.poll() is None:  # past the timeout
        os.killpg(proc.pid, signal.SIGKILL)
    out = proc.communicate()[0]
    return {"command": " ".join(cmd), "rc": proc.returncode, "seconds": round(time.perf_counter() - t, 2),
            "killed_after_epochs": 1 if killed else None, "timed_out": not killed and proc.returncode is None,
            "tail": tail(out, 15)}


def train_part(amp: str, ctx: dict[str, Any]) -> dict[str, Any]:
    """Train, kill -9 the run after its first epoch, resume it to the end; then check the loss fell,
    nothing is NaN, every epoch was logged once and best.pt loads."""
    cfg, tmp = ctx["cfg"], ctx["tmp"]
    run = tmp / "runs" / f"amp_{amp}"
    shutil.rmtree(run, ignore_errors=True)  # a --workdir used before: its last.pt would stop this run at once
    cmd = [sys.executable, "train.py", "--phi", "3", "--data", str(ctx["data"]), "--img", str(cfg["img"]),
           "--batch", str(cfg["batch"]), "--time", "0", "--epochs", str(cfg["epochs"]), "--workers", "2",
           "--device", ctx["device"], "--amp", amp, "--project", str(run.parent), "--name", run.name,
           "--exist-ok", "true", "--plots", "false"]
    out = {"train": interrupted(cmd, run, cfg["timeout"])}
    out["resume"] = child([sys.executable, "train.py", "--resume", str(run)], cfg["timeout"])
    rows = read_results(run / "results.csv")
    losses = [r["box_loss"] + r["obj_loss"] + r["cls_loss"] for r in rows]
    checks = {"interrupted": out["train"]["killed_after_epochs"] == 1,
              "every_epoch_once": [int(r["epoch"]) for r in rows] == list(range(cfg["epochs"])),
              "first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None,
              "loss_falls": len(losses) >= 2 and losses[-1] < losses[0],
              "no_nan": bool(losses) and all(math.isfinite(v) for v in losses),
              "best_pt_loads": (run / "weights" / "best.pt").is_file() and loads(run / "weights" / "best.pt") is None}
    out["checks"] = checks
    out["ok"] = out["resume"]["rc"] == 0 and all(v for v in checks.values() if isinstance(v, bool))
    ctx[f"weights_{amp}"] = run / "weights" / "best.pt"
    return out


def part_tests(ctx: dict[str, Any]) -> dict[str, Any]:
    r = child([sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", "-rs"], ctx["cfg"]["timeout"])
    counts = {k: int(v) for v, k in re.findall(r"(\d+) (passed|failed|skipped|error|deselected)", r["tail"])}
    return {**r, "counts": counts, "ok": r["rc"] in (0, 5) and not counts.get("failed") and not counts.get("error")}


def part_train_fp16(ctx: dict[str, Any]) -> dict[str, Any]:
    return train_amp_part("fp16", ctx)


def part_train_bf16(ctx: dict[str, Any]) -> dict[str, Any]:
    return train_amp_part("bf16", ctx)


def train_amp_part(amp: str, ctx: dict[str, Any]) -> dict[str, Any]:
    if ctx["autocast"].get(amp) is False:
        return {"skipped": f"this torch cannot autocast to {amp} on {ctx['device']} (train.py refuses --amp {amp} there)"}
    return train_part(amp, ctx)


def part_ddp(ctx: dict[str, Any]) -> dict[str, Any]:
    import torch

    cfg, tmp = ctx["cfg"], ctx["tmp"]
    gpus = torch.cuda.device_count() if ctx["device"] != "cpu" else 0
    run = tmp / "runs" / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={max(gpus, 1)}",
           "train.py", "--phi", "3", "--data", str(ctx["data"]), "--img", str(cfg["img"]), "--batch", str(cfg["batch"]),
           "--time", "0", "--epochs", "1", "--workers", "2", "--device", ctx["device"], "--sync-bn", "true",
           "--project", str(run.parent), "--name", run.name, "--exist-ok", "true", "--plots", "false"]
    out = child(cmd, cfg["timeout"])
    out["world_size"] = max(gpus, 1)
    out["backend"] = "nccl" if gpus else "gloo"
    out["checks"] = {"best_pt_written_by_rank0": (run / "weights" / "best.pt").is_file(),
                     "one_results_row": len(read_results(run / "results.csv")) == 1}
    out["ok"] = out["rc"] == 0 and all(out["checks"].values())
    return out


def part_get_map(ctx: dict[str, Any]) -> dict[str, Any]:
    cfg, tmp = ctx["cfg"], ctx["tmp"]
    weights = ctx.get("weights_fp16") or ctx.get("weights_bf16")
    if weights is None or not Path(weights).is_file():
        return {"skipped": "no trained weights from the training parts"}
    numbers, out = {}, {}
    for dev in dict.fromkeys([ctx["device"], "cpu"]):
        folder = tmp / f"map_{dev}"
        out[dev] = child([sys.executable, "get_map.py", "--weights", str(weights), "--data", str(ctx["data"]),
                          "--device", dev, "--out", str(folder), "--no-plots"], cfg["timeout"])
        metrics = folder / "metrics.json"
        numbers[dev] = json.loads(metrics.read_text())["coco"] if metrics.is_file() else {}
    pairs = [(numbers[ctx["device"]].get(k), numbers["cpu"].get(k)) for k in COCO_KEYS]
    diff = max((abs(a - b) for a, b in pairs if a is not None and b is not None), default=None)
    out["max_abs_diff_12_coco"] = diff
    bench = child([sys.executable, "benchmarks/bench_metrics.py", "--sizes", str(cfg["metric_images"]),
                   "--repeat", "3", "--device", ctx["device"], "--out", str(tmp / "metrics_speed.json")], cfg["timeout"])
    speed = tmp / "metrics_speed.json"
    entry = json.loads(speed.read_text())["sizes"][str(cfg["metric_images"])] if speed.is_file() else {}
    out["metric_speed"] = {**bench, "images": cfg["metric_images"], "seconds_ours": entry.get("ours", {}).get("metric_s"),
                           "goal_s": 1.0 if ctx["device"] != "cpu" else None}
    out["ok"] = all(o["rc"] == 0 for o in out.values() if isinstance(o, dict) and "rc" in o) and \
        diff is not None and diff <= 1e-4
    return out


def part_predict(ctx: dict[str, Any]) -> dict[str, Any]:
    if ctx["device"] == "cpu":
        return {"skipped": "fp16 inference (--half) needs CUDA"}
    weights = ctx.get("weights_fp16") or ctx.get("weights_bf16")
    if weights is None or not Path(weights).is_file():
        return {"skipped": "no trained weights from the training parts"}
    images = ctx["tmp"] / "synthetic" / "VOCdevkit" / "VOC2007" / "JPEGImages"
    out = child([sys.executable, "predict.py", str(images), "--weights", str(weights), "--half", "--device",
                 ctx["device"], "--project", str(ctx["tmp"] / "predict"), "--nosave"], ctx["cfg"]["timeout"])
    speed = re.search(r"speed per image: ([\d.]+) ms letterbox, ([\d.]+) ms model, ([\d.]+) ms decode", out["tail"])
    out["ms_per_image"] = dict(zip(("letterbox", "model", "decode_nms"), map(float, speed.groups()))) if speed else None
    out["ok"] = out["rc"] == 0
    return out


def part_bench(ctx: dict[str, Any]) -> dict[str, Any]:
    doc_path = ctx["tmp"] / "bench.json"
    cmd = [sys.executable, "benchmarks/run.py", "--device", ctx["device"], "--out", str(doc_path), *ctx["cfg"]["bench_args"]]
    if ctx.get("reference_dir"):
        cmd += ["--reference-dir", ctx["reference_dir"]]
    out = child(cmd, 3 * ctx["cfg"]["timeout"])
    if doc_path.is_file():
        doc = json.loads(doc_path.read_text())
        out["sections"] = {k: v.get("status") for k, v in doc.get("sections", {}).items()}
        out["summary"] = doc.get("summary")
    out["ok"] = out["rc"] == 0
    return out


RUNNERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "tests": part_tests, "train_fp16": part_train_fp16, "train_bf16": part_train_bf16, "ddp": part_ddp,
    "get_map": part_get_map, "predict": part_predict, "bench": part_bench}


def status_of(result: dict[str, Any]) -> str:
    if "skipped" in result:
        return "skipped"
    if any(isinstance(v, dict) and v.get("timed_out") for v in [result, *result.values()]):
        return "timeout"
    return "ok" if result.get("ok") else "failed"


def table(doc: dict[str, Any]) -> str:
    lines = ["| part | status | seconds | detail |", "|---|---|---|---|"]
    for name, r in doc["parts"].items():
        detail = r.get("skipped") or json.dumps(r.get("checks") or r.get("counts") or {
            k: r[k] for k in ("max_abs_diff_12_coco", "ms_per_image", "sections") if k in r})
        lines.append(f"| {name} | {r['status']} | {r.get('part_seconds', '')} | {detail[:160]} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="", help="cuda (default when torch sees a GPU) or cpu")
    p.add_argument("--quick", action="store_true", help="smoke sizes: checks the plumbing, not the figures")
    p.add_argument("--parts", default=",".join(PARTS), help=f"a subset of {','.join(PARTS)}")
    p.add_argument("--out", default="", help="write the JSON document here (rewritten after every part)")
    p.add_argument("--reference-dir", default="", help="bubbliiiing/yolov4-tiny-pytorch checkout for the bench part")
    p.add_argument("--workdir", default="", help="keep runs and data here (default: a temporary folder)")
    args = p.parse_args(argv)
    unknown = set(args.parts.split(",")) - set(PARTS)
    if unknown:
        p.error(f"unknown part(s) {sorted(unknown)}; choose from {','.join(PARTS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    cfg = settings(device, args.quick)
    info = machine(device)
    doc: dict[str, Any] = {"suite": "benchmarks/gpu_check.py", "created_utc": datetime.now(timezone.utc).isoformat(),
                           "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
                           "device": device, "quick": args.quick, "settings": cfg, "machine": info, "parts": {}}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(args.workdir or d)
        tmp.mkdir(parents=True, exist_ok=True)
        ctx = {"cfg": cfg, "tmp": tmp, "device": device, "data": write_data_yaml(tmp, cfg),
               "reference_dir": args.reference_dir, "autocast": info.get("autocast", {})}
        for name in args.parts.split(","):
            print(f"[gpu_check] {name} ...", file=sys.stderr, flush=True)
            t = time.perf_counter()
            try:
                result = RUNNERS[name](ctx)
            except Exception as e:  # noqa: BLE001 - one part's crash must not lose the others' figures
                result = {"ok": False, "error": f"{type(e).__name__}: {e}"}
            result["status"] = status_of(result)
            result["part_seconds"] = round(time.perf_counter() - t, 1)
            doc["parts"][name] = result
            print(f"[gpu_check] {name}: {result['status']} ({result['part_seconds']} s)", file=sys.stderr, flush=True)
            if args.out:
                Path(args.out).parent.mkdir(parents=True, exist_ok=True)
                Path(args.out).write_text(json.dumps(doc, indent=2, default=str) + "\n")
    doc["ok"] = all(r["status"] in ("ok", "skipped") for r in doc["parts"].values())
    if args.out:
        Path(args.out).write_text(json.dumps(doc, indent=2, default=str) + "\n")
    print(table(doc))
    return 0 if doc["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
