"""The built-in data set: shapes on cluttered backgrounds, generated on first use, written in VOC layout.

Six classes that differ by shape only (colours are random per object): circle, square, triangle,
star, cross, ring. 1-6 objects per ~320x320 image, 20-150 px, stretched (aspect 2:3 .. 3:2) and
slightly rotated, overlapping each other by up to a third (partial occlusion), on gradients with
colour clouds, lines, specks, translucent distractor blobs and sensor noise. Deterministic: the
same seed gives the same bytes (one generator per image from (seed, image number)). Other `style`s
(outline, small, large) and seeds give sets the defaults were never tuned on:
`python -m utils.data.synthetic /tmp/unseen --seed 7 --style outline`.

Written once to <repo>/datasets/synthetic/{VOCdevkit/VOC2007, classes.txt, synthetic.json}: built in
a temporary folder and renamed into place under a file lock, so two processes starting at once
neither collide nor generate twice.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
from filelock import FileLock

CLASSES = ["circle", "square", "triangle", "star", "cross", "ring"]
DEFAULTS = {"seed": 0, "num_train": 800, "num_val": 200, "num_test": 100, "style": "shapes"}
VERSION = 1
IMG_RANGE = (288, 352)  # image width/height range
OBJ_RANGE = (20, 150)  # object size range (geometric mean of w and h), px
MAX_OCCLUDED = 0.33  # an object may lose at most this fraction of its box to later objects
JPEG_QUALITY = 92

# Object styles: the default set, and variants for measuring on sets the defaults were never tuned on
# (benchmarks/time_to_accuracy.py). obj_range: object size range (px); objects: count range per image (inclusive);
# hollow: shapes drawn as thick outlines instead of filled.
STYLES = {
    "shapes": {"obj_range": OBJ_RANGE, "objects": (1, 6), "hollow": False},
    "outline": {"obj_range": (24, 160), "objects": (1, 6), "hollow": True},
    "small": {"obj_range": (12, 64), "objects": (3, 12), "hollow": False},
    "large": {"obj_range": (64, 220), "objects": (1, 3), "hollow": False},
}

_ARM = 0.34
_UNIT = {  # polygons in [-1, 1]^2
    "square": np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], np.float64),
    "triangle": np.array([[0, -1], [1, 1], [-1, 1]], np.float64),
    "star": np.array([[r * math.cos(a), r * math.sin(a)] for k in range(10)
                      for r, a in [((1.0 if k % 2 == 0 else 0.45), -math.pi / 2 + k * math.pi / 5)]]),
    "cross": np.array([[-_ARM, -1], [_ARM, -1], [_ARM, -_ARM], [1, -_ARM], [1, _ARM], [_ARM, _ARM], [_ARM, 1],
                       [-_ARM, 1], [-_ARM, _ARM], [-1, _ARM], [-1, -_ARM], [-_ARM, -_ARM]], np.float64),
}
_SHIFT = 4  # sub-pixel bits for OpenCV drawing


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Linear gradient between two colours plus colour clouds, built on a coarse grid and upsampled
    (cheap), then lines, specks and translucent blobs."""
    c0, c1 = rng.uniform(0, 255, (2, 3)).astype(np.float32)
    a = rng.uniform(0, 2 * math.pi)
    gh, gw = int(rng.integers(3, 8)), int(rng.integers(3, 8))
    gy, gx = np.linspace(0, 1, gh, dtype=np.float32), np.linspace(0, 1, gw, dtype=np.float32)
    t = np.add.outer(gy * math.sin(a), gx * math.cos(a))
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    grid = c0 + (c1 - c0) * t[..., None] + rng.uniform(-45, 45, (gh, gw, 3)).astype(np.float32)
    img = cv2.resize(np.clip(grid, 0, 255).astype(np.uint8), (w, h), interpolation=cv2.INTER_CUBIC)
    for _ in range(int(rng.integers(3, 12))):  # lines
        p = rng.uniform(0, [w, h, w, h]).astype(int)
        cv2.line(img, (int(p[0]), int(p[1])), (int(p[2]), int(p[3])), _colour(rng), int(rng.integers(1, 4)),
                 cv2.LINE_AA)
    for _ in range(int(rng.integers(5, 20))):  # specks, smaller than any object
        c = rng.uniform(0, [w, h]).astype(int)
        ax = rng.integers(1, 6, 2)
        cv2.ellipse(img, (int(c[0]), int(c[1])), (int(ax[0]), int(ax[1])), 0, 0, 360, _colour(rng), -1, cv2.LINE_AA)
    for _ in range(int(rng.integers(0, 3))):  # soft translucent blobs (blurred: no corners, no shape class)
        n = int(rng.integers(9, 14))
        ang = np.sort(rng.uniform(0, 2 * math.pi, n))
        rad = rng.uniform(12, 40) * rng.uniform(0.6, 1.0, n)
        c = rng.uniform(40, [w - 40, h - 40])
        pts = np.stack([c[0] + rad * np.cos(ang), c[1] + rad * np.sin(ang)], 1)
        x0, y0 = (int(v) for v in np.maximum(pts.min(0) - 12, 0))
        x1, y1 = (int(v) for v in np.minimum(pts.max(0) + 12, [w, h]))
        mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
        cv2.fillPoly(mask, [np.round((pts - [x0, y0]) * (1 << _SHIFT)).astype(np.int32)], 255, cv2.LINE_AA, _SHIFT)
        a = cv2.GaussianBlur(mask, (0, 0), 5).astype(np.float32)[..., None] * (0.35 / 255)
        region = img[y0:y1, x0:x1].astype(np.float32)
        img[y0:y1, x0:x1] = (region * (1 - a) + np.array(_colour(rng), np.float32) * a).astype(np.uint8)
    return img


def _colour(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(0, 256, 3))


def _object_colour(rng: np.random.Generator, under: np.ndarray) -> tuple[int, int, int]:
    """A random colour that stands out from the mean of what it is drawn on."""
    mean = under.reshape(-1, 3).mean(0)
    for _ in range(20):
        hsv = np.array([[[rng.integers(0, 180), rng.integers(60, 256), rng.integers(50, 256)]]], np.uint8)
        c = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0].astype(np.float32)
        if np.linalg.norm(c - mean) > 100:
            return tuple(int(v) for v in c)
    return tuple(int(v) for v in 255 - mean)


def _shape_mask(kind: str, w: float, h: float, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """(anti-aliased uint8 mask of the shape, its extent [x0, y0, x1, y1] relative to the centre)."""
    if kind in ("circle", "ring"):
        ext = np.array([-w / 2, -h / 2, w / 2, h / 2])
    else:
        c, s = math.cos(angle), math.sin(angle)
        pts = _UNIT[kind] * [w / 2, h / 2] @ np.array([[c, s], [-s, c]])
        ext = np.concatenate([pts.min(0), pts.max(0)])
    x0, y0 = math.floor(ext[0]) - 1, math.floor(ext[1]) - 1
    mw, mh = math.ceil(ext[2]) + 2 - x0, math.ceil(ext[3]) + 2 - y0
    mask = np.zeros((mh, mw), np.uint8)
    o = np.array([-x0, -y0], np.float64)  # centre in mask coordinates
    f = 1 << _SHIFT
    if kind in ("circle", "ring"):
        centre = tuple(int(v) for v in np.round(o * f))
        cv2.ellipse(mask, centre, (int(round(w / 2 * f)), int(round(h / 2 * f))), 0, 0, 360, 255, -1,
                    cv2.LINE_AA, _SHIFT)
        if kind == "ring":
            k = 0.55
            cv2.ellipse(mask, centre, (int(round(w / 2 * k * f)), int(round(h / 2 * k * f))), 0, 0, 360, 0, -1,
                        cv2.LINE_AA, _SHIFT)
    else:
        cv2.fillPoly(mask, [np.round((pts + o) * f).astype(np.int32)], 255, cv2.LINE_AA, _SHIFT)
    return mask, ext


def _hollow(mask: np.ndarray, size: float) -> np.ndarray:
    """The shape's outline, about a tenth of its size thick (at least 2 px)."""
    t = max(2, round(size / 10))
    return cv2.subtract(mask, cv2.erode(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * t + 1, 2 * t + 1))))


def render_image(rng: np.random.Generator, style: str = "shapes") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(BGR uint8 image, boxes (n, 4) int xyxy 0-based continuous, class indices (n,))."""
    st = STYLES[style]
    lo, hi = st["obj_range"]
    w, h = (int(v) for v in rng.integers(IMG_RANGE[0], IMG_RANGE[1] + 1, 2))
    img = _background(rng, h, w)
    boxes: list[list[int]] = []
    classes: list[int] = []
    for _ in range(int(rng.integers(st["objects"][0], st["objects"][1] + 1))):
        for _try in range(30):
            cls = int(rng.integers(len(CLASSES)))
            kind = CLASSES[cls]
            size = math.exp(rng.uniform(math.log(lo), math.log(min(hi, 0.6 * min(w, h)))))
            aspect = math.exp(rng.uniform(math.log(2 / 3), math.log(3 / 2)))
            ow, oh = size * math.sqrt(aspect), size / math.sqrt(aspect)
            angle = math.radians(rng.uniform(-20, 20)) if kind not in ("circle", "ring") else 0.0
            mask, ext = _shape_mask(kind, ow, oh, angle)
            if st["hollow"]:
                mask = _hollow(mask, size)
            cx = round(rng.uniform(-ext[0], w - ext[2]))  # integer centre: the mask is placed on the pixel grid
            cy = round(rng.uniform(-ext[1], h - ext[3]))
            box = [max(0, math.floor(cx + ext[0])), max(0, math.floor(cy + ext[1])),
                   min(w, math.ceil(cx + ext[2])), min(h, math.ceil(cy + ext[3]))]
            if min(box[2] - box[0], box[3] - box[1]) < 8 or not _free(box, boxes):
                continue
            _paint(img, mask, cx, cy, ext, rng)
            boxes.append(box)
            classes.append(cls)
            break
    for _ in range(int(rng.integers(0, 3))):  # thin lines over the objects: more partial occlusion
        p = rng.uniform(0, [w, h, w, h]).astype(int)
        cv2.line(img, (int(p[0]), int(p[1])), (int(p[2]), int(p[3])), _colour(rng), 1, cv2.LINE_AA)
    k = int(rng.integers(6, 20))  # sensor noise: difference of two uniforms (triangular, sd ~ k / 2.5)
    img = cv2.subtract(cv2.add(img, rng.integers(0, k, img.shape, dtype=np.uint8)),
                       rng.integers(0, k, img.shape, dtype=np.uint8))
    if rng.random() < 0.3:
        img = cv2.GaussianBlur(img, (3, 3), 0)
    return img, np.array(boxes, np.int64).reshape(-1, 4), np.array(classes, np.int64)


def _free(box: list[int], boxes: list[list[int]]) -> bool:
    """The new box (drawn on top) hides at most MAX_OCCLUDED of any earlier box and is not hidden inside one."""
    if not boxes:
        return True
    b = np.array(boxes, np.float64)
    iw = np.clip(np.minimum(b[:, 2], box[2]) - np.maximum(b[:, 0], box[0]), 0, None)
    ih = np.clip(np.minimum(b[:, 3], box[3]) - np.maximum(b[:, 1], box[1]), 0, None)
    inter = iw * ih
    area_old = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    area_new = (box[2] - box[0]) * (box[3] - box[1])
    return bool((inter <= MAX_OCCLUDED * area_old).all() and (inter <= 0.7 * area_new).all())


def _paint(img: np.ndarray, mask: np.ndarray, cx: float, cy: float, ext: np.ndarray, rng: np.random.Generator) -> None:
    """Blend a solid (sometimes shaded, sometimes outlined) colour into img through the mask."""
    x0, y0 = int(cx) + math.floor(ext[0]) - 1, int(cy) + math.floor(ext[1]) - 1
    mh, mw = mask.shape
    ix0, iy0, ix1, iy1 = max(x0, 0), max(y0, 0), min(x0 + mw, img.shape[1]), min(y0 + mh, img.shape[0])
    m = mask[iy0 - y0:iy1 - y0, ix0 - x0:ix1 - x0].astype(np.float32)[..., None] / 255.0
    region = img[iy0:iy1, ix0:ix1].astype(np.float32)
    colour = np.array(_object_colour(rng, img[iy0:iy1, ix0:ix1]), np.float32)
    fill = np.broadcast_to(colour, region.shape).copy()
    if rng.random() < 0.4:  # shading across the shape
        ramp = np.linspace(-1, 1, fill.shape[1], dtype=np.float32)[None, :, None]
        fill = np.clip(fill * (1 + 0.25 * rng.uniform(-1, 1) * ramp), 0, 255)
    out = region * (1 - m) + fill * m
    if rng.random() < 0.3:  # outline
        edge = cv2.morphologyEx(mask[iy0 - y0:iy1 - y0, ix0 - x0:ix1 - x0], cv2.MORPH_GRADIENT,
                                np.ones((3, 3), np.uint8)).astype(np.float32)[..., None] / 255.0
        dark = np.array(_colour(rng), np.float32) * 0.3
        out = out * (1 - edge * 0.8) + dark * edge * 0.8
    img[iy0:iy1, ix0:ix1] = np.clip(out, 0, 255).astype(np.uint8)


def _xml(name: str, w: int, h: int, boxes: np.ndarray, classes: np.ndarray) -> str:
    objs = "".join(
        f"  <object>\n    <name>{CLASSES[c]}</name>\n    <pose>Unspecified</pose>\n    <truncated>0</truncated>\n"
        f"    <difficult>0</difficult>\n    <bndbox>\n      <xmin>{b[0] + 1}</xmin>\n      <ymin>{b[1] + 1}</ymin>\n"
        f"      <xmax>{b[2]}</xmax>\n      <ymax>{b[3]}</ymax>\n    </bndbox>\n  </object>\n"
        for b, c in zip(boxes.tolist(), classes.tolist()))
    return (f"<annotation>\n  <folder>VOC2007</folder>\n  <filename>{name}.jpg</filename>\n"
            f"  <source><database>synthetic shapes</database></source>\n"
            f"  <size>\n    <width>{w}</width>\n    <height>{h}</height>\n    <depth>3</depth>\n  </size>\n"
            f"  <segmented>0</segmented>\n{objs}</annotation>\n")


def _write_one(year: Path, seed: int, i: int, style: str) -> None:
    img, boxes, classes = render_image(np.random.default_rng([seed, i]), style)
    name = f"{i + 1:06d}"
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    (year / "JPEGImages" / f"{name}.jpg").write_bytes(buf.tobytes())
    (year / "Annotations" / f"{name}.xml").write_text(_xml(name, img.shape[1], img.shape[0], boxes, classes))


def generate(out: Path, seed: int = 0, num_train: int = 800, num_val: int = 200, num_test: int = 100,
             style: str = "shapes") -> Path:
    """Write the data set into `out` (VOCdevkit/VOC2007, classes.txt, synthetic.json last); returns the devkit."""
    _check_style(style)
    year = out / "VOCdevkit" / "VOC2007"
    for d in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (year / d).mkdir(parents=True, exist_ok=True)
    total = num_train + num_val + num_test
    # ~8 ms an image on one core; OpenCV and NumPy release the GIL, so threads share the cores

    with ThreadPoolExecutor(max(1, min(4, os.cpu_count() or 1))) as ex:
        list(ex.map(lambda i: _write_one(year, seed, i, style), range(total)))
    ids = [f"{i + 1:06d}" for i in range(total)]
    sets = {"train": ids[:num_train], "val": ids[num_train:num_train + num_val], "test": ids[num_train + num_val:]}
    sets["trainval"] = sets["train"] + sets["val"]
    for k, v in sets.items():
        (year / "ImageSets" / "Main" / f"{k}.txt").write_text("".join(f"{x}\n" for x in v))
    (out / "classes.txt").write_text("".join(f"{c}\n" for c in CLASSES))
    (out / "synthetic.json").write_text(json.dumps(_manifest(seed, num_train, num_val, num_test, style), indent=1))
    return out / "VOCdevkit"


def _check_style(style: str) -> None:
    if style not in STYLES:
        raise ValueError(f"synthetic style '{style}' is not one of {', '.join(STYLES)}")


def _manifest(seed: int, num_train: int, num_val: int, num_test: int, style: str = "shapes") -> dict:
    out = {"version": VERSION, "seed": int(seed), "num_train": int(num_train), "num_val": int(num_val),
           "num_test": int(num_test), "classes": CLASSES}
    return out if style == "shapes" else {**out, "style": style}  # the default's manifest predates styles


def _complete(root: Path, manifest: dict) -> bool:
    try:
        return json.loads((root / "synthetic.json").read_text()) == manifest
    except (OSError, ValueError):
        return False


def ensure_synthetic(root: str | Path, seed: int = 0, num_train: int = 800, num_val: int = 200,
                     num_test: int = 100, style: str = "shapes") -> Path:
    """The devkit of the built-in set under `root`, generating it first when missing or different."""
    root = Path(root)
    _check_style(style)  # before the lock and the "generating" line
    manifest = _manifest(seed, num_train, num_val, num_test, style)
    if _complete(root, manifest):
        return root / "VOCdevkit"
    root.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(root.parent / f".{root.name}.lock"):  # another process may be generating it
        if _complete(root, manifest):  # another process finished it while we waited
            return root / "VOCdevkit"
        total = num_train + num_val + num_test
        print(f"generating the built-in synthetic data set ({total} images) in {root} ...", file=sys.stderr,
              flush=True)
        t0 = time.time()
        tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}-tmp-", dir=root.parent))
        try:
            generate(tmp, seed, num_train, num_val, num_test, style)
            if root.exists():
                old = root.with_name(f".{root.name}-old-{os.getpid()}")
                os.rename(root, old)
                shutil.rmtree(old, ignore_errors=True)
            os.chmod(tmp, 0o755)  # mkdtemp makes it private
            os.rename(tmp, root)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        print(f"synthetic data set ready in {time.time() - t0:.1f} s", file=sys.stderr, flush=True)
    return root / "VOCdevkit"


def main(argv: list[str] | None = None) -> None:
    """`python -m utils.data.synthetic OUT --seed 7 --style outline`: a set in VOC layout under OUT."""
    import argparse
    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("out", type=Path)
    ap.add_argument("--style", default="shapes", choices=list(STYLES))
    for k in ("seed", "num_train", "num_val", "num_test"):
        ap.add_argument(f"--{k.replace('_', '-')}", type=int, default=DEFAULTS[k])
    a = ap.parse_args(argv)
    print(ensure_synthetic(a.out.resolve(), a.seed, a.num_train, a.num_val, a.num_test, a.style))


if __name__ == "__main__":
    main()
