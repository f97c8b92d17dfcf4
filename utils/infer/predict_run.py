"""predict.py's run: sources (images, folders, globs, videos, cameras), the run folder writer
(annotated media, predictions.json, labels, crops, counts, overlays) and the loop that ties them
to the shared `Predictor` / `predict_paths` of `utils/infer/predictor.py`.

    summary = predict_sources(cfg, weights, ["imgs/", "clip.mp4"], make_run_dir, PredictOptions(save_txt=True))
"""
from __future__ import annotations

import glob as _glob
import json
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from tqdm import tqdm

from nets.decode import objectness_maps
from utils.config import Config
from utils.data.validate import IMG_EXTS
from utils.infer.predictor import LetterboxInfo, Predictor, detections_to_numpy, predict_paths
from utils.viz.attention_maps import detect_with_maps, overlay_panels
from utils.viz.draw import draw_detections, map_to_image, overlay_heatmap, tile

# =================================================================================================
# Running over user sources (predict.py): images, folders, globs, videos, cameras -> a run folder.
# =================================================================================================
VIDEO_EXTS = {".mp4", ".avi", ".mov", ".mkv", ".m4v", ".mpg", ".mpeg", ".wmv", ".webm", ".gif", ".asf", ".ts"}


@dataclass
class Source:
    kind: str  # "image" | "video" | "camera"
    path: str


def collect_sources(specs: Sequence[str]) -> tuple[list[Source], list[str]]:
    """Expand paths, folders (their images and videos, sorted), globs and camera indices.

    Returns the sources and a list of problems (missing paths, empty folders) to report.
    """
    sources: list[Source] = []
    problems: list[str] = []

    def kind_of(p: Path) -> str:
        return "video" if p.suffix.lower() in VIDEO_EXTS else "image"

    for spec in specs:
        p = Path(spec).expanduser()
        if p.is_dir():
            files = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in {*IMG_EXTS, *VIDEO_EXTS})
            if not files:
                problems.append(f"{spec}: folder holds no images or videos ({', '.join(sorted(IMG_EXTS))}; "
                                f"{', '.join(sorted(VIDEO_EXTS))})")
            sources += [Source(kind_of(f), str(f)) for f in files]
        elif p.is_file():
            sources.append(Source(kind_of(p), str(p)))
        elif spec.strip().isdigit():
            sources.append(Source("camera", spec.strip()))
        elif any(ch in spec for ch in "*?["):
            files = sorted(Path(f) for f in _glob.glob(str(p), recursive=True) if Path(f).is_file())
            if not files:
                problems.append(f"{spec}: pattern matches no file")
            sources += [Source(kind_of(f), str(f)) for f in files]
        else:
            problems.append(f"{spec}: no such file or folder")
    return sources, problems


@dataclass
class PredictOptions:
    """predict.py's output options (not shared with other modes, so not Config keys)."""
    save_img: bool = True
    save_txt: bool = False
    save_voc: bool = False
    save_crop: bool = False
    count: bool = False
    heatmap: bool = False
    attention_maps: bool = False
    line_width: int | None = None
    hide_labels: bool = False
    hide_conf: bool = False
    batch_size: int = 8  # predict_sources uses cfg.batch_size
    vid_stride: int = 1
    max_frames: int = 0  # per video/camera; 0 = all (a camera runs until Ctrl+C)


@dataclass
class PredictSummary:
    run_dir: Path
    images: int = 0
    frames: int = 0
    detections: int = 0
    counts: Counter = field(default_factory=Counter)
    skipped: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)


class RunWriter:
    """Writes everything predict.py produces into one run folder."""

    def __init__(self, run_dir: Path, class_names: Sequence[str], opts: PredictOptions):
        self.run_dir, self.names, self.opts = Path(run_dir), list(class_names), opts
        self.entries: list[dict] = []
        self.per_image_counts: list[dict] = []
        self._used: set[str] = set()
        self.summary = PredictSummary(self.run_dir)

    def unique_stem(self, path: str) -> str:
        """Output base name for `path`; two inputs called img.jpg in different folders get img, img_2."""
        stem = Path(path).stem or "image"
        name, k = stem, 2
        while name in self._used:
            name, k = f"{stem}_{k}", k + 1
        self._used.add(name)
        return name

    def record(self, path: str, img: np.ndarray, det: dict[str, np.ndarray], frame: int | None = None,
               stem: str | None = None) -> np.ndarray | None:
        """Add one image's detections to predictions.json (and txt/VOC/crops); return the annotated image."""
        h, w = img.shape[:2]
        boxes, scores, labels = det["boxes"], det["scores"], det["labels"]
        entry: dict[str, Any] = {"image": str(path)}
        if frame is not None:
            entry["frame"] = int(frame)
        entry.update(width=int(w), height=int(h), detections=[
            {"class_id": int(c), "class": self.names[int(c)], "score": round(float(s), 5),
             "xyxy": [round(float(v), 3) for v in b]} for b, s, c in zip(boxes, scores, labels)])
        self.entries.append(entry)
        counts = Counter(self.names[int(c)] for c in labels)
        self.summary.counts.update(counts)
        self.summary.detections += len(labels)
        if self.opts.count:
            self.per_image_counts.append({"image": str(path), **({"frame": frame} if frame is not None else {}),
                                          "counts": dict(counts)})
        stem = stem or self.unique_stem(path)
        if frame is not None:
            stem = f"{stem}_{frame:06d}"
        if self.opts.save_txt:
            self._write_txt(stem, w, h, boxes, scores, labels)
        if self.opts.save_voc:
            self._write_voc(stem, path, w, h, boxes, labels)
        if self.opts.save_crop:
            self._write_crops(stem, img, boxes, labels)
        if not self.opts.save_img:
            return None

        return draw_detections(img, boxes, scores, labels, self.names, self.opts.line_width,
                               self.opts.hide_labels, self.opts.hide_conf)

    def _write_txt(self, stem, w, h, boxes, scores, labels):
        d = self.run_dir / "labels"
        d.mkdir(exist_ok=True)
        lines = []
        for (x1, y1, x2, y2), s, c in zip(boxes, scores, labels):
            lines.append(f"{int(c)} {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} {(x2 - x1) / w:.6f} "
                         f"{(y2 - y1) / h:.6f} {float(s):.5f}")
        (d / f"{stem}.txt").write_text("".join(line + "\n" for line in lines))

    def _write_voc(self, stem, path, w, h, boxes, labels):
        d = self.run_dir / "voc"
        d.mkdir(exist_ok=True)
        root = ET.Element("annotation")
        ET.SubElement(root, "filename").text = Path(path).name
        size = ET.SubElement(root, "size")
        for k, v in (("width", w), ("height", h), ("depth", 3)):
            ET.SubElement(size, k).text = str(v)
        for (x1, y1, x2, y2), c in zip(boxes, labels):
            obj = ET.SubElement(root, "object")
            ET.SubElement(obj, "name").text = self.names[int(c)]
            ET.SubElement(obj, "difficult").text = "0"
            bb = ET.SubElement(obj, "bndbox")
            # our xyxy is 0-based continuous; VOC is 1-based inclusive: xmin = x1 + 1, xmax = x2
            vals = (round(float(x1)) + 1, round(float(y1)) + 1, max(round(float(x2)), round(float(x1)) + 1),
                    max(round(float(y2)), round(float(y1)) + 1))
            for k, v in zip(("xmin", "ymin", "xmax", "ymax"), vals):
                ET.SubElement(bb, k).text = str(int(v))
        ET.indent(root)
        ET.ElementTree(root).write(d / f"{stem}.xml", encoding="utf-8")

    def _write_crops(self, stem, img, boxes, labels):
        h, w = img.shape[:2]
        for i, ((x1, y1, x2, y2), c) in enumerate(zip(boxes, labels)):
            xa, ya = max(0, int(np.floor(x1))), max(0, int(np.floor(y1)))
            xb, yb = min(w, int(np.ceil(x2))), min(h, int(np.ceil(y2)))
            if xb <= xa or yb <= ya:
                continue
            d = self.run_dir / "crops" / _safe_name(self.names[int(c)])
            d.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(d / f"{stem}_{i}.jpg"), cv2.cvtColor(img[ya:yb, xa:xb], cv2.COLOR_RGB2BGR))

    def close(self) -> PredictSummary:
        (self.run_dir / "predictions.json").write_text(json.dumps(self.entries, indent=1))
        self.summary.outputs.append(str(self.run_dir / "predictions.json"))
        if self.opts.count:
            counts = {"total": dict(sorted(self.summary.counts.items())), "per_image": self.per_image_counts}
            (self.run_dir / "counts.json").write_text(json.dumps(counts, indent=1))
        return self.summary


def _safe_name(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name) or "class"


def _imwrite(path: Path, rgb: np.ndarray) -> None:
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write {path}")


def _overlays(predictor: Predictor, writer: RunWriter, stem: str, img: np.ndarray, info: LetterboxInfo,
              raw_i: list[torch.Tensor], want_maps: bool) -> None:
    """Objectness per head, and per attention site the map of utils/viz/attention_maps.py (the spatial gate
    where the block has one, else the channel-mean |feature|), mapped onto the original image."""
    size = info.input_shape or (predictor.img_size, predictor.img_size)
    if writer.opts.heatmap:
        heads = objectness_maps([r[None] for r in raw_i], len(predictor.masks[0]))
        panels = [overlay_heatmap(img, map_to_image(m[0].cpu().numpy(), info.scale, info.pad, info.shape, size))
                  for m in heads]
        d = writer.run_dir / "heatmaps"
        d.mkdir(exist_ok=True)
        titles = [f"objectness stride {s}" for s in predictor.strides]
        _imwrite(d / f"{stem}.jpg", tile(panels, titles))
    if want_maps:

        # the same input as the detection pass (same letterbox shape), run once more with the hooks on
        _, _, maps = detect_with_maps(predictor, img, size)
        panels, titles = overlay_panels(img, info, maps)
        d = writer.run_dir / "attention"
        d.mkdir(exist_ok=True)
        _imwrite(d / f"{stem}.jpg", tile(panels, titles))


def predict_sources(cfg: Config, weights: str | Path, specs: Sequence[str], make_run_dir: Callable[[], Path],
                    opts: PredictOptions, log: Callable[[str], Any] = print,
                    warn: Callable[[str], Any] = print) -> tuple[Predictor, PredictSummary]:
    """predict.py's run: expand `specs`, load the model with the shared inference keys of `cfg`, then detect
    into the folder `make_run_dir()` returns (made only once the inputs and weights are known to be good).
    Raises ValueError when there is nothing to process, OSError/ValueError/RuntimeError for bad weights."""
    sources, problems = collect_sources(specs)
    for msg in problems:
        warn(f"warning: {msg}")
    if not sources:
        raise ValueError("nothing to process; pass image files, folders, globs, videos or a camera index")
    predictor = Predictor.from_config(weights, cfg, torch_only=opts.attention_maps, log=log)
    log(f"weights {weights}: {predictor.describe()}")
    opts = replace(opts, batch_size=cfg.batch_size)
    return predictor, run_predict(predictor, sources, make_run_dir(), opts, log=warn)


def summary_lines(summary: PredictSummary, speed: dict[str, float]) -> list[str]:
    """What predict.py prints at the end (detections per class, time per step)."""
    counts = ", ".join(f"{n} {c}" for c, n in summary.counts.most_common()) or "nothing"
    lines = [f"{summary.images} image(s), {summary.frames} video frame(s): {summary.detections} detections ({counts})"]
    if summary.images + summary.frames:
        lines.append(f"speed per image: {speed['preprocess']:.1f} ms letterbox, {speed['inference']:.1f} ms model, "
                     f"{speed['postprocess']:.1f} ms decode+NMS")
    return lines


def run_predict(predictor: Predictor, sources: Sequence[Source], run_dir: Path, opts: PredictOptions,
                log: Any = print) -> PredictSummary:
    """Detect on every source, writing annotated media, predictions.json and the optional extras."""
    writer = RunWriter(run_dir, predictor.class_names, opts)
    want_maps = opts.attention_maps and not predictor.exported
    if opts.attention_maps and predictor.exported:
        log("warning: --attention-maps needs .pt weights on --backend torch (exported models do not expose the "
            "features); skipped")
    images = [s.path for s in sources if s.kind == "image"]
    streams = [s for s in sources if s.kind != "image"]
    try:
        if images:
            _run_images(predictor, images, writer, opts, want_maps, tqdm, log)
        for src in streams:
            _run_stream(predictor, src, writer, opts, log)
    except KeyboardInterrupt:
        log("interrupted: writing what was processed so far")
    finally:  # predictions.json is written even when something fails half-way
        summary = writer.close()
    return summary


def _run_images(predictor, paths, writer, opts, want_maps, tqdm, log):
    bar = tqdm(total=len(paths), desc="predict", unit="img", disable=None)
    for r in predict_paths(predictor, paths, opts.batch_size):
        bar.update(1)
        if r.error is not None:
            writer.summary.skipped.append(r.error)
            bar.write(f"skipped {r.error}")
            continue
        stem = writer.unique_stem(r.path)
        annotated = writer.record(r.path, r.image, detections_to_numpy(r.det), stem=stem)
        if annotated is not None:
            _imwrite(writer.run_dir / f"{stem}{_image_suffix(r.path)}", annotated)
        if opts.heatmap or want_maps:
            _overlays(predictor, writer, stem, r.image, r.info, r.raw, want_maps)
        writer.summary.images += 1
    bar.close()


def _image_suffix(path: str) -> str:
    s = Path(path).suffix.lower()
    return s if s in {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"} else ".jpg"


def _run_stream(predictor, src: Source, writer: RunWriter, opts: PredictOptions, log):
    """A video file or a camera: frames in batches; annotated video + one JSON entry per frame."""
    cap = cv2.VideoCapture(int(src.path) if src.kind == "camera" else src.path)
    if not cap.isOpened():
        msg = (f"camera {src.path}: cannot open it (is it connected? try another index)" if src.kind == "camera"
               else f"{src.path}: cannot open video (unsupported codec or corrupt file)")
        writer.summary.skipped.append(msg)
        log(f"skipped {msg}")
        return
    name = f"camera{src.path}" if src.kind == "camera" else src.path
    stem = writer.unique_stem(name)
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    fps = fps if 0 < fps < 1000 else 25.0
    out, out_path = None, None
    stride = max(1, opts.vid_stride)
    index, done, batch = -1, 0, []
    if opts.heatmap or opts.attention_maps:
        log(f"note: --heatmap/--attention-maps are written for images only, not for {name}")

    def flush():
        nonlocal out, out_path
        if not batch:
            return
        dets, _, _ = predictor.detect([f for _, f in batch])
        for (i, frame), det in zip(batch, dets):
            annotated = writer.record(name, frame, detections_to_numpy(det), frame=i, stem=stem)
            if annotated is not None:
                if out is None:
                    out, out_path = _open_video_writer(writer.run_dir, stem, fps / stride, frame.shape[1], frame.shape[0])
                out.write(cv2.cvtColor(annotated, cv2.COLOR_RGB2BGR))
            writer.summary.frames += 1
        batch.clear()

    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            index += 1
            if index % stride:
                continue
            batch.append((index, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)))
            done += 1
            # a camera is live: no batching delay; a file is read ahead a batch at a time
            if len(batch) >= (1 if src.kind == "camera" else max(1, opts.batch_size)):
                flush()
            if opts.max_frames and done >= opts.max_frames:
                break
        flush()
    finally:
        cap.release()
        if out is not None:
            out.release()
            writer.summary.outputs.append(str(out_path))
    if done == 0:
        msg = f"{name}: no frame could be decoded"
        writer.summary.skipped.append(msg)
        log(f"skipped {msg}")


def _open_video_writer(run_dir: Path, stem: str, fps: float, w: int, h: int):
    for suffix, codec in ((".mp4", "mp4v"), (".avi", "MJPG")):
        path = run_dir / f"{stem}{suffix}"
        vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), fps, (w, h))
        if vw.isOpened():
            return vw, path
        vw.release()
    raise OSError(f"OpenCV cannot write a video to {run_dir} (no mp4v or MJPG encoder)")
