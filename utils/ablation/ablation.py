"""Attention ablation: train every variant with the same data, schedule, seeds and budget, then compare.

    ab = Ablation(cfg, phis=[0, 1, 2, 3], seeds=[0, 1, 2], name="shapes")
    ab.train_all(); ab.write_report(ab.evaluate_all())

Layout of `runs/ablate/<name>/`: `runs/<variant>_s<seed>/` (ordinary training runs), `state.json`
(what finished, what failed and why: an interrupted ablation resumes from it), `results.csv` and
`results.md` (one row per variant, mean ± std over seeds), `map_vs_latency.png`, `map_curves.png`,
and `attention/` (attention-map overlays of each variant on the same val images).
"""
from __future__ import annotations

import json
import math
import statistics
import time
import traceback
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import torch

from nets.attention import resolve_attention
from nets.fuse import fuse_conv_bn
from nets.summary import count_flops, count_parameters
from nets.weights.loader import load_model
from nets.yolo import ATTENTION_SITES
from utils.ablation.report import plot_curves, plot_map_vs_latency, write_tables
from utils.config import Config
from utils.data import load_data_spec, load_image, load_records
from utils.device import select_device
from utils.engine.timing import interleaved
from utils.engine.trainer import Trainer, TrainingDiverged
from utils.eval.evaluate import evaluate_model
from utils.infer.predictor import Predictor
from utils.viz.attention_maps import detect_with_maps, overlay_panels
from utils.viz.draw import draw_detections, grid, text_panel, tile

STATE_FILE = "state.json"
ATTENTION_IMAGES = 4  # val images drawn in attention/, the same for every variant
DRAW_CONF, DRAW_IOU = 0.25, 0.45  # what predict.py shows by default (the report's mAP uses cfg's thresholds)
PANEL_SIZE = 320  # long side (px) of each panel of an attention/ grid


def _mean_std(values: list[float]) -> tuple[float, float]:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    if not vals:
        return float("nan"), float("nan")
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


def pick_images(records: list, n: int) -> list:
    """The `n` val records with the most (non-crowd) objects, ties in data-set order: the same images for
    every variant and on every re-run, and ones with something to look at."""
    def objects(r) -> int:
        crowd = getattr(r, "iscrowd", None)
        return int(len(r.boxes) - (int(np.sum(crowd)) if crowd is not None else 0))

    order = sorted(range(len(records)), key=lambda i: (-objects(records[i]), i))
    return [records[i] for i in order[:max(0, n)]]


def measure_latencies(models: dict[str, torch.nn.Module], img_size: int, device: torch.device,
                      runs: int = 30, warmup: int = 3) -> dict[str, float]:
    """Median model-only batch-1 latency (ms) of each model, conv+BN fused, timed round-robin.

    One call of each model in turn (order rotated every round), so that load from other processes or a
    slow first minute hits every variant alike instead of whichever happened to be timed then.
    """
    fused = {k: fuse_conv_bn(m, inplace=False).to(device).eval() for k, m in models.items()}
    x = torch.rand(1, 3, img_size, img_size, device=device)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    with torch.inference_mode():
        times = interleaved({k: (lambda m=m: (m(x), sync())) for k, m in fused.items()}, runs, warmup, gap=0.0)
    return {k: t["median_ms"] for k, t in times.items()}


class Ablation:
    def __init__(self, cfg: Config, phis: list[str | int], seeds: list[int], name: str = "exp",
                 project: str = "runs/ablate", log=print, rank: int = 0, world_size: int = 1,
                 attention_images: int = ATTENTION_IMAGES):
        self.cfg = cfg
        self.variants = [resolve_attention(p) for p in phis]
        if len(set(self.variants)) != len(self.variants):
            raise ValueError(f"--phi lists a variant twice: {phis}")
        self.seeds = list(seeds)
        self.dir = Path(project) / name
        self.log = log
        self.rank, self.world_size = rank, world_size
        self.state_path = self.dir / STATE_FILE
        self.attention_images = attention_images
        self._val: tuple[list, list[str]] | None = None  # (val records, class names), read once

    # ------------------------------------------------------------------ bookkeeping
    def jobs(self) -> list[tuple[str, int]]:
        return [(v, s) for v in self.variants for s in self.seeds]

    def run_name(self, variant: str, seed: int) -> str:
        return f"{variant}_s{seed}"

    def load_state(self) -> dict:
        if self.state_path.is_file():
            return json.loads(self.state_path.read_text())
        return {"jobs": {}}

    def save_state(self, state: dict) -> None:
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=1))
        tmp.replace(self.state_path)

    # ------------------------------------------------------------------ training
    def train_all(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        for i, (variant, seed) in enumerate(self.jobs()):
            if i % self.world_size != self.rank:  # spread over GPUs under torchrun: one job per rank
                continue
            key = self.run_name(variant, seed)
            state = self.load_state()
            if state["jobs"].get(key, {}).get("status") in ("done", "failed"):
                self.log(f"[ablate] {key}: {state['jobs'][key]['status']} already, skipped")
                continue
            run_dir = self.dir / "runs" / key
            last = run_dir / "weights" / "last.pt"
            cfg = replace(self.cfg, phi=variant, seed=seed, name=key, project=str(self.dir / "runs"),
                          exist_ok=True, resume=str(run_dir) if last.is_file() else "")
            self.log(f"[ablate] {key}: {'resuming' if cfg.resume else 'training'} ({i + 1}/{len(self.jobs())})")
            t0 = time.time()
            try:
                result = Trainer(cfg, log=self.log, distributed=False).train()
                entry = {"status": "done", "seconds": time.time() - t0, "save_dir": result["save_dir"]}
            except (TrainingDiverged, torch.OutOfMemoryError, RuntimeError, ValueError) as e:
                reason = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                self.log(f"[ablate] {key} FAILED: {reason}")
                self.log(traceback.format_exc(limit=3))
                entry = {"status": "failed", "reason": reason, "seconds": time.time() - t0}
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
            state = self.load_state()  # another rank may have written meanwhile
            state["jobs"][key] = entry
            self.save_state(state)

    # ------------------------------------------------------------------ evaluation and report
    def evaluate_all(self) -> list[dict]:
        cfg = self.cfg
        device = select_device(cfg.device)
        spec = load_data_spec(cfg.data)
        records, _ = load_records(spec, "val")
        self._val = (records, list(spec.names))
        state = self.load_state()
        rows, first_models = [], {}
        for variant in self.variants:
            per_seed, failures = [], []
            for seed in self.seeds:
                key = self.run_name(variant, seed)
                job = state["jobs"].get(key, {"status": "missing"})
                best = self.dir / "runs" / key / "weights" / "best.pt"
                if job["status"] != "done" or not best.is_file():
                    failures.append(f"{key}: {job.get('reason', job['status'])}")
                    continue
                model = load_model(best, device=device)
                res = evaluate_model(model, records, list(spec.names), cfg.img_size, cfg.batch_size, device,
                                     cfg.conf_thres, cfg.iou_thres, metric="both", max_det=cfg.max_det)
                per_seed.append({"seed": seed, "mAP50": res["coco"]["AP50"], "mAP50-95": res["coco"]["AP"],
                                 "per_class": res["coco"]["per_class"], "model": model})
            row = {"variant": variant, "seeds_done": len(per_seed), "failures": failures}
            if per_seed:
                model = first_models[variant] = per_seed[0]["model"].cpu()
                row["params"] = count_parameters(model)
                row["gflops"] = count_flops(model, cfg.img_size)[0] / 1e9
                for k in ("mAP50", "mAP50-95"):
                    row[k], row[f"{k}_std"] = _mean_std([r[k] for r in per_seed])
                names = list(per_seed[0]["per_class"])
                row["per_class"] = {n: _mean_std([r["per_class"].get(n, float("nan")) for r in per_seed])[0]
                                    for n in names}
            rows.append(row)
        cpu_ms = measure_latencies(first_models, cfg.img_size, torch.device("cpu")) if first_models else {}
        gpu_ms = (measure_latencies(first_models, cfg.img_size, torch.device("cuda"))
                  if first_models and torch.cuda.is_available() else {})
        for row in rows:
            if row["variant"] in first_models:
                row["cpu_ms"] = cpu_ms[row["variant"]]
                row["gpu_ms"] = gpu_ms.get(row["variant"], float("nan"))
        return rows

    def write_report(self, rows: list[dict]) -> None:
        write_tables(rows, self.dir)
        plot_map_vs_latency(rows, self.dir / "map_vs_latency.png")
        plot_curves({v: [self.dir / "runs" / self.run_name(v, s) / "results.csv" for s in self.seeds]
                     for v in self.variants}, self.dir / "map_curves.png")
        self.write_attention()

    # ------------------------------------------------------------------ attention maps
    def first_weights(self, variant: str) -> tuple[Path | None, int | None, str]:
        """best.pt of the variant's first seed that finished, its seed, and why there is none otherwise."""
        state = self.load_state()
        reasons = []
        for seed in self.seeds:
            key = self.run_name(variant, seed)
            job = state["jobs"].get(key, {"status": "not trained"})
            best = self.dir / "runs" / key / "weights" / "best.pt"
            if job["status"] == "done" and best.is_file():
                return best, seed, ""
            reasons.append(f"{key}: {job.get('reason', job['status'] if job['status'] != 'done' else 'no best.pt')}")
        return None, None, "; ".join(reasons)

    def write_attention(self) -> list[Path]:
        """attention/<image stem>.jpg: per val image one grid, a row per variant (its first seed's best.pt):
        the image with the variant's detections, then one map per attention site (see utils/viz/attention_maps.py).

        Rewritten on every report (a resumed ablation regenerates it); a variant without weights, or one
        that cannot run, is a row saying why.
        """
        if self.attention_images <= 0:
            return []
        if self._val is None:
            spec = load_data_spec(self.cfg.data)
            self._val = (load_records(spec, "val")[0], list(spec.names))
        records, names = self._val
        images, stems = [], []
        for r in pick_images(records, self.attention_images):
            try:
                img = load_image(r.image)
            except (OSError, ValueError, RuntimeError) as e:
                self.log(f"[ablate] attention maps: skipped {r.image} ({e})")
                continue
            stem, k = Path(r.image).stem or "image", 2
            while stem in stems:
                stem, k = f"{Path(r.image).stem}_{k}", k + 1
            images.append(img)
            stems.append(stem)
        out = self.dir / "attention"
        out.mkdir(parents=True, exist_ok=True)
        for old in out.glob("*.jpg"):  # a re-run may pick other images (data changed): no stale grids
            old.unlink()
        if not images:
            self.log("[ablate] attention maps: no readable val image, none written")
            return []
        device = select_device(self.cfg.device)
        rows: list[list[np.ndarray]] = [[] for _ in images]
        labels: list[str] = []
        for variant in self.variants:
            best, seed, reason = self.first_weights(variant)
            labels.append(variant if seed is None else f"{variant}\nseed {seed}")
            why = f"failed: {reason}"
            if best is not None:
                try:
                    for i, row in enumerate(self._attention_rows(best, images, names, device)):
                        rows[i].append(row)
                    continue
                except Exception as e:  # noqa: BLE001 - a drawing problem must not sink the ablation's report
                    why = f"error: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                    self.log(f"[ablate] attention maps of {variant}: {why}")
            for i, img in enumerate(images):
                ph, pw = _display_size(img.shape[:2])
                n_cols = 1 + len(ATTENTION_SITES)
                rows[i].append(text_panel(f"{variant} {why}", ph, n_cols * pw + (n_cols - 1) * 4))
        written = []
        for stem, img_rows in zip(stems, rows):
            path = out / f"{stem}.jpg"
            if not cv2.imwrite(str(path), cv2.cvtColor(grid(img_rows, labels), cv2.COLOR_RGB2BGR)):
                self.log(f"[ablate] attention maps: could not write {path}")
                continue
            written.append(path)
        self.log(f"[ablate] attention maps of {len(self.variants)} variant(s) on {len(written)} val image(s) in {out}")
        return written

    def _attention_rows(self, weights: Path, images: list[np.ndarray], names: list[str],
                        device: torch.device) -> list[np.ndarray]:
        """One grid row per image: the image with this model's detections, then its map per site."""
        model = load_model(weights, device=device)
        pred = Predictor(model, img_size=self.cfg.img_size, class_names=names, conf_thres=DRAW_CONF,
                         iou_thres=DRAW_IOU, device=device)
        rows = []
        for img in images:
            det, info, maps = detect_with_maps(pred, img)
            disp = _display_size(img.shape[:2])
            sx, sy = disp[1] / img.shape[1], disp[0] / img.shape[0]
            boxes = det["boxes"].float().cpu().numpy() * np.array([sx, sy, sx, sy], np.float32)
            shown = draw_detections(cv2.resize(img, (disp[1], disp[0]), interpolation=cv2.INTER_AREA), boxes,
                                    det["scores"].float().cpu().numpy(), det["labels"].cpu().numpy(), names)
            panels, titles = overlay_panels(img, info, maps, display=disp)
            rows.append(tile([shown, *panels], [f"{len(boxes)} boxes, conf {DRAW_CONF}", *titles]))
        return rows


def _display_size(hw: tuple[int, int]) -> tuple[int, int]:
    """(h, w) of a grid panel: the image scaled so its long side is PANEL_SIZE."""
    s = PANEL_SIZE / max(hw)
    return max(1, round(hw[0] * s)), max(1, round(hw[1] * s))
