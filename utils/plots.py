"""Training curves as a PNG (matplotlib, headless)."""
from __future__ import annotations

import csv
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read_results(path: str | Path) -> dict[str, list[float]]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return {k: [float(r[k]) for r in rows] for k in (rows[0] if rows else {})}


def plot_results(csv_path: str | Path, out: str | Path | None = None) -> Path | None:
    """results.csv -> results.png: the three losses, lr, mAP50 and mAP50-95 against epoch."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        return None
    data = read_results(csv_path)
    if not data:
        return None
    out = Path(out) if out else csv_path.with_name("results.png")
    epochs = [e + 1 for e in data["epoch"]]
    panels = [("box_loss", "box loss"), ("obj_loss", "objectness loss"), ("cls_loss", "class loss"),
              ("lr", "learning rate"), ("mAP50", "mAP@0.5"), ("mAP50-95", "mAP@0.5:0.95")]
    fig, axes = plt.subplots(2, 3, figsize=(13, 6.5), tight_layout=True)
    for ax, (key, title) in zip(axes.ravel(), panels):
        pts = [(e, v) for e, v in zip(epochs, data.get(key, [])) if not math.isnan(v)]
        if pts:
            ax.plot(*zip(*pts), marker="." if len(pts) < 30 else None, linewidth=1.8)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
