"""Small torch helpers of the training loop: seeding, RNG state, EMA of weights, unwrapping DDP, threads, AMP."""
from __future__ import annotations

import copy
import math
import os
import random
import shutil
import warnings

import numpy as np
import torch
from torch import nn


def seed_everything(seed: int, deterministic: bool = True) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
        torch.use_deterministic_algorithms(True, warn_only=True)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def rng_state() -> dict:
    """Every RNG the training loop touches, as plain data (loads with weights_only=True)."""
    state = {"python": list(random.getstate()[1]), "python_pos": random.getstate()[2],
             "numpy": torch.from_numpy(np.random.get_state()[1].astype(np.int64)),
             "numpy_pos": int(np.random.get_state()[2]), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate((3, tuple(state["python"]), state["python_pos"]))
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), state["numpy_pos"], 0, 0.0))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def set_threads_from_env() -> None:
    """Respect OMP_NUM_THREADS when set (torchrun sets 1 per process by default)."""
    n = os.environ.get("OMP_NUM_THREADS")
    if n and n.isdigit():
        torch.set_num_threads(int(n))


def cpp_compiler() -> str | None:
    """The C++ compiler torch.compile's CPU backend would call ($CXX, else the usual names on PATH)."""
    return os.environ.get("CXX") or next(filter(None, map(shutil.which, ("g++", "clang++", "c++", "cl"))), None)


def autocast_supported(device_type: str, dtype: torch.dtype) -> bool:
    """Whether torch.autocast on `device_type` really computes in `dtype`: where it cannot, torch only warns and
    runs in float32, so `--amp` would silently do nothing."""
    if not torch.amp.is_autocast_available(device_type):
        return False
    x = torch.ones(2, 2, device=device_type)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.autocast(device_type, dtype=dtype):
            return (x @ x).dtype == dtype


AMP_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
AMP_NAMES = {dtype: name for name, dtype in AMP_DTYPES.items()}


def cpu_has_amx() -> bool:
    """Whether this CPU has AMX tiles (Xeon Sapphire Rapids and later), where bf16 matmul and convolution run
    in hardware: a training step in bf16 autocast there is ~2.5x float32's (benchmarks/bench_train.py)."""
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)  # private, so read defensively
    return bool(probe is not None and probe())


def resolve_amp(amp: str, device_type: str) -> str:
    """`--amp auto`: bf16 on a CPU with AMX, else off. Elsewhere bf16 costs more than it saves on a CPU (emulated
    without AMX); on CUDA choose fp16 or bf16 yourself (the GPU paths are not yet measured on a real GPU here)."""
    if amp != "auto":
        return amp
    return "bf16" if device_type == "cpu" and cpu_has_amx() and autocast_supported("cpu", torch.bfloat16) else "off"


def amp_setup(amp: str, device_type: str) -> tuple[torch.dtype | None, torch.amp.GradScaler]:
    """`--amp` (auto | off | fp16 | bf16) on a device: the autocast dtype (None: off) and the grad scaler.

    fp16 gradients underflow without loss scaling on a CPU as on a GPU (tests/test_amp.py), so fp16 scales on
    both; bf16 has float32's exponent range and needs none. A dtype the device cannot autocast to is an error,
    not a silent float32 run."""
    amp = resolve_amp(amp, device_type)
    dtype = AMP_DTYPES.get(amp)
    if dtype is not None and not autocast_supported(device_type, dtype):
        raise ValueError(f"--amp {amp}: this torch ({torch.__version__}) cannot autocast to {amp} on {device_type} "
                         "(it would silently train in float32); use --amp off, or the other of fp16 / bf16")
    return dtype, torch.amp.GradScaler(device_type, enabled=amp == "fp16")


def de_parallel(model: nn.Module) -> nn.Module:
    """The bare model inside torch.compile / DDP / DataParallel wrappers, in any nesting (its state_dict has no
    '_orig_mod.' or 'module.' prefix)."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):  # torch.compile's OptimizedModule
            model = model._orig_mod
        else:
            return model


class ModelEMA:
    """Exponential moving average of weights, with a warm-up of the decay.

    decay_t = decay * (1 - exp(-updates / tau)): early on the average follows the model closely,
    later it smooths over ~1/(1-decay) steps. Buffers (BN statistics) are averaged too.
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999, tau: float = 2000.0, updates: int = 0):
        self.ema = copy.deepcopy(de_parallel(model)).eval()
        self.decay, self.tau, self.updates = decay, tau, updates
        for p in self.ema.parameters():
            p.requires_grad_(False)

    def current_decay(self) -> float:
        return self.decay * (1 - math.exp(-self.updates / self.tau))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = self.current_decay()
        msd = de_parallel(model).state_dict()
        for k, v in self.ema.state_dict().items():
            if v.dtype.is_floating_point:
                v.mul_(d).add_(msd[k].detach(), alpha=1 - d)
            else:
                v.copy_(msd[k])
