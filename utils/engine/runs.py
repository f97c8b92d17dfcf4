"""Run folders: find the newest trained weights, and give each new run its own folder.

Imports nothing heavy (no torch), so a CLI can fail fast with a clear message.
"""
from __future__ import annotations

from pathlib import Path


class WeightsNotFoundError(FileNotFoundError):
    """No trained weights where we looked; the message says how to train or what to pass."""


def latest_weights(project: str | Path = "runs/train") -> Path:
    """`weights/best.pt` (else `weights/last.pt`) of the newest run under `project`.

    "Newest" is the run whose weights file was written last, so a run resumed or still training
    wins over an older folder with a higher number.
    """
    project = Path(project)
    candidates = []
    for run in project.glob("*/"):
        for name in ("best.pt", "last.pt"):
            f = run / "weights" / name
            if f.is_file() and f.stat().st_size > 0:
                newest = max(p.stat().st_mtime for p in (run / "weights").glob("*.pt"))
                candidates.append((newest, str(run), f))
                break
    if not candidates:
        where = project.resolve()
        raise WeightsNotFoundError(
            f"no trained weights found: looked for {project}/<run>/weights/best.pt or last.pt "
            f"(in {where}). Train a model first with `python train.py` (it writes "
            f"{project}/exp/weights/best.pt), or pass weights explicitly: "
            f"`--weights path/to/best.pt` (or an exported model.onnx)."
        )
    return max(candidates)[2]


def resolve_weights(weights: str | Path) -> Path:
    """The model file to run: `weights` as given, or ("") the newest run's best.pt (WeightsNotFoundError)."""
    return Path(weights) if str(weights) else latest_weights()


def increment_dir(path: str | Path, exist_ok: bool = False, mkdir: bool = True) -> Path:
    """`runs/predict/exp`, then exp2, exp3, ... : the first name not taken (created atomically).

    exist_ok=True reuses `path` as is.
    """
    path = Path(path)
    if exist_ok:
        if mkdir:
            path.mkdir(parents=True, exist_ok=True)
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    stem = path.name
    n = 1
    while True:
        candidate = path if n == 1 else path.with_name(f"{stem}{n}")
        if not mkdir:
            if not candidate.exists():
                return candidate
        else:
            try:
                candidate.mkdir()  # atomic: two runs started together get different folders
                return candidate
            except FileExistsError:
                pass
        n += 1


def resolve_resume(path: Path) -> Path:
    """A run directory or a checkpoint file -> the checkpoint to resume from."""
    p = path / "weights" / "last.pt" if path.is_dir() else path
    if not p.is_file():
        raise FileNotFoundError(f"--resume {path}: no checkpoint at {p} (pass a run directory like runs/train/exp)")
    return p
