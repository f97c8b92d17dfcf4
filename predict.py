"""Detect objects in images, folders, globs, videos or a camera.

    python predict.py img.jpg                       # newest runs/train/*/weights/best.pt
    python predict.py photos/ clip.mp4 --conf 0.4 --save-txt --heatmap
    python predict.py img.jpg --weights model.onnx  # same pipeline on onnxruntime
    python predict.py img.jpg --weights best_openvino_model/  # ... on OpenVINO (export.py --format openvino)
    python predict.py img.jpg --backend torch        # default auto: on a CPU the fastest installed runtime

Phi, classes and input size come from the weights file. Results go to runs/predict/<name>/.
The shared keys (--img, --conf, --iou, --max-det, --device, --half, ...) are those of configs/default.yaml,
with predict's defaults (utils/config.py MODE_DEFAULTS); the work is utils/infer/predict_run.py's.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from utils.config import parse_config

# the shared Config keys this script reads (flags, help and defaults from utils/config.py, mode "predict")
PREDICT_KEYS = ("weights", "img_size", "conf_thres", "iou_thres", "max_det", "classes", "agnostic_nms", "augment",
                "rect", "device", "dtype", "threads", "backend", "opset", "batch_size", "fuse", "project", "name",
                "exist_ok")


def parse_args(argv: list[str] | None = None) -> tuple:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", nargs="+",
                   help="image(s), folder(s), glob(s) ('data/*.jpg'), video file(s), or a camera index")
    p.add_argument("--nosave", action="store_true", help="do not write annotated images/videos")
    p.add_argument("--save-txt", action="store_true",
                   help="also write YOLO-txt labels (class cx cy w h score, normalised)")
    p.add_argument("--save-voc", action="store_true", help="also write VOC XML annotations")
    p.add_argument("--save-crop", action="store_true", help="save a crop of every box under crops/<class>/")
    p.add_argument("--count", action="store_true", help="write per-image and total per-class counts to counts.json")
    p.add_argument("--heatmap", action="store_true", help="write objectness overlays of each head to heatmaps/")
    p.add_argument("--attention-maps", action="store_true",
                   help="write per attention site the block's spatial gate (CBAM, CA, sSE/scSE), else the "
                        "channel-mean |feature| (none, SE, ECA, cSE), to attention/")
    p.add_argument("--line-width", type=int, default=None, help="box line width in pixels (default: from image size)")
    p.add_argument("--hide-labels", action="store_true")
    p.add_argument("--hide-conf", action="store_true")
    p.add_argument("--vid-stride", type=int, default=1, help="process every n-th video frame")
    p.add_argument("--max-frames", type=int, default=0, help="stop a video/camera after n processed frames (0: all)")
    cfg, args = parse_config(argv, parser=p, mode="predict", keys=PREDICT_KEYS)
    if args.vid_stride < 1:
        p.error("--vid-stride must be >= 1")
    return cfg, args


def main(argv: list[str] | None = None) -> int:
    cfg, args = parse_args(argv)
    # the heavy imports (torch and what needs it) only after the arguments are known to be good
    from utils.engine.runs import WeightsNotFoundError, increment_dir, resolve_weights
    from utils.infer.predict_run import PredictOptions, predict_sources, summary_lines

    opts = PredictOptions(save_img=not args.nosave, save_txt=args.save_txt, save_voc=args.save_voc,
                          save_crop=args.save_crop, count=args.count, heatmap=args.heatmap,
                          attention_maps=args.attention_maps, line_width=args.line_width,
                          hide_labels=args.hide_labels, hide_conf=args.hide_conf,
                          vid_stride=args.vid_stride, max_frames=args.max_frames)
    run_dir = Path(cfg.project) / cfg.name
    try:
        predictor, summary = predict_sources(cfg, resolve_weights(cfg.weights), args.source,
                                             lambda: increment_dir(run_dir, exist_ok=cfg.exist_ok), opts,
                                             log=print, warn=lambda m: print(m, file=sys.stderr))
    except (WeightsNotFoundError, OSError, ValueError, RuntimeError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print("\n".join(summary_lines(summary, predictor.speed())))
    if summary.skipped:
        print(f"skipped {len(summary.skipped)} input(s):", file=sys.stderr)
        for msg in summary.skipped:
            print(f"  {msg}", file=sys.stderr)
    print(f"results saved to {summary.run_dir}")
    return 0 if summary.images + summary.frames else 1


if __name__ == "__main__":
    sys.exit(main())
