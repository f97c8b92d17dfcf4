"""The one record every reader produces, the report of what was skipped or repaired on the way, and the
resolved data set (`DataSpec`, built by spec.py) that says where each split's sources are.

VOC, COCO and YOLO-txt all end up as a list of `Record`s (boxes xyxy, float32, continuous 0-based
pixels of the original image), so everything downstream (augmentation, evaluation, anchors) is
written once.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


class DataError(ValueError):
    """A data-set problem the user must fix (no usable sample, bad YAML, missing folder); names the fix."""


@dataclass
class Record:
    """One image and its annotations, in the project's box convention (xyxy, 0-based continuous pixels)."""
    image: str
    width: int
    height: int
    boxes: np.ndarray  # (N, 4) float32 xyxy, original pixels
    classes: np.ndarray  # (N,) int64, contiguous 0..C-1
    difficult: np.ndarray  # (N,) bool: VOC 'difficult' (ignored in training, not counted in VOC mAP)
    iscrowd: np.ndarray  # (N,) bool: COCO crowd regions (ignored in training and matching)
    image_id: int = 0
    area: np.ndarray | None = None  # (N,) float32 COCO segmentation area, when the source gives one

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        n = len(self.boxes)
        self.classes = np.asarray(self.classes, dtype=np.int64).reshape(n)
        self.difficult = (np.zeros(n, bool) if self.difficult is None
                          else np.asarray(self.difficult, dtype=bool).reshape(n))
        self.iscrowd = (np.zeros(n, bool) if self.iscrowd is None
                        else np.asarray(self.iscrowd, dtype=bool).reshape(n))
        if self.area is not None:
            self.area = np.asarray(self.area, dtype=np.float32).reshape(n)

    @property
    def train_mask(self) -> np.ndarray:
        """Boxes that become training targets: not difficult, not crowd."""
        return ~(self.difficult | self.iscrowd)

    def __len__(self) -> int:
        return len(self.boxes)


@dataclass
class DataReport:
    """What loading a split did to the user's data: skipped samples, repairs, counts; `summary()` says it."""
    split: str = ""
    source: str = ""
    seen: int = 0  # samples looked at
    used: int = 0  # samples kept
    negatives: int = 0  # kept samples without any box
    boxes: int = 0  # boxes kept
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)
    repaired: list[tuple[str, str]] = field(default_factory=list)  # (file, what was fixed)
    from_cache: bool = False
    root: str = ""  # file names in the summary are shown relative to this

    def skip(self, file: str | Path, reason: str) -> None:
        self.skipped.append((str(file), reason))

    def repair(self, file: str | Path, what: str) -> None:
        self.repaired.append((str(file), what))

    @property
    def ok(self) -> bool:
        return self.used > 0

    @staticmethod
    def _kind(reason: str) -> str:
        """The reason without its specifics ('box 3: xmin 50 >= xmax 40' -> 'xmin >= xmax')."""
        return reason.split(":", 1)[0] if ":" in reason else reason

    def to_dict(self) -> dict:
        return {"split": self.split, "source": self.source, "root": self.root, "seen": self.seen, "used": self.used,
                "negatives": self.negatives, "boxes": self.boxes,
                "skipped": [list(s) for s in self.skipped], "repaired": [list(r) for r in self.repaired]}

    @classmethod
    def from_dict(cls, d: dict) -> "DataReport":
        r = cls(**{k: d[k] for k in ("split", "source", "root", "seen", "used", "negatives", "boxes")})
        r.skipped = [tuple(s) for s in d["skipped"]]
        r.repaired = [tuple(x) for x in d["repaired"]]
        return r

    def summary(self, max_files: int = 20) -> str:
        """Counts by reason, then the files and reasons (first `max_files` of each list)."""
        where = self.source + (f" ({self.root})" if self.root and self.root != self.source else "")
        head = (f"[{self.split or 'data'}] {where}: {self.used}/{self.seen} images usable "
                f"({self.boxes} boxes, {self.negatives} without boxes), {len(self.skipped)} skipped, "
                f"{len(self.repaired)} repaired" + (" (label cache)" if self.from_cache else ""))
        lines = [head]
        for title, items in (("skipped", self.skipped), ("repaired", self.repaired)):
            if not items:
                continue
            kinds = Counter(self._kind(r) for _, r in items)
            lines.append(f"  {title}: " + ", ".join(f"{k} x{n}" for k, n in kinds.most_common()))
            for f, r in items[:max_files]:
                lines.append(f"    {self._short(f)}: {r}")
            if len(items) > max_files:
                lines.append(f"    ... and {len(items) - max_files} more")
        if not self.ok:
            lines.append("  no usable sample: fix the files above (or point --data at the right folder)")
        return "\n".join(lines)

    def _short(self, f: str) -> str:
        if self.root and f.startswith(self.root.rstrip("/") + "/"):
            return f[len(self.root.rstrip("/")) + 1:]
        return f

    def __str__(self) -> str:
        return self.summary()


@dataclass
class SplitSource:
    """One piece of a split. voc: `path` = a VOC20xx folder, `subset` = ImageSets/Main/<subset>.txt
    (None: every annotation); coco: `path` = instances json, `images` = image folder; yolo: `path` =
    an image folder or a .txt list of images. `holdout` = ("train"|"val", fraction): only that part
    of an unsplit set."""
    path: str
    subset: str | None = None
    images: str | None = None
    holdout: tuple[str, float] | None = None

    def key(self) -> str:
        return f"{self.path}|{self.subset}|{self.images}|{self.holdout}"


@dataclass
class DataSpec:
    """A resolved data set: `format` in voc/coco/yolo, class `names`, `splits` -> sources."""
    format: str
    names: list[str]
    root: Path
    splits: dict[str, list[SplitSource]]
    source: str = ""  # what the user passed
    cat_ids: list[int] | None = None  # coco: category id of each class index (for json export)
    cache: bool = True  # write/read the label cache next to the data
    synthetic: bool = False
    # objects of classes not in `names`: False skips the image as a bad sample (a typo shows);
    # True ("unlisted_classes: drop") drops those objects and keeps the image: training on a subset
    drop_unlisted: bool = False

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def has_split(self, split: str) -> bool:
        return bool(self.splits.get(split))

    def describe(self) -> str:
        parts = [f"{self.format} data set '{self.source}' ({self.num_classes} classes, root {self.root})"]
        for s, srcs in self.splits.items():
            parts.append(f"  {s}: " + ", ".join(_short(x) for x in srcs))
        return "\n".join(parts)


def _short(s: SplitSource) -> str:
    txt = Path(s.path).name + (f"/{s.subset}" if s.subset else "")
    return txt + (f" ({s.holdout[0]} part of a {1 - s.holdout[1]:.0%}/{s.holdout[1]:.0%} split)" if s.holdout else "")
