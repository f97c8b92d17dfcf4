"""The one forward path: letterbox -> model -> decode -> NMS -> un-letterbox.

`predict.py`, `get_map.py` and the evaluation during training all go through `Predictor`, so the boxes
a user sees are exactly the boxes that get scored:

    pred = Predictor.from_weights("runs/train/exp/weights/best.pt")    # or model.onnx, best_openvino_model/
    dets = pred([rgb_image, ...])      # per image {"boxes" (N,4) xyxy original px, "scores", "labels"}

    # over image files, reading one batch ahead (what predict.py and evaluation run):
    for r in predict_paths(pred, paths, batch_size=16): ...

    pred = Predictor.from_config(weights, cfg)   # the shared inference keys of utils/config.py

The "model" is a torch module (used as given: call .eval() first) or an `ExportedModel` (onnxruntime or
OpenVINO, utils/infer/backends.py) made from `export.py`'s file, whose metadata carries classes, input size
and anchors; `backend="auto"` picks the fastest for the weights (a .pt then runs its cached export).
What predict.py does around it (sources, run folder, drawing) is in `utils/infer/predict_run.py`.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nets.assets import ANCHOR_MASKS, MAX_STRIDE, SCALE_X_Y, STRIDES
from nets.decode import decode_outputs, non_max_suppression, unletterbox
from nets.fuse import fuse_conv_bn
from nets.weights.loader import load_model
from utils.config import Config
from utils.data.image import ImageError, load_image
from utils.data.letterbox import letterbox
from utils.device import select_device
from utils.export.cache import cached_export
from utils.export.onnx_export import DEFAULT_OPSET
from utils.infer.backends import EXPORT_FORMAT, ExportedModel, load_exported, resolve_backend
from utils.infer.tta import VIEWS, boxes_to_input, make_view

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class LetterboxInfo:
    """How one image was letterboxed: resize factor, (pad_x, pad_y) offset, original (h, w)."""
    scale: float
    pad: tuple[float, float]
    shape: tuple[int, int]
    input_shape: tuple[int, int] | None = None  # (S_h, S_w) of the network input it was placed in


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        out = dtype
    else:
        key = (dtype or "fp32").lower().replace("float32", "fp32").replace("float16", "fp16").replace("half", "fp16")
        key = key.replace("bfloat16", "bf16")
        if key not in DTYPES:
            raise ValueError(f"unknown dtype '{dtype}'; choose one of {', '.join(DTYPES)}")
        out = DTYPES[key]
    if out == torch.float16 and device.type == "cpu":
        raise ValueError("fp16 inference needs a CUDA device; on CPU use fp32 (or bf16)")
    return out


def _load_exported(path: Path, backend: str, device: torch.device, dtype: torch.dtype, fuse: bool, threads: int,
                   opset: int, log: Callable[[str], Any]) -> ExportedModel:
    """`path` on an exported backend: an .onnx/.xml as is, a .pt through its cached export."""
    precision = {torch.float32: "fp32", torch.bfloat16: "bf16"}.get(dtype)
    if precision is None:
        raise ValueError(f"the {backend} backend runs fp32 (openvino also bf16), not {dtype}; drop --dtype/--half "
                         "or pass --backend torch")
    if path.suffix.lower() == ".pt":
        path = cached_export(path, EXPORT_FORMAT[backend], opset, fuse, log)
    return load_exported(path, backend, device, threads, precision)


class Predictor:
    """Images in, detections in original pixels out; the same steps for every caller."""

    def __init__(self, model: Any, *, img_size: int | None = None, class_names: Sequence[str] | None = None,
                 anchors: Any = None, masks: Sequence[Sequence[int]] | None = None,
                 strides: Sequence[int] | None = None, conf_thres: float = 0.25, iou_thres: float = 0.45,
                 max_det: int = 300, classes: Sequence[int | str] | None = None, agnostic: bool = False,
                 multi_label: bool = False, rect: bool = True, device: str | torch.device | None = None,
                 dtype: str | torch.dtype | None = None, augment: bool = False):
        self.model = model
        self.exported = isinstance(model, ExportedModel)
        if self.exported:
            cfg = model.model_cfg
            self.device = select_device(device) if device is not None else torch.device("cpu")
            self.dtype = torch.float32
            fixed_hw = model.fixed_hw
            if fixed_hw is not None:  # a graph exported for one input size: square letterbox to it
                if img_size and int(img_size) != fixed_hw[0]:
                    raise ValueError(f"{model.path} takes {fixed_hw[0]}x{fixed_hw[1]} inputs only; "
                                     "export it without --static for other sizes")
                img_size, rect = fixed_hw[0], False
                if augment:
                    raise ValueError(f"{model.path} takes one input size only, and --augment runs scaled "
                                     "views; export it without --static to use --augment")
            num_classes = int(cfg["num_classes"])
            defaults = dict(img_size=int(cfg.get("img_size", 416)), class_names=cfg.get("class_names"),
                            anchors=cfg["anchors"], masks=cfg.get("masks", ANCHOR_MASKS),
                            strides=cfg.get("strides", STRIDES), scale_x_y=float(cfg.get("scale_x_y", SCALE_X_Y)))
        else:
            param = next(model.parameters())
            self.device = select_device(device) if device is not None else param.device
            self.dtype = resolve_dtype(dtype, self.device) if dtype is not None else param.dtype
            num_classes = int(model.num_classes)
            defaults = dict(img_size=getattr(model, "img_size", 416), class_names=getattr(model, "class_names", None),
                            anchors=model.anchors, masks=model.masks, strides=model.strides,
                            scale_x_y=float(getattr(model, "scale_x_y", SCALE_X_Y)))
        self.num_classes = num_classes
        self.img_size = int(img_size or defaults["img_size"])
        if self.img_size % MAX_STRIDE or self.img_size <= 0:
            raise ValueError(f"img_size {self.img_size} must be a positive multiple of {MAX_STRIDE}")
        names = class_names or defaults["class_names"] or [str(i) for i in range(num_classes)]
        self.class_names = list(names)
        if len(self.class_names) != num_classes:
            raise ValueError(f"{len(self.class_names)} class names for a {num_classes}-class model")
        anchors = defaults["anchors"] if anchors is None else anchors
        if isinstance(anchors, torch.Tensor):
            anchors = anchors.detach().float().cpu().numpy()
        self.anchors = torch.as_tensor(np.asarray(anchors, dtype=np.float32)).reshape(-1, 2).to(self.device)
        self.masks = [list(m) for m in (masks or defaults["masks"])]
        self.strides = list(strides or defaults["strides"])
        self.scale_x_y = defaults["scale_x_y"]
        self.conf_thres, self.iou_thres, self.max_det = float(conf_thres), float(iou_thres), int(max_det)
        self.classes = self.resolve_classes(classes)
        self.agnostic, self.multi_label, self.rect = bool(agnostic), bool(multi_label), bool(rect)
        self.augment = bool(augment)  # test-time augmentation (utils/infer/tta.py)
        self.times = {"preprocess": 0.0, "inference": 0.0, "postprocess": 0.0, "images": 0}

    # ---- construction -------------------------------------------------------------------------
    @classmethod
    def from_weights(cls, weights: str | Path, device: str | torch.device | None = "",
                     dtype: str | torch.dtype | None = "fp32", fuse: bool = True, threads: int = 0,
                     backend: str | None = None, opset: int = DEFAULT_OPSET, torch_only: bool = False,
                     log: Callable[[str], Any] = print, **kwargs: Any) -> Predictor:
        """Load a checkpoint (.pt), an .onnx or an OpenVINO IR (.xml or its folder); phi, classes, size come
        from the file. backend None: the file's own runtime; "auto" and the rest: utils/infer/backends.py
        (a .pt on an exported backend runs its cached export, made with `fuse` and `opset`).

        threads > 0 caps the CPU threads (torch's global setting, or the exported runtime's).
        """
        path = Path(weights)
        if not (path.is_file() or (path.is_dir() and path.suffix != ".pt")):
            raise FileNotFoundError(f"weights not found: {path} (pass --weights path/to/best.pt, model.onnx "
                                    "or model.xml)")
        dev = select_device(device)
        dt = resolve_dtype(dtype, dev)
        chosen = resolve_backend(backend, path, dev, torch_only, {torch.bfloat16: "bf16"}.get(dt, "fp32"))
        if chosen != "torch":
            try:
                exported = _load_exported(path, chosen, dev, dt, fuse, threads, opset, log)
            except (ImportError, ValueError, OSError) as e:
                if backend != "auto" or path.suffix.lower() != ".pt":
                    raise
                log(f"note: backend auto: {chosen} unavailable ({e}); running torch")
            else:
                return cls(exported, device=dev, **kwargs)
        if threads > 0:
            torch.set_num_threads(int(threads))
        model = load_model(path, device="cpu")
        kwargs.setdefault("anchors", model.anchors.clone())  # float32: bf16 would round 319 to 320
        if fuse:
            model = fuse_conv_bn(model, inplace=True)
        # channels-last: oneDNN (CPU) and cuDNN (fp16/bf16 tensor cores) run these convs faster so
        model = model.to(device=dev, dtype=dt, memory_format=torch.channels_last).eval()
        return cls(model, device=dev, dtype=dt, **kwargs)

    @classmethod
    def from_config(cls, weights: str | Path, cfg: Config, multi_label: bool = False, torch_only: bool = False,
                    log: Callable[[str], Any] = print) -> Predictor:
        """from_weights with the shared inference keys of `cfg` (predict.py, get_map.py and utils/api.py);
        `torch_only`: the caller needs the torch module (e.g. attention maps), so backend auto keeps torch."""
        return cls.from_weights(weights, device=cfg.device, dtype=cfg.dtype, fuse=cfg.fuse, threads=cfg.threads,
                                backend=cfg.backend, opset=cfg.opset, torch_only=torch_only, log=log,
                                img_size=cfg.img_size or None, conf_thres=cfg.conf_thres, iou_thres=cfg.iou_thres,
                                max_det=cfg.max_det, classes=cfg.classes or None, agnostic=cfg.agnostic_nms,
                                multi_label=multi_label, rect=cfg.rect, augment=cfg.augment)

    def resolve_classes(self, classes: Sequence[int | str] | None) -> list[int] | None:
        """Class filter given as ids or names -> ids; unknown ones raise naming the valid choices."""
        if classes is None or len(classes) == 0:
            return None
        ids = []
        for c in classes:
            if isinstance(c, (int, np.integer)) or (isinstance(c, str) and c.strip().isdigit()):
                i = int(c)
                if not 0 <= i < self.num_classes:
                    raise ValueError(f"class id {i} out of range 0..{self.num_classes - 1}")
                ids.append(i)
            elif c in self.class_names:
                ids.append(self.class_names.index(c))
            else:
                raise ValueError(f"unknown class '{c}'; the model knows: {', '.join(self.class_names)}")
        return sorted(set(ids))

    # ---- the three steps ----------------------------------------------------------------------
    def input_shape(self, h: int, w: int) -> tuple[int, int]:
        """Network input (S_h, S_w) for an h x w image.

        rect=True: the long side becomes img_size and the short side is padded only up to the next
        multiple of 32 (a 4:3 photo at 416 runs at 416x320: 23% less compute than 416x416, same
        scale, so the same objects at the same size). rect=False: always img_size x img_size.
        """
        s = self.img_size
        if not self.rect:
            return s, s
        scale = s / max(h, w)
        return (min(s, -(-max(1, round(h * scale)) // 32) * 32), min(s, -(-max(1, round(w * scale)) // 32) * 32))

    def preprocess(self, images: Sequence[np.ndarray], shape: tuple[int, int] | None = None
                   ) -> tuple[torch.Tensor, list[LetterboxInfo]]:
        """RGB uint8 images -> one letterboxed (B, 3, S_h, S_w) batch in [0, 1] on the device, and how
        each image was placed. shape defaults to the smallest that holds every image's input_shape."""
        for img in images:
            if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
                raise ValueError(f"expected an RGB uint8 (H, W, 3) image, got {img.dtype} {img.shape}")
        if shape is None:
            shapes = [self.input_shape(*img.shape[:2]) for img in images]
            shape = (max(h for h, _ in shapes), max(w for _, w in shapes))
        boxed, infos = [], []
        for img in images:
            out, scale, pad = letterbox(img, shape)
            boxed.append(out)
            infos.append(LetterboxInfo(float(scale), (float(pad[0]), float(pad[1])), (img.shape[0], img.shape[1]),
                                       (int(shape[0]), int(shape[1]))))
        # uint8 travels to the device (4x fewer bytes); permute keeps it channels-last in memory
        x = torch.from_numpy(np.stack(boxed)).to(self.device, non_blocking=True).permute(0, 3, 1, 2)
        return x.to(self.dtype).div_(255), infos

    @torch.inference_mode()
    def infer(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Raw head maps [out_s32, out_s16] for a preprocessed batch."""
        if not self.exported:
            return list(self.model(x.to(self.dtype)))
        outs = self.model.run(x.float().contiguous().cpu().numpy())
        return [torch.from_numpy(o).to(self.device) for o in outs]

    @torch.inference_mode()
    def augmented(self, x: torch.Tensor) -> list[torch.Tensor]:
        """--augment: decoded predictions (B, N, 5 + C) of each extra view (utils/infer/tta.py), boxes in pixels of `x`."""
        out = []
        for scale, mirror in VIEWS:
            view, hw = make_view(x, scale, mirror)
            pred = decode_outputs(self.infer(view), self.anchors, self.masks, self.strides, self.scale_x_y)
            boxes = boxes_to_input(pred[..., :4], (x.shape[2], x.shape[3]), hw, mirror)
            out.append(torch.cat((boxes, pred[..., 4:]), -1))
        return out

    @torch.inference_mode()
    def postprocess(self, raw: Sequence[torch.Tensor], infos: Sequence[LetterboxInfo],
                    extra: Sequence[torch.Tensor] = ()) -> list[dict[str, torch.Tensor]]:
        """Decode + NMS in network-input pixels, then boxes back to each original image, clipped.
        `extra`: more decoded predictions for the same inputs (the --augment views), NMS'd together."""
        pred = decode_outputs(raw, self.anchors, self.masks, self.strides, self.scale_x_y)
        if len(extra):
            pred = torch.cat([pred, *extra], 1)
        dets = non_max_suppression(pred, self.conf_thres, self.iou_thres, self.max_det, self.classes,
                                   self.agnostic, self.multi_label)
        for det, info in zip(dets, infos):
            det["boxes"] = unletterbox(det["boxes"], info.scale, info.pad, info.shape)
        return dets

    # ---- entry points -------------------------------------------------------------------------
    def __call__(self, images: Sequence[np.ndarray]) -> list[dict[str, torch.Tensor]]:
        return self.detect(images)[0]

    def detect(self, images: Sequence[np.ndarray]) -> tuple[
            list[dict[str, torch.Tensor]], list[LetterboxInfo], list[list[torch.Tensor]]]:
        """Per image: detections, letterbox info, raw head maps (no batch dim).

        Images are batched by input shape, so an image's boxes never depend on what it was batched
        with (padding is that image's own).
        """
        groups: dict[tuple[int, int], list[int]] = {}
        for i, img in enumerate(images):
            groups.setdefault(self.input_shape(*img.shape[:2]), []).append(i)
        n = len(images)
        dets: list = [None] * n
        infos: list = [None] * n
        raws: list = [None] * n
        for shape, idx in groups.items():
            t0 = self._now()
            x, group_infos = self.preprocess([images[i] for i in idx], shape)
            t1 = self._now()
            raw = self.infer(x)
            extra = self.augmented(x) if self.augment else []
            t2 = self._now()
            group_dets = self.postprocess(raw, group_infos, extra)
            t3 = self._now()
            self.times["preprocess"] += t1 - t0
            self.times["inference"] += t2 - t1
            self.times["postprocess"] += t3 - t2
            for k, i in enumerate(idx):
                dets[i], infos[i] = group_dets[k], group_infos[k]
                raws[i] = [r[k] for r in raw]
        self.times["images"] += n
        return dets, infos, raws

    def _now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def speed(self) -> dict[str, float]:
        """Mean milliseconds per image of each step so far."""
        n = max(1, self.times["images"])
        return {k: 1000 * v / n for k, v in self.times.items() if k != "images"}

    def describe(self) -> str:
        kind = self.model.describe() if self.exported else f"torch {str(self.dtype).replace('torch.', '')}"
        size = f"{self.img_size} ({'rect: long side' if self.rect else 'square'})"
        return (f"{self.num_classes} classes, input {size}, {kind} on {self.device}, "
                f"conf {self.conf_thres}, iou {self.iou_thres}, max_det {self.max_det}"
                + (", test-time augmentation (3 views)" if self.augment else ""))


def detections_to_numpy(det: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    return {"boxes": det["boxes"].float().cpu().numpy(), "scores": det["scores"].float().cpu().numpy(),
            "labels": det["labels"].cpu().numpy()}


def _read_image(path: str) -> tuple[np.ndarray | None, str | None]:
    try:
        return load_image(path), None
    except (ImageError, OSError, ValueError) as e:
        return None, str(e)


@dataclass
class ImageResult:
    """One image of `predict_paths`: its detections, or the error that kept it from being read."""
    path: str
    image: np.ndarray | None = None
    det: dict[str, torch.Tensor] | None = None
    info: LetterboxInfo | None = None
    raw: list[torch.Tensor] | None = None
    error: str | None = None


def predict_paths(predictor: Predictor, paths: Sequence[str | Path], batch_size: int = 8) -> Any:
    """Yield an ImageResult per path, in order: read (threads, one batch ahead), detect in batches.

    The loop predict.py runs over image files; evaluation over image files can use it as is. A file
    that cannot be read yields an ImageResult with `error` set (naming the file) and no detections.
    """
    paths = [str(p) for p in paths]
    bs = max(1, int(batch_size))
    batches = [paths[i:i + bs] for i in range(0, len(paths), bs)]
    # decode the next batch in threads while the model runs on this one (cv2 releases the GIL)
    with ThreadPoolExecutor(max_workers=min(4, bs)) as pool:
        pending = [pool.submit(_read_image, p) for p in batches[0]] if batches else []
        for bi, batch in enumerate(batches):
            loaded = [f.result() for f in pending]
            pending = [pool.submit(_read_image, p) for p in batches[bi + 1]] if bi + 1 < len(batches) else []
            ok = [i for i, (img, _) in enumerate(loaded) if img is not None]
            results: dict[int, ImageResult] = {}
            if ok:
                dets, infos, raws = predictor.detect([loaded[i][0] for i in ok])
                for k, i in enumerate(ok):
                    results[i] = ImageResult(batch[i], loaded[i][0], dets[k], infos[k], raws[k])
            for i, path in enumerate(batch):
                if i in results:
                    yield results[i]
                else:
                    err = loaded[i][1] or "cannot read image"
                    yield ImageResult(path, error=err if path in err else f"{path}: {err}")
