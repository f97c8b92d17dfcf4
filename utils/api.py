"""The Python API: one small object over the functions the command-line scripts call.

    from utils.api import Detector

    det = Detector("runs/train/exp/weights/best.pt", conf_thres=0.4)   # "" = the newest run's best.pt
    for r in det.predict(["photo.jpg", rgb_array]):          # paths, folders, globs or RGB uint8 arrays
        print(r.path, r.boxes, r.scores, r.names)            # boxes: (N, 4) xyxy in original pixels
    numbers = det.val(data="configs/voc.yaml")               # what get_map.py prints and writes to metrics.json
    onnx_path = det.export(format="onnx", dynamic=True)      # what export.py writes (parity-checked)
    xml_path = det.export(format="openvino")                 # the OpenVINO IR; Detector(xml_path) runs it
    det.predict("photo.jpg", img_size=416, augment=True)     # any key of configs/default.yaml, per call

    det = Detector(phi="cbam")                               # no weights: train from scratch
    best = det.train(data="configs/voc.yaml", epochs=50)     # train.py's run; det then predicts with best.pt

Keyword overrides are Config keys (utils/config.py) with the same names, checks and per-mode defaults as
the flags of predict.py (mode "predict"), get_map.py ("val"), export.py ("export") and train.py ("train").
Each method runs the same library function as its script: Predictor.from_config + predict_paths, the
val_run functions, export_checked and Trainer; there is no second pipeline.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from utils.config import DEFAULT_CONFIG, Config, config_to_dict, load_config
from utils.engine.runs import resolve_weights
from utils.engine.trainer import Trainer
from utils.eval.val_run import ReportOptions, detections_of_model, score_and_report
from utils.export.export_run import export_checked
from utils.infer.predict_run import collect_sources
from utils.infer.predictor import Predictor, detections_to_numpy, predict_paths

PARITY_ATOL = 1e-4  # export.py's default --atol


@dataclass
class Result:
    """One image's detections as plain numpy: boxes (N, 4) xyxy in original pixels, scores (N,), class ids (N,)."""
    path: str  # the file, or "array <i>" for an image passed as an array
    orig_shape: tuple[int, int]  # (height, width)
    boxes: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray
    names: list[str]  # the class name of each box


class Detector:
    """A model file and Config overrides; `predict`, `val`, `export` and `train` run the scripts' functions."""

    def __init__(self, weights: str | Path = "", **overrides: Any):
        self.weights = str(weights)  # "" until needed: then the newest run's best.pt
        self.overrides = overrides
        self._predictor: tuple[dict, Predictor] | None = None

    def config(self, mode: str, **overrides: Any) -> Config:
        """The Config a script of `mode` would build from these overrides (validated, per-mode defaults)."""
        return load_config(DEFAULT_CONFIG, {**self.overrides, **overrides}, mode=mode)

    def model_path(self) -> Path:
        return resolve_weights(self.weights)

    def predictor(self, cfg: Config) -> Predictor:
        """predict.py's Predictor for a "predict" Config (kept while the config and weights stay the same)."""
        key = {**config_to_dict(cfg), "weights": str(self.model_path())}
        if self._predictor is None or self._predictor[0] != key:
            self._predictor = (key, Predictor.from_config(key["weights"], cfg))
        return self._predictor[1]

    def predict(self, source: Any, **overrides: Any) -> list[Result]:
        """Detections per image of `source`: an image path, folder or glob, an RGB uint8 (H, W, 3) array, or a
        list of these. Videos and cameras: use predict.py. A file that cannot be read raises ValueError."""
        cfg = self.config("predict", **overrides)
        predictor = self.predictor(cfg)
        items = source if isinstance(source, (list, tuple)) else [source]
        arrays = [x for x in items if isinstance(x, np.ndarray)]
        array_results = iter(_result(f"array {i}", x.shape[:2], d, predictor.class_names)
                             for i, (x, d) in enumerate(zip(arrays, predictor(arrays) if arrays else [])))
        files: list[list[str]] = []  # per non-array item: the image files it names
        for x in items:
            if isinstance(x, np.ndarray):
                continue
            sources, problems = collect_sources([str(x)])
            problems += [f"{s.path}: videos and cameras go through predict.py" for s in sources if s.kind != "image"]
            if problems:
                raise ValueError("; ".join(problems))
            files.append([s.path for s in sources])
        file_results = []
        for r in predict_paths(predictor, [f for group in files for f in group], cfg.batch_size):
            if r.error is not None:
                raise ValueError(r.error)
            file_results.append(_result(r.path, r.image.shape[:2], r.det, predictor.class_names))
        by_file, results = iter(file_results), []
        groups = iter(files)
        for x in items:  # the input order
            results += [next(array_results)] if isinstance(x, np.ndarray) else [next(by_file) for _ in next(groups)]
        return results

    def val(self, data: str | None = None, out: str = "", **overrides: Any) -> dict[str, Any]:
        """get_map.py on this model: the numbers it prints (metrics.json's), reports written to `out`
        (default <run>/map_out). data None: the data set of the model's run (cfg.data "")."""
        cfg = self.config("val", data=data or "", **overrides)
        ev = detections_of_model(cfg, self.model_path(), out, progress=False)
        return score_and_report(ev, ReportOptions(plots=cfg.plots))

    def export(self, format: str = "onnx", output: str = "", dynamic: bool = False, static: bool = False,
               **overrides: Any) -> Path:
        """export.py on this model: the ONNX file or OpenVINO IR .xml (default: next to the weights), parity-checked
        against PyTorch."""
        report = export_checked(self.config("export", **overrides), self.model_path(), output, dynamic, static, format)
        if report["max_abs_diff_raw_heads"] > PARITY_ATOL:
            raise RuntimeError(f"{format} and PyTorch differ by {report['max_abs_diff_raw_heads']:.2e} on the raw "
                               f"heads of {report[format]}")
        return Path(report[format])

    def train(self, **overrides: Any) -> Path:
        """train.py with these keys, starting from this Detector's weights ("" = from scratch); returns the run's
        best.pt (last.pt when no evaluation ran), which this Detector uses from then on."""
        cfg = self.config("train", weights=self.weights, **overrides)
        save_dir = Path(Trainer(cfg).train()["save_dir"])
        best = save_dir / "weights" / "best.pt"
        self.weights = str(best if best.is_file() else save_dir / "weights" / "last.pt")
        self._predictor = None
        return Path(self.weights)


def _result(path: str, shape: tuple[int, ...], det: Any, names: list[str]) -> Result:
    d = detections_to_numpy(det)
    return Result(path, (int(shape[0]), int(shape[1])), d["boxes"], d["scores"], d["labels"],
                  [names[int(c)] for c in d["labels"]])
