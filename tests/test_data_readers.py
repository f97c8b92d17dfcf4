"""Readers: VOC, COCO and YOLO-txt fixtures written by independent code read back as the same records;
format detection for --data; the label cache; deterministic hold-out splits."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from fixtures import NAMES, FixtureImage, default_images, write_coco, write_voc, write_yolo

from utils.data import DataError, load_data_spec, load_records

IMAGES = default_images()
EXPECT = {im.name: im for im in IMAGES}


def _by_name(records):
    return {Path(r.image).stem: r for r in records}


def _check_same_as_fixture(records, atol=0.0):
    for name, r in _by_name(records).items():
        im = EXPECT[name]
        assert (r.width, r.height) == (im.width, im.height)
        np.testing.assert_allclose(r.boxes, np.array(im.boxes, np.float32).reshape(-1, 4), atol=atol)
        assert r.boxes.dtype == np.float32 and r.classes.dtype == np.int64
        assert r.classes.tolist() == list(im.classes)
        assert r.difficult.dtype == bool and r.iscrowd.dtype == bool


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("readers")
    devkit = write_voc(root / "voc", IMAGES)
    coco_val = write_coco(root / "coco", IMAGES[4:], split="val2017")
    coco_train = write_coco(root / "coco", IMAGES[:4], split="train2017")
    yolo = write_yolo(root / "yolo", IMAGES)
    return {"root": root, "voc": devkit, "coco_train": coco_train, "coco_val": coco_val, "yolo": yolo}


def test_three_readers_agree(sets):
    voc = load_data_spec(str(sets["voc"]), cache=False)
    coco = load_data_spec(str(sets["coco_train"]), cache=False)  # finds its val sibling
    yolo = load_data_spec(str(sets["yolo"]), cache=False)
    assert voc.format == "voc" and coco.format == "coco" and yolo.format == "yolo"
    assert voc.names == coco.names == yolo.names == NAMES
    for split in ("train", "val"):
        rv, _ = load_records(voc, split)
        rc, _ = load_records(coco, split)
        ry, _ = load_records(yolo, split)
        assert sorted(_by_name(rv)) == sorted(_by_name(rc)) == sorted(_by_name(ry))
        _check_same_as_fixture(rv)  # VOC: 1-based inclusive ints -> exact
        _check_same_as_fixture(rc)  # COCO: xywh -> exact
        _check_same_as_fixture(ry, atol=2e-3 * 128)  # YOLO: 6-decimal normalised text


def test_voc_details(sets, tmp_path):
    spec = load_data_spec(str(sets["voc"]), cache=False)
    train, report = load_records(spec, "train")
    r = _by_name(train)
    assert r["a1"].difficult.tolist() == [True]  # kept as a flag
    assert r["a1"].boxes[0].tolist() == [0, 0, 30, 40]  # xmin=1 (1-based) -> x1=0
    assert len(r["a3"]) == 0 and report.negatives == 1
    assert [x.image_id for x in train] == list(range(len(train)))
    # a single VOC20xx folder works too
    year = load_data_spec(str(sets["voc"] / "VOC2007"), cache=False)
    assert year.names == NAMES and len(load_records(year, "train")[0]) == 4


def test_voc_multi_year_yaml(tmp_path):
    write_voc(tmp_path, IMAGES[:3], splits={"trainval": ["a0", "a1", "a2"], "test": ["a0"]}, year="VOC2007")
    write_voc(tmp_path, IMAGES[3:], splits={"trainval": ["a3", "a4", "a5"]}, year="VOC2012")
    cfg = tmp_path / "voc.yaml"
    cfg.write_text("format: voc\npath: VOCdevkit\ntrain: [VOC2007/trainval, VOC2012/trainval]\n"
                   "val: VOC2007/test\nnames: [cat, dog, bird]\n")
    spec = load_data_spec(str(cfg), cache=False)
    train, _ = load_records(spec, "train")
    assert sorted(_by_name(train)) == ["a0", "a1", "a2", "a3", "a4", "a5"]
    _check_same_as_fixture(train)
    assert len(load_records(spec, "val")[0]) == 1


def test_voc_names_from_annotations(tmp_path):
    """No classes.txt: names come from the annotations, in VOC's order when they are VOC classes."""
    imgs = [FixtureImage("b0", 64, 64, [(1, 1, 20, 20), (30, 30, 60, 60)], [0, 1]),
            FixtureImage("b1", 64, 64, [(1, 1, 20, 20)], [2])]
    devkit = write_voc(tmp_path / "v", imgs, names=["person", "aeroplane", "dog"], classes_txt=False,
                       splits={"train": ["b0"], "val": ["b1"]})
    assert load_data_spec(str(devkit), cache=False).names == ["aeroplane", "dog", "person"]  # VOC order
    devkit2 = write_voc(tmp_path / "w", imgs, names=["zebra", "apple", "kiwi"], classes_txt=False,
                        splits={"train": ["b0"], "val": ["b1"]})
    assert load_data_spec(str(devkit2), cache=False).names == ["apple", "kiwi", "zebra"]  # sorted


def test_coco_details(tmp_path):
    imgs = [FixtureImage("c0", 96, 64, [(4, 6, 40, 50), (50, 10, 90, 60)], [0, 2]), FixtureImage("c1", 64, 64)]
    path = write_coco(tmp_path, imgs, cat_ids=[7, 3, 12], crowd={"c0": [False, True]})
    spec = load_data_spec(str(path), cache=False)
    # categories in id order: 3 (dog), 7 (cat), 12 (bird); index <-> id both ways
    assert spec.names == ["dog", "cat", "bird"] and spec.cat_ids == [3, 7, 12]
    recs = []
    for split in ("train", "val"):  # one json without a sibling: a stable 90/10 split
        if spec.has_split(split):
            try:
                recs += load_records(spec, split)[0]
            except DataError:
                pass  # a split may be empty with two images
    r = _by_name(recs)
    assert set(r) == {"c0", "c1"}
    assert r["c0"].classes.tolist() == [1, 2] and r["c0"].iscrowd.tolist() == [False, True]
    assert [spec.cat_ids[c] for c in r["c0"].classes] == [7, 12]
    assert r["c0"].image_id == 100 and r["c1"].image_id == 101 and len(r["c1"]) == 0  # negatives kept
    np.testing.assert_allclose(r["c0"].area, [36 * 44, 40 * 50])


def test_coco_against_pycocotools(sets):
    """Our boxes equal pycocotools' own xywh annotations, converted by hand."""
    from pycocotools.coco import COCO

    spec = load_data_spec(str(sets["coco_train"]), cache=False)
    recs, _ = load_records(spec, "train")
    ref = COCO(str(sets["coco_train"]))
    for r in recs:
        anns = ref.loadAnns(ref.getAnnIds(imgIds=[r.image_id]))
        want = np.array([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                         for a in anns], np.float32).reshape(-1, 4)
        np.testing.assert_array_equal(r.boxes, want)
        assert [spec.cat_ids[c] for c in r.classes] == [a["category_id"] for a in anns]


def test_coco_root_and_yaml(sets, tmp_path):
    spec = load_data_spec(str(sets["root"] / "coco"), cache=False)  # root with annotations/
    assert spec.format == "coco" and spec.has_split("train") and spec.has_split("val")
    cfg = tmp_path / "coco.yaml"
    cfg.write_text(f"format: coco\npath: {sets['root'] / 'coco'}\n"
                   "train: annotations/instances_train2017.json\n"
                   f"val: {{ann: annotations/instances_val2017.json, images: {sets['root'] / 'coco' / 'val2017'}}}\n")
    spec = load_data_spec(str(cfg), cache=False)
    _check_same_as_fixture(load_records(spec, "val")[0])


def test_yolo_details(tmp_path):
    root = write_yolo(tmp_path / "y", IMAGES)
    (root / "labels" / "train" / "a0.txt").unlink()  # missing label file: a negative, counted
    spec = load_data_spec(str(root), cache=False)
    recs, report = load_records(spec, "train")
    r = _by_name(recs)
    assert len(r["a0"]) == 0 and len(r["a3"]) == 0  # a3: empty label file = background
    assert any("no label file" in why for _, why in report.repaired)
    # Ultralytics-style YAML with a names mapping, and a .txt list of images
    (root / "train.txt").write_text("".join(f"images/train/{n}.jpg\n" for n in ("a1", "a2")))
    cfg = root / "my.yaml"
    cfg.write_text("path: .\ntrain: train.txt\nval: images/val\nnames: {0: cat, 1: dog, 2: bird}\n")
    spec = load_data_spec(str(cfg), cache=False)
    assert spec.format == "yolo" and spec.names == NAMES
    assert sorted(_by_name(load_records(spec, "train")[0])) == ["a1", "a2"]


def test_yolo_roboflow_layout_and_holdout(tmp_path):
    root = tmp_path / "rf"
    for s, ids in (("train", ["a0", "a1", "a2", "a3"]), ("valid", ["a4", "a5"])):
        write_yolo(tmp_path / "tmp", IMAGES, splits={s: ids})
        (root / s).mkdir(parents=True, exist_ok=True)
        os.rename(tmp_path / "tmp" / "images" / s, root / s / "images")
        os.rename(tmp_path / "tmp" / "labels" / s, root / s / "labels")
    (root / "data.yaml").write_text("names: [cat, dog, bird]\nnc: 3\n")
    spec = load_data_spec(str(root), cache=False)
    assert spec.names == NAMES
    assert sorted(_by_name(load_records(spec, "val")[0])) == ["a4", "a5"]
    # no splits at all: a stable hash split, disjoint and complete
    flat = write_yolo(tmp_path / "flat", IMAGES, splits={"all": [i.name for i in IMAGES]})
    os.rename(flat / "images" / "all", flat / "images2")
    os.rename(flat / "labels" / "all", flat / "labels2")
    os.rmdir(flat / "images"), os.rmdir(flat / "labels")
    os.rename(flat / "images2", flat / "images")
    os.rename(flat / "labels2", flat / "labels")
    from utils.data.load import in_holdout

    assert in_holdout("x/abc.jpg", 0.5) == in_holdout("y/abc.jpg", 0.5)  # by file name only
    spec = load_data_spec(str(flat), cache=False)
    names = set()
    for s in ("train", "val"):
        try:
            names |= set(_by_name(load_records(spec, s)[0]))
        except DataError:
            pass
    assert names == set(EXPECT)


def test_label_cache(sets, tmp_path):
    devkit = write_voc(tmp_path, IMAGES)
    spec = load_data_spec(str(devkit))
    recs1, rep1 = load_records(spec, "train")
    assert not rep1.from_cache and list(devkit.glob("labels_train_*.cache"))
    recs2, rep2 = load_records(load_data_spec(str(devkit)), "train")
    assert rep2.from_cache and rep2.used == rep1.used
    for a, b in zip(recs1, recs2):
        assert a.image == b.image and (a.width, a.height) == (b.width, b.height)
        np.testing.assert_array_equal(a.boxes, b.boxes)
        np.testing.assert_array_equal(a.classes, b.classes)
        np.testing.assert_array_equal(a.difficult, b.difficult)
    # editing an annotation invalidates the cache
    xml = devkit / "VOC2007" / "Annotations" / "a0.xml"
    xml.write_text(xml.read_text().replace("<xmax>40</xmax>", "<xmax>41</xmax>"))
    st = xml.stat()
    os.utime(xml, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    recs3, rep3 = load_records(load_data_spec(str(devkit)), "train")
    assert not rep3.from_cache and _by_name(recs3)["a0"].boxes[0, 2] == 41


def test_bad_data_arguments(tmp_path):
    with pytest.raises(DataError, match="path not found"):
        load_data_spec(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no data set recognised"):
        load_data_spec(str(tmp_path / "empty"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("format: voc\ntrain: [\n")
    with pytest.raises(DataError, match="not valid YAML"):
        load_data_spec(str(bad))
    spec = load_data_spec(str(write_voc(tmp_path / "v", IMAGES)), cache=False)
    with pytest.raises(DataError, match="split 'test' is not defined"):
        load_records(spec, "test")
    js = tmp_path / "x.json"
    js.write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        load_data_spec(str(js))
