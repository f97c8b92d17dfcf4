"""predict.py against bubbliiiing/yolov4-tiny-pytorch's folder prediction, each run as a whole process; prints JSON.

    python benchmarks/predict_vs_reference.py --reference-dir ~/src/yolov4-tiny-pytorch [--rounds 5] [--out F]

What a user sees: the time from the command to the last annotated image on disk. For each image kind (square
320x320 JPEGs, and 768x576 photos) two folders are made, one image and `--images` images; each program runs
on each folder, round-robin for `--rounds` rounds (ours and theirs alternate, so a noisy moment hits both).
The per-image cost is the difference of the two folders' medians divided by the extra images, which takes
start-up (imports, model load) out; start-up is reported on its own.
  ours    `python predict.py FOLDER --weights W --img 416 --project ...`: default options (the backend `auto`
          picks; annotated images written). The export cache of `auto` is built by one untimed run first.
  theirs  the reference's `predict.py` mode "dir_predict", driven with the same weights (under its key names),
          classes, anchors and size: `YOLO.detect_image` per file, then `r_image.save(...png)`, as theirs does.
Same weights in both: a random-weight plain yolov4-tiny (phi 0, 80 classes, objectness bias -2 so that no box passes
either program's threshold and both do the same work) unless --weights is given.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

import torch  # noqa: E402
from bench_inference import synthetic_photo  # noqa: E402
from reference_pipelines import REFERENCE_PRELUDE, reference_files  # noqa: E402

from nets.weights.checkpoint import save_model_checkpoint  # noqa: E402
from nets.yolo import YoloBody  # noqa: E402

KINDS = {"square_320": (320, 320), "photo_768x576": (768, 576)}

_THEIR_FOLDER_RUN = r"""
import contextlib, io, json, os, sys
""" + REFERENCE_PRELUDE + r"""
cfg = json.loads(sys.argv[1])
with contextlib.redirect_stdout(io.StringIO()):  # it prints every box it draws
    yolo = YOLO(model_path=cfg["pth"], classes_path=cfg["classes"], anchors_path=cfg["anchors"], phi=cfg["phi"],
                input_shape=[cfg["size"], cfg["size"]], cuda=False)
    os.makedirs(cfg["out"], exist_ok=True)
    for name in sorted(os.listdir(cfg["folder"])):  # predict.py's dir_predict loop
        r_image = yolo.detect_image(Image.open(os.path.join(cfg["folder"], name)))
        r_image.save(os.path.join(cfg["out"], name.replace(".jpg", ".png")), quality=95, subsampling=0)
"""


def quiet_weights(path: Path, size: int) -> Path:
    """Random phi-0 weights whose objectness logits start at -2: no detections in either program (with the default
    init every score sits at ~0.25, so ours would draw 300 boxes at conf 0.25 and theirs none at 0.5)."""
    torch.manual_seed(0)
    model = YoloBody(80, 0).eval()
    model.img_size = size
    with torch.no_grad():
        for head in model.heads:
            head.bias.view(3, -1)[:, 4] = -2.0
    save_model_checkpoint(model, path)
    return path


def make_folders(tmp: Path, kind: str, many: int) -> dict[str, Path]:
    w, h = KINDS[kind]
    folders = {"one": tmp / kind / "one", "many": tmp / kind / "many"}
    for i in range(many):
        for name, folder in folders.items():
            if name == "many" or i == 0:
                folder.mkdir(parents=True, exist_ok=True)
                synthetic_photo(folder / f"{i:03d}.jpg", w, h, seed=i)
    return folders


def timed(cmd: list[str], cwd: Path) -> float:
    t = time.perf_counter()
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(f"{' '.join(cmd[:4])} ... failed:\n{r.stderr[-2000:]}")
    return time.perf_counter() - t


def measure(ref_dir: Path, weights: Path | None, rounds: int, many: int, size: int) -> dict:
    result = {"rounds": rounds, "images": many, "img_size": size, "kinds": {}}
    with tempfile.TemporaryDirectory(prefix="pvr_") as d:
        tmp = Path(d)
        weights = weights or quiet_weights(tmp / "weights.pt", size)
        ref = reference_files(weights, tmp)
        for kind in KINDS:
            folders = make_folders(tmp, kind, many)

            def ours(folder: Path) -> list[str]:
                return [sys.executable, "predict.py", str(folder), "--weights", str(weights), "--img", str(size),
                        "--project", str(tmp / "ours"), "--name", kind, "--exist-ok"]

            def theirs(folder: Path) -> list[str]:
                cfg = dict(ref, size=size, folder=str(folder), out=str(tmp / "theirs" / kind))
                return [sys.executable, "-c", _THEIR_FOLDER_RUN, json.dumps(cfg)]

            runs = {("ours", "one"): (ours, ROOT), ("theirs", "one"): (theirs, ref_dir),
                    ("ours", "many"): (ours, ROOT), ("theirs", "many"): (theirs, ref_dir)}
            timed(ours(folders["one"]), ROOT)  # untimed: builds auto's export cache, warms the file cache
            timed(theirs(folders["one"]), ref_dir)
            times: dict[tuple[str, str], list[float]] = {k: [] for k in runs}
            for _ in range(rounds):
                for (prog, size_key), (cmd, cwd) in runs.items():
                    times[(prog, size_key)].append(timed(cmd(folders[size_key]), cwd))
            med = {k: statistics.median(v) for k, v in times.items()}
            entry = {}
            for prog in ("ours", "theirs"):
                per_image = (med[(prog, "many")] - med[(prog, "one")]) / (many - 1)
                entry[prog] = {"per_image_ms": round(1000 * per_image, 1), "startup_s": round(med[(prog, "one")], 2),
                               "one_image_s": [round(v, 2) for v in times[(prog, "one")]],
                               f"{many}_images_s": [round(v, 2) for v in times[(prog, "many")]]}
            entry["speedup_per_image"] = round(entry["theirs"]["per_image_ms"] / entry["ours"]["per_image_ms"], 2)
            result["kinds"][kind] = entry
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reference-dir", required=True, help="a checkout of bubbliiiing/yolov4-tiny-pytorch")
    p.add_argument("--weights", default="", help="project checkpoint (phi 0-3; default: random phi 0, 80 classes)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--images", type=int, default=33, help="images in the large folder (the small one has 1)")
    p.add_argument("--img-size", type=int, default=416)
    p.add_argument("--out", default="", help="also write the JSON here")
    args = p.parse_args(argv)
    result = measure(Path(args.reference_dir).resolve(), Path(args.weights) if args.weights else None, args.rounds,
                     args.images, args.img_size)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
