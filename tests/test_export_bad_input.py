"""Corrupt exported files (truncated or garbage .onnx, OpenVINO .xml or .bin) given to predict.py and get_map.py:
one `error:` line naming the file and the fix (re-export), exit status 2, from real processes."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import TINY_CLASSES
from helpers import random_detector

from nets.weights.checkpoint import checkpoint_dict, save_checkpoint
from utils.export.onnx_export import export_onnx

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bad_input") / "best.pt"
    save_checkpoint(path, checkpoint_dict(random_detector("eca", len(TINY_CLASSES)), class_names=TINY_CLASSES,
                                          img_size=64))
    return path


def spoil(data: bytes, how: str) -> bytes:
    """`data` cut in half, or as many random bytes."""
    return data[:len(data) // 2] if how == "truncated" else np.random.default_rng(0).bytes(len(data))


def run_all(cases: list[tuple[str, Path, str]], data: Path, tmp_path: Path) -> None:
    """Each (script, weights, expected start of the message) in its own process, all at once; each must end with
    exit status 2 and one stderr line: `error: <expected>...` with the re-export command."""
    img = tmp_path / "a.png"
    cv2.imwrite(str(img), np.zeros((40, 40, 3), np.uint8))
    procs = []
    for i, (script, weights, _) in enumerate(cases):
        args = ([str(img), "--project", str(tmp_path / f"runs{i}")] if script == "predict.py" else
                ["--data", str(data), "--out", str(tmp_path / f"map{i}"), "--no-plots"])
        procs.append(subprocess.Popen([sys.executable, str(ROOT / script), "--weights", str(weights), *args],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV))
    for (script, weights, expected), proc in zip(cases, procs):
        out, err = proc.communicate(timeout=300)
        lines = err.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1, (script, weights, out, err)
        assert lines[0].startswith(f"error: {expected}") and "re-export" in lines[0] and "export.py" in lines[0], \
            (script, lines[0])


def test_corrupt_onnx_is_one_error_naming_the_file(ckpt, tiny_voc, tmp_path):
    good = export_onnx(ckpt, tmp_path / "good.onnx", dynamic=True).read_bytes()
    cases = []
    for script, how in (("predict.py", "garbage"), ("get_map.py", "truncated")):
        bad = tmp_path / f"{how}.onnx"
        bad.write_bytes(spoil(good, how))
        cases.append((script, bad, f"{bad}: onnxruntime cannot load it"))
    run_all(cases, tiny_voc, tmp_path)


def test_corrupt_ir_xml_or_bin_is_one_error_naming_the_files(ckpt, tiny_voc, tmp_path):
    pytest.importorskip("openvino")
    from utils.export.openvino_export import export_openvino

    good = export_openvino(ckpt, tmp_path / "good" / "m.xml", dynamic=True)
    cases = []
    # (a truncated .xml and a missing .bin: tests/test_openvino.py)
    for script, part, how in (("predict.py", ".xml", "garbage"), ("predict.py", ".bin", "garbage"),
                              ("get_map.py", ".bin", "truncated")):
        folder = tmp_path / f"{script[:-3]}_{how}{part[1:]}"
        folder.mkdir()
        for suffix in (".xml", ".bin"):
            data = good.with_suffix(suffix).read_bytes()
            (folder / f"m{suffix}").write_bytes(spoil(data, how) if suffix == part else data)
        xml = folder / "m.xml"
        cases.append((script, xml, f"{xml}: OpenVINO cannot read it" if part == ".xml" else
                      f"{xml} (+ m.bin): OpenVINO cannot read it"))
    run_all(cases, tiny_voc, tmp_path)
