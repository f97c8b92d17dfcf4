"""Train a YOLOv4-tiny detector with attention.

    python train.py --phi 3                          # ECA attention, built-in data set
    python train.py --phi cbam --data configs/voc.yaml --img 416 --epochs 100
    python train.py --resume runs/train/exp          # continue exactly where it stopped
    torchrun --nproc_per_node 4 train.py --phi 3     # several GPUs (DDP)

Every key of configs/default.yaml is a flag (e.g. --lr0 0.01 --mosaic 0.5 --time 20).
A user error ends as one line `error: ...` (exit 2; a diverged run exits 1).
"""
from __future__ import annotations

import sys

from nets.weights.checkpoint import CheckpointError
from utils.config import parse_config
from utils.engine.torch_utils import set_threads_from_env
from utils.engine.trainer import Trainer, TrainingDiverged


def main(argv: list[str] | None = None) -> int:
    cfg, _ = parse_config(argv, description=__doc__)  # a bad key or value: argparse's error, exit 2
    set_threads_from_env()
    try:
        result = Trainer(cfg).train()
    except TrainingDiverged as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except (CheckpointError, FileNotFoundError, ValueError) as e:  # ValueError: ConfigError, DataError
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"results: mAP50 {result.get('mAP50', float('nan')):.4f}  mAP50-95 {result.get('mAP50-95', float('nan')):.4f}"
          f"  -> {result['save_dir']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
