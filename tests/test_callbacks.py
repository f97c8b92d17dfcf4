"""The training loop's events: a user's callback runs at the right moments and sees the epoch's results, and
the default loggers really hang on the events (taking one away takes its file away)."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest
from test_train import make_cfg

from utils.engine.callbacks import EVENTS, RESULT_FIELDS, add_callback, write_csv
from utils.engine.trainer import Trainer


def test_user_callbacks_see_each_epoch_and_its_metrics(tiny_voc, tmp_path):
    t = Trainer(make_cfg(tiny_voc, tmp_path, epochs=2, name="cb", plots=False), log=lambda *a: None)
    calls, rows = [], []
    for event in EVENTS:
        t.add_callback(event, lambda tr, e=event: calls.append((e, tr.epoch, tr.i if "batch" in e else None)))
    t.add_callback("on_epoch_end", lambda tr: rows.append(dict(tr.row, metrics=dict(tr.metrics))))
    result = t.train()
    nb = len(t.train_loader)  # 8 images, batch 4
    assert nb == 2
    per_epoch = [("on_epoch_start", None), *[(e, i) for i in range(nb) for e in ("on_batch_start", "on_batch_end")],
                 ("on_train_epoch_end", None), ("on_epoch_end", None)]
    want = [("on_train_start", 0, None), *[(e, ep, i) for ep in (0, 1) for e, i in per_epoch],
            ("on_train_end", 1, None)]
    assert calls == want
    assert [r["epoch"] for r in rows] == [0, 1] and all(list(r)[:-1] == RESULT_FIELDS for r in rows)
    for r in rows:  # the callback saw this epoch's evaluation, the one results.csv holds
        assert r["mAP50"] == r["metrics"]["mAP50"] and r["mAP50-95"] == r["metrics"]["mAP50-95"]
    written = list(csv.DictReader(open(Path(result["save_dir"]) / "results.csv")))
    for r, w in zip(rows, written):
        for k in RESULT_FIELDS:
            assert float(w[k]) == pytest.approx(r[k], rel=1e-5, nan_ok=True), k
    assert rows[-1]["mAP50"] == result["mAP50"]


def test_removing_the_csv_logger_stops_results_csv(tiny_voc, tmp_path):
    t = Trainer(make_cfg(tiny_voc, tmp_path, epochs=1, name="nocsv"), log=lambda *a: None)
    t.callbacks["on_epoch_end"].remove(write_csv)
    d = Path(t.train()["save_dir"])
    assert not (d / "results.csv").exists() and not (d / "results.png").exists()  # results.png is drawn from it
    assert (d / "weights" / "last.pt").is_file() and list(d.glob("events.out.tfevents.*"))  # the rest as usual


def test_unknown_event_is_an_error():
    with pytest.raises(ValueError, match="unknown training event 'on_epoch_finish'.*on_epoch_end"):
        add_callback({e: [] for e in EVENTS}, "on_epoch_finish", print)


def test_kill_between_the_csv_row_and_last_pt_leaves_no_duplicate_row(tiny_voc, tmp_path, monkeypatch):
    """results.csv is written at on_epoch_end, last.pt just after: a kill in between must not make the resumed
    run log that epoch twice."""
    import utils.engine.trainer as trainer_module

    real = trainer_module.save_checkpoint

    def killed_at_epoch_1(path, obj):
        if obj["epoch"] == 1:
            raise KeyboardInterrupt  # kill -9 after epoch 1's row, before its last.pt
        real(path, obj)

    monkeypatch.setattr(trainer_module, "save_checkpoint", killed_at_epoch_1)
    with pytest.raises(KeyboardInterrupt):
        Trainer(make_cfg(tiny_voc, tmp_path, epochs=3, name="cut", plots=False), log=lambda *a: None).train()
    csv_path = tmp_path / "cut" / "results.csv"
    assert [int(r["epoch"]) for r in csv.DictReader(open(csv_path))] == [0, 1]  # epoch 1 logged, not saved
    monkeypatch.setattr(trainer_module, "save_checkpoint", real)
    Trainer(make_cfg(tiny_voc, tmp_path, resume=str(tmp_path / "cut")), log=lambda *a: None).train()
    assert [int(r["epoch"]) for r in csv.DictReader(open(csv_path))] == [0, 1, 2]
