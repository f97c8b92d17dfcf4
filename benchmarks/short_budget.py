"""Short-budget recipe sweep: which EMA ramp and warm-up length suit runs of a few hundred steps.

EMA weights do not change training, so one run carries several EMAs side by side (each with its own ramp) and
scores them all at the end, with the raw weights, on the data's test split (COCO AP by our evaluator, which agrees
with pycocotools: tests/test_metrics*). Fixed epochs, not a time budget: the outcome does not depend on how busy
the machine is, so variants compare exactly. Prints one JSON line.

    python benchmarks/short_budget.py --data /tmp/unseen.yaml --epochs 8 --seed 0 --warmup-epochs 3
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from utils.config import load_config  # noqa: E402
from utils.data import load_records  # noqa: E402
from utils.engine.plan import ema_tau  # noqa: E402
from utils.engine.torch_utils import ModelEMA, de_parallel  # noqa: E402
from utils.engine.trainer import Trainer  # noqa: E402
from utils.eval.evaluate import evaluate_model  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--warmup-epochs", type=float, default=3.0)
    ap.add_argument("--shares", default="0.03,0.1,0.3", help="EMA windows at the end, as shares of the run")
    ap.add_argument("--project", default=str(ROOT / "runs" / "short_budget"))
    ap.add_argument("--set", nargs="*", default=[], help="more config overrides, key=value")
    a = ap.parse_args(argv)
    extra = dict(kv.split("=", 1) for kv in a.set)
    cfg = load_config(None, {"data": a.data, "epochs": a.epochs, "time": 0, "seed": a.seed,
                             "warmup_epochs": a.warmup_epochs, "eval_interval": 1000, "plots": False,
                             "project": a.project, "name": f"w{a.warmup_epochs:g}_s{a.seed}", "patience": 0,
                             **extra})
    tr = Trainer(cfg, log=lambda *x: None)
    emas: dict[str, ModelEMA] = {}

    def start(t: Trainer) -> None:
        steps = t.epochs * t.nb
        emas["tau2000"] = ModelEMA(t.model, cfg.ema_decay, tau=2000.0)
        for s in a.shares.split(","):
            emas[f"share{s}"] = ModelEMA(t.model, cfg.ema_decay, tau=ema_tau(steps, float(s)))

    def update(t: Trainer) -> None:
        for e in emas.values():
            e.update(t.model)

    tr.add_callback("on_train_start", start)
    tr.add_callback("on_batch_end", update)
    t0 = time.time()
    tr.train()
    minutes = (time.time() - t0) / 60
    spec_records, _ = load_records(tr.spec, "test")
    models = {"raw": de_parallel(tr.train_model), "trainer_ema": tr.ema.ema if tr.ema else None,
              **{k: e.ema for k, e in emas.items()}}
    out = {"data": a.data, "epochs": a.epochs, "seed": a.seed, "warmup_epochs": a.warmup_epochs,
           "warmup_iters": tr.warmup_iters, "steps": tr.epochs * tr.nb, "train_minutes": round(minutes, 2),
           "taus": {k: round(e.tau, 1) for k, e in emas.items()}, "extra": extra, "test": {}}
    for name, m in models.items():
        if m is None:
            continue
        res = evaluate_model(m, spec_records, tr.class_names, cfg.img_size, cfg.batch_size, tr.device,
                             cfg.conf_thres, cfg.iou_thres, max_det=cfg.max_det)
        out["test"][name] = {"AP": round(res["coco"]["AP"], 4), "AP50": round(res["coco"]["AP50"], 4)}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
