"""The cached export `--backend auto|onnxruntime|openvino` runs for a .pt checkpoint: made once next to it,
reused while it provably belongs to it, rebuilt otherwise.

    best.pt -> best.cache/openvino/{model.xml, model.bin, manifest.json}    (onnx: best.cache/onnx/model.onnx)

manifest.json holds the checkpoint's SHA-256, the export settings and the library versions, and the SHA-256
of every exported file; an export is reused only when all of them match (a retrained best.pt, another
--opset or --no-fuse, an upgraded openvino, a copied-in or edited file: rebuilt, never used). Processes that
need the same export at once build it once: under a file lock (best.cache/.onnx.lock), re-checked after it.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from filelock import FileLock

from utils.export.onnx_export import export_onnx
from utils.export.openvino_export import export_openvino

CACHE_FILES = {"onnx": ("model.onnx",), "openvino": ("model.xml", "model.bin")}
PACKAGES = {"onnx": ("torch", "onnx", "onnxslim"), "openvino": ("torch", "onnx", "onnxslim", "openvino")}


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "missing"


def cache_dir(weights: Path, fmt: str) -> Path:
    return weights.with_name(f"{weights.stem}.cache") / fmt


def expected_manifest(weights: Path, fmt: str, opset: int, fuse: bool) -> dict[str, Any]:
    """What a valid export of `weights` in `fmt` must record (files' hashes aside)."""
    return {"source": weights.name, "source_sha256": sha256(weights), "format": fmt, "opset": int(opset),
            "fuse": bool(fuse), "dynamic_batch": True, "dynamic_hw": True,
            "versions": {p: _version(p) for p in PACKAGES[fmt]}}


def is_valid(folder: Path, expected: dict[str, Any]) -> bool:
    """True when the folder's manifest matches `expected` and its files hash to what the manifest says."""
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    files = manifest.pop("files", {})
    if manifest != expected or set(files) != set(CACHE_FILES[expected["format"]]):
        return False
    return all((folder / name).is_file() and sha256(folder / name) == digest for name, digest in files.items())


def cached_export(weights: str | Path, fmt: str, opset: int, fuse: bool = True,
                  log: Callable[[str], Any] = print) -> Path:
    """The model file (model.onnx / model.xml) of a valid cached export of `weights`, made when missing or
    stale. Raises OSError when the folder cannot be written, ValueError/ImportError when the export fails."""
    weights = Path(weights)
    folder = cache_dir(weights, fmt)
    expected = expected_manifest(weights, fmt, opset, fuse)
    main = folder / CACHE_FILES[fmt][0]
    if is_valid(folder, expected):
        return main
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(folder.parent / f".{fmt}.lock"):  # a second process waits here for the first one's build
        if is_valid(folder, expected):
            return main
        log(f"exporting {weights} to {fmt} once ({'stale export replaced' if folder.exists() else 'cached'} "
            f"in {folder})")
        tmp = Path(tempfile.mkdtemp(prefix=f".{fmt}_", dir=folder.parent))  # built aside, then moved in one step
        try:
            target = tmp / CACHE_FILES[fmt][0]
            if fmt == "onnx":
                export_onnx(weights, target, dynamic=True, opset=opset, fuse=fuse)
            else:
                export_openvino(weights, target, dynamic=True, opset=opset, fuse=fuse)
            files = {name: sha256(tmp / name) for name in CACHE_FILES[fmt]}
            (tmp / "manifest.json").write_text(json.dumps({**expected, "files": files}, indent=1))
            if folder.exists():
                shutil.rmtree(folder)
            tmp.rename(folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return main
