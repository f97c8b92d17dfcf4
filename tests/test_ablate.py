"""The attention ablation: every variant trained and scored, failures reported, resume skips done work."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from utils.config import load_config

ROOT = Path(__file__).resolve().parent.parent
TINY = dict(img_size=64, batch_size=4, workers=0, epochs=1, warmup_epochs=0.0, optimizer="adamw", lr0=0.003,
            mosaic=0.0, close_mosaic=0, patience=0)


def test_ablation_reports_failures_and_resumes(tiny_voc, tmp_path, monkeypatch):
    from utils.ablation.ablation import Ablation
    from utils.engine.trainer import Trainer, TrainingDiverged

    cfg = load_config(None, {"data": str(tiny_voc), **TINY})
    real_train = Trainer.train

    def train_or_diverge(self):
        if self.cfg.phi == "se":
            raise TrainingDiverged("loss became nan at epoch 1, batch 0")
        return real_train(self)

    monkeypatch.setattr(Trainer, "train", train_or_diverge)
    ab = Ablation(cfg, ["0", "se", "eca"], [0], name="abl", project=str(tmp_path), log=lambda *a: None)
    ab.train_all()
    state = json.loads((tmp_path / "abl" / "state.json").read_text())["jobs"]
    assert state["none_s0"]["status"] == "done" and state["eca_s0"]["status"] == "done"
    assert state["se_s0"]["status"] == "failed" and "nan" in state["se_s0"]["reason"]

    # a second call trains nothing: every job is settled
    calls = []
    monkeypatch.setattr(Trainer, "train", lambda self: calls.append(self.cfg.phi))
    ab.train_all()
    assert calls == []

    rows = ab.evaluate_all()
    ab.write_report(rows)
    by = {r["variant"]: r for r in rows}
    assert by["none"]["params"] < by["eca"]["params"] and by["se"]["seeds_done"] == 0
    assert by["eca"]["mAP50"] >= by["eca"]["mAP50-95"] >= 0 and by["eca"]["cpu_ms"] > 0
    md = (tmp_path / "abl" / "results.md").read_text()
    assert "| none |" in md and "| eca |" in md and "se_s0: TrainingDiverged" in md
    rows_csv = list(csv.DictReader(open(tmp_path / "abl" / "results.csv")))
    assert [r["variant"] for r in rows_csv] == ["none", "se", "eca"]
    for png in ("map_vs_latency.png", "map_curves.png"):
        assert (tmp_path / "abl" / png).stat().st_size > 1000

    # attention/: one grid per val image (the fixture has 4), a row per variant, the failed one included
    from utils.ablation.ablation import PANEL_SIZE

    grids = sorted((tmp_path / "abl" / "attention").glob("*.jpg"))
    assert len(grids) == 4
    for g in grids:
        img = cv2.imread(str(g))
        assert img is not None and img.shape[0] == 3 * PANEL_SIZE + 2 * 4 and img.shape[1] > 4 * PANEL_SIZE
    # a re-run of the report (what a resumed ablation does) writes them again
    grids[0].unlink()
    ab.write_report(rows)
    assert grids[0].is_file()


def _fake_run(ab, variant: str, seed: int, status: str, weights: bytes | str | None = None) -> None:
    """Mark a job in state.json and give it a best.pt: a random model ('model'), raw bytes, or none."""
    from conftest import TINY_CLASSES
    from helpers import random_detector

    from nets.weights.checkpoint import checkpoint_dict, save_checkpoint

    key = ab.run_name(variant, seed)
    best = ab.dir / "runs" / key / "weights" / "best.pt"
    best.parent.mkdir(parents=True, exist_ok=True)
    if weights == "model":
        m = random_detector(variant, len(TINY_CLASSES), seed=seed)
        save_checkpoint(best, checkpoint_dict(m, class_names=TINY_CLASSES, img_size=64))
    elif isinstance(weights, bytes):
        best.write_bytes(weights)
    state = ab.load_state()
    state["jobs"][key] = {"status": status, **({"reason": "TrainingDiverged: loss became nan"} if status == "failed"
                                               else {})}
    ab.save_state(state)


def test_attention_grids_keep_failed_and_broken_variants_as_rows(tiny_voc, tmp_path):
    """No training: checkpoints written by hand. Rows: none (seed 0), cbam (seed 0 failed -> seed 1),
    se (training failed), eca (best.pt does not load). Every image gets a grid of 4 rows, no crash."""
    from utils.ablation.ablation import PANEL_SIZE, Ablation, pick_images

    cfg = load_config(None, {"data": str(tiny_voc), **TINY})
    logs: list[str] = []
    ab = Ablation(cfg, ["0", "cbam", "se", "eca"], [0, 1], name="maps", project=str(tmp_path), log=logs.append,
                  attention_images=3)
    ab.dir.mkdir(parents=True)
    _fake_run(ab, "none", 0, "done", "model")
    _fake_run(ab, "cbam", 0, "failed")
    _fake_run(ab, "cbam", 1, "done", "model")
    _fake_run(ab, "se", 0, "failed")
    _fake_run(ab, "eca", 0, "done", b"not a checkpoint")
    assert ab.first_weights("cbam")[1] == 1 and ab.first_weights("se")[0] is None

    paths = ab.write_attention()
    assert len(paths) == 3 and all(p.parent.name == "attention" for p in paths)
    assert any("attention maps of eca: error" in m for m in logs)
    step = PANEL_SIZE + 4
    for p in paths:
        img = cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB)
        assert img.shape[0] == 4 * PANEL_SIZE + 3 * 4
        # rows of se and eca are a plain text panel ('failed: ...' / 'error: ...'), the others are pictures
        right = [img[i * step:i * step + PANEL_SIZE, -2 * PANEL_SIZE:] for i in range(4)]
        flat = [float(np.mean(np.abs(r.astype(np.float32) - 235) < 12)) for r in right]
        assert flat[0] < 0.5 and flat[1] < 0.5 and flat[2] > 0.9 and flat[3] > 0.9, flat

    # the same images for every variant and every run: the ones with the most objects, ties in file order
    from utils.data import load_data_spec, load_records

    records = load_records(load_data_spec(str(tiny_voc)), "val")[0]
    picked = pick_images(records, 3)
    counts = [len(r.boxes) for r in records]
    assert [len(r.boxes) for r in picked] == sorted(counts, reverse=True)[:3]
    assert sorted(p.stem for p in paths) == sorted(Path(r.image).stem for r in picked)


@pytest.mark.slow
def test_ablate_cli(tiny_voc, tmp_path):
    r = subprocess.run([sys.executable, "ablate.py", "--data", str(tiny_voc), "--phi", "0", "cbam", "--seeds", "2",
                        "--project", str(tmp_path), "--name", "cli", "--img", "64", "--batch-size", "4",
                        "--workers", "0", "--epochs", "1", "--optimizer", "adamw", "--lr0", "0.003"],
                       cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "| cbam |" in r.stdout and "±" in r.stdout
