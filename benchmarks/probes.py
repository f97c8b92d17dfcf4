"""Probes the benchmark suite shares: the machine's description (CPU model, cores, flags, commit),
child processes with a whole-group timeout, peak memory, the machine's background load, summary statistics.

Standard library only (torch is looked up in sys.modules, never imported), so the processes that merely
launch sections stay small: a child's peak RSS can include its parent's at the time it was started.
"""
from __future__ import annotations

import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def summary_stats(samples: list[float], digits: int = 4) -> dict[str, float | int]:
    """median, min, max, p10, p90 and the number of samples (rounded to `digits` significant digits)."""
    s = sorted(samples)

    def r(v: float) -> float:
        return float(f"{v:.{digits}g}")

    return {"median": r(statistics.median(s)), "min": r(s[0]), "max": r(s[-1]), "p10": r(s[len(s) // 10]),
            "p90": r(s[min(len(s) - 1, (9 * len(s)) // 10)]), "runs": len(s)}


def run_child(cmd: list[str], timeout: float, cwd: Path = ROOT) -> dict[str, Any]:
    """Run a command in its own process group; on timeout the whole group (data-loader workers,
    compile workers) is killed. Returns rc, stdout, stderr, seconds, timed_out."""
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    timed_out = False
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        out, err = proc.communicate()
    return {"rc": proc.returncode, "stdout": out, "stderr": err, "seconds": round(time.perf_counter() - t, 2),
            "timed_out": timed_out}


def cpu_busy_fraction(seconds: float = 1.0) -> float | None:
    """Share of all CPUs' time spent non-idle over the next `seconds` (from /proc/stat): the load that
    other processes put on the machine, sampled while this suite runs nothing. None where unknown."""
    def sample() -> tuple[int, int]:
        fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return sum(fields), idle

    try:
        total0, idle0 = sample()
        time.sleep(seconds)
        total1, idle1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    return round(1 - (idle1 - idle0) / max(1, total1 - total0), 3)


def tail(text: str | None, lines: int = 12) -> str:
    """The last `lines` lines of a child's output (an error's traceback ends with its message)."""
    return "\n".join((text or "").strip().splitlines()[-lines:])


def rss_now_mib() -> float | None:
    """Resident set size of this process now (Linux /proc), MiB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def peak_memory() -> dict[str, float]:
    """This process's peak resident memory, and the CUDA allocator's peaks when CUDA was used.
    VmHWM, not ru_maxrss: the latter can carry the parent's peak into a child started by fork + exec."""
    hwm = None
    try:
        hwm = next(int(line.split()[1]) for line in Path("/proc/self/status").read_text().splitlines()
                   if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        hwm = maxrss / (1024 * 1024 if sys.platform == "darwin" else 1024)
    out = {"peak_rss_mib": round(hwm, 1)}
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda_max_allocated_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        out["cuda_max_reserved_mib"] = round(torch.cuda.max_memory_reserved() / 2**20, 1)
    return out


def cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def native_bf16() -> bool:
    """Does the CPU compute bf16 in hardware (AVX512-BF16 / AMX on x86, BF16 on Arm), by /proc/cpuinfo?
    Without it torch emulates bf16 and CPU AMP is slower than fp32, so the suite does not time it.
    (Read from /proc rather than asking torch, so the processes that only launch others stay small:
    a child's peak RSS can include its parent's at the time it was started.)"""
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16", "bf16"})


def default_device() -> str:
    """cuda when torch sees a GPU, else cpu; asked in a throw-away process so this one never imports torch."""
    r = subprocess.run([sys.executable, "-c", "import torch; print(torch.cuda.is_available())"],
                       capture_output=True, text=True)
    return "cuda" if r.stdout.strip() == "True" else "cpu"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def physical_cores() -> int | None:
    """Distinct (socket, core) pairs in /proc/cpuinfo; None where it does not say."""
    try:
        pairs, phys = set(), None
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("physical id"):
                phys = line.split(":", 1)[1].strip()
            elif line.startswith("core id"):
                pairs.add((phys, line.split(":", 1)[1].strip()))
        return len(pairs) or None
    except OSError:
        return None


def git_commit() -> str | None:
    """The checked-out commit, read from .git (no git command is run)."""
    try:
        head = (ROOT / ".git" / "HEAD").read_text().strip()
        if not head.startswith("ref:"):
            return head
        ref = head.split(None, 1)[1]
        path = ROOT / ".git" / ref
        if path.is_file():
            return path.read_text().strip()
        packed = ROOT / ".git" / "packed-refs"
        for line in packed.read_text().splitlines() if packed.is_file() else []:
            if line.endswith(" " + ref):
                return line.split()[0]
    except OSError:
        pass
    return None
