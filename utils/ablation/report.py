"""Tables and plots of an attention ablation (Markdown, CSV, PNG)."""
from __future__ import annotations

import csv
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from utils.viz.plots import read_results  # noqa: E402

COLUMNS = ["variant", "params", "gflops", "cpu_ms", "gpu_ms", "mAP50", "mAP50_std", "mAP50-95", "mAP50-95_std",
           "seeds_done", "failures"]


def _fmt(v, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def write_tables(rows: list[dict], out_dir: Path) -> None:
    """results.csv (machine-readable, per-class AP columns too) and results.md (for people)."""
    classes = sorted({c for r in rows for c in r.get("per_class", {})})
    with open(out_dir / "results.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS + [f"AP50-95/{c}" for c in classes])
        for r in rows:
            w.writerow([("; ".join(r[c]) if c == "failures" else r.get(c, "")) for c in COLUMNS]
                       + [r.get("per_class", {}).get(c, "") for c in classes])
    lines = ["| variant | params | GFLOPs | CPU ms | GPU ms | mAP50 | mAP50-95 | seeds |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["seeds_done"] == 0:
            lines.append(f"| {r['variant']} | failed: {'; '.join(r['failures'])} | | | | | | 0 |")
            continue
        pm = lambda k: f"{_fmt(r[k])} ± {_fmt(r[k + '_std'])}" if r["seeds_done"] > 1 else _fmt(r[k])  # noqa: E731
        lines.append(f"| {r['variant']} | {r['params']:,} | {_fmt(r['gflops'], 2)} | {_fmt(r['cpu_ms'], 1)} | "
                     f"{_fmt(r['gpu_ms'], 2)} | {pm('mAP50')} | {pm('mAP50-95')} | {r['seeds_done']} |")
    failed = [f for r in rows for f in r["failures"]]
    if failed:
        lines += ["", "Failed runs:"] + [f"- {f}" for f in failed]
    if classes:
        lines += ["", "Per-class AP50-95 (mean over seeds):", "",
                  "| variant | " + " | ".join(classes) + " |", "|---|" + "---|" * len(classes)]
        for r in rows:
            if r.get("per_class"):
                lines.append(f"| {r['variant']} | " + " | ".join(_fmt(r["per_class"].get(c)) for c in classes) + " |")
    (out_dir / "results.md").write_text("\n".join(lines) + "\n")


def plot_map_vs_latency(rows: list[dict], out: Path) -> None:
    fig, ax = plt.subplots(figsize=(6.5, 4.5), tight_layout=True)
    for r in rows:
        if r["seeds_done"]:
            ax.errorbar(r["cpu_ms"], r["mAP50-95"], yerr=r["mAP50-95_std"] or None, fmt="o", capsize=3)
            ax.annotate(r["variant"], (r["cpu_ms"], r["mAP50-95"]), textcoords="offset points", xytext=(5, 5))
    ax.set_xlabel("CPU latency, batch 1 (ms)")
    ax.set_ylabel("mAP@0.5:0.95")
    ax.set_title("accuracy vs latency")
    ax.grid(alpha=0.3)
    fig.savefig(out, dpi=100)
    plt.close(fig)


def plot_curves(results: dict[str, list[Path]], out: Path) -> None:
    """mAP50-95 over epochs, one line per variant (mean over the seeds that have the epoch)."""
    fig, ax = plt.subplots(figsize=(7, 4.5), tight_layout=True)
    for variant, paths in results.items():
        series = [read_results(p) for p in paths if p.is_file()]
        series = [s for s in series if s]
        if not series:
            continue
        n = min(len(s["epoch"]) for s in series)
        pts = []
        for i in range(n):
            vals = [s["mAP50-95"][i] for s in series if not math.isnan(s["mAP50-95"][i])]
            if vals:
                pts.append((i + 1, sum(vals) / len(vals)))
        if pts:
            ax.plot(*zip(*pts), label=variant, linewidth=1.8)
    ax.set_xlabel("epoch")
    ax.set_ylabel("mAP@0.5:0.95 (val)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.savefig(out, dpi=100)
    plt.close(fig)
