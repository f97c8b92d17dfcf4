"""The attention ablation: every variant trained and scored, failures reported, resume skips done work."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from utils.config import load_config

ROOT = Path(__file__).resolve().parent.parent
TINY = dict(img_size=64, batch_size=4, workers=0, epochs=1, warmup_epochs=0.0, optimizer="adamw", lr0=0.003,
            mosaic=0.0, close_mosaic=0, patience=0)


def test_ablation_reports_failures_and_resumes(tiny_voc, tmp_path, monkeypatch):
    from utils.ablation import Ablation
    from utils.trainer import Trainer, TrainingDiverged

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
    assert 0 <= by["eca"]["mAP50"] <= 1 and by["eca"]["cpu_ms"] > 0
    md = (tmp_path / "abl" / "results.md").read_text()
    assert "| none |" in md and "| eca |" in md and "se_s0: TrainingDiverged" in md
    rows_csv = list(csv.DictReader(open(tmp_path / "abl" / "results.csv")))
    assert [r["variant"] for r in rows_csv] == ["none", "se", "eca"]
    for png in ("map_vs_latency.png", "map_curves.png"):
        assert (tmp_path / "abl" / png).stat().st_size > 1000


@pytest.mark.slow
def test_ablate_cli(tiny_voc, tmp_path):
    r = subprocess.run([sys.executable, "ablate.py", "--data", str(tiny_voc), "--phi", "0", "cbam", "--seeds", "2",
                        "--project", str(tmp_path), "--name", "cli", "--img", "64", "--batch-size", "4",
                        "--workers", "0", "--epochs", "1", "--optimizer", "adamw", "--lr0", "0.003"],
                       cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "| cbam |" in r.stdout and "±" in r.stdout
