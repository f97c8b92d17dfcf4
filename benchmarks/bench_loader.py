"""Training data-loader throughput (mosaic on), next to the model's training throughput, as JSON.

    python benchmarks/bench_loader.py                       # built-in set, 416, 2 workers, batch 16
    python benchmarks/bench_loader.py --data configs/voc.yaml --workers 4 --model
    python benchmarks/bench_loader.py --img 320 --runs 5 --cache off  # decode every image from disk (before #15)

images/s of the loader alone (no model), after a warm-up, over --batches batches, repeated --runs times
(median, min, max); with --model also the images/s of a training step (forward + backward + SGD step of
YoloBody on the same batch size, on CPU with the cores the loader would share). The loader is not the
bottleneck while loader >> model. --cache: the config's cache_images (auto: decoded images in RAM when the set
fits, built before the timing; its one-line summary is in the JSON). `measure()` is what `benchmarks/run.py` calls.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from utils.config import Config, load_config  # noqa: E402
from utils.data import TrainDataset, build_loader, load_data_spec, load_records  # noqa: E402


def bench_loader(records, img: int, workers: int, batch: int, batches: int, cfg: Config, warmup: int = 3) -> dict:
    """The trainer's own data set and DataLoader (utils.data.build_loader), timed alone."""
    ds = TrainDataset(records, img, cfg, seed=0)
    loader = build_loader(ds, batch, workers, seed=0)
    cache = ds.images.summary
    need = warmup + batches
    n_img, t0, done = 0, None, 0
    while done < need:
        loader.sampler.set_epoch(done)
        ds.set_epoch(done)
        for images, targets in loader:
            done += 1
            if done == warmup:
                t0 = time.perf_counter()
            elif done > warmup:
                n_img += images.shape[0]
            if done >= need:
                break
    dt = time.perf_counter() - t0
    return {"images_per_s": round(n_img / dt, 1), "ms_per_image": round(1000 * dt / n_img, 2), "images": n_img,
            "cache": cache}


def bench_model(num_classes: int, img: int, batch: int, steps: int, phi: str) -> dict:
    from nets.yolo import YoloBody

    model = YoloBody(num_classes, phi).train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    x = torch.rand(batch, 3, img, img)
    for i in range(steps + 1):
        if i == 1:
            t0 = time.perf_counter()
        loss = sum(o.float().pow(2).mean() for o in model(x))  # stands in for the loss: same backward graph size
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    dt = time.perf_counter() - t0
    return {"images_per_s": round(steps * batch / dt, 2), "s_per_batch": round(dt / steps, 3), "phi": phi}


def measure(data: str = "synthetic", img: int = 416, workers: int = 2, batch: int = 16, batches: int = 30,
            runs: int = 1, mosaic: float = 1.0, mixup: float = 0.0, records=None, cache: str = "auto") -> dict:
    """Loader images/s over `runs` repeats (each: a fresh loader, 3 warm-up batches, `batches` timed)."""
    if records is None:
        records, _ = load_records(load_data_spec(data), "train")
    cfg = load_config(overrides={"mosaic": mosaic, "mixup": mixup, "cache_images": cache})  # default augmentation
    samples = [bench_loader(records, img, workers, batch, batches, cfg) for _ in range(max(1, runs))]
    ips = sorted(r["images_per_s"] for r in samples)
    med = statistics.median(ips)
    return {"images_per_s": round(med, 1), "min": ips[0], "max": ips[-1], "runs": len(ips),
            "ms_per_image": round(1000 / med, 2), "images_per_run": samples[0]["images"], "workers": workers,
            "batch_size": batch, "img_size": img, "mosaic": mosaic, "mixup": mixup, "cache": samples[0]["cache"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="synthetic")
    ap.add_argument("--img", type=int, default=416)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--batches", type=int, default=30, help="timed batches (after 3 warm-up batches)")
    ap.add_argument("--runs", type=int, default=1, help="repeats of the loader timing (median, min, max)")
    ap.add_argument("--mosaic", type=float, default=1.0)
    ap.add_argument("--mixup", type=float, default=0.0)
    ap.add_argument("--cache", default="auto", choices=("auto", "ram", "off"), help="cache_images (see configs)")
    ap.add_argument("--model", action="store_true", help="also time YoloBody training steps")
    ap.add_argument("--model-steps", type=int, default=3)
    ap.add_argument("--phi", default="eca")
    ap.add_argument("--out", default="", help="also write the JSON here")
    args = ap.parse_args()

    spec = load_data_spec(args.data)
    records, _ = load_records(spec, "train")
    result = {
        "benchmark": "train_loader", "data": args.data, "records": len(records), "img_size": args.img,
        "workers": args.workers, "batch_size": args.batch, "mosaic": args.mosaic, "mixup": args.mixup,
        "cpu_count": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version(),
        "loader": measure(args.data, args.img, args.workers, args.batch, args.batches, args.runs, args.mosaic,
                          args.mixup, records=records, cache=args.cache),
    }
    if args.model:
        torch.set_num_threads(os.cpu_count() or 1)
        result["model_train_step"] = bench_model(spec.num_classes, args.img, args.batch, args.model_steps, args.phi)
        result["loader_over_model"] = round(result["loader"]["images_per_s"] /
                                            result["model_train_step"]["images_per_s"], 1)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
