"""Check a data set without training: the same validation report training prints, plus statistics.

    python -m utils.data.check_dataset --data configs/voc.yaml
    python -m utils.data.check_dataset --data path/to/VOCdevkit --deep     # also decode every image

Exit status: 0 when every split has usable samples, 1 when one has none, 2 when --data is unusable.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

from utils.data import DataError, load_data_spec, load_records
from utils.data.records import Record


def split_stats(records: list[Record], names: list[str]) -> str:
    """Boxes per class, box sizes, image sizes: what a user should look at before training."""
    if not records:
        return "  (no records)"
    cls = np.concatenate([r.classes for r in records]) if records else np.zeros(0, np.int64)
    boxes = np.concatenate([r.boxes for r in records])
    diff = int(sum(r.difficult.sum() for r in records))
    crowd = int(sum(r.iscrowd.sum() for r in records))
    counts = np.bincount(cls, minlength=len(names))
    lines = ["  boxes per class: " + ", ".join(f"{n} {c}" for n, c in zip(names, counts.tolist()))]
    empty = [n for n, c in zip(names, counts.tolist()) if c == 0]
    if empty:
        lines.append(f"  warning: no boxes of {', '.join(empty)} in this split")
    if len(boxes):
        wh = boxes[:, 2:] - boxes[:, :2]
        q = np.percentile(wh, [5, 50, 95], axis=0)
        lines.append(f"  box w x h (px) p5 {q[0, 0]:.0f}x{q[0, 1]:.0f}, median {q[1, 0]:.0f}x{q[1, 1]:.0f}, "
                     f"p95 {q[2, 0]:.0f}x{q[2, 1]:.0f}; {len(boxes) / len(records):.1f} boxes/image"
                     + (f"; {diff} difficult" if diff else "") + (f"; {crowd} crowd" if crowd else ""))
    sizes = np.array([[r.width, r.height] for r in records])
    lines.append(f"  image sizes: {sizes[:, 0].min()}..{sizes[:, 0].max()} x {sizes[:, 1].min()}..{sizes[:, 1].max()}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Validate a data set and print the report (no training).")
    ap.add_argument("--data", default="synthetic",
                    help="data YAML, VOCdevkit folder, COCO json, YOLO-txt root, or 'synthetic'")
    ap.add_argument("--splits", nargs="*", default=None, help="splits to check (default: all defined)")
    ap.add_argument("--deep", action="store_true", help="decode every image with OpenCV (slower, thorough)")
    ap.add_argument("--no-cache", action="store_true", help="ignore and do not write the label cache")
    ap.add_argument("--max-files", type=int, default=50, help="files listed per problem list")
    args = ap.parse_args(argv)
    try:
        spec = load_data_spec(args.data, cache=not args.no_cache)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(spec.describe())
    print(f"classes ({spec.num_classes}): {', '.join(spec.names)}")
    status = 0
    for split in args.splits or [s for s in ("train", "val", "test") if spec.has_split(s)]:
        try:
            records, report = load_records(spec, split, deep=args.deep)
        except DataError as e:
            print(f"error [{split}]: {e}")
            status = 1
            continue
        print(report.summary(args.max_files))
        print(split_stats(records, spec.names))
    return status


if __name__ == "__main__":
    sys.exit(main())
