"""Convert weights files between formats on the command line.

    python -m nets.weights.convert --weights yolov4-tiny.weights --out yolov4-tiny.pt      # Darknet -> project
    python -m nets.weights.convert --weights yolov4_tiny_weights_voc.pth --out voc.pt      # bubbliiiing .pth -> project
    python -m nets.weights.convert --weights runs/train/exp/weights/best.pt --out my.weights  # project -> Darknet

Any file `nets.load_model` reads goes in; `--out *.pt` writes a project checkpoint (for predict.py,
get_map.py, export.py), `--out *.weights` writes Darknet weights with a matching `.cfg` next to them.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nets.assets import class_names_for
from nets.weights.checkpoint import CheckpointError, save_model_checkpoint
from nets.weights.darknet import export_darknet, is_darknet_file, read_weights
from nets.weights.darknet_cfg import DarknetError
from nets.weights.loader import load_model


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m nets.weights.convert", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", required=True, help="Darknet .weights, reference .pth or project checkpoint .pt")
    p.add_argument("--out", required=True, help="*.pt (project checkpoint) or *.weights (Darknet, .cfg written next to it)")
    p.add_argument("--cfg", default=None, help="Darknet cfg of the weights (default: built-in yolov4-tiny layout)")
    p.add_argument("--classes", default=None,
                   help="class count or a class-names file (checked against the weights); default: "
                        "COCO names for 80 classes, VOC for 20, numbers otherwise")
    p.add_argument("--img-size", type=int, default=None, help="input size stored with the model (default: the file's)")
    return p.parse_args(argv)


def to_darknet(args: argparse.Namespace) -> str:
    model = load_model(args.weights)
    cfg_path = export_darknet(model, args.out, img_size=args.img_size)
    return (f"wrote {args.out} and {cfg_path} ({model.num_classes} classes); "
            f"OpenCV: cv2.dnn.readNetFromDarknet('{cfg_path}', '{args.out}')")


def to_checkpoint(args: argparse.Namespace) -> str:
    source, detail = f"{Path(args.weights).name}", ""
    if is_darknet_file(args.weights):
        dw = read_weights(args.weights, args.cfg)
        if dw.num_classes is None:
            raise DarknetError(f"{args.weights}: {dw.notes[0]}; it has no heads, so it cannot become a model "
                               f"for predict.py. Start training from it: python train.py --weights {args.weights}")
        for note in dw.notes:
            print(f"note: {note}", file=sys.stderr)
        source = f"darknet:{source} seen={dw.seen}"
        detail = f" (Darknet {'.'.join(map(str, dw.version))}, seen {dw.seen})"
    model = load_model(args.weights, cfg=args.cfg)
    if args.classes and args.classes.isdigit() and int(args.classes) != model.num_classes:
        raise ValueError(f"{args.weights}: holds {model.num_classes} classes, --classes says {args.classes}; "
                         f"to train for {args.classes} classes use: python train.py --weights {args.weights}")
    if args.classes or not getattr(model, "class_names", None):
        model.class_names = class_names_for(args.classes, model.num_classes)
    if args.img_size:
        model.img_size = args.img_size
    save_model_checkpoint(model, args.out, source=source)
    return (f"wrote {args.out}: yolov4-tiny, phi {model.phi}, {model.num_classes} classes, img_size {model.img_size}, "
            f"scale_x_y {model.scale_x_y:g}, from {args.weights}{detail}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        print(to_darknet(args) if args.out.lower().endswith(".weights") else to_checkpoint(args))
    except (CheckpointError, DarknetError, OSError, RuntimeError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
