"""The benchmark suite's sections: what `run.py --section NAME` runs in a child process, and the figures
each one derives (the shared probes live in probes.py).

Only the standard library is imported at module level: torch and the project are imported inside the
sections, so the parent process that merely launches them stays small (a child's peak RSS can include
its parent's at the time it was started).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(HERE) not in sys.path:  # probes.py lies beside this file (benchmarks/ is not a package)
    sys.path.insert(0, str(HERE))

from probes import (  # noqa: E402
    cpu_flags,
    cpu_model,
    git_commit,
    native_bf16,
    physical_cores,
    rss_now_mib,
    run_child,
    summary_stats,
    tail,
)

RUN = HERE / "run.py"  # the suite's entry: every section, and the memory probe, runs as `run.py --section NAME`
GFLOP_NOTE = "forward FLOPs counted by torch.utils.flop_counter (2 per multiply-add)"


def bench_modules() -> None:
    """Make benchmarks/bench_*.py and the project importable in a section's process."""
    for p in (str(ROOT), str(HERE)):
        if p not in sys.path:
            sys.path.insert(0, p)

# ----------------------------------------------------------------------------------------- sections
def section_machine(cfg: dict, args: argparse.Namespace) -> dict:
    from importlib import metadata

    import torch

    versions = {"python": platform.python_version()}
    for name, dists in (("torch", ["torch"]), ("torchvision", ["torchvision"]),
                        ("onnxruntime", ["onnxruntime", "onnxruntime-gpu"]), ("openvino", ["openvino"]),
                        ("numpy", ["numpy"]),
                        ("opencv", ["opencv-python-headless", "opencv-python", "opencv-contrib-python"]),
                        ("albumentations", ["albumentations"]), ("pycocotools", ["pycocotools"])):
        versions[name] = "not installed"
        for dist in dists:
            try:
                versions[name] = metadata.version(dist)
                break
            except metadata.PackageNotFoundError:
                continue
    mem_gib = None
    try:
        kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                  if line.startswith("MemTotal:"))
        mem_gib = round(kb / 2**20, 1)
    except (OSError, StopIteration):
        pass
    flags = cpu_flags()
    out: dict[str, Any] = {
        "cpu": cpu_model(), "logical_cpus": os.cpu_count(), "physical_cores": physical_cores(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(), "torch_interop_threads": torch.get_num_interop_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(), "native_bf16": native_bf16(),
        "simd_flags": sorted(flags & {"avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16",
                                      "amx_tile", "asimd", "sve", "bf16"}),
        "memory_gib": mem_gib, "os": platform.platform(), "versions": versions,
        "env_threads": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS") if k in os.environ},
        "load_avg": [round(v, 2) for v in os.getloadavg()], "git_commit": git_commit(), "gpu": None,
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        driver = None
        try:
            r = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                               capture_output=True, text=True, timeout=30)
            driver = r.stdout.strip().splitlines()[0] if r.returncode == 0 and r.stdout.strip() else None
        except (OSError, subprocess.SubprocessError):
            pass
        out["gpu"] = {"name": props.name, "count": torch.cuda.device_count(),
                      "memory_gib": round(props.total_memory / 2**30, 1),
                      "capability": f"{props.major}.{props.minor}", "multiprocessors": props.multi_processor_count,
                      "driver": driver, "cuda_runtime": torch.version.cuda,
                      "cudnn": torch.backends.cudnn.version()}
    return out


def matmul_gflops(n: int, dtype: Any, device: str, runs: int, min_sample_s: float = 0.05) -> dict:
    """GFLOP/s of an n x n @ n x n torch.matmul (2 n^3 FLOPs): `runs` samples, each long enough
    (repeated calls) to be timed reliably, after a warm-up."""
    import torch

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    g = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, generator=g).to(dtype)
    b = torch.randn(n, n, device=device, generator=g).to(dtype)
    for _ in range(2):
        torch.matmul(a, b)
    sync()
    t = time.perf_counter()
    torch.matmul(a, b)
    sync()
    reps = max(1, int(min_sample_s / max(time.perf_counter() - t, 1e-6)))
    samples = []
    for _ in range(runs):
        t = time.perf_counter()
        for _ in range(reps):
            torch.matmul(a, b)
        sync()
        samples.append(2 * n**3 * reps / (time.perf_counter() - t) / 1e9)
    st = summary_stats(samples)
    return {"n": n, "dtype": str(dtype).replace("torch.", ""), "calls_per_sample": reps,
            "gflop_per_s": st["median"], "min": st["min"], "max": st["max"], "runs": st["runs"]}


def section_matmul(cfg: dict, args: argparse.Namespace) -> dict:
    import torch

    n, runs = cfg["matmul_n"], cfg["matmul_runs"]
    out: dict[str, Any] = {"device": args.device, "torch_threads": torch.get_num_threads()}
    if args.device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        out["fp32"] = matmul_gflops(n, torch.float32, "cuda", runs)
        torch.backends.cuda.matmul.allow_tf32 = True
        out["tf32"] = matmul_gflops(n, torch.float32, "cuda", runs)
        torch.backends.cuda.matmul.allow_tf32 = False
        out["fp16"] = matmul_gflops(n, torch.float16, "cuda", runs)
        out["bf16"] = matmul_gflops(n, torch.bfloat16, "cuda", runs)
    else:
        out["fp32"] = matmul_gflops(n, torch.float32, "cpu", runs)
        out["bf16"] = (matmul_gflops(n, torch.bfloat16, "cpu", runs) if native_bf16()
                       else "skipped: no native bf16 on this CPU")
    return out


def loader_workers() -> list[int]:
    """0 (in-process), 2 (the default config) and one per CPU (16 on the GPU machines)."""
    return sorted({0, 2, os.cpu_count() or 1})


def section_loader(cfg: dict, args: argparse.Namespace) -> dict:
    bench_modules()
    import bench_loader

    from utils.data import load_data_spec, load_records

    records, _ = load_records(load_data_spec("synthetic"), "train")
    out: dict[str, Any] = {"data": "synthetic", "records": len(records), "img_size": cfg["img"], "mosaic": 1.0,
                           "batch_size": cfg["loader_batch"], "timed_batches": cfg["loader_batches"]}
    for w in loader_workers():
        try:
            out[f"workers_{w}"] = bench_loader.measure(img=cfg["img"], workers=w, batch=cfg["loader_batch"],
                                                       batches=cfg["loader_batches"], runs=cfg["loader_runs"],
                                                       records=records)
        except Exception as e:  # noqa: BLE001 - one worker count failing must not lose the others
            out[f"workers_{w}"] = {"status": "error", "error": f"{type(e).__name__}: {e}"}
    return out


def train_variants(cfg: dict, device: str) -> list[tuple[str, dict | str]]:
    """(name, bench_train settings) for each training variant, or (name, reason) when it is skipped."""
    if device == "cuda":
        amp = "fp16"
    else:
        amp = "bf16" if native_bf16() else None
    base = {"modes": "step", "amp": "off", "compile": False, "channels_last": "on" if device == "cuda" else "off",
            "workers": 0}
    out: list[tuple[str, dict | str]] = []
    for compiled in (False, True):
        suffix = "compile" if compiled else "eager"
        for prec in ("fp32", "amp"):
            name = f"{prec if prec == 'fp32' else 'amp_' + (amp or 'bf16')}_{suffix}"
            if prec == "amp" and amp is None:
                out.append((name, "skipped: no native bf16 on this CPU"))
            elif compiled and not cfg["train_compile"]:
                out.append((name, "skipped: --quick"))
            else:
                out.append((name, {**base, "amp": "off" if prec == "fp32" else amp, "compile": compiled}))
    if device == "cpu":  # on CPU the memory layout is a choice (on GPU the base already uses channels-last)
        out.append(("fp32_compile_channels_last", {**base, "channels_last": "on", "compile": True}
                    if cfg["train_compile"] else "skipped: --quick"))
    if cfg["train_loop"]:
        out.append((f"loop_{'amp_' + amp if amp else 'fp32'}_workers_{os.cpu_count()}",
                    {**base, "modes": "loop", "amp": amp or "off", "workers": os.cpu_count() or 1}))
    else:
        out.append(("loop", "skipped: --quick"))
    return out


def read_json_output(path: Path, stdout: str) -> dict | None:
    """The JSON a benchmark script wrote to `path`, else the JSON object it printed last."""
    if path.is_file():
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError:
            pass
    text = stdout or ""
    start = text.find("{")
    while start != -1:
        try:
            return json.loads(text[start:])
        except json.JSONDecodeError:
            start = text.find("{", start + 1)
    return None


def run_section_child(name: str, args: argparse.Namespace, timeout: float, *extra: str) -> dict:
    """Run `run.py --section NAME` (this suite's device and --quick, plus `extra` flags) in a child process:
    run_child's record plus "payload", the JSON it wrote ({"result", "peak_memory"} or {"error", "traceback"};
    None when it wrote none), and "error", why it gave no result (None when it did)."""
    with tempfile.TemporaryDirectory(prefix=f"bench_{name}_") as d:
        path = Path(d) / "section.json"
        cmd = [sys.executable, str(RUN), "--section", name, "--device", args.device, "--section-out", str(path),
               *extra] + (["--quick"] if args.quick else [])
        r = run_child(cmd, timeout)
        payload = read_json_output(path, "")
    failed = payload is None or "error" in payload or r["rc"] != 0
    r.update(payload=payload, error=((payload or {}).get("error") or tail(r["stderr"]) or f"exit status {r['rc']}")
             if failed else None)
    return r


def section_train(cfg: dict, args: argparse.Namespace) -> dict:
    script = HERE / "bench_train.py"
    out: dict[str, Any] = {"script": "benchmarks/bench_train.py", "img_size": cfg["img"],
                           "batch_size": cfg["train_batch"], "phi": 3, "steps": cfg["train_steps"],
                           "warmup": cfg["train_warmup"], "runs": cfg["train_runs"], "variants": {}}
    for name, v in train_variants(cfg, args.device):
        if isinstance(v, str):
            out["variants"][name] = {"status": "skipped", "reason": v}
            continue
        if not script.is_file():
            out["variants"][name] = {"status": "error", "error": f"{script.relative_to(ROOT)} not found"}
            continue
        flags = ["--modes", v["modes"], "--device", args.device, "--img", str(cfg["img"]),
                 "--batch", str(cfg["train_batch"]), "--phi", "3", "--amp", v["amp"],
                 "--channels-last", v["channels_last"], "--workers", str(v["workers"]),
                 "--steps", str(cfg["train_steps"]), "--warmup", str(cfg["train_warmup"]),
                 "--runs", str(cfg["train_runs"])]
        if v["compile"]:
            flags.append("--compile")
        if args.reference_dir and name == "fp32_eager":  # the reference side by side, once
            flags += ["--reference-dir", args.reference_dir]
        entry: dict[str, Any] = {"command": "python benchmarks/bench_train.py " + " ".join(flags)}
        with tempfile.TemporaryDirectory(prefix="bench_train_") as d:
            json_out = Path(d) / "train.json"
            r = run_child([sys.executable, str(script), *flags, "--json-out", str(json_out)], cfg["variant_timeout_s"])
            entry["seconds"] = r["seconds"]
            result = read_json_output(json_out, r["stdout"])
            if r["timed_out"]:
                entry.update(status="timeout", error=f"no result within {cfg['variant_timeout_s']} s")
            elif r["rc"] != 0 or result is None:
                entry.update(status="error", error=tail(r["stderr"]) or f"exit status {r['rc']}, no JSON printed")
            else:
                entry.update(status="ok", **train_figures(result, v["modes"]), detail=result)
        out["variants"][name] = entry
    return out


def train_figures(result: dict, mode: str) -> dict:
    """images/s (median, min, max, p10, p90, number of windows) and peak memory of our side in bench_train's
    JSON ({"ours": {mode: {...}}}), and the reference's images/s and our speed-up when it was timed too."""
    ours = (result.get("ours") or {}).get(mode) or result
    out = {k: ours[k] for k in ("images_per_s", "min", "max", "p10", "p90") if k in ours}
    runs = ours.get("runs")
    out["runs"] = len(runs) if isinstance(runs, list) else runs
    out.update({k: v for k, v in ours.items() if "memory" in k or k.endswith("_mib")})
    ref = (result.get("reference") or {}).get(mode)
    if isinstance(ref, dict) and "images_per_s" in ref:
        out["reference_images_per_s"] = ref["images_per_s"]
        out["speedup_vs_reference"] = (result.get("speedup") or {}).get(mode)
    return out


def section_inference(cfg: dict, args: argparse.Namespace) -> dict:
    bench_modules()
    import bench_inference as bi
    import torch

    from nets.weights.loader import load_model
    from utils.export.onnx_export import export_onnx

    if args.device == "cuda":
        torch.backends.cudnn.benchmark = True
    with tempfile.TemporaryDirectory(prefix="bench_suite_inference_") as d:
        return inference_figures(cfg, args, Path(d), bi, export_onnx, load_model)


def inference_figures(cfg: dict, args: argparse.Namespace, tmp: Path, bi: Any, export_onnx: Callable,
                      load_model: Callable) -> dict:
    """The inference section's work, with its files (random weights, ONNX export) in `tmp`."""
    import torch

    size = cfg["img"]
    weights = bi.make_weights(tmp, "0", 80, size)
    onnx_path = export_onnx(weights, tmp / "model.onnx", img_size=size, dynamic=True)
    model = load_model(weights)
    out: dict[str, Any] = {
        "model": "yolov4-tiny, no attention (phi 0), 80 classes, random weights", "img_size": size,
        "device": args.device, "torch_threads": torch.get_num_threads(),
        "gflop_per_image": round(bi.count_gflops(model, size), 3), "gflop_note": GFLOP_NOTE,
        "model_only_note": "each variant in its own process, alternating, medians of rounds (model_only_isolated)",
        "model_only_batch1": bi.model_only_isolated(weights, size, 1, args.device, cfg["infer_runs"],
                                                    cfg["infer_warmup"], cfg["infer_rounds"], onnx_path=onnx_path),
        "model_only_batched": bi.model_only_isolated(weights, size, cfg["infer_batch"], args.device,
                                                     cfg["infer_batched_runs"], 1, cfg["infer_rounds"],
                                                     onnx_path=onnx_path,
                                                     min_sample_s=0.2 if args.device == "cuda" else 0.0),
    }
    if args.device == "cuda" and cfg["gpu_large_batch"]:  # a fast GPU needs more than 32 images to fill it
        out["model_only_gpu_large_batch"] = bi.model_only_square(
            weights, size, cfg["gpu_large_batch"], args.device, cfg["infer_batched_runs"], 1, min_sample_s=0.2,
            skip=("eager", "fused", "fused_channels_last", "fused_channels_last_bf16", "onnxruntime", "openvino",
                  "openvino_bf16"))
    e2e_argv = ["--weights", str(weights), "--img-size", str(size), "--runs", str(cfg["infer_runs"]),
                "--warmup", str(cfg["infer_warmup"]), "--batch", str(cfg["infer_batch"]),
                "--throughput-runs", str(max(1, cfg["infer_batched_runs"] // 2)), "--device", args.device]
    if cfg["e2e_skip"]:
        e2e_argv += ["--skip", *cfg["e2e_skip"]]
    if args.reference_dir and args.device == "cpu":
        e2e_argv += ["--reference-dir", args.reference_dir]
    e2e = bi.measure(bi.parse_args(e2e_argv))
    e2e.pop("machine", None)
    out["end_to_end"] = {"command": "python benchmarks/bench_inference.py " + " ".join(
        a if a != str(weights) else "<random phi-0 80-class checkpoint>" for a in e2e_argv), **e2e}
    return out


def section_memory(cfg: dict, args: argparse.Namespace) -> dict:
    out: dict[str, Any] = {"pipeline": "predict.py's: Predictor.from_weights (fused, channels-last) on the "
                                       "synthetic 768x576 photo, end to end", "img_size": cfg["img"]}
    for batch in sorted({1, cfg["infer_batch"]}):
        r = run_section_child("memory_probe", args, cfg["timeout_s"]["memory"], "--probe-batch", str(batch))
        out[f"inference_batch{batch}"] = ({"status": "error", "error": r["error"]} if r["error"]
                                          else {**r["payload"]["result"], **r["payload"]["peak_memory"]})
    return out


def section_memory_probe(cfg: dict, args: argparse.Namespace) -> dict:
    """One process, one batch size: what predict.py holds in memory (read by the memory section)."""
    bench_modules()
    import bench_inference as bi
    import torch

    from utils.data.image import load_image
    from utils.infer.predictor import Predictor

    before = rss_now_mib()
    with tempfile.TemporaryDirectory(prefix="bench_memory_probe_") as d:
        weights = bi.make_weights(Path(d), "0", 80, cfg["img"])
        bi.synthetic_photo(Path(d) / "photo.jpg")
        pred = Predictor.from_weights(weights, device=args.device, img_size=cfg["img"], conf_thres=0.5, iou_thres=0.3)
        images = [load_image(Path(d) / "photo.jpg")] * args.probe_batch
    for _ in range(3):
        pred(images)
    if args.device == "cuda":
        torch.cuda.synchronize()
    return {"batch": args.probe_batch, "rss_after_imports_mib": before}


def section_eval(cfg: dict, args: argparse.Namespace) -> dict:
    bench_modules()
    import bench_metrics

    out = bench_metrics.measure(cfg["eval_sizes"], 20, cfg["eval_repeat"], args.device)
    out.pop("machine", None)
    out["what"] = ("ours: utils/eval/evaluate.score (COCO 12 stats + VOC), tables already loaded; pycocotools: "
                   "loadRes + evaluate + accumulate + summarize on the same files")
    return out


RUNNERS: dict[str, Callable[[dict, argparse.Namespace], dict]] = {
    "machine": section_machine, "matmul": section_matmul, "loader": section_loader, "train": section_train,
    "inference": section_inference, "memory": section_memory, "eval": section_eval,
    "memory_probe": section_memory_probe,
}

