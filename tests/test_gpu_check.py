"""benchmarks/gpu_check.py, the one command that runs every CUDA path: its plumbing on a CPU.

On a machine without a GPU the CUDA-only parts must say so (skipped, with the reason) and the rest must
run for real: the document is written, part by part, and a failed part is recorded, not raised.
The whole --quick check (training with fp16 autocast and its grad scaler, then bf16, each killed after one epoch
and resumed; DDP over gloo; get_map on two devices) is a slow test.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"


def run_check(tmp_path: Path, *args: str, timeout: int = 900) -> tuple[subprocess.CompletedProcess, dict]:
    out = tmp_path / "check.json"
    r = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--quick", "--out", str(out),
                        "--workdir", str(tmp_path / "work"), *args], cwd=ROOT, capture_output=True, text=True,
                       timeout=timeout)
    assert out.is_file(), r.stderr[-2000:]
    return r, json.loads(out.read_text())


def test_cpu_quick_check_writes_its_document_and_skips_cuda_only_parts(tmp_path):
    r, doc = run_check(tmp_path, "--parts", "tests,predict,get_map")
    assert doc["device"] == "cpu" and doc["quick"] is True
    assert doc["machine"]["autocast"]["bf16"] is True  # CPU autocast has computed in bf16 since torch 1.10
    parts = doc["parts"]
    assert list(parts) == ["tests", "predict", "get_map"]
    assert parts["predict"]["status"] == "skipped" and "CUDA" in parts["predict"]["skipped"]
    # get_map needs the weights of a training part that did not run here: skipped with that reason
    assert parts["get_map"]["status"] == "skipped" and "weights" in parts["get_map"]["skipped"]
    # `pytest -m gpu` ran for real: on a CPU every GPU test is collected and skipped, none fails
    tests = parts["tests"]
    assert tests["status"] == "ok", tests["tail"]
    assert tests["counts"].get("skipped", 0) >= 1 and not tests["counts"].get("failed")
    assert r.returncode == 0 and "| tests | ok |" in r.stdout


def test_unknown_part_is_a_usage_error(tmp_path):
    r = subprocess.run([sys.executable, str(SCRIPT), "--parts", "tests,warp_drive"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "warp_drive" in r.stderr


@pytest.mark.slow
def test_cpu_quick_check_trains_resumes_and_compares_devices(tmp_path):
    r, doc = run_check(tmp_path, "--parts", "train_fp16,train_bf16,ddp,get_map")
    parts = doc["parts"]
    for amp in ("fp16", "bf16"):
        train = parts[f"train_{amp}"]
        if amp == "fp16" and not doc["machine"]["autocast"]["fp16"]:
            assert train["status"] == "skipped" and "cannot autocast to fp16" in train["skipped"]
            continue
        assert train["status"] == "ok", train
        assert train["checks"]["interrupted"] and train["checks"]["every_epoch_once"] and train["checks"]["no_nan"]
    assert parts["ddp"]["status"] == "ok" and parts["ddp"]["backend"] == "gloo" and parts["ddp"]["world_size"] == 1
    assert parts["get_map"]["max_abs_diff_12_coco"] == 0.0  # cpu against cpu: the same numbers exactly
    assert doc["ok"] and r.returncode == 0
