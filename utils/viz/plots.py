"""What a training run draws for a person to look at: the curves (results.png), the label statistics
(labels.png) and the first augmented batches with their boxes (train_batch0-2.jpg)."""
from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path

import cv2
import matplotlib
import numpy as np
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from utils.viz.draw import draw_detections  # noqa: E402

BATCH_PREVIEW_MAX_SIDE = 1920  # px: a 16-image grid at 640 would be 2560 wide


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


def plot_train_batch(images: torch.Tensor | np.ndarray, targets: torch.Tensor | np.ndarray,
                     class_names: Sequence[str], out: str | Path, max_images: int = 16) -> Path:
    """A grid of a loader batch (uint8 (B, 3, S, S) RGB) with its target boxes (rows [image, class, x1, y1,
    x2, y2] in input pixels): what the network is trained on, the quickest check of labels and augmentation."""
    images = images.cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    targets = targets.cpu().numpy() if isinstance(targets, torch.Tensor) else np.asarray(targets)
    images = images[:max_images].transpose(0, 2, 3, 1)
    n, h, w = images.shape[:3]
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    sep = 2
    canvas = np.full((rows * (h + sep) - sep, cols * (w + sep) - sep, 3), 255, np.uint8)
    for i, img in enumerate(images):
        t = targets[targets[:, 0] == i]
        drawn = draw_detections(img, t[:, 2:6], np.ones(len(t)), t[:, 1].astype(np.int64), class_names,
                                hide_conf=True)
        r, c = divmod(i, cols)
        canvas[r * (h + sep): r * (h + sep) + h, c * (w + sep): c * (w + sep) + w] = drawn
    scale = BATCH_PREVIEW_MAX_SIDE / max(canvas.shape[:2])
    if scale < 1:
        canvas = cv2.resize(canvas, (round(canvas.shape[1] * scale), round(canvas.shape[0] * scale)),
                            interpolation=cv2.INTER_AREA)
    out = Path(out)
    cv2.imwrite(str(out), cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
    return out


def plot_labels(boxes: Sequence[np.ndarray], sizes: Sequence[tuple[int, int]], classes: Sequence[np.ndarray],
                class_names: Sequence[str], out: str | Path) -> Path:
    """labels.png: objects per class, where box centres lie and how large boxes are (fractions of their
    image), over a split. Lopsided classes, boxes all in one place or anchors far from the sizes show here."""
    wh = np.array([[w, h] for w, h in sizes], np.float64).reshape(-1, 2)
    norm = np.concatenate([b.reshape(-1, 4) / np.tile(s, 2) for b, s in zip(boxes, wh)] or [np.zeros((0, 4))])
    cls = np.concatenate([np.asarray(c, np.int64).reshape(-1) for c in classes] or [np.zeros(0, np.int64)])
    counts = np.bincount(cls, minlength=len(class_names))[:len(class_names)]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6), tight_layout=True)
    ax = axes[0]
    ax.bar(range(len(class_names)), counts, color="#4c72b0")
    ax.set_title(f"objects per class ({int(counts.sum())} in {len(wh)} images)")
    if len(class_names) <= 30:
        ax.set_xticks(range(len(class_names)), class_names, rotation=90 if len(class_names) > 8 else 0)
    ax.set_ylabel("objects")
    centres = (norm[:, :2] + norm[:, 2:]) / 2
    extents = norm[:, 2:] - norm[:, :2]
    for ax, xy, title, labels in ((axes[1], centres, "box centres", ("x", "y")),
                                  (axes[2], extents, "box sizes", ("width", "height"))):
        ax.hist2d(xy[:, 0], xy[:, 1], bins=40, range=[[0, 1], [0, 1]], cmap="Blues", cmin=1)
        ax.set_title(f"{title} (fraction of the image)")
        ax.set_xlabel(labels[0])
        ax.set_ylabel(labels[1])
        ax.set_aspect("equal")
    axes[1].invert_yaxis()  # image coordinates: y grows downwards
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return Path(out)
