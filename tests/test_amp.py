"""Mixed-precision training on a CPU: the fp16 (with loss scaling) and bf16 autocast paths of the trainer, run for
real on a tiny data set, as benchmarks/gpu_check.py runs them on a GPU.

fp16 uses the grad scaler on every device: without it about 1 in 10,000 of this model's gradient entries underflow
to 0 in one step on a CPU as on a GPU (588 of 5.9M at 96 px, 1 with a scale of 2**16); bf16 needs none.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch
from test_train import make_cfg, run

from nets import load_model
from nets.weights.checkpoint import load_checkpoint, save_checkpoint
from utils.config import load_config
from utils.engine.torch_utils import AMP_DTYPES, autocast_supported

AMP = [pytest.param(name, dtype, marks=pytest.mark.skipif(not autocast_supported("cpu", dtype),
                                                          reason=f"this torch ({torch.__version__}) cannot autocast "
                                                                 f"to {name} on a CPU"))
       for name, dtype in AMP_DTYPES.items()]


@pytest.mark.parametrize("amp, dtype", AMP)
def test_amp_training_is_finite_and_resumes_with_its_scaler(tiny_voc, tmp_path, monkeypatch, amp, dtype):
    from utils.engine.trainer import Trainer

    head_dtypes: set[torch.dtype] = set()
    real_setup, real_epoch = Trainer.setup_model, Trainer.train_one_epoch

    def setup_model(self):  # record the dtype the heads compute in: autocast really on
        real_setup(self)
        self.model.register_forward_hook(lambda m, i, out: head_dtypes.update(o.dtype for o in out))

    def interrupted(self, epoch, *a):
        if epoch == 1:
            raise KeyboardInterrupt  # stopped during the second epoch: last.pt holds the first
        return real_epoch(self, epoch, *a)

    monkeypatch.setattr(Trainer, "setup_model", setup_model)
    monkeypatch.setattr(Trainer, "train_one_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run(make_cfg(tiny_voc, tmp_path, epochs=2, name=amp, amp=amp))
    monkeypatch.setattr(Trainer, "train_one_epoch", real_epoch)
    assert head_dtypes == {dtype}
    last = tmp_path / amp / "weights" / "last.pt"
    ck = load_checkpoint(last)
    scaler = ck["train"]["scaler"]
    if amp == "fp16":  # 8 images, batch 4: 2 optimizer steps, none with an inf gradient at this size
        assert scaler["scale"] == 2.0**16 and scaler["_growth_tracker"] == 2
        # a scale no fresh scaler has: after resume it must come from last.pt, and the 2 steps add to the tracker
        ck["train"]["scaler"]["scale"] = 2.0**12
        save_checkpoint(last, ck)
    else:
        assert scaler == {}  # bf16 has float32's exponent range: no loss scaling

    res = run(load_config(None, {"resume": str(tmp_path / amp)}))
    scaler = load_checkpoint(last)["train"]["scaler"]
    if amp == "fp16":
        assert scaler["scale"] == 2.0**12 and scaler["_growth_tracker"] == 4
    else:
        assert scaler == {}
    with open(tmp_path / amp / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [0, 1]
    assert all(math.isfinite(float(r[k])) for r in rows for k in ("box_loss", "obj_loss", "cls_loss", "mAP50"))
    model = load_model(Path(res["save_dir"]) / "weights" / "best.pt")
    assert model.class_names == ["square", "disc"]


def test_amp_the_torch_cannot_do_is_an_error_not_silent_float32(tiny_voc, tmp_path, monkeypatch):
    from utils.engine import torch_utils

    monkeypatch.setattr(torch_utils, "autocast_supported", lambda device_type, dtype: False)
    with pytest.raises(ValueError, match="--amp fp16: .* cannot autocast to fp16 on cpu"):
        run(make_cfg(tiny_voc, tmp_path, epochs=1, name="no_fp16", amp="fp16"))


def test_autocast_supported_by_hand():
    # CPU autocast computes matmuls in bf16 (and fp16 in current torch); float64 is never an autocast dtype
    assert autocast_supported("cpu", torch.bfloat16)
    assert not autocast_supported("cpu", torch.float64)


@pytest.mark.parametrize("amx, device_type, expected", [(True, "cpu", "bf16"), (False, "cpu", "off"),
                                                        (True, "cuda", "off")])
def test_amp_auto_is_bf16_only_on_a_cpu_with_amx(monkeypatch, amx, device_type, expected):
    from utils.engine import torch_utils

    monkeypatch.setattr(torch_utils, "cpu_has_amx", lambda: amx)
    assert torch_utils.resolve_amp("auto", device_type) == expected
    for explicit in ("off", "fp16", "bf16"):  # a choice the user made is never replaced
        assert torch_utils.resolve_amp(explicit, device_type) == explicit
    dtype, scaler = torch_utils.amp_setup("auto", "cpu")
    assert dtype == (torch.bfloat16 if amx else None) and not scaler.is_enabled()


def test_amp_auto_is_the_default_and_the_run_log_names_what_it_chose(tiny_voc, tmp_path, monkeypatch):
    from utils.engine import torch_utils
    from utils.engine.trainer import Trainer

    assert load_config(None, {}).amp == "auto"
    for amx, chosen in ((True, "bf16"), (False, "off")):
        monkeypatch.setattr(torch_utils, "cpu_has_amx", lambda amx=amx: amx)
        lines: list[str] = []
        Trainer(make_cfg(tiny_voc, tmp_path, epochs=1, name=f"auto_{amx}"), log=lines.append).train()
        assert any(line.endswith(f"autocast {chosen} (--amp auto)") for line in lines), lines
