"""benchmarks/bench_train.py runs as a real subprocess and prints the JSON it promises (no timing asserts:
CI machines are shared and slow; the numbers only have to be positive and finite)."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "bench_train.py"
TINY = ["--device", "cpu", "--img", "64", "--batch", "2", "--steps", "1", "--warmup", "0", "--runs", "1",
        "--workers", "0", "--phi", "eca", "--modes", "step", "loop"]
STATS = {"images_per_s", "min", "max", "p10", "p90", "runs", "peak_memory_mib"}


def run_bench(args: list[str], tmp_path: Path, timeout: int) -> dict:
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), *args, "--json-out", str(out)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    printed = json.loads(proc.stdout)
    assert printed == json.loads(out.read_text())  # stdout holds exactly the one JSON document
    return printed


def check_stats(stats: dict) -> None:
    assert STATS <= set(stats)
    assert len(stats["runs"]) == 1
    for key in ("images_per_s", "min", "max", "p10", "p90", "peak_memory_mib"):
        assert math.isfinite(stats[key]) and stats[key] > 0, (key, stats)
    assert stats["min"] <= stats["images_per_s"] <= stats["max"]


def test_bench_train_json(tiny_voc: Path, tmp_path: Path) -> None:
    res = run_bench([*TINY, "--data", str(tiny_voc)], tmp_path, timeout=120)
    assert res["benchmark"] == "train_throughput"
    assert {"torch", "python", "cpu", "cpu_count", "threads", "device", "gpu"} <= set(res["machine"])
    assert res["machine"]["device"] == "cpu" and res["machine"]["gpu"] is None
    s = res["settings"]
    assert (s["img_size"], s["batch_size"], s["workers"], s["phi"], s["amp"]) == (64, 2, 0, "eca", "off")
    assert s["train_images"] == 8
    for mode in ("step", "loop"):
        check_stats(res["ours"][mode])
    assert "reference" not in res and "speedup" not in res


@pytest.mark.skipif(not os.environ.get("BUBBLIIIING_DIR"),
                    reason="set BUBBLIIIING_DIR to a checkout of bubbliiiing/yolov4-tiny-pytorch")
def test_bench_train_reference(tiny_voc: Path, tmp_path: Path) -> None:
    res = run_bench([*TINY, "--data", str(tiny_voc), "--reference-dir", os.environ["BUBBLIIIING_DIR"]],
                    tmp_path, timeout=300)
    ref = res["reference"]
    assert ref["phi"] == 3 and {"loss", "dataset"} <= set(ref["api"])
    for mode in ("step", "loop"):
        check_stats(ref[mode])
        assert res["speedup"][mode] == pytest.approx(res["ours"][mode]["images_per_s"] / ref[mode]["images_per_s"],
                                                     rel=1e-2)
