"""Export trained weights to ONNX, checked with onnx.checker and compared against PyTorch.

    python export.py --weights runs/train/exp/weights/best.pt --format onnx [--dynamic] [--opset 17]
    python export.py                                # best.pt of the newest run, next to it as best.onnx
    python predict.py img.jpg --weights runs/train/exp/weights/best.onnx

The graph outputs the two raw head maps (out_s32, out_s16), exactly what the PyTorch model returns,
so decode + NMS stay the one shared code path (nets/decode.py). Class names, input size, anchors,
masks and strides travel in the ONNX metadata (key `model_cfg`), so the .onnx file is all
predict.py needs. The work is utils/export/onnx_export.py's `export_checked`.
"""
from __future__ import annotations

import argparse
import json
import sys

from utils.config import parse_config

# the shared Config keys this script reads (flags, help and defaults from utils/config.py, mode "export")
EXPORT_KEYS = ("weights", "img_size", "batch_size", "opset", "fuse")


def parse_args(argv: list[str] | None = None) -> tuple:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--format", default="onnx", choices=["onnx"], help="export format")
    p.add_argument("--output", default="", help="output file (default: the weights path with .onnx)")
    p.add_argument("--dynamic", action="store_true",
                   help="dynamic batch dimension too (height/width are dynamic unless --static)")
    p.add_argument("--static", action="store_true",
                   help="fix batch, height and width (square img_size) for runtimes that need it")
    p.add_argument("--atol", type=float, default=1e-4, help="max allowed |PyTorch - onnxruntime| on the raw heads")
    return parse_config(argv, parser=p, mode="export", keys=EXPORT_KEYS)


def main(argv: list[str] | None = None) -> int:
    cfg, args = parse_args(argv)
    # the heavy imports (torch and what needs it) only after the arguments are known to be good
    from nets.weights.checkpoint import CheckpointError
    from utils.api import resolve_weights
    from utils.engine.runs import WeightsNotFoundError
    from utils.export.onnx_export import export_checked

    try:
        report = export_checked(cfg, resolve_weights(cfg.weights), args.output, args.dynamic, args.static)
    except (WeightsNotFoundError, CheckpointError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(report))
    diff, output = report["max_abs_diff_raw_heads"], report["onnx"]
    if diff > args.atol:
        print(f"error: onnxruntime and PyTorch differ by {diff:.2e} > {args.atol:g} on the raw heads", file=sys.stderr)
        return 1
    print(f"exported {output} (checked with onnx.checker; onnxruntime matches PyTorch within {diff:.1e}); "
          f"run it with: python predict.py IMAGE --weights {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
