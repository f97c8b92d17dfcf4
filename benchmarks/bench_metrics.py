"""Speed of the metrics (utils/eval/metrics.py) next to pycocotools on the same detections; prints JSON.

    python benchmarks/bench_metrics.py                      # 200 and 5000 synthetic images
    python benchmarks/bench_metrics.py --sizes 200 --script # also time get_map.py end to end
    python benchmarks/bench_metrics.py --with-model         # + get_map.py with a random model, 200 416x416 images

Synthetic data look like a detector's output at conf 0.001: per image up to 15 objects of 20 classes,
1-3 jittered detections per object and ~50 low-score clutter boxes. "ours" is the metric part only
(COCO + VOC, tables already built; `--device cuda` runs it on the GPU); "pycocotools" is loadRes +
evaluate + accumulate + summarize. Both are timed --repeat times (median, min, max). `measure()` is
what `benchmarks/run.py` calls.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def synthetic_coco(n_img: int, num_classes: int = 20, seed: int = 0, size: int = 416) -> tuple[dict, list]:
    rng = np.random.default_rng(seed)
    n_obj = rng.integers(0, 16, n_img)
    img_of = np.repeat(np.arange(n_img), n_obj)
    m = len(img_of)
    wh = np.exp(rng.uniform(np.log(6), np.log(300), (m, 2)))
    xy = rng.uniform(0, 1, (m, 2)) * (size - wh)
    cls = rng.integers(0, num_classes, m)
    crowd = rng.random(m) < 0.01
    gt_box = np.concatenate([xy, wh], 1)
    copies = rng.integers(1, 4, m)
    src = np.repeat(np.arange(m), copies)
    jit = rng.normal(0, 0.08, (len(src), 4)) * np.concatenate([wh[src], wh[src]], 1)
    d_box = gt_box[src] + jit
    d_box[:, 2:] = np.maximum(d_box[:, 2:], 1.0)
    d_cls = np.where(rng.random(len(src)) < 0.9, cls[src], rng.integers(0, num_classes, len(src)))
    d_img = img_of[src]
    d_score = rng.beta(4, 2, len(src))
    n_clutter = rng.integers(20, 80, n_img)
    c_img = np.repeat(np.arange(n_img), n_clutter)
    c_wh = np.exp(rng.uniform(np.log(4), np.log(200), (len(c_img), 2)))
    c_box = np.concatenate([rng.uniform(0, 1, (len(c_img), 2)) * (size - c_wh), c_wh], 1)
    d_box = np.concatenate([d_box, c_box])
    d_img = np.concatenate([d_img, c_img])
    d_cls = np.concatenate([d_cls, rng.integers(0, num_classes, len(c_img))])
    d_score = np.concatenate([d_score, rng.uniform(0.001, 0.3, len(c_img))])
    order = np.argsort(d_img, kind="stable")
    images = [{"id": i + 1, "width": size, "height": size, "file_name": f"{i + 1:06d}.jpg"} for i in range(n_img)]
    anns = [{"id": j + 1, "image_id": int(i) + 1, "category_id": int(c) + 1, "bbox": b, "area": b[2] * b[3],
             "iscrowd": int(cr)} for j, (i, c, b, cr) in enumerate(zip(img_of, cls, gt_box.tolist(), crowd))]
    res = [{"image_id": int(d_img[k]) + 1, "category_id": int(d_cls[k]) + 1,
            "bbox": [round(v, 2) for v in d_box[k].tolist()], "score": round(float(d_score[k]), 5)} for k in order]
    gt = {"images": images, "annotations": anns,
          "categories": [{"id": k + 1, "name": f"class{k}"} for k in range(num_classes)]}
    return gt, res


def spread(samples: list[float], digits: int = 4) -> dict:
    """median, min, max and the number of samples."""
    return {"median": round(statistics.median(samples), digits), "min": round(min(samples), digits),
            "max": round(max(samples), digits), "runs": len(samples)}


def time_ours(gt_file: Path, res_file: Path, repeat: int, device: str = "cpu") -> dict:
    """Our COCO + VOC metrics on already-loaded tables; metric_s is the median over `repeat` runs."""
    import torch

    from utils.eval.evaluate import load_coco_ground_truth, load_detections, score

    t = time.perf_counter()
    evalset = load_coco_ground_truth(gt_file)
    dets = load_detections(res_file, evalset)
    t_load = time.perf_counter() - t
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    score(evalset, dets, "both", device=device)  # warm-up (first calls of some kernels, CUDA context)
    runs = []
    for _ in range(max(1, repeat)):
        sync()
        t = time.perf_counter()
        out = score(evalset, dets, "both", device=device)
        sync()
        runs.append((time.perf_counter() - t, out.seconds))
    total = spread([r[0] for r in runs])
    return {"load_json_s": round(t_load, 4), "metric_s": total["median"], "min": total["min"], "max": total["max"],
            "runs": total["runs"], "coco_s": round(statistics.median(r[1]["coco"] for r in runs), 4),
            "voc_s": round(statistics.median(r[1]["voc"] for r in runs), 4), "device": str(device),
            "torch_threads": torch.get_num_threads(), "stats": out.coco.stats_array()}


def time_pycocotools(gt_file: Path, res_file: Path, repeat: int = 1) -> dict:
    """pycocotools' loadRes + evaluate + accumulate + summarize; eval_s is the median over `repeat` runs."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    times = []
    with contextlib.redirect_stdout(io.StringIO()):
        t = time.perf_counter()
        cg = COCO(str(gt_file))
        t_gt = time.perf_counter() - t
        for _ in range(max(1, repeat)):
            t = time.perf_counter()
            ev = COCOeval(cg, cg.loadRes(str(res_file)), "bbox")
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
            times.append(time.perf_counter() - t)
    total = spread(times)
    return {"load_gt_s": round(t_gt, 4), "eval_s": total["median"], "min": total["min"], "max": total["max"],
            "runs": total["runs"], "stats": np.asarray(ev.stats)}


def time_script(args: list[str], cwd: Path | None = None) -> dict:
    t = time.perf_counter()
    r = subprocess.run([sys.executable, str(ROOT / "get_map.py"), *args], capture_output=True, text=True,
                       cwd=cwd or ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    wall = time.perf_counter() - t
    if r.returncode != 0:
        raise RuntimeError(f"get_map.py failed: {r.stderr[-2000:]}")
    m = re.search(r"metrics ([\d.]+) s (?:\(inference ([\d.]+) s\) )?total ([\d.]+) s", r.stdout)
    n = re.search(r"(\d+) images, (\d+) detections", r.stdout)
    return {"images": int(n.group(1)), "detections": int(n.group(2)), "wall_s": round(wall, 3),
            "metric_s": float(m.group(1)),
            "inference_s": float(m.group(2)) if m.group(2) else None, "script_total_s": float(m.group(3))}


def model_run(tmp: Path, n_img: int = 200, size: int = 416) -> dict:
    """get_map.py on a randomly initialised model and `n_img` noise images (VOC layout) of `size`."""
    import cv2
    import torch

    from nets.weights.checkpoint import save_model_checkpoint
    from nets.yolo import YoloBody

    rng = np.random.default_rng(0)
    voc = tmp / "VOCdevkit" / "VOC2007"
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (voc / sub).mkdir(parents=True, exist_ok=True)
    names = ["a", "b", "c"]
    stems = []
    for i in range(n_img):
        stem = f"{i:06d}"
        cv2.imwrite(str(voc / "JPEGImages" / f"{stem}.jpg"), rng.integers(0, 255, (size, size, 3), dtype=np.uint8))
        objs = "".join(f"<object><name>{names[int(rng.integers(0, 3))]}</name><difficult>0</difficult><bndbox>"
                       f"<xmin>{x}</xmin><ymin>{y}</ymin><xmax>{x + 40}</xmax><ymax>{y + 50}</ymax></bndbox></object>"
                       for x, y in rng.integers(1, size - 60, (3, 2)).tolist())
        (voc / "Annotations" / f"{stem}.xml").write_text(
            f"<annotation><filename>{stem}.jpg</filename><size><width>{size}</width><height>{size}</height>"
            f"<depth>3</depth></size>{objs}</annotation>")
        stems.append(stem)
    (voc / "ImageSets" / "Main" / "val.txt").write_text("\n".join(stems) + "\n")
    (voc / "ImageSets" / "Main" / "train.txt").write_text(stems[0] + "\n")
    (tmp / "VOCdevkit" / "classes.txt").write_text("\n".join(names) + "\n")
    torch.manual_seed(0)
    model = YoloBody(3, 3)
    model.class_names, model.img_size = names, size
    save_model_checkpoint(model, tmp / "random.pt")
    return time_script(["--weights", str(tmp / "random.pt"), "--data", str(tmp / "VOCdevkit"), "--split", "val",
                        "--device", "cpu", "--out", str(tmp / "out"), "--no-plots"])


def measure(sizes: list[int] = (200, 5000), classes: int = 20, repeat: int = 3, device: str = "cpu",
            script: bool = False, with_model: bool = False, ref_repeat: int | None = None) -> dict:
    """Ours vs pycocotools for each number of images (see the module docstring), as one dict."""
    import torch

    result = {"machine": {"cpu_count": os.cpu_count(), "torch": torch.__version__,
                          "load_avg_1min": round(os.getloadavg()[0], 2)}, "device": str(device), "sizes": {}}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for n in sizes:
            gt, res = synthetic_coco(n, classes)
            gt_file, res_file = tmp / f"gt{n}.json", tmp / f"res{n}.json"
            gt_file.write_text(json.dumps(gt))
            res_file.write_text(json.dumps(res))
            ours = time_ours(gt_file, res_file, repeat, device)
            ref = time_pycocotools(gt_file, res_file, repeat if ref_repeat is None else ref_repeat)
            entry = {"images": n, "ground_truth": len(gt["annotations"]), "detections": len(res),
                     "ours": {k: v for k, v in ours.items() if k != "stats"},
                     "pycocotools": {k: v for k, v in ref.items() if k != "stats"},
                     "speedup_vs_pycocotools": round(ref["eval_s"] / max(ours["coco_s"], 1e-9), 1),
                     "max_abs_diff_12_stats": float(np.abs(ours["stats"] - ref["stats"]).max())}
            if script and n == min(sizes):
                entry["get_map_file_mode"] = time_script(["--detections", str(res_file), "--ground-truth",
                                                          str(gt_file), "--out", str(tmp / "out"), "--no-plots"])
            result["sizes"][str(n)] = entry
        if with_model:
            result["get_map_model_mode_200x416"] = model_run(tmp / "model")
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[200, 5000], help="numbers of images")
    p.add_argument("--classes", type=int, default=20)
    p.add_argument("--repeat", type=int, default=3, help="timed runs of each side (median, min, max)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--device", default="cpu", help="where our metrics run: cpu or cuda")
    p.add_argument("--script", action="store_true", help="also time get_map.py on the smallest size's files")
    p.add_argument("--with-model", action="store_true", help="also time get_map.py with a random model (200 images)")
    p.add_argument("--out", default="", help="also write the JSON here")
    args = p.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    result = measure(args.sizes, args.classes, args.repeat, args.device, args.script, args.with_model)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
