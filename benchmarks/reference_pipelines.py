"""The reference pipeline timed next to ours by bench_inference.py: bubbliiiing/yolov4-tiny-pytorch's
`YOLO.detect_image` in a child process (`ReferenceProcess`), and `ReferenceStyle`, our own approximation of
its steps for when no checkout is at hand. See bench_inference.py's docstring for how they are compared.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

from nets.weights.loader import load_model


# ---- the reference-style approximation (our code, modelled on the reference's steps) -------------
class ReferenceStyle:
    """Approximation of bubbliiiing's detect_image data path, written here for timing only."""

    def __init__(self, model, anchors, masks, num_classes, size, conf=0.5, iou=0.3):
        self.model, self.anchors, self.masks = model, np.asarray(anchors), masks
        self.num_classes, self.size, self.conf, self.iou = num_classes, size, conf, iou

    def __call__(self, path: str):
        from PIL import Image
        from torchvision.ops import nms

        image = Image.open(path).convert("RGB")
        iw, ih = image.size
        data = np.array(image.resize((self.size, self.size), Image.BICUBIC), dtype="float32") / 255.0
        x = torch.from_numpy(np.expand_dims(np.transpose(data, (2, 0, 1)), 0))
        with torch.no_grad():
            outs = self.model(x)
            preds = []
            for out, mask in zip(outs, self.masks):  # per head, grids rebuilt every call
                b, _, h, w = out.shape
                p = out.view(b, len(mask), 5 + self.num_classes, h, w).permute(0, 1, 3, 4, 2).contiguous()
                gx = torch.linspace(0, w - 1, w).repeat(h, 1).repeat(b * len(mask), 1, 1).view(p.shape[:4])
                gy = torch.linspace(0, h - 1, h).repeat(w, 1).t().repeat(b * len(mask), 1, 1).view(p.shape[:4])
                anc = torch.tensor(self.anchors[mask] / np.array([self.size / w, self.size / h]), dtype=torch.float32)
                aw = anc[:, 0:1].repeat(b, 1).repeat(1, 1, h * w).view(p.shape[:4])
                ah = anc[:, 1:2].repeat(b, 1).repeat(1, 1, h * w).view(p.shape[:4])
                box = torch.stack([torch.sigmoid(p[..., 0]) + gx, torch.sigmoid(p[..., 1]) + gy,
                                   torch.exp(p[..., 2]) * aw, torch.exp(p[..., 3]) * ah], -1)
                box = box.view(b, -1, 4) / torch.tensor([w, h, w, h], dtype=torch.float32)
                preds.append(torch.cat([box, torch.sigmoid(p[..., 4:]).reshape(b, -1, 1 + self.num_classes)], -1))
            pred = torch.cat(preds, 1)
            corner = pred.clone()
            corner[..., 0:2] = pred[..., 0:2] - pred[..., 2:4] / 2
            corner[..., 2:4] = pred[..., 0:2] + pred[..., 2:4] / 2
            results = []
            for image_pred in corner:  # per image, then per class (as the reference does)
                cconf, cpred = torch.max(image_pred[:, 5:], 1, keepdim=True)
                keep = image_pred[:, 4] * cconf[:, 0] >= self.conf
                dets = torch.cat([image_pred[keep, :5], cconf[keep], cpred[keep].float()], 1)
                out = []
                for c in dets[:, -1].unique():
                    dc = dets[dets[:, -1] == c]
                    out.append(dc[nms(dc[:, :4], dc[:, 4] * dc[:, 5], self.iou)])
                out = torch.cat(out).numpy() if out else np.zeros((0, 7), np.float32)
                out[:, [0, 2]] *= iw
                out[:, [1, 3]] *= ih
                results.append(out)
        return results


# The start of every script that runs the reference: Pillow 10 removed the textsize its drawing calls.
REFERENCE_PRELUDE = r"""
from PIL import Image, ImageDraw
if not hasattr(ImageDraw.ImageDraw, "textsize"):  # removed in Pillow 10; the reference draws with it
    def textsize(self, text, font=None, *a, **k):
        l, t, r, b = self.textbbox((0, 0), text, font=font)
        return r - l, b - t
    ImageDraw.ImageDraw.textsize = textsize
from yolo import YOLO
"""

_REFERENCE_CHILD = r"""
import contextlib, io, json, sys, time
""" + REFERENCE_PRELUDE + r"""
import torch
cfg = json.loads(sys.argv[1])
if cfg["threads"]:
    torch.set_num_threads(cfg["threads"])
with contextlib.redirect_stdout(io.StringIO()):
    ref = YOLO(model_path=cfg["pth"], classes_path=cfg["classes"], anchors_path=cfg["anchors"], phi=cfg["phi"],
               input_shape=[cfg["size"], cfg["size"]], confidence=cfg["conf"], nms_iou=cfg["iou"], cuda=False)
print("ready", flush=True)
for line in sys.stdin:
    if line.strip() != "run":
        break
    with contextlib.redirect_stdout(io.StringIO()):  # it prints every box it draws
        t = time.perf_counter()
        ref.detect_image(Image.open(cfg["image"]))
        dt = time.perf_counter() - t
    print(dt, flush=True)
"""


def reference_files(weights: Path, tmp: Path) -> dict:
    """Our checkpoint as the reference's YOLO() wants it: a state dict under its key names, a classes file and an
    anchors file (written to `tmp`); returns {pth, classes, anchors, phi}."""
    from nets.weights.reference import to_reference_keys

    model = load_model(weights)
    phi = {"none": 0, "se": 1, "cbam": 2, "eca": 3}.get(model.phi)
    if phi is None:
        raise ValueError(f"the reference has no '{model.phi}' attention; benchmark with --phi 0..3")
    pth = tmp / "reference_weights.pth"
    torch.save(to_reference_keys(model.state_dict()), pth)
    classes = tmp / "reference_classes.txt"
    classes.write_text("\n".join(model.class_names) + "\n")
    anchors = tmp / "reference_anchors.txt"
    anchors.write_text(", ".join(f"{int(w)},{int(h)}" for w, h in model.anchors.tolist()))
    return dict(pth=str(pth), classes=str(classes), anchors=str(anchors), phi=phi)


class ReferenceProcess:
    """bubbliiiing's `YOLO.detect_image` in a child process (its `nets`/`utils` packages would clash
    with ours), loaded with our weights under its key names; each call times one detect_image there."""
    def __init__(self, ref_dir: Path, weights: Path, tmp: Path, image: Path, size: int, conf: float, iou: float,
                 threads: int = 0):
        import os
        import subprocess

        cfg = dict(reference_files(weights, tmp), size=size, conf=conf, iou=iou, image=str(image.resolve()),
                   threads=threads)
        self.proc = subprocess.Popen([sys.executable, "-c", _REFERENCE_CHILD, json.dumps(cfg)], cwd=ref_dir,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     env={**os.environ, "PYTHONPATH": str(ref_dir)})
        if self.proc.stdout.readline().strip() != "ready":
            raise RuntimeError(f"the reference in {ref_dir} did not start (see its error above)")

    def __call__(self) -> float:
        self.proc.stdin.write("run\n")
        self.proc.stdin.flush()
        return float(self.proc.stdout.readline())

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)
