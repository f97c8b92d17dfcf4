"""The built-in data set: deterministic bytes, VOC layout read by the VOC reader, boxes on the shapes,
safe when two processes generate it at once."""
from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from utils.data import load_data_spec, load_image, load_records
from utils.data.synthetic import CLASSES, ensure_synthetic, generate, render_image

ROOT = Path(__file__).resolve().parent.parent


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file() and not p.name.endswith(".cache"):
            h.update(str(p.relative_to(folder)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_same_seed_same_bytes(tmp_path):
    generate(tmp_path / "a", seed=3, num_train=6, num_val=2, num_test=1)
    generate(tmp_path / "b", seed=3, num_train=6, num_val=2, num_test=1)
    generate(tmp_path / "c", seed=4, num_train=6, num_val=2, num_test=1)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b") != _digest(tmp_path / "c")


def test_read_through_the_voc_path(tmp_path):
    cfg = tmp_path / "syn.yaml"
    cfg.write_text(f"format: synthetic\npath: {tmp_path / 'syn'}\nseed: 0\nnum_train: 12\nnum_val: 4\nnum_test: 2\n")
    spec = load_data_spec(str(cfg))
    assert spec.format == "voc" and spec.names == CLASSES and spec.synthetic
    assert (tmp_path / "syn" / "classes.txt").read_text().split() == CLASSES
    sizes = {}
    for split, n in (("train", 12), ("val", 4), ("test", 2)):
        recs, report = load_records(spec, split)
        assert len(recs) == n and not report.skipped and not report.repaired
        sizes[split] = {Path(r.image).name for r in recs}
        for r in recs:
            assert 1 <= len(r) <= 6 and 288 <= r.width <= 352 and 288 <= r.height <= 352
            wh = r.boxes[:, 2:] - r.boxes[:, :2]
            assert (wh >= 8).all() and (wh <= 200).all()
    assert not (sizes["train"] & sizes["val"]) and not (sizes["val"] & sizes["test"])


def test_boxes_are_on_the_shapes():
    """Rendered boxes are tight: each box differs from the pixels just outside it (the shape is there),
    and every class appears."""
    seen = set()
    for i in range(30):
        img, boxes, classes = render_image(np.random.default_rng([0, i]))
        seen.update(classes.tolist())
        assert img.dtype == np.uint8 and img.ndim == 3
        assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= img.shape[1]).all() and (boxes[:, 3] <= img.shape[0]).all()
        assert (boxes[:, 2:] > boxes[:, :2]).all()
    assert seen == set(range(len(CLASSES)))


_RACE = """
import sys
sys.path.insert(0, {root!r})
from utils.data.synthetic import ensure_synthetic
print(ensure_synthetic({target!r}, seed=1, num_train=40, num_val=8, num_test=2))
"""


def test_two_processes_generate_once(tmp_path):
    target = tmp_path / "datasets" / "synthetic"
    code = _RACE.format(root=str(ROOT), target=str(target))
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert sum("generating" in err for _, err in outs) == 1  # the second waited and reused it
    assert sorted(p.name for p in target.parent.iterdir()) == [".synthetic.lock", "synthetic"]  # no leftovers
    assert len(list((target / "VOCdevkit" / "VOC2007" / "JPEGImages").iterdir())) == 50
    before = _digest(target)
    ensure_synthetic(target, seed=1, num_train=40, num_val=8, num_test=2)  # already there: untouched
    assert _digest(target) == before
    ensure_synthetic(target, seed=2, num_train=40, num_val=8, num_test=2)  # other parameters: regenerated
    assert _digest(target) != before


@pytest.mark.slow
def test_default_set_generates_fast(tmp_path):
    t0 = time.time()
    devkit = ensure_synthetic(tmp_path / "synthetic")
    assert time.time() - t0 < 30
    img = load_image(devkit / "VOC2007" / "JPEGImages" / "000001.jpg")
    assert img.shape[2] == 3
    assert len((devkit / "VOC2007" / "ImageSets" / "Main" / "train.txt").read_text().split()) == 800


def test_styles_give_other_sets_and_the_default_keeps_its_manifest(tmp_path):
    """Unseen sets for benchmarks: each style differs from the default; the default's bytes and manifest stay."""
    from utils.data.synthetic import STYLES, _manifest
    base = render_image(np.random.default_rng([3, 0]))
    assert np.array_equal(render_image(np.random.default_rng([3, 0]), "shapes")[0], base[0])
    for style in set(STYLES) - {"shapes"}:
        assert not np.array_equal(render_image(np.random.default_rng([3, 0]), style)[0], base[0])
    counts = [len(render_image(np.random.default_rng([3, i]), "small")[1]) for i in range(10)]
    assert max(counts) > 6  # the crowded style places more objects than the default's 6 at most
    assert "style" not in _manifest(0, 1, 1, 1) and _manifest(0, 1, 1, 1, "outline")["style"] == "outline"
    with pytest.raises(ValueError, match="not one of"):
        generate(tmp_path / "x", num_train=1, num_val=0, num_test=0, style="nope")
    devkit = ensure_synthetic(tmp_path / "o", seed=5, num_train=3, num_val=1, num_test=1, style="outline")
    assert len(list((devkit / "VOC2007" / "JPEGImages").glob("*.jpg"))) == 5


def test_unknown_style_in_a_data_yaml_names_the_file(tmp_path):
    """A typo in a data YAML's `style:` is one error naming the YAML, the style and the choices; nothing is written."""
    from utils.data.records import DataError
    cfg = tmp_path / "unseen.yaml"
    cfg.write_text(f"format: synthetic\npath: {tmp_path / 'set'}\nseed: 3\nstyle: outlines\n")
    with pytest.raises(DataError) as e:
        load_data_spec(str(cfg))
    msg = str(e.value)
    assert str(cfg) in msg and "'outlines'" in msg and "outline" in msg.split("not one of", 1)[1]
    assert not (tmp_path / "set").exists()
