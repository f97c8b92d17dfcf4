"""Export trained weights to ONNX, checked with onnx.checker and compared against PyTorch.

    python export.py --weights runs/train/exp/weights/best.pt --format onnx [--dynamic] [--opset 17]
    python predict.py img.jpg --weights runs/train/exp/weights/best.onnx

The graph outputs the two raw head maps (out_s32, out_s16), exactly what the PyTorch model returns,
so decode + NMS stay the one shared code path (nets/decode.py). Class names, input size, anchors,
masks and strides travel in the ONNX metadata (key `model_cfg`), so the .onnx file is all
predict.py needs.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

DEFAULT_OPSET = 17  # utils.export.onnx_export.DEFAULT_OPSET; repeated so --help answers without importing torch


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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from utils.engine.runs import WeightsNotFoundError, latest_weights

    try:
        weights = Path(args.weights) if args.weights else latest_weights()
    except WeightsNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if weights.suffix.lower() == ".onnx":
        print(f"error: {weights} is already ONNX; pass the .pt checkpoint it came from", file=sys.stderr)
        return 2
    output = Path(args.output) if args.output else weights.with_suffix(".onnx")
    from nets.weights.checkpoint import CheckpointError
    from utils.export.onnx_export import check_parity, export_onnx

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
