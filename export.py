"""Export trained weights to ONNX or OpenVINO IR, compared against PyTorch on the raw heads.

    python export.py --weights runs/train/exp/weights/best.pt --format onnx [--dynamic] [--opset 17]
    python export.py                                # best.pt of the newest run, next to it as best.onnx
    python predict.py img.jpg --weights runs/train/exp/weights/best.onnx
    python export.py --format openvino --dynamic    # best_openvino_model/best.xml (+ .bin), from the ONNX graph
    python export.py --format openvino --int8 --data configs/voc.yaml   # best_int8_openvino_model/: NNCF INT8
    python export.py --format onnx --int8 --data configs/voc.yaml       # best_int8.onnx: onnxruntime static INT8

The graph outputs the two raw head maps (out_s32, out_s16), exactly what the PyTorch model returns,
so decode + NMS stay the one shared code path (nets/decode.py). Class names, input size, anchors,
masks and strides travel in the ONNX metadata (key `model_cfg`; in an IR its rt_info), so the file is
all predict.py needs. The work is utils/export/export_run.py's `export_checked`.
"""
from __future__ import annotations

import argparse
import json
import sys

from utils.config import parse_config

# the shared Config keys this script reads (flags, help and defaults from utils/config.py, mode "export")
EXPORT_KEYS = ("weights", "img_size", "batch_size", "opset", "fuse", "data")


def parse_args(argv: list[str] | None = None) -> tuple:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--format", default="onnx", choices=["onnx", "openvino"], help="export format")
    p.add_argument("--output", default="",
                   help="output file (default: the weights path with .onnx; openvino: "
                        "<stem>_openvino_model/<stem>.xml; --int8: <stem>_int8 in place of <stem>)")
    p.add_argument("--dynamic", action="store_true",
                   help="dynamic batch dimension too (height/width are dynamic unless --static)")
    p.add_argument("--static", action="store_true",
                   help="fix batch, height and width (square img_size) for runtimes that need it")
    p.add_argument("--int8", action="store_true",
                   help="INT8 weights and activations (openvino: NNCF; onnx: onnxruntime's static QDQ), "
                        "calibrated on 300 training images of --data")
    p.add_argument("--atol", type=float, default=1e-4, help="max allowed |PyTorch - runtime| on the raw heads")
    return parse_config(argv, parser=p, mode="export", keys=EXPORT_KEYS)


def main(argv: list[str] | None = None) -> int:
    cfg, args = parse_args(argv)
    # the heavy imports (torch and what needs it) only after the arguments are known to be good
    from nets.weights.checkpoint import CheckpointError
    from utils.engine.runs import WeightsNotFoundError, resolve_weights
    from utils.export.export_run import export_checked

    try:
        report = export_checked(cfg, resolve_weights(cfg.weights), args.output, args.dynamic, args.static, args.format,
                                args.int8)
    except (WeightsNotFoundError, CheckpointError, ValueError, OSError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(report))
    diff, output = report["max_abs_diff_raw_heads"], report[args.format]
    runtime = {"onnx": "onnxruntime", "openvino": "OpenVINO"}[args.format]
    if args.int8:  # quantised: raw heads differ by design; the cost is a mAP difference
        print(f"exported {output} (INT8; raw heads within {diff:.2f} of PyTorch); measure its accuracy with: "
              f"python get_map.py --weights {output} --data {cfg.data}")
        return 0
    if diff > args.atol:
        print(f"error: {runtime} and PyTorch differ by {diff:.2e} > {args.atol:g} on the raw heads of {output}",
              file=sys.stderr)
        return 1
    print(f"exported {output} (checked with onnx.checker; {runtime} matches PyTorch within {diff:.1e}); "
          f"run it with: python predict.py IMAGE --weights {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
