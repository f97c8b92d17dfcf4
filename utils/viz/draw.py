"""Drawing on RGB uint8 images with OpenCV: boxes with labels, heatmap and attention overlays.

Colours: a fixed palette of well-separated colours (then golden-ratio hues for more classes), so a
class keeps its colour across images and runs; label text is black or white, whichever reads
better on the box colour.
"""
from __future__ import annotations

import colorsys
from collections.abc import Sequence

import cv2
import numpy as np

# Well-separated, saturated colours (RGB); chosen by hand for contrast on photos.
_PALETTE = (
    "FF3838", "2C99FF", "FFB21D", "00C2A8", "A349FF", "48F90A", "FF6FD8", "00D4FF", "FF8A00", "3D5AFE",
    "C8E600", "FF4081", "00E676", "B388FF", "FFD740", "18FFFF", "F4511E", "7C4DFF", "64DD17", "E040FB",
)


def class_color(i: int) -> tuple[int, int, int]:
    """RGB colour of class `i`: the palette first, then hues spaced by the golden ratio."""
    if i < len(_PALETTE):
        h = _PALETTE[i]
        return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)
    r, g, b = colorsys.hsv_to_rgb((i * 0.618033988749895) % 1.0, 0.85, 0.95)
    return int(r * 255), int(g * 255), int(b * 255)


def text_color(bg: Sequence[int]) -> tuple[int, int, int]:
    """Black on light backgrounds, white on dark ones (relative luminance, ITU-R BT.709)."""
    r, g, b = bg[:3]
    return (0, 0, 0) if 0.2126 * r + 0.7152 * g + 0.0722 * b > 140 else (255, 255, 255)


def draw_detections(img: np.ndarray, boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray,
                    class_names: Sequence[str], line_width: int | None = None,
                    hide_labels: bool = False, hide_conf: bool = False) -> np.ndarray:
    """A copy of RGB `img` with each box outlined and labelled '<class> <score>'."""
    out = np.ascontiguousarray(img).copy()
    h, w = out.shape[:2]
    lw = line_width or max(1, round((h + w) / 2 * 0.003))
    font_scale = max(0.35, lw / 3)
    thickness = max(1, lw - 1)
    for box, score, label in zip(np.asarray(boxes), np.asarray(scores), np.asarray(labels)):
        label = int(label)
        color = class_color(label)
        x1, y1, x2, y2 = (int(round(float(v))) for v in box)
        cv2.rectangle(out, (x1, y1), (x2, y2), color, lw)
        if hide_labels:
            continue
        name = class_names[label] if 0 <= label < len(class_names) else str(label)
        text = name if hide_conf else f"{name} {float(score):.2f}"
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, thickness)
        above = y1 - th - base - 2 >= 0  # label above the box when it fits, else inside
        ty1 = y1 - th - base - 2 if above else y1
        tx1 = min(max(x1, 0), max(w - tw - 2, 0))
        cv2.rectangle(out, (tx1, ty1), (tx1 + tw + 2, ty1 + th + base + 2), color, -1)
        cv2.putText(out, text, (tx1 + 1, ty1 + th + 1), cv2.FONT_HERSHEY_SIMPLEX, font_scale,
                    text_color(color), thickness, cv2.LINE_AA)
    return out


def map_to_image(m: np.ndarray, scale: float, pad: Sequence[float], shape: Sequence[int],
                 input_size: Sequence[int]) -> np.ndarray:
    """A (h, w) map over the letterboxed network input -> the same map over the original image.

    The map is stretched to the network input (S_h, S_w), the padding cut off, then resized to the
    original (H, W), so overlays line up with the photo and with the boxes.
    """
    s_h, s_w = int(input_size[0]), int(input_size[1])
    full = cv2.resize(np.squeeze(np.asarray(m, dtype=np.float32)), (s_w, s_h), interpolation=cv2.INTER_LINEAR)
    h, w = int(shape[0]), int(shape[1])
    x0, y0 = int(round(pad[0])), int(round(pad[1]))
    x1, y1 = min(s_w, x0 + max(1, round(w * scale))), min(s_h, y0 + max(1, round(h * scale)))
    return cv2.resize(full[y0:y1, x0:x1], (w, h), interpolation=cv2.INTER_LINEAR)


def overlay_heatmap(img: np.ndarray, heat: np.ndarray, alpha: float = 0.5, normalize: bool = False) -> np.ndarray:
    """Blend a (H, W) map in [0, 1] (same size as RGB `img`) as a JET colour map over the image.

    normalize=True stretches the map to its own min..max (attention gates often span a narrow range).
    """
    heat = np.asarray(heat, dtype=np.float32)
    if normalize:
        lo, hi = float(heat.min()), float(heat.max())
        heat = (heat - lo) / (hi - lo) if hi > lo else np.zeros_like(heat)
    heat_u8 = (np.clip(heat, 0, 1) * 255).astype(np.uint8)
    color = cv2.cvtColor(cv2.applyColorMap(heat_u8, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    return cv2.addWeighted(np.ascontiguousarray(img), 1 - alpha, color, alpha, 0)


def tile(images: Sequence[np.ndarray], titles: Sequence[str] = ()) -> np.ndarray:
    """Side-by-side panels of equal height (e.g. one per head or per attention site), titled."""
    h = max(im.shape[0] for im in images)
    panels = []
    for i, im in enumerate(images):
        if im.shape[0] != h:
            im = cv2.resize(im, (max(1, round(im.shape[1] * h / im.shape[0])), h))
        im = np.ascontiguousarray(im).copy()
        if i < len(titles):
            fs = max(0.4, h / 600)
            (tw, th), base = cv2.getTextSize(titles[i], cv2.FONT_HERSHEY_SIMPLEX, fs, 1)
            cv2.rectangle(im, (0, 0), (tw + 6, th + base + 6), (0, 0, 0), -1)
            cv2.putText(im, titles[i], (3, th + 3), cv2.FONT_HERSHEY_SIMPLEX, fs, (255, 255, 255), 1, cv2.LINE_AA)
        panels.append(im)
        if i < len(images) - 1:
            panels.append(np.full((h, 4, 3), 255, np.uint8))
    return np.concatenate(panels, axis=1)


def text_panel(text: str, h: int, w: int, color: Sequence[int] = (235, 235, 235)) -> np.ndarray:
    """An (h, w) RGB panel showing `text`, wrapped to the width (e.g. 'failed: <reason>' in a grid)."""
    out = np.full((h, w, 3), color, np.uint8)
    fs = max(0.45, min(h, w) / 500)
    (_, th), base = cv2.getTextSize("Ag", cv2.FONT_HERSHEY_SIMPLEX, fs, 1)
    lines: list[str] = []
    for para in text.splitlines() or [""]:
        line = ""
        for word in para.split(" "):
            cand = f"{line} {word}".strip()
            if line and cv2.getTextSize(cand, cv2.FONT_HERSHEY_SIMPLEX, fs, 1)[0][0] > w - 12:
                lines.append(line)
                line = word
            else:
                line = cand
        lines.append(line)
    step = th + base + 4
    y = max(th + 6, (h - step * len(lines)) // 2 + th)
    for line in lines:
        if y > h - 2:
            break
        cv2.putText(out, line, (6, y), cv2.FONT_HERSHEY_SIMPLEX, fs, (40, 40, 40), 1, cv2.LINE_AA)
        y += step
    return out


def grid(rows: Sequence[np.ndarray], labels: Sequence[str] = (), sep: int = 4) -> np.ndarray:
    """Rows (e.g. `tile` outputs) stacked top to bottom, each with its label in a cell on the left.

    Narrower rows are padded white on the right; rows and the label column are split by `sep` px of white.
    Labels may hold several lines ('cbam\\nseed 0').
    """
    fs = 0.6
    label_lines = [str(lb).splitlines() for lb in labels]
    widths = [cv2.getTextSize(s, cv2.FONT_HERSHEY_SIMPLEX, fs, 2)[0][0] for ls in label_lines for s in ls]
    label_w = max(widths) + 16 if widths else 0
    row_w = max(r.shape[1] for r in rows)
    out = []
    for i, r in enumerate(rows):
        h = r.shape[0]
        r = np.ascontiguousarray(r)
        if r.shape[1] < row_w:
            r = np.concatenate([r, np.full((h, row_w - r.shape[1], 3), 255, np.uint8)], axis=1)
        if label_w:
            cell = np.full((h, label_w, 3), 255, np.uint8)
            lines = label_lines[i] if i < len(label_lines) else []
            (_, th), base = cv2.getTextSize("Ag", cv2.FONT_HERSHEY_SIMPLEX, fs, 2)
            y = (h - (th + base + 6) * len(lines)) // 2 + th
            for k, s in enumerate(lines):
                cv2.putText(cell, s, (8, y), cv2.FONT_HERSHEY_SIMPLEX, fs if k == 0 else fs * 0.8, (0, 0, 0),
                            2 if k == 0 else 1, cv2.LINE_AA)
                y += th + base + 6
            r = np.concatenate([cell, np.full((h, sep, 3), 255, np.uint8), r], axis=1)
        out.append(r)
        if i < len(rows) - 1:
            out.append(np.full((sep, r.shape[1], 3), 255, np.uint8))
    return np.concatenate(out, axis=0)
