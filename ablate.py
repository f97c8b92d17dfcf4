"""Compare attention blocks the way the papers do: same data, schedule, seeds and budget for each.

    python ablate.py --data configs/voc.yaml --phi 0 1 2 3 4 5 --epochs 50 --seeds 3
    torchrun --nproc_per_node 4 ablate.py --phi 0 1 2 3 --epochs 50   # one run per GPU at a time

Writes runs/ablate/<name>/: results.md and results.csv (params, GFLOPs, CPU/GPU latency, mAP50,
mAP50-95 and per-class AP, mean ± std over seeds), map_vs_latency.png, map_curves.png,
attention/ (each variant's attention maps on the same val images: one grid per image) and the
training runs. Run the same command again to resume an interrupted ablation.
Every key of configs/default.yaml is a flag too (--img, --batch-size, --time, ...).
"""
from __future__ import annotations

import argparse
import os
import sys

from utils.config import parse_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--phi", nargs="+", default=["0", "1", "2", "3", "4", "5"],
                        help="variants to compare: numbers or names (default: 0 1 2 3 4 5)")
    parser.add_argument("--seeds", type=int, default=1, help="seeds per variant: seed, seed+1, ... (default: 1)")
    parser.add_argument("--name", default="exp", help="ablation name: runs/ablate/<name> (default: exp)")
    parser.add_argument("--project", default="runs/ablate", help="where ablations go (default: runs/ablate)")
    cfg, args = parse_config(argv, parser=parser, skip=("phi", "name", "project"))
    if args.seeds < 1:
        parser.error("--seeds must be at least 1")

    import torch.distributed as dist

    from utils.ablation.ablation import Ablation

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1:
        dist.init_process_group("gloo")  # only to wait for each other before the report
    try:
        ablation = Ablation(cfg, args.phi, [cfg.seed + i for i in range(args.seeds)], args.name, args.project,
                            rank=rank, world_size=world)
    except ValueError as e:
        parser.error(str(e))
    ablation.train_all()
    if world > 1:
        dist.barrier()
    if rank == 0:
        rows = ablation.evaluate_all()
        ablation.write_report(rows)
        print((ablation.dir / "results.md").read_text())
        print(f"ablation written to {ablation.dir}")
    if world > 1:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
