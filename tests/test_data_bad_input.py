"""Every kind of bad input a user's data set contains: skipped or repaired, counted, named, never a crash."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from fixtures import default_images, write_coco, write_voc, write_yolo
from PIL import Image

from utils.config import Config
from utils.data import DataError, load_data_spec, load_image, load_records

HYP = Config()  # the default augmentation


def _xml(name, w, h, objs):
    body = "".join(f"<object><name>{n}</name><difficult>0</difficult><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
                   f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>" for n, b in objs)
    return f"<annotation><filename>{name}.jpg</filename><size><width>{w}</width><height>{h}</height></size>{body}</annotation>"


@pytest.fixture(scope="module")
def bad_voc(tmp_path_factory):
    """A VOC set with one good image and one image per problem."""
    root = tmp_path_factory.mktemp("bad")
    good = default_images()[:2]
    devkit = write_voc(root, good, splits={"train": ["a0", "a1"]})
    y = devkit / "VOC2007"
    jpg, ann = y / "JPEGImages", y / "Annotations"
    rgb = np.zeros((48, 64, 3), np.uint8)
    rgb[10:30, 20:50] = (200, 40, 10)
    ok_obj = [("cat", (21, 11, 50, 30))]
    ids = []

    def add(name, xml=None, image=True):
        ids.append(name)
        if xml is not None:
            (ann / f"{name}.xml").write_text(xml)
        if image is True:
            cv2.imwrite(str(jpg / f"{name}.jpg"), rgb[:, :, ::-1])

    add("missing_image", _xml("missing_image", 64, 48, ok_obj), image=False)
    add("zero_bytes", _xml("zero_bytes", 64, 48, ok_obj), image=False)
    (jpg / "zero_bytes.jpg").write_bytes(b"")
    add("not_an_image", _xml("not_an_image", 64, 48, ok_obj), image=False)
    (jpg / "not_an_image.jpg").write_bytes(b"this is not a jpeg at all" * 10)
    add("xml_broken", "<annotation><object><name>cat</name>", image=True)
    add("xml_empty", "", image=True)
    add("no_xml", None, image=True)
    add("inverted_box", _xml("inverted_box", 64, 48, [("cat", (50, 11, 21, 30))]))
    add("outside_box", _xml("outside_box", 64, 48, [("cat", (100, 11, 120, 30))]))
    add("partly_outside", _xml("partly_outside", 64, 48, [("cat", (21, 11, 90, 30))]))
    add("unknown_class", _xml("unknown_class", 64, 48, [("unicorn", (21, 11, 50, 30))]))
    add("no_objects", _xml("no_objects", 64, 48, []))
    add("nan_box", _xml("nan_box", 64, 48, [("cat", ("abc", 11, 50, 30))]))
    # colour / depth / orientation repairs (PNGs via the filename tag)
    for name, arr in (("gray", rgb[:, :, 0]), ("rgba", np.dstack([rgb, np.full((48, 64), 128, np.uint8)])),
                      ("deep16", rgb[:, :, 0].astype(np.uint16) * 257)):
        ids.append(name)
        cv2.imwrite(str(jpg / f"{name}.png"), arr)
        (ann / f"{name}.xml").write_text(_xml(name, 64, 48, ok_obj).replace(f"{name}.jpg", f"{name}.png"))
    ids.append("cmyk")
    Image.fromarray(rgb).convert("CMYK").save(jpg / "cmyk.jpg", quality=95)
    (ann / "cmyk.xml").write_text(_xml("cmyk", 64, 48, ok_obj))
    ids.append("exif_rot")  # stored 64x48 landscape, displayed 48x64 portrait (orientation 6 = rotate 90 cw)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(rgb).save(jpg / "exif_rot.jpg", exif=exif.tobytes(), quality=95)
    # box in the displayed frame: the red patch x 20..50, y 10..30 rotated cw -> x 18..38, y 20..50
    (ann / "exif_rot.xml").write_text(_xml("exif_rot", 48, 64, [("cat", (19, 21, 38, 50))]))
    ids.append("truncated")
    data = cv2.imencode(".jpg", rgb)[1].tobytes()
    (jpg / "truncated.jpg").write_bytes(data[: len(data) * 2 // 3])
    (ann / "truncated.xml").write_text(_xml("truncated", 64, 48, ok_obj))
    main = y / "ImageSets" / "Main"
    (main / "train.txt").write_text("".join(f"{i}\n" for i in ["a0", "a1"] + ids))
    (main / "val.txt").write_text("missing_image\nzero_bytes\n")  # nothing usable
    return devkit


def _reasons(items):
    return {Path(f).stem: why for f, why in items}


def test_bad_voc_skipped_and_repaired(bad_voc):
    spec = load_data_spec(str(bad_voc), cache=False)
    recs, report = load_records(spec, "train")
    skipped, repaired = _reasons(report.skipped), _reasons(report.repaired)
    expect_skip = {
        "missing_image": "image missing", "zero_bytes": "zero-byte", "not_an_image": "does not decode",
        "xml_broken": "XML does not parse", "xml_empty": "empty", "no_xml": "annotation file missing",
        "inverted_box": "xmin >= xmax", "outside_box": "outside the image", "unknown_class": "unknown class",
        "nan_box": "not a number",
    }
    for name, why in expect_skip.items():
        assert name in skipped, name
        assert why in skipped[name], (name, skipped[name])
    expect_repair = {"partly_outside": "clipped", "gray": "grayscale", "rgba": "alpha", "deep16": "16-bit",
                     "cmyk": "CMYK", "exif_rot": "EXIF orientation", "truncated": "truncated JPEG"}
    for name, why in expect_repair.items():
        assert name in repaired and why in repaired[name], (name, repaired.get(name))
    kept = {Path(r.image).stem: r for r in recs}
    assert set(kept) == {"a0", "a1", "no_objects", "partly_outside", "gray", "rgba", "deep16", "cmyk",
                         "exif_rot", "truncated"}
    assert report.seen == 2 + len(expect_skip) + len(expect_repair) + 1  # good ones + no_objects
    assert report.used == len(kept) and len(report.skipped) == len(expect_skip)
    assert kept["partly_outside"].boxes.tolist() == [[20, 10, 64, 30]]
    assert (kept["exif_rot"].width, kept["exif_rot"].height) == (48, 64)
    text = report.summary()
    for name in list(expect_skip) + list(expect_repair):
        assert name in text
    assert "xmin >= xmax x1" in text  # counts by reason


def test_repaired_images_decode_as_rgb(bad_voc):
    recs, _ = load_records(load_data_spec(str(bad_voc), cache=False), "train")
    kept = {Path(r.image).stem: r for r in recs}
    for name in ("gray", "rgba", "deep16", "cmyk", "exif_rot", "truncated"):
        r = kept[name]
        img = load_image(r.image, (r.width, r.height))
        assert img.dtype == np.uint8 and img.shape == (r.height, r.width, 3), name
    cmyk = load_image(kept["cmyk"].image)
    assert np.abs(cmyk[20, 35].astype(int) - [200, 40, 10]).max() < 12  # colours survive CMYK
    rot = load_image(kept["exif_rot"].image)  # rotated: the red patch sits inside the box given for it
    x1, y1, x2, y2 = kept["exif_rot"].boxes[0].astype(int)
    assert rot[y1 + 2:y2 - 2, x1 + 2:x2 - 2, 0].min() > 150 and rot[5, 5, 0] < 60


def test_no_usable_sample_is_a_clear_error(bad_voc):
    with pytest.raises(DataError) as e:
        load_records(load_data_spec(str(bad_voc), cache=False), "val")
    assert "no usable sample" in str(e.value) and "missing_image" in str(e.value) and "zero_bytes" in str(e.value)


def test_bad_yolo_labels(tmp_path):
    root = write_yolo(tmp_path, default_images())
    lab = root / "labels" / "train"
    (lab / "a0.txt").write_text("0 0.5 0.5 0.2\n")  # 4 values
    (lab / "a1.txt").write_text("1 120 80 30 40\n")  # pixels, not fractions
    (lab / "a2.txt").write_text("7 0.5 0.5 0.2 0.2\n")  # class out of range
    (lab / "a3.txt").write_text("cat 0.5 0.5 0.2 0.2\n")  # not a number
    recs, report = load_records(load_data_spec(str(root), cache=False), "val")  # val untouched: fine
    assert report.used == 2
    with pytest.raises(DataError) as e:
        load_records(load_data_spec(str(root), cache=False), "train")
    msg = str(e.value)
    for name, why in (("a0", "line 1 has 4 values"), ("a1", "not normalised"), ("a2", "unknown class"),
                      ("a3", "not a number")):
        assert f"{name}.txt: " in msg and why in msg, (name, msg)


def test_yolo_repairs(tmp_path):
    root = write_yolo(tmp_path, default_images())
    lab = root / "labels" / "train"
    (lab / "a0.txt").write_text("0 0.5 0.5 0.2 0.2\n0 0.5 0.5 0.2 0.2\n")  # duplicate row
    (lab / "a1.txt").write_text("1 0.95 0.5 0.3 0.2\n")  # sticks out on the right: clipped
    (lab / "a2.txt").write_text("2 0.1 0.1 0.3 0.1 0.3 0.3 0.1 0.3\n")  # segment polygon
    recs, report = load_records(load_data_spec(str(root), cache=False), "train")
    r = {Path(x.image).stem: x for x in recs}
    rep = _reasons(report.repaired)
    assert len(r["a0"]) == 1 and "duplicate" in rep["a0"]
    assert r["a1"].boxes[0, 2] == 64 and "clipped" in rep["a1"]
    np.testing.assert_allclose(r["a2"].boxes[0], [0.1 * 128, 0.1 * 80, 0.3 * 128, 0.3 * 80], atol=1e-3)


def test_bad_coco(tmp_path):
    imgs = default_images()[:3]
    path = write_coco(tmp_path, imgs)
    d = json.loads(path.read_text())
    d["annotations"][0]["bbox"] = [10, 10, -5, 20]  # negative width -> a0 skipped
    d["annotations"].append({"id": 99, "image_id": d["images"][1]["id"], "category_id": 999,
                             "bbox": [1, 1, 5, 5], "iscrowd": 0})  # unknown category -> a1 skipped
    path.write_text(json.dumps(d))
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"format: coco\npath: {tmp_path}\ntrain: {path}\nval: {path}\n")
    recs, report = load_records(load_data_spec(str(cfg), cache=False), "train")
    assert [Path(r.image).stem for r in recs] == ["a2"]
    reasons = sorted(why.split(":")[0] for _, why in report.skipped)
    assert reasons == ["unknown class", "xmin >= xmax"]
    assert sorted(f.split("[")[1] for f, _ in report.skipped) == ["image id 100: a0.jpg]", "image id 101: a1.jpg]"]
    assert "category_id 999" in report.summary()


def test_train_dataset_survives_files_vanishing(tmp_path):
    """Images deleted or corrupted after indexing: replaced deterministically and counted, no crash."""
    from utils.data import TrainDataset, build_loader

    devkit = write_voc(tmp_path, default_images())
    recs, _ = load_records(load_data_spec(str(devkit), cache=False), "train")
    Path(recs[1].image).unlink()
    Path(recs[2].image).write_bytes(b"garbage")
    ds = TrainDataset(recs, 64, HYP, seed=1)
    outs = [ds[i] for i in range(len(ds))]
    assert all(o[0].shape == (3, 64, 64) for o in outs)
    assert ds.load_failures > 0
    again = TrainDataset(recs, 64, HYP, seed=1)
    for i in range(len(ds)):  # substitution is deterministic
        a, b = outs[i], again[i]
        assert (a[0] == b[0]).all() and (a[1] == b[1]).all()
    loader = build_loader(ds, batch_size=2, workers=2, seed=0)
    n = sum(len(b[0]) for b in loader)
    assert n == len(ds) and ds.load_failures > 0  # counted across worker processes
    # every image gone: a clear error, not a hang
    for r in recs:
        Path(r.image).unlink(missing_ok=True)
    with pytest.raises(DataError, match="failed to load"):
        TrainDataset(recs, 64, HYP)[0]


def _image_reasons(items):
    """{image stem: reason}; COCO names the json and the image ('x.json [image id 7: a2.jpg]')."""
    return {Path(f.rstrip("]").split(": ")[-1]).stem: why for f, why in items}


def _subset_yaml(tmp_path: Path, fmt: str, unlisted: str | None) -> tuple[Path, list[str]]:
    """The six fixture images (cat, dog, bird) in `fmt`, and a data YAML that lists only two classes."""
    imgs = default_images()
    every = [i.name for i in imgs]
    if fmt == "voc":
        root, train, names = write_voc(tmp_path, imgs, splits={"train": every}), "VOC2007/train", ["bird", "cat"]
    elif fmt == "coco":
        root, names = tmp_path, ["bird", "cat"]
        train = str(write_coco(tmp_path, imgs))
    else:  # YOLO-txt: names by index, so the subset is the first two ids and "bird" (id 2) is unlisted
        root, train, names = write_yolo(tmp_path, imgs, splits={"train": every}), "images/train", ["cat", "dog"]
    cfg = tmp_path / f"{fmt}.yaml"
    cfg.write_text(f"format: {fmt}\npath: {root}\ntrain: {train}\nnames: {names}\n"
                   + (f"unlisted_classes: {unlisted}\n" if unlisted else ""))
    return cfg, names


@pytest.mark.parametrize("fmt", ["voc", "coco", "yolo"])
def test_unlisted_classes_skip_the_image_or_drop_the_objects(tmp_path, fmt):
    """A names list shorter than the labels: by default such images are skipped and the message says how
    to train on the subset; `unlisted_classes: drop` keeps every image and only leaves those objects out."""
    cfg, names = _subset_yaml(tmp_path, fmt, None)
    unlisted = "bird" if fmt == "yolo" else "dog"
    full = {i.name: [(b, ["cat", "dog", "bird"][c]) for b, c in zip(i.boxes, i.classes)] for i in default_images()}
    holders = {n for n, objs in full.items() if any(c == unlisted for _, c in objs)}
    recs, report = load_records(load_data_spec(str(cfg)), "train")  # label cache on: it must not mix the modes
    skipped = _image_reasons(report.skipped)
    assert set(skipped) == holders and len(recs) == 6 - len(holders)
    assert all("unknown class" in why and "unlisted_classes: drop" in why for why in skipped.values())

    cfg.write_text(cfg.read_text() + "unlisted_classes: drop\n")
    recs, report = load_records(load_data_spec(str(cfg)), "train")
    assert not report.skipped and report.used == 6
    repaired = _image_reasons(report.repaired)
    assert set(repaired) == holders
    assert all(why.startswith("objects of unlisted classes dropped: ") for why in repaired.values())
    for r in recs:
        want = [(b, names.index(c)) for b, c in full[Path(r.image).stem] if c != unlisted]
        assert r.classes.tolist() == [c for _, c in want], r.image
        np.testing.assert_allclose(r.boxes, np.array([b for b, _ in want], np.float32).reshape(-1, 4), atol=0.02)


def test_unlisted_classes_bad_value_names_the_file(tmp_path):
    cfg, _ = _subset_yaml(tmp_path, "voc", "maybe")
    with pytest.raises(DataError, match=r"v?oc.yaml: 'unlisted_classes: maybe' must be one of skip_image, drop"):
        load_data_spec(str(cfg))
