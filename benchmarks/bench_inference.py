"""Inference speed: end-to-end latency (image file -> boxes) at batch 1 and throughput at batch 32,
for PyTorch eager, PyTorch fused (conv+BN folded, channels-last), onnxruntime and OpenVINO; prints JSON.

    python benchmarks/bench_inference.py                      # random-weight COCO-size model, phi 0
    python benchmarks/bench_inference.py --weights runs/train/exp/weights/best.pt --image photo.jpg
    python benchmarks/bench_inference.py --reference-dir ~/src/yolov4-tiny-pytorch   # side by side

Our pipelines (all `utils.infer.predictor.Predictor`: cv2 read, letterbox, model, decode, NMS, un-letterbox):
  eager         unfused model as loaded, contiguous NCHW
  fused         what predict.py runs: conv+BN folded, channels-last
  fused_square  the same at a square img_size x img_size input (rect=False)
  onnxruntime   export.py's graph (dynamic height/width) on onnxruntime's CPU provider
  openvino      --backend openvino: the .pt's cached OpenVINO export, fp32 (auto on a CPU runs onnxruntime)
All but fused_square use the rect input (long side img_size, short side padded to a multiple of 32).

Comparison with bubbliiiing/yolov4-tiny-pytorch's `YOLO.detect_image` (benchmarks/reference_pipelines.py):
  * `--reference-dir DIR` runs `yolo.YOLO` from a checkout of that repository (nothing of it is in
    this project) in a child process, loads the same weights into it (their key names) and times
    `detect_image(Image.open(path))` with its defaults (PIL bicubic resize to 416x416, unfused eager
    model, per-class NMS loop, conf 0.5, iou 0.3). Pillow >= 10 removed `ImageDraw.textsize`, which
    that code calls when it draws; a three-line shim supplies it.
  * Always also timed: `reference_style_approx`, our own re-creation of that pipeline's steps
    (PIL open + bicubic resize, numpy normalise, eager model, per-head decode with freshly built
    grids, per-image per-class NMS loop). It is an APPROXIMATION of the reference, labelled so.
All pipelines use the same weights, the same image and conf 0.5 / iou 0.3 so they do the same work.
Pipelines are timed round-robin (one call each in turn, order rotated) so that load from other
processes hits all alike; medians (and p10/p90, min/max) over --runs after --warmup. Prefer an idle machine.

`--device cuda` times our pipelines on the GPU (the reference and its approximation stay CPU-only and
are skipped there). `measure()` and `model_only_isolated()` are what `benchmarks/run.py` calls; the latter
times the network alone on a square img_size input for eager / fused / fused+channels-last / (fp16 on
GPU) / onnxruntime / OpenVINO at any batch size, each variant in a process of its own (`--model-only VARIANT`
is that process: model_only_square with every other variant skipped).
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]  # the project, and reference_pipelines.py beside this file

from reference_pipelines import ReferenceProcess, ReferenceStyle  # noqa: E402

from nets.summary import count_flops  # noqa: E402
from nets.weights.checkpoint import save_model_checkpoint  # noqa: E402
from nets.weights.loader import load_model  # noqa: E402
from nets.yolo import YoloBody  # noqa: E402
from utils.data.image import load_image  # noqa: E402
from utils.engine.timing import interleaved  # noqa: E402
from utils.export.int8 import quantize_onnx_int8  # noqa: E402
from utils.export.onnx_export import export_onnx  # noqa: E402
from utils.infer.backends import installed, load_exported, load_onnx_session  # noqa: E402
from utils.infer.predictor import Predictor, predict_paths  # noqa: E402


def synthetic_photo(path: Path, w: int = 768, h: int = 576, seed: int = 0) -> None:
    """A 768x576 JPEG (the size of Darknet's dog.jpg) with gradients, shapes and texture."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([xx / w * 200, yy / h * 180, (xx + yy) / (w + h) * 150], -1)
    img += rng.normal(0, 12, img.shape)
    img = np.clip(img, 0, 255).astype(np.uint8)
    for _ in range(12):
        x, y = int(rng.integers(0, w - 150)), int(rng.integers(0, h - 150))
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            cv2.rectangle(img, (x, y), (x + int(rng.integers(40, 150)), y + int(rng.integers(40, 150))), color, -1)
        else:
            cv2.circle(img, (x + 60, y + 60), int(rng.integers(20, 70)), color, -1)
    cv2.imwrite(str(path), img)


def make_weights(tmp: Path, phi: str, num_classes: int, img_size: int) -> Path:
    torch.manual_seed(0)
    model = YoloBody(num_classes, phi).eval()
    model.img_size = img_size
    path = tmp / "bench_random.pt"
    save_model_checkpoint(model, path)
    return path


def count_gflops(model: torch.nn.Module, size: int | tuple[int, int]) -> float:
    """FLOPs of one forward at batch 1 in GFLOP (nets.summary.count_flops: 2 per multiply-add)."""
    return count_flops(model, size)[0] / 1e9


def cuda_sync(device: torch.device | str):
    """A no-op on CPU; on CUDA, waits for the queued kernels so a timer sees them finish."""
    device = torch.device(device)
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def cuda_graphed(model: torch.nn.Module, example: torch.Tensor) -> Callable[[torch.Tensor], list[torch.Tensor]]:
    """`model`'s inference forward captured once as a CUDA graph; calling the result copies the input into the
    graph's static buffer, replays every kernel with one launch and returns the graph's output buffers
    (overwritten by the next call)."""
    static = example.clone()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side), torch.inference_mode():
        for _ in range(3):  # cuDNN picks its algorithms (benchmark mode) before the capture, not during it
            model(static)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.inference_mode(), torch.cuda.graph(graph):
        outputs = model(static)

    def replay(x: torch.Tensor) -> list[torch.Tensor]:
        static.copy_(x)
        graph.replay()
        return outputs
    return replay


def openvino_throughput(xml: Path, precision: str, x: np.ndarray, threads: int = 0) -> Callable[[], None]:
    """One call: the batch `x` split across the infer requests of the IR compiled with OpenVINO's THROUGHPUT hint
    (one CPU stream each, run at once): on 2 cores ~1.1x (fp32) to 1.6x (bf16) the images/s of one request."""
    import openvino  # optional: only for the openvino rows

    from utils.export.openvino_export import PRECISION_HINTS, openvino_core

    config: dict = {"PERFORMANCE_HINT": "THROUGHPUT", "INFERENCE_PRECISION_HINT": PRECISION_HINTS[precision]}
    if threads > 0:
        config["INFERENCE_NUM_THREADS"] = threads
    core = openvino_core()
    compiled = core.compile_model(core.read_model(str(xml)), "CPU", config)
    n = int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
    queue, parts = openvino.AsyncInferQueue(compiled, n), np.array_split(x, n)

    def call() -> None:
        for part in parts:
            queue.start_async([part])
        queue.wait_all()
    return call


OPENVINO_VARIANTS = ("openvino", "openvino_bf16", "openvino_int8", "openvino_throughput", "openvino_bf16_throughput")
MODEL_ONLY_VARIANTS = ("eager", "fused", "fused_channels_last", "fused_channels_last_fp16", "fused_channels_last_bf16",
                       "fused_channels_last_fp16_cudagraph", "onnxruntime", "onnxruntime_int8", *OPENVINO_VARIANTS)


def model_only_square(weights: Path, size: int, batch: int, device: str = "cpu", runs: int = 30, warmup: int = 5,
                      onnx_path: Path | None = None, threads: int = 0, skip: tuple[str, ...] = (),
                      min_sample_s: float = 0.0) -> dict:
    """The network alone (no pre/post-processing) on a square (batch, 3, size, size) input:

    eager                  the model as loaded (BN separate), contiguous NCHW
    fused                  conv+BN folded, contiguous NCHW
    fused_channels_last    conv+BN folded, channels-last weights and input (what predict.py runs)
    fused_channels_last_fp16 / _bf16   the same in half precision (CUDA only)
    fused_channels_last_fp16_cudagraph the fp16 model replayed from one captured CUDA graph (no per-kernel
                           launch cost, which dominates a small network on a fast GPU; CUDA only)
    onnxruntime            export.py's graph (dynamic batch) on onnxruntime (CUDA provider when there is one)
    onnxruntime_int8       the same graph quantised by onnxruntime (--format onnx --int8; calibrated on random
                           inputs here: speed only); CPU only
    openvino / _bf16       export.py --format openvino's IR on OpenVINO's CPU plugin, fp32 / bf16 (AMX where the
                           CPU has it); CPU only, when the openvino package is installed
    openvino_int8          the same IR quantised by NNCF (--int8; calibrated on random inputs here: speed only)
    openvino_throughput / _bf16_throughput   batch > 1: the batch split across the requests of a THROUGHPUT-hint
                           compile (openvino_throughput)

    min_sample_s > 0 makes each timed sample that many seconds of back-to-back calls (reported per call):
    a throughput figure for fast GPUs, where one call is too short to time and idle gaps lower the clocks.
    """
    from nets.fuse import fuse_conv_bn

    dev = torch.device(device)
    sync = cuda_sync(dev)
    x = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(0)).to(dev)
    x_cl = x.contiguous(memory_format=torch.channels_last)

    def fused(dtype: torch.dtype = torch.float32, channels_last: bool = False) -> torch.nn.Module:
        m = fuse_conv_bn(load_model(weights, device="cpu"), inplace=True)
        return m.to(dev, dtype, memory_format=torch.channels_last if channels_last else torch.contiguous_format)

    builders = {"eager": lambda: (load_model(weights, device=dev), x),
                "fused": lambda: (fused(), x),
                "fused_channels_last": lambda: (fused(channels_last=True), x_cl)}
    if dev.type == "cuda":
        builders["fused_channels_last_fp16"] = lambda: (fused(torch.float16, True), x_cl.half())
        builders["fused_channels_last_bf16"] = lambda: (fused(torch.bfloat16, True), x_cl.bfloat16())
        builders["fused_channels_last_fp16_cudagraph"] = lambda: (cuda_graphed(fused(torch.float16, True), x_cl.half()),
                                                                  x_cl.half())
    variants = {name: build() for name, build in builders.items() if name not in skip}
    fns = {}
    for name, (model, inp) in variants.items():
        def call(model=model, inp=inp):
            with torch.inference_mode():
                model(inp)
            sync()
        fns[name] = call
    providers = None
    x_np = x.cpu().numpy()
    calib = [np.random.default_rng(i).random((1, 3, size, size), dtype=np.float32) for i in range(8)]  # speed only
    with tempfile.TemporaryDirectory(prefix="bench_onnx_") as d:  # sessions keep their graphs in memory
        int8 = "onnxruntime_int8" not in skip and dev.type == "cpu"
        if onnx_path is None and ("onnxruntime" not in skip or int8):
            onnx_path = export_onnx(weights, Path(d) / "model.onnx", img_size=size, dynamic=True)
        sessions = {"onnxruntime": onnx_path} if "onnxruntime" not in skip else {}
        if int8:
            sessions["onnxruntime_int8"] = quantize_onnx_int8(onnx_path, Path(d) / "int8.onnx", calib)
        sessions = {name: load_onnx_session(path, dev, threads) for name, path in sessions.items()}
    fns.update({name: (lambda s=s: s.run(None, {"images": x_np})) for name, s in sessions.items()})
    if "onnxruntime" in sessions:
        providers = sessions["onnxruntime"].get_providers()
    if dev.type == "cpu" and installed("openvino") and not set(OPENVINO_VARIANTS) <= set(skip):
        from utils.export.openvino_export import export_openvino, openvino_core

        with tempfile.TemporaryDirectory(prefix="bench_ov_") as d:  # compiled models keep the weights in memory
            xml = export_openvino(weights, Path(d) / "model.xml", img_size=size, dynamic=True)
            native = ("BF16" in openvino_core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")) and "bf16"
            irs = {name: load_exported(xml, "openvino", dev, threads, precision)  # bf16 only where the CPU has it
                   for name, precision in (("openvino", "fp32"), ("openvino_bf16", native)) if precision
                   and name not in skip}
            if "openvino_int8" not in skip and installed("nncf"):  # speed only: calibrated on random inputs
                xml8 = export_openvino(weights, Path(d) / "int8.xml", img_size=size, dynamic=True, calibration=calib)
                irs["openvino_int8"] = load_exported(xml8, "openvino", dev, threads)
            fns.update({name: (lambda ir=ir: ir.run(x_np)) for name, ir in irs.items()})
            for name, precision in (("openvino_throughput", "fp32"), ("openvino_bf16_throughput", native)):
                if batch > 1 and precision and name not in skip:
                    fns[name] = openvino_throughput(xml, precision, x_np, threads)
    reps = dict.fromkeys(fns, 1)
    for name, fn in list(fns.items()) if min_sample_s > 0 else []:
        fn()  # first call: allocations, cuDNN autotuning, onnxruntime's first run
        t = time.perf_counter()
        fn()
        reps[name] = max(1, int(min_sample_s / max(time.perf_counter() - t, 1e-6)))
        if reps[name] > 1:
            def repeated(fn=fn, k=reps[name]) -> float:
                t = time.perf_counter()
                for _ in range(k):
                    fn()
                return (time.perf_counter() - t) / k
            fns[name] = repeated
    out = interleaved(fns, runs, warmup)
    gflops = count_gflops(load_model(weights), size) * batch
    for name, t in out.items():
        t["batch"] = batch
        t["calls_per_sample"] = reps[name]
        t["images_per_s"] = round(batch / (t["median_ms"] / 1000), 2)
        t["gflop_per_s"] = round(gflops / (t["median_ms"] / 1000), 1)
    if providers is not None:
        out["onnxruntime"]["providers"] = providers
    return out


def model_only_isolated(weights: Path, size: int, batch: int, device: str = "cpu", runs: int = 30, warmup: int = 5,
                        rounds: int = 3, onnx_path: Path | None = None, threads: int = 0, skip: tuple[str, ...] = (),
                        min_sample_s: float = 0.0, timeout: float = 900) -> dict:
    """model_only_square's rows, each variant timed in a process of its own, `rounds` times in turn (the order
    rotated each round). Runtimes timed in one process slow each other down: on 2 cores torch took 70 ms at batch 1
    right after OpenVINO / onnxruntime calls against 48.6 ms alone (their idle thread pools still compete), so
    interleaving inside one process biases the ratios between runtimes. A variant's row is that of its median
    round, with every round's median in `round_medians_ms`; variants this machine cannot run are left out."""
    names = [n for n in MODEL_ONLY_VARIANTS if n not in skip]
    rows: dict[str, list[dict]] = {n: [] for n in names}
    for r in range(rounds):
        k = r % max(len(names), 1)
        for name in names[k:] + names[:k]:
            if name not in rows:
                continue
            cmd = [sys.executable, str(Path(__file__).resolve()), "--model-only", name, "--weights", str(weights),
                   "--img-size", str(size), "--batch", str(batch), "--device", device, "--runs", str(runs),
                   "--warmup", str(warmup), "--threads", str(threads), "--min-sample-s", str(min_sample_s)]
            if onnx_path is not None:
                cmd += ["--onnx", str(onnx_path)]
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
            if p.returncode != 0:
                raise RuntimeError(f"model-only {name} (batch {batch}) failed in its process:\n{p.stderr[-2000:]}")
            row = json.loads(p.stdout).get(name)
            if row is None:  # not on this machine (a CUDA row on CPU, OpenVINO not installed, ...)
                del rows[name]
            else:
                rows[name].append(row)
    out = {}
    for name, rs in rows.items():
        mid = sorted(rs, key=lambda t: t["median_ms"])[(len(rs) - 1) // 2]
        out[name] = {**mid, "round_medians_ms": [t["median_ms"] for t in rs], "rounds": len(rs),
                     "process": "its own, one per round"}
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", default="", help="project checkpoint (default: random weights, 80 classes)")
    p.add_argument("--phi", default="0", help="attention for the random-weight model (default 0: plain yolov4-tiny)")
    p.add_argument("--image", default="", help="image file (default: a synthetic 768x576 JPEG)")
    p.add_argument("--img-size", type=int, default=416)
    p.add_argument("--runs", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--batch", type=int, default=32, help="batch size for the throughput measurement")
    p.add_argument("--throughput-runs", type=int, default=3)
    p.add_argument("--reference-dir", default="",
                   help="checkout of bubbliiiing/yolov4-tiny-pytorch to time side by side")
    p.add_argument("--threads", type=int, default=0,
                   help="CPU threads for every pipeline (torch, onnxruntime, the reference); 0: library defaults")
    p.add_argument("--skip", nargs="*", default=[],
                   help="pipelines to skip: eager fused fused_square onnxruntime onnxruntime_int8 openvino "
                        "openvino_bf16 openvino_int8 openvino_throughput openvino_bf16_throughput approx throughput")
    p.add_argument("--device", default="cpu", help="cpu or cuda (the reference pipelines are CPU-only)")
    p.add_argument("--out", default="", help="also write the JSON here")
    p.add_argument("--model-only", default="", metavar="VARIANT", choices=("", *MODEL_ONLY_VARIANTS),
                   help="time only this model-only variant on a square input at --batch and print its row "
                        "(model_only_isolated runs one such process per variant and round)")
    p.add_argument("--onnx", default="", help="with --model-only: an existing dynamic-batch ONNX export to use")
    p.add_argument("--min-sample-s", type=float, default=0.0, help="with --model-only: see model_only_square")
    args = p.parse_args(argv)
    if args.model_only and not args.weights:
        p.error("--model-only times a given checkpoint: pass --weights PATH")
    return args


def measure(args: argparse.Namespace) -> dict:
    """Every figure of this script as one dict (see the module docstring); `args` as `parse_args` makes."""
    conf, iou = 0.5, 0.3  # the reference's defaults, used by every pipeline here
    dev = torch.device(args.device)
    sync = cuda_sync(dev)
    skip = set(args.skip)
    if dev.type == "cuda":
        skip.add("approx")  # the reference-style pipeline is written for CPU tensors
        if args.reference_dir:
            raise ValueError("--reference-dir runs the reference on CPU; use --device cpu for the comparison")

    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="bench_inference_") as d:
        return _measure(args, Path(d), conf, iou, dev, sync, skip)


def _measure(args: argparse.Namespace, tmp: Path, conf: float, iou: float, dev: torch.device, sync, skip: set) -> dict:
    """measure()'s work, with its files (weights, photo, ONNX export, the reference's copies) in `tmp`."""
    weights = Path(args.weights) if args.weights else make_weights(tmp, args.phi, 80, args.img_size)
    image = Path(args.image) if args.image else tmp / "photo.jpg"
    if not args.image:
        synthetic_photo(image)
    size = args.img_size
    kw = dict(img_size=size, conf_thres=conf, iou_thres=iou)

    predictors: dict[str, Predictor] = {}
    if "eager" not in skip:
        predictors["eager"] = Predictor(load_model(weights, device=dev), **kw)
    if "fused" not in skip:
        predictors["fused"] = Predictor.from_weights(weights, device=dev, **kw)
    if "fused_square" not in skip:
        predictors["fused_square"] = Predictor.from_weights(weights, device=dev, rect=False, **kw)
    if "onnxruntime" not in skip:
        onnx_path = export_onnx(weights, tmp / "model.onnx", img_size=size, dynamic=True)
        predictors["onnxruntime"] = Predictor.from_weights(onnx_path, device=dev, threads=args.threads, **kw)
    if "openvino" not in skip and dev.type == "cpu" and installed("openvino"):
        predictors["openvino"] = Predictor.from_weights(weights, device=dev, threads=args.threads, backend="openvino",
                                                        log=lambda m: None, **kw)

    model = load_model(weights)
    result: dict = {
        "device": str(dev),
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": __import__("os").cpu_count(),
                    "torch_threads": torch.get_num_threads(),
                    "torch": torch.__version__, "load_average_at_start": list(__import__("os").getloadavg())},
        "image": {"path": str(image), "size": list(cv2.imread(str(image)).shape[1::-1])},
        "img_size": size, "phi": model.phi, "num_classes": model.num_classes, "conf": conf, "iou": iou,
        "gflops_per_image": round(count_gflops(model, size), 3),
    }
    h, w = cv2.imread(str(image)).shape[:2]
    rect_hw = Predictor(model, img_size=size).input_shape(h, w)
    result["rect_input"] = {"shape_hw": list(rect_hw), "gflops": round(count_gflops(model, rect_hw), 3)}

    def end_to_end(pred: Predictor):
        return lambda: pred([load_image(image)])[0]["boxes"].cpu().numpy()  # .cpu(): waits for the GPU

    pipelines = {name: end_to_end(pred) for name, pred in predictors.items()}
    detections = {name: int(len(pred([load_image(image)])[0]["boxes"])) for name, pred in predictors.items()}
    if "approx" not in skip:
        ref_style = ReferenceStyle(model, model.anchors.numpy(), model.masks, model.num_classes, size, conf, iou)
        pipelines["reference_style_approx"] = lambda: ref_style(str(image))
        detections["reference_style_approx"] = int(len(ref_style(str(image))[0]))
    ref_proc = None
    if args.reference_dir:
        ref_proc = ReferenceProcess(Path(args.reference_dir).resolve(), weights, tmp, image, size, conf, iou,
                                    args.threads)
        pipelines["bubbliiiing_detect_image"] = ref_proc
    try:
        latency = interleaved(pipelines, args.runs, args.warmup)
    finally:
        if ref_proc is not None:
            ref_proc.close()
    for name, d in detections.items():
        latency[name]["detections"] = d
    if "reference_style_approx" in latency:
        latency["reference_style_approx"]["note"] = "APPROXIMATION of bubbliiiing detect_image's steps, written here"
    if "bubbliiiing_detect_image" in latency:
        latency["bubbliiiing_detect_image"]["note"] = ("bubbliiiing/yolov4-tiny-pytorch YOLO.detect_image("
                                                        "Image.open(path)) with its defaults, in a child process")
    result["latency_batch1"] = latency

    inputs = {name: pred.preprocess([load_image(image)])[0] for name, pred in predictors.items()}
    model_only = interleaved({n: (lambda p=p, x=inputs[n]: (p.infer(x), sync())) for n, p in predictors.items()},
                             args.runs, args.warmup)
    for name, t in model_only.items():
        t["input_hw"] = list(inputs[name].shape[2:])
        gflops = result["gflops_per_image"] if predictors[name].rect is False else result["rect_input"]["gflops"]
        t["gflop_per_s"] = round(gflops / (t["median_ms"] / 1000), 1)
    result["model_only_batch1"] = model_only

    base = "bubbliiiing_detect_image" if "bubbliiiing_detect_image" in latency else "reference_style_approx"
    if base in latency:
        result["speedup_vs_reference"] = {"baseline": base, **{
            k: round(latency[base]["median_ms"] / v["median_ms"], 2) for k, v in latency.items() if k in predictors}}

    if "throughput" not in skip:
        # predict.py's folder path: files decoded in threads one batch ahead, detected batch by batch
        files = [image] * (2 * args.batch)
        fns = {n: (lambda p=p: list(predict_paths(p, files, args.batch))) for n, p in predictors.items()}
        tp = interleaved(fns, args.throughput_runs, 1)
        result["throughput"] = {n: {"batch": args.batch, "images": len(files), "ms": t["median_ms"],
                                    "images_per_s": round(len(files) / (t["median_ms"] / 1000), 1),
                                    "min": round(len(files) / (t["max_ms"] / 1000), 1),
                                    "max": round(len(files) / (t["min_ms"] / 1000), 1), "runs": t["runs"]}
                                for n, t in tp.items()}
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.model_only:
        if args.threads:
            torch.set_num_threads(args.threads)
        skip = tuple(v for v in MODEL_ONLY_VARIANTS if v != args.model_only)
        print(json.dumps(model_only_square(Path(args.weights), args.img_size, args.batch, args.device, args.runs,
                                           args.warmup, Path(args.onnx) if args.onnx else None, args.threads, skip,
                                           args.min_sample_s)))
        return 0
    text = json.dumps(measure(args), indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
