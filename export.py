"""Export trained weights to ONNX, checked with onnx.checker and compared against PyTorch.

    python export.py --weights runs/train/exp/weights/best.pt --format onnx [--dynamic] [--opset 17]
    python predict.py img.jpg --weights runs/train/exp/weights/best.onnx

The graph outputs the two raw head maps (out_s32, out_s16), exactly what the PyTorch model returns,
so decode + NMS stay the one shared code path (utils/decode.py). Class names, input size, anchors,
masks and strides travel in the ONNX metadata (key `model_cfg`), so the .onnx file is all
predict.py needs.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

DEFAULT_OPSET = 17  # widely supported by onnxruntime, TensorRT and OpenVINO releases


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", default="", help="project checkpoint .pt (default: best.pt of the newest run in runs/train)")
    p.add_argument("--format", default="onnx", choices=["onnx"], help="export format")
    p.add_argument("--output", default="", help="output file (default: the weights path with .onnx)")
    p.add_argument("--img-size", "--img", dest="img_size", type=int, default=None, help="input size (default: the trained one)")
    p.add_argument("--batch-size", type=int, default=1, help="batch size of the graph (ignored with --dynamic)")
    p.add_argument("--dynamic", action="store_true", help="dynamic batch dimension too (height/width are dynamic unless --static)")
    p.add_argument("--static", action="store_true", help="fix batch, height and width (square img_size) for runtimes that need it")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")
    p.add_argument("--no-fuse", action="store_true", help="keep BatchNorm nodes (default: folded into the convs)")
    p.add_argument("--atol", type=float, default=1e-4, help="max allowed |PyTorch - onnxruntime| on the raw heads")
    return p.parse_args(argv)


def export_onnx(weights: str | Path, output: str | Path, img_size: int | None = None, batch_size: int = 1,
                dynamic: bool = False, opset: int = DEFAULT_OPSET, fuse: bool = True, static: bool = False) -> Path:
    """Write the ONNX file with its metadata and pass onnx.checker; returns the output path.

    Height and width stay dynamic (unless `static`) so predict.py feeds the same rect inputs as
    with the .pt weights; `dynamic` also frees the batch dimension.
    """
    import onnx
    import torch

    from nets.loader import load_model, model_cfg_of
    from utils.fuse import fuse_conv_bn

    model = load_model(weights, device="cpu")
    size = int(img_size or model.img_size)
    if size % 32:
        raise ValueError(f"--img-size {size} must be a multiple of 32")
    net = fuse_conv_bn(model) if fuse else model
    x = torch.zeros(batch_size, 3, size, size)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    axes = None
    if not static:
        axes = {"images": {2: "height", 3: "width"}, "out_s32": {2: "height_32", 3: "width_32"},
                "out_s16": {2: "height_16", 3: "width_16"}}
        if dynamic:
            for v in axes.values():
                v[0] = "batch"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about python ints in check_input_size
        torch.onnx.export(net, (x,), str(output), input_names=["images"], output_names=["out_s32", "out_s16"],
                          dynamic_axes=axes, opset_version=opset, do_constant_folding=True, dynamo=False)
    proto = onnx.load(str(output))
    cfg = model_cfg_of(model, img_size=size)
    cfg.update(masks=model.masks, strides=model.strides)
    meta = {
        "model_cfg": json.dumps(cfg),
        "names": json.dumps(cfg["class_names"]),
        "img_size": str(size),
        "anchors": json.dumps(cfg["anchors"]),
        "outputs": "raw heads [out_s32, out_s16], Darknet layout; decode with utils/decode.py",
        "source_weights": Path(weights).name,
    }
    del proto.metadata_props[:]
    for k, v in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    proto.doc_string = f"YOLOv4-tiny ({cfg['phi']} attention, {cfg['num_classes']} classes, {size}x{size})"
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(output))
    return output


def check_parity(weights: str | Path, onnx_path: str | Path, batch: int = 1, seed: int = 0) -> float:
    """Max |PyTorch - onnxruntime| over both raw heads on a random input (unfused PyTorch reference)."""
    import numpy as np
    import onnxruntime as ort
    import torch

    from nets.loader import load_model

    model = load_model(weights, device="cpu")
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    shape = session.get_inputs()[0].shape
    b = shape[0] if isinstance(shape[0], int) else batch
    if isinstance(shape[2], int):
        sizes = [(shape[2], shape[3])]
    else:  # dynamic height/width: the square input and a rect (4:3) one
        s = model.img_size
        sizes = [(s, s), (max(32, (s * 3 // 4) // 32 * 32), s)]
    g = torch.Generator().manual_seed(seed)
    diff = 0.0
    for h, w in sizes:
        x = torch.rand(b, 3, h, w, generator=g)
        with torch.inference_mode():
            ref = [o.numpy() for o in model(x)]
        got = session.run(["out_s32", "out_s16"], {"images": x.numpy()})
        diff = max(diff, *(float(np.abs(r - o).max()) for r, o in zip(ref, got)))
    return diff


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from utils.runs import WeightsNotFoundError, latest_weights

    try:
        weights = Path(args.weights) if args.weights else latest_weights()
    except WeightsNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if weights.suffix.lower() == ".onnx":
        print(f"error: {weights} is already ONNX; pass the .pt checkpoint it came from", file=sys.stderr)
        return 2
    output = Path(args.output) if args.output else weights.with_suffix(".onnx")
    from utils.checkpoint import CheckpointError

    t0 = time.perf_counter()
    try:
        export_onnx(weights, output, args.img_size, args.batch_size, args.dynamic and not args.static, args.opset,
                    not args.no_fuse, args.static)
    except (CheckpointError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    diff = check_parity(weights, output, batch=2 if args.dynamic and not args.static else args.batch_size)
    size_mb = output.stat().st_size / 2**20
    print(json.dumps({"onnx": str(output), "opset": args.opset, "dynamic_batch": args.dynamic and not args.static,
                      "dynamic_hw": not args.static,
                      "size_mb": round(size_mb, 2), "max_abs_diff_raw_heads": diff,
                      "seconds": round(time.perf_counter() - t0, 2)}))
    if diff > args.atol:
        print(f"error: onnxruntime and PyTorch differ by {diff:.2e} > {args.atol:g} on the raw heads", file=sys.stderr)
        return 1
    print(f"exported {output} (checked with onnx.checker; onnxruntime matches PyTorch within {diff:.1e}); "
          f"run it with: python predict.py IMAGE --weights {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
