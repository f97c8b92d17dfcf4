"""Tiny data sets written to disk in each format from one list of images and boxes (tests, demos).

The same `FixtureImage`s written as VOC, COCO and YOLO-txt must read back as the same records;
each box is drawn as a filled rectangle so augmentation tests can check that boxes stay on objects.
Writers are independent of the readers (plain string / json formatting).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

NAMES = ["cat", "dog", "bird"]


@dataclass
class FixtureImage:
    name: str
    width: int
    height: int
    boxes: list[tuple[int, int, int, int]] = field(default_factory=list)  # xyxy, 0-based continuous, ints
    classes: list[int] = field(default_factory=list)
    difficult: list[bool] | None = None
    noise: bool = False  # background of random grey levels (seeded by the name) instead of a flat one


def default_images() -> list[FixtureImage]:
    """Six small images of different sizes and aspect ratios; one without objects."""
    return [
        FixtureImage("a0", 96, 64, [(4, 6, 40, 50), (50, 10, 90, 60)], [0, 1]),
        FixtureImage("a1", 64, 96, [(0, 0, 30, 40)], [2], [True]),
        FixtureImage("a2", 128, 80, [(10, 10, 60, 70), (70, 5, 120, 40), (80, 45, 126, 78)], [1, 1, 0]),
        FixtureImage("a3", 80, 80, []),
        FixtureImage("a4", 112, 72, [(30, 20, 90, 60)], [2]),
        FixtureImage("a5", 72, 112, [(5, 40, 60, 100), (20, 5, 50, 30)], [0, 2]),
    ]


def random_images(count: int, size: int = 96, seed: int = 0, num_classes: int = 2) -> list[FixtureImage]:
    """`count` square size x size images named 000000, 000001, ... with 1-2 random boxes each (a fifth to a half
    of the side) on noise, for the tests that train or evaluate on a small set."""
    rng = np.random.default_rng(seed)
    images = []
    for i in range(count):
        boxes, classes = [], []
        for _ in range(int(rng.integers(1, 3))):
            s = int(rng.integers(size // 5, size // 2))
            x1, y1 = (int(v) for v in rng.integers(0, size - s, 2))
            boxes.append((x1, y1, x1 + s, y1 + s))
            classes.append(int(rng.integers(0, num_classes)))
        images.append(FixtureImage(f"{i:06d}", size, size, boxes, classes, noise=True))
    return images


COLOURS = [(255, 255, 255), (0, 200, 255), (255, 80, 0)]  # BGR per class


def draw(img: FixtureImage, background: int = 30) -> np.ndarray:
    """BGR image: dark background, each box a filled rectangle in its class colour."""
    out = np.full((img.height, img.width, 3), background, np.uint8)
    if img.noise:
        seed = int.from_bytes(img.name.encode(), "little")
        out = np.random.default_rng(seed).integers(0, 80, out.shape, dtype=np.uint8)
    for (x1, y1, x2, y2), c in zip(img.boxes, img.classes):
        out[y1:y2, x1:x2] = COLOURS[c % len(COLOURS)]
    return out


def write_voc(root: Path, images: list[FixtureImage], names: list[str] = NAMES,
              splits: dict[str, list[str]] | None = None, year: str = "VOC2007", classes_txt: bool = True) -> Path:
    """root/VOCdevkit/<year>/{Annotations, JPEGImages, ImageSets/Main}; returns the devkit folder."""
    y = Path(root) / "VOCdevkit" / year
    for d in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (y / d).mkdir(parents=True, exist_ok=True)
    for im in images:
        cv2.imwrite(str(y / "JPEGImages" / f"{im.name}.jpg"), draw(im), [cv2.IMWRITE_JPEG_QUALITY, 95])
        diff = im.difficult or [False] * len(im.boxes)
        objs = "".join(
            f"<object><name>{names[c]}</name><difficult>{int(d)}</difficult><bndbox><xmin>{b[0] + 1}</xmin>"
            f"<ymin>{b[1] + 1}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
            for b, c, d in zip(im.boxes, im.classes, diff))
        (y / "Annotations" / f"{im.name}.xml").write_text(
            f"<annotation><filename>{im.name}.jpg</filename><size><width>{im.width}</width>"
            f"<height>{im.height}</height><depth>3</depth></size>{objs}</annotation>")
    splits = splits or {"train": [i.name for i in images[:4]], "val": [i.name for i in images[4:]]}
    for s, ids in splits.items():
        (y / "ImageSets" / "Main" / f"{s}.txt").write_text("".join(f"{i}\n" for i in ids))
    if classes_txt:
        (Path(root) / "VOCdevkit" / "classes.txt").write_text("\n".join(names) + "\n")
    return Path(root) / "VOCdevkit"


def write_coco(root: Path, images: list[FixtureImage], names: list[str] = NAMES, cat_ids: list[int] | None = None,
               split: str = "val2017", crowd: dict[str, list[bool]] | None = None) -> Path:
    """root/annotations/instances_<split>.json + root/<split>/*.jpg; returns the json path."""
    cat_ids = cat_ids or [3 * i + 1 for i in range(len(names))]  # sparse ids, like COCO's
    (Path(root) / split).mkdir(parents=True, exist_ok=True)
    (Path(root) / "annotations").mkdir(parents=True, exist_ok=True)
    imgs, anns = [], []
    for k, im in enumerate(images):
        cv2.imwrite(str(Path(root) / split / f"{im.name}.jpg"), draw(im), [cv2.IMWRITE_JPEG_QUALITY, 95])
        imgs.append({"id": 100 + k, "file_name": f"{im.name}.jpg", "width": im.width, "height": im.height})
        cr = (crowd or {}).get(im.name, [False] * len(im.boxes))
        for (x1, y1, x2, y2), c, isc in zip(im.boxes, im.classes, cr):
            anns.append({"id": len(anns) + 1, "image_id": 100 + k, "category_id": cat_ids[c],
                         "bbox": [x1, y1, x2 - x1, y2 - y1], "area": float((x2 - x1) * (y2 - y1)),
                         "iscrowd": int(isc)})
    cats = [{"id": i, "name": n, "supercategory": "x"} for i, n in zip(cat_ids, names)]
    path = Path(root) / "annotations" / f"instances_{split}.json"
    path.write_text(json.dumps({"images": imgs, "annotations": anns, "categories": cats}))
    return path


def write_yolo(root: Path, images: list[FixtureImage], names: list[str] = NAMES,
               splits: dict[str, list[str]] | None = None) -> Path:
    """root/images/<split>/*.jpg + root/labels/<split>/*.txt + root/classes.txt; returns root."""
    splits = splits or {"train": [i.name for i in images[:4]], "val": [i.name for i in images[4:]]}
    by_name = {i.name: i for i in images}
    for s, ids in splits.items():
        (Path(root) / "images" / s).mkdir(parents=True, exist_ok=True)
        (Path(root) / "labels" / s).mkdir(parents=True, exist_ok=True)
        for n in ids:
            im = by_name[n]
            cv2.imwrite(str(Path(root) / "images" / s / f"{n}.jpg"), draw(im), [cv2.IMWRITE_JPEG_QUALITY, 95])
            rows = [f"{c} {(x1 + x2) / 2 / im.width:.6f} {(y1 + y2) / 2 / im.height:.6f} "
                    f"{(x2 - x1) / im.width:.6f} {(y2 - y1) / im.height:.6f}"
                    for (x1, y1, x2, y2), c in zip(im.boxes, im.classes)]
            (Path(root) / "labels" / s / f"{n}.txt").write_text("\n".join(rows) + ("\n" if rows else ""))
    (Path(root) / "classes.txt").write_text("\n".join(names) + "\n")
    return Path(root)
