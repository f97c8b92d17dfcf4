"""Training end to end on a tiny data set: run files, loss goes down, exact resume, atomic saves."""
from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from nets.weights.checkpoint import load_checkpoint
from utils.config import load_config

ROOT = Path(__file__).resolve().parent.parent
FAST = dict(img_size=64, batch_size=4, workers=0, eval_interval=1, warmup_epochs=0.0, close_mosaic=0, ema_decay=0.99,
            optimizer="adamw", lr0=0.003, patience=0, mosaic=0.0)


def make_cfg(data: Path, project: Path, **kw):
    return load_config(None, {"data": str(data), "project": str(project), **FAST, **kw})


def run(cfg):
    from utils.engine.trainer import Trainer
    return Trainer(cfg, log=lambda *a: None).train()


def test_short_run_writes_every_file_and_lowers_loss(tiny_voc, tmp_path):
    res = run(make_cfg(tiny_voc, tmp_path, epochs=4, phi="eca", name="short", mosaic=0.5, scale_x_y=1.05,
                       save_period=2))
    d = Path(res["save_dir"])
    for f in ("weights/last.pt", "weights/best.pt", "config.yaml", "results.csv", "results.png", "labels.png",
              "train_batch0.jpg", "train_batch1.jpg", "pr_curve.png", "confusion_matrix.png",
              "confusion_matrix.json"):
        assert (d / f).is_file(), f
    assert list(d.glob("events.out.tfevents.*"))
    rows = list(csv.DictReader(open(d / "results.csv")))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2, 3]
    total = [float(r["box_loss"]) + float(r["obj_loss"]) + float(r["cls_loss"]) for r in rows]
    assert total[-1] < 0.9 * total[0]
    # AP at IoU 0.5 bounds the mean over 0.5:0.95 from above: swapped or mislabelled columns fail here
    assert all(float(r["mAP50"]) >= float(r["mAP50-95"]) >= 0.0 for r in rows)
    ck = load_checkpoint(d / "weights" / "last.pt")
    assert ck["model_cfg"]["class_names"] == ["square", "disc"] and ck["model_cfg"]["phi"] == "eca"
    assert ck["model_cfg"]["scale_x_y"] == 1.05  # the decoding it trained with goes to predict.py
    assert ck["epoch"] == 3 and ck["train"]["optimizer"]["state"]
    assert load_checkpoint(d / "weights" / "best.pt")["train"] is None
    assert load_config(d / "config.yaml").phi == "eca"
    assert sorted(p.name for p in d.glob("weights/epoch*.pt")) == ["epoch2.pt", "epoch4.pt"]  # --save-period 2
    assert load_checkpoint(d / "weights" / "epoch2.pt")["epoch"] == 1


def test_resume_is_bitwise_exact(tiny_voc, tmp_path, monkeypatch):
    from utils.engine.trainer import Trainer

    straight = run(make_cfg(tiny_voc, tmp_path, epochs=3, name="straight"))

    real = Trainer.train_one_epoch

    def interrupted(self, epoch, *a):
        if epoch == 2:
            raise KeyboardInterrupt  # the user pressed Ctrl-C during epoch 3
        return real(self, epoch, *a)

    monkeypatch.setattr(Trainer, "train_one_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run(make_cfg(tiny_voc, tmp_path, epochs=3, name="cut"))
    monkeypatch.setattr(Trainer, "train_one_epoch", real)
    assert load_checkpoint(tmp_path / "cut" / "weights" / "last.pt")["epoch"] == 1
    resumed = run(load_config(None, {"resume": str(tmp_path / "cut")}))
    assert resumed["save_dir"] == str(tmp_path / "cut")
    a = load_checkpoint(Path(straight["save_dir"]) / "weights" / "last.pt")
    b = load_checkpoint(tmp_path / "cut" / "weights" / "last.pt")
    for key in ("model", "ema"):
        for k in a[key]:
            assert torch.equal(a[key][k], b[key][k]), f"{key}.{k}"
    rows = list(csv.DictReader(open(tmp_path / "cut" / "results.csv")))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]
    with pytest.raises(ValueError, match="already finished its 3 epochs"):  # a finished run has nothing to resume
        run(load_config(None, {"resume": str(tmp_path / "cut")}))


def test_kill_during_save_leaves_a_loadable_checkpoint(tmp_path):
    target = tmp_path / "last.pt"
    script = (
        "import sys, torch\n"
        "from nets.weights.checkpoint import save_checkpoint\n"
        "i = 0\n"
        "while True:\n"
        "    save_checkpoint(sys.argv[1], {'i': i, 'w': torch.full((2_000_000,), float(i))})\n"
        "    i += 1\n"
        "    print(i, flush=True)\n"
    )
    for delay in (0.3, 0.55, 0.8):
        p = subprocess.Popen([sys.executable, "-c", script, str(target)], cwd=ROOT, stdout=subprocess.PIPE)
        p.stdout.readline()  # at least one complete save exists
        time.sleep(delay)
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        ck = load_checkpoint(target)
        assert torch.equal(ck["w"], torch.full((2_000_000,), float(ck["i"])))
    assert not [f for f in tmp_path.iterdir() if f.name != "last.pt" and not f.name.endswith(".tmp")]


def test_nan_loss_stops_with_advice(tiny_voc, tmp_path, monkeypatch):
    from nets.loss import YoloLoss
    from utils.engine.trainer import TrainingDiverged

    real = YoloLoss.forward

    def poisoned(self, outputs, targets):  # what an fp16 overflow or a bad box would produce
        loss, items = real(self, outputs, targets)
        return loss * float("nan"), items

    monkeypatch.setattr(YoloLoss, "forward", poisoned)
    with pytest.raises(TrainingDiverged, match="lower --lr0"):
        run(make_cfg(tiny_voc, tmp_path, epochs=1, name="nan"))
    # the checkpoint of the last good epoch is not overwritten by a diverged one
    assert not (tmp_path / "nan" / "weights" / "last.pt").exists()


def test_train_cli_rejects_bad_config():
    r = subprocess.run([sys.executable, "train.py", "--img", "100"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "img_size" in r.stderr


def test_train_cli_resume_errors_are_one_line(tmp_path):
    """A truncated last.pt or a run folder without one: `error: ...` naming the file and the fix, exit 2."""
    weights = tmp_path / "run" / "weights"
    weights.mkdir(parents=True)
    torch.save({"epoch": 0, "model": {"w": torch.zeros(1000)}}, weights / "last.pt")
    data = (weights / "last.pt").read_bytes()
    (weights / "last.pt").write_bytes(data[: len(data) // 2])  # a copy cut short
    (tmp_path / "empty").mkdir()
    for run_dir, says in ((tmp_path / "run", "truncated or corrupt"), (tmp_path / "empty", "no checkpoint at")):
        r = subprocess.run([sys.executable, "train.py", "--resume", str(run_dir)], cwd=ROOT, capture_output=True,
                           text=True, timeout=120)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
        assert lines[0].startswith("error: --resume ") and says in lines[0] and str(run_dir) in lines[0]


def test_ddp_two_cpu_processes_match_one_process(tiny_voc, tmp_path):
    """torchrun with 2 gloo processes and the same global batch ends at the single-process weights.

    BatchNorm is pinned to its running statistics in both runs (a launcher patches it): otherwise
    each process normalises over its half of the batch (SyncBN is GPU-only), which at these tiny
    sizes changes the gradient more than DDP's averaging is being tested for. AdamW, because the
    loss is normalised per process by its own positive count. The check: the two runs end far
    closer to each other than either is to where it started.
    """
    launcher = tmp_path / "launch.py"
    launcher.write_text(
        "import sys, torch\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "torch.nn.BatchNorm2d.forward = lambda self, x: torch.nn.functional.batch_norm(\n"
        "    x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)\n"
        "import train\n"
        "sys.exit(train.main(sys.argv[1:]))\n")
    common = ["--data", str(tiny_voc), "--project", str(tmp_path), "--img", "64", "--batch-size", "4",
              "--workers", "0", "--epochs", "2", "--mosaic", "0", "--warmup-epochs", "0", "--optimizer", "adamw",
              "--lr0", "0.001", "--ema", "false", "--eval-interval", "100", "--close-mosaic", "0", "--exist-ok"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, str(launcher), *common, "--name", "one"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                          "29531", str(launcher), *common, "--name", "two"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    assert "world size 2" in two.stdout
    a = load_checkpoint(tmp_path / "one" / "weights" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "two" / "weights" / "last.pt")["model"]
    from nets.loss import init_head_biases
    from nets.yolo import YoloBody

    torch.manual_seed(0)
    init = YoloBody(2, "eca")
    init_head_biases(init, 2, img_size=64)
    init = init.state_dict()
    keys = [k for k in a if a[k].dtype.is_floating_point and "running" not in k]
    moved = sum((a[k] - init[k]).pow(2).sum() for k in keys).sqrt()
    apart = sum((a[k] - b[k]).pow(2).sum() for k in keys).sqrt()
    assert moved > 0
    assert apart < 0.2 * moved, (float(apart), float(moved))


def test_time_budget_replans_and_stops(tiny_voc, tmp_path):
    # a 0.06-second budget: the first epoch alone takes longer, so the run ends after it
    res = run(make_cfg(tiny_voc, tmp_path, epochs=50, time=0.001, name="timed"))
    rows = list(csv.DictReader(open(Path(res["save_dir"]) / "results.csv")))
    assert len(rows) == 1
    assert load_checkpoint(Path(res["save_dir"]) / "weights" / "last.pt")["train"]["epochs"] == 1


def test_de_parallel_unwraps_compile_and_ddp_wrappers():
    from torch import nn

    from utils.engine.torch_utils import de_parallel
    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    compiled = torch.compile(m)  # lazy: nothing compiles until it is called
    assert de_parallel(compiled) is m
    assert de_parallel(nn.DataParallel(compiled)) is m
    assert list(de_parallel(compiled).state_dict()) == list(m.state_dict())


@pytest.mark.slow
def test_compiled_training_saves_bare_checkpoints_and_resumes(tiny_voc, tmp_path, monkeypatch):
    """--compile true trains through torch.compile, yet checkpoints hold the bare model's keys and resume works."""
    from nets.weights.loader import load_model
    from utils.engine.trainer import Trainer

    real = Trainer.train_one_epoch

    def interrupted(self, epoch, *a):
        assert type(self.train_model).__name__ == "OptimizedModule"
        if epoch == 1:
            raise KeyboardInterrupt
        return real(self, epoch, *a)

    monkeypatch.setattr(Trainer, "train_one_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run(make_cfg(tiny_voc, tmp_path, epochs=2, compile=True, name="compiled"))
    monkeypatch.setattr(Trainer, "train_one_epoch", real)
    d = tmp_path / "compiled"
    ckpt = load_checkpoint(d / "weights" / "last.pt")
    assert not [k for k in ckpt["model"] if "_orig_mod" in k or k.startswith("module.")]
    assert not [k for k in ckpt["ema"] if "_orig_mod" in k]
    assert ckpt["train"]["config"]["compile"] is True
    load_model(d / "weights" / "best.pt")
    run(load_config(None, {"resume": str(d)}))
    assert [int(r["epoch"]) for r in csv.DictReader(open(d / "results.csv"))] == [0, 1]


def test_compile_without_a_cpp_compiler_says_what_to_do(tiny_voc, tmp_path, monkeypatch):
    import shutil

    from utils.engine.trainer import Trainer
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr(shutil, "which", lambda name: None)
    tr = Trainer(make_cfg(tiny_voc, tmp_path, epochs=1, compile=True, device="cpu", name="nocc"), log=lambda *a: None)
    tr.setup_data()
    with pytest.raises(RuntimeError, match="needs a C.. compiler.*CXX.*without --compile"):
        tr.setup_model()


def test_autoanchor_replaces_poor_anchors_and_resume_keeps_them(tiny_voc, tmp_path):
    from utils.engine.trainer import Trainer

    bad = tmp_path / "huge_anchors.txt"
    bad.write_text("300,300, 310,310, 320,320, 330,330, 340,340, 350,350\n")  # no 64-px box fits these
    kept = run(make_cfg(tiny_voc, tmp_path, epochs=1, name="off", anchors=str(bad), autoanchor=False))
    assert load_checkpoint(Path(kept["save_dir"]) / "weights" / "last.pt")["model_cfg"]["anchors"][0] == [300, 300]
    res = run(make_cfg(tiny_voc, tmp_path, epochs=1, name="aa", anchors=str(bad)))
    ck = load_checkpoint(Path(res["save_dir"]) / "weights" / "last.pt")
    anchors = torch.tensor(ck["model_cfg"]["anchors"])
    assert anchors.shape == (6, 2) and anchors.max() < 100  # fitted to the boxes, saved with the weights
    bad.write_text((ROOT / "model_data" / "yolo_anchors.txt").read_text())  # fits now; not what the run used
    t = Trainer(load_config(None, {"resume": res["save_dir"]}), log=lambda *a: None)
    t.setup_data()
    t.setup_model()
    assert torch.equal(t.model.anchors, anchors)  # the checkpoint's, not the file's


def test_accumulation_groups_by_hand():
    from utils.engine.trainer import accumulation_group

    assert [accumulation_group(i, 5, 2) for i in range(5)] == [(2, False), (2, True), (2, False), (2, True), (1, True)]
    assert [accumulation_group(i, 3, 1) for i in range(3)] == [(1, True)] * 3
    assert [accumulation_group(i, 5, 8) for i in range(5)] == [(5, False)] * 4 + [(5, True)]  # never past the epoch


class Stop(Exception):
    """Ends a run from inside the loop once a test has what it needs."""


def test_accumulated_gradient_is_the_mean_of_the_micro_batches(tiny_voc, tmp_path, monkeypatch):
    """The trainer's own loop with accumulate=2: at its first optimizer step the gradient is the mean of the two
    micro-batches' own gradients (each computed here alone, at the same weights). Not exactly the whole batch's:
    box and class terms are normalised by the positives of each micro-batch. The lr follows batch x accumulate."""
    from utils.engine.trainer import Trainer

    t = Trainer(make_cfg(tiny_voc, tmp_path, epochs=1, batch_size=2, accumulate=2, name="acc"), log=lambda *a: None)
    seen = []
    t.add_callback("on_batch_start", lambda tr: seen.append(tr.batch))

    def first_step(self):
        accumulated = torch.cat([p.grad.flatten() for p in self.model.parameters() if p.grad is not None])
        separate = []
        for images, targets in seen:
            self.optimizer.zero_grad(set_to_none=True)
            self.forward_loss(images, targets)[0].backward()
            separate.append(torch.cat([p.grad.flatten() for p in self.model.parameters() if p.grad is not None]))
        assert len(seen) == 2 and separate[0].abs().max() > 0 and not torch.allclose(separate[0], separate[1])
        torch.testing.assert_close(accumulated, (separate[0] + separate[1]) / 2, rtol=1e-4, atol=1e-7)
        raise Stop

    monkeypatch.setattr(Trainer, "step", first_step)
    with pytest.raises(Stop):
        t.train()
    doubled = Trainer(make_cfg(tiny_voc, tmp_path, epochs=1, batch_size=4, name="b4"), log=lambda *a: None)
    doubled.setup_data()
    doubled.setup_model()
    assert t.base_lr == doubled.base_lr  # lr0 scaled for 2 x 2 as for 4


def test_accumulate_steps_once_per_group(tiny_voc, tmp_path):
    res = run(make_cfg(tiny_voc, tmp_path, epochs=2, batch_size=4, accumulate=2, name="acc2"))  # 2 batches an epoch
    state = load_checkpoint(Path(res["save_dir"]) / "weights" / "last.pt")["train"]["optimizer"]["state"]
    assert {int(s["step"]) for s in state.values()} == {2}  # 2 epochs x 1 step (4 without accumulation)
