"""Detect objects in images, folders, globs, videos or a camera.

    python predict.py img.jpg                       # newest runs/train/*/weights/best.pt
    python predict.py photos/ clip.mp4 --conf 0.4 --save-txt --heatmap
    python predict.py img.jpg --weights model.onnx  # same pipeline on onnxruntime

Phi, classes and input size come from the weights file. Results go to runs/predict/<name>/.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", nargs="+", help="image(s), folder(s), glob(s) ('data/*.jpg'), video file(s), or a camera index")
    p.add_argument("--weights", default="", help="checkpoint .pt or exported .onnx (default: best.pt of the newest run in runs/train)")
    p.add_argument("--conf", "--conf-thres", dest="conf", type=float, default=0.25, help="score threshold (objectness x class)")
    p.add_argument("--iou", "--iou-thres", dest="iou", type=float, default=0.45, help="NMS IoU threshold")
    p.add_argument("--max-det", type=int, default=300, help="at most this many boxes per image")
    p.add_argument("--classes", nargs="+", default=None, help="keep only these classes (ids or names)")
    p.add_argument("--agnostic-nms", action="store_true", help="NMS across classes (one box per object)")
    p.add_argument("--augment", action="store_true",
                   help="test-time augmentation: also run 1.33x and mirrored views (~4x the compute)")
    p.add_argument("--img-size", "--img", dest="img_size", type=int, default=None, help="input size (default: the one trained with)")
    p.add_argument("--no-rect", action="store_true", help="square img_size x img_size input (default: the long side is img_size, the short side padded to a multiple of 32)")
    p.add_argument("--device", default="", help="cpu, cuda, cuda:1 or 0 (default: cuda when available)")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "fp16", "bf16"], help="precision of the model (fp16: GPU only)")
    p.add_argument("--half", action="store_true", help="same as --dtype fp16")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (default: one per core; 1 is faster when other jobs load the CPU)")
    p.add_argument("--batch-size", "--batch", dest="batch_size", type=int, default=8, help="images per forward pass")
    p.add_argument("--no-fuse", action="store_true", help="keep BatchNorm separate (default: folded into the convs)")
    p.add_argument("--project", default="runs/predict", help="parent folder of the run folder")
    p.add_argument("--name", default="exp", help="run folder name (exp, exp2, ... when taken)")
    p.add_argument("--exist-ok", action="store_true", help="write into an existing run folder")
    p.add_argument("--nosave", action="store_true", help="do not write annotated images/videos")
    p.add_argument("--save-txt", action="store_true", help="also write YOLO-txt labels (class cx cy w h score, normalised)")
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
    args = p.parse_args(argv)
    if not 0 <= args.conf <= 1 or not 0 <= args.iou <= 1:
        p.error("--conf and --iou must lie in [0, 1]")
    if args.max_det < 1 or args.batch_size < 1 or args.vid_stride < 1:
        p.error("--max-det, --batch-size and --vid-stride must be >= 1")
    if args.half:
        args.dtype = "fp16"
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from utils.engine.runs import WeightsNotFoundError, increment_dir, latest_weights

    try:
        weights = Path(args.weights) if args.weights else latest_weights()
    except WeightsNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    from utils.infer.predict_run import PredictOptions, collect_sources, run_predict
    from utils.infer.predictor import Predictor

    sources, problems = collect_sources(args.source)
    for msg in problems:
        print(f"warning: {msg}", file=sys.stderr)
    if not sources:
        print("error: nothing to process; pass image files, folders, globs, videos or a camera index", file=sys.stderr)
        return 2
    try:
        predictor = Predictor.from_weights(weights, device=args.device, dtype=args.dtype, fuse=not args.no_fuse,
                                           threads=args.threads,
                                           img_size=args.img_size, conf_thres=args.conf, iou_thres=args.iou,
                                           max_det=args.max_det, classes=args.classes, agnostic=args.agnostic_nms,
                                           rect=not args.no_rect, augment=args.augment)
    except (OSError, ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"weights {weights}: {predictor.describe()}")
    run_dir = increment_dir(Path(args.project) / args.name, exist_ok=args.exist_ok)
    opts = PredictOptions(save_img=not args.nosave, save_txt=args.save_txt, save_voc=args.save_voc,
                          save_crop=args.save_crop, count=args.count, heatmap=args.heatmap,
                          attention_maps=args.attention_maps, line_width=args.line_width,
                          hide_labels=args.hide_labels, hide_conf=args.hide_conf, batch_size=args.batch_size,
                          vid_stride=args.vid_stride, max_frames=args.max_frames)
    summary = run_predict(predictor, sources, run_dir, opts, log=lambda m: print(m, file=sys.stderr))

    speed = predictor.speed()
    counts = ", ".join(f"{n} {c}" for c, n in summary.counts.most_common()) or "nothing"
    print(f"{summary.images} image(s), {summary.frames} video frame(s): {summary.detections} detections ({counts})")
    if summary.images + summary.frames:
        print(f"speed per image: {speed['preprocess']:.1f} ms letterbox, {speed['inference']:.1f} ms model, "
              f"{speed['postprocess']:.1f} ms decode+NMS")
    if summary.skipped:
        print(f"skipped {len(summary.skipped)} input(s):", file=sys.stderr)
        for msg in summary.skipped:
            print(f"  {msg}", file=sys.stderr)
    print(f"results saved to {run_dir}")
    return 0 if summary.images + summary.frames else 1


if __name__ == "__main__":
    sys.exit(main())
