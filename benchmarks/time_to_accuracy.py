"""Time to accuracy (issue #15): AP on a test split against wall-clock minutes of training, ours beside
bubbliiiing/yolov4-tiny-pytorch and Ultralytics (yolo26n, yolo11n), each with its own code and recipe, trained one
after another on the same machine and data within the same budget.

    python benchmarks/time_to_accuracy.py --data synthetic --unseen --budget 30 \\
        --reference-dir /tmp/bubbliiiing_ref --out runs/time_to_accuracy          # the full run (hours)
    python benchmarks/time_to_accuracy.py --data synthetic --unseen --reference-dir /tmp/bubbliiiing_ref \\
        --out runs/time_to_accuracy --score-only                                  # re-score what is there

Every saved epoch checkpoint of every run predicts on the same test split at conf 0.001 (each tool's own
evaluation-time prediction path and NMS IoU, see time_to_accuracy_systems.py); the boxes (original pixels) go to a
COCO results json that pycocotools scores (AP, AP50) against one ground-truth json built from our records (never a
tool's own metric). A curve is [(minutes, AP, AP50, epoch)] per checkpoint, minutes being the run's own wall-clock
count at the end of that epoch (training and its per-epoch validation, after its set-up).

Ours trains once per --seeds entry (mean and spread in the table), each peer once per set (the first seed).
`--unseen` adds synthetic sets in styles the defaults were never tuned on (utils/data/synthetic.py).
Output in --out: time_to_accuracy.json (curves, machine, commands), time_to_accuracy.md (the table), <set>.png (AP
and AP50 against minutes), runs/<set>/<system>_seed<S>/ (each run's files and log), <set>/ (ground truth, the
YOLO-format copy). The table: minutes to reach the reference's final AP and AP at --at minutes, read off each
curve by linear interpolation from (0 min, AP 0); "-" where a curve does not get there.
Timings are one run each on a machine that may be shared: the JSON notes how busy the CPUs were before each run.
"""
from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import shutil
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

import torch  # noqa: E402
from probes import cpu_busy_fraction, cpu_model, physical_cores  # noqa: E402
from time_to_accuracy_systems import DataSet, Ours, Reference, Settings  # noqa: E402
from time_to_accuracy_ultralytics import (  # noqa: E402
    DEFAULT_ULTRALYTICS_VENV,
    ULTRALYTICS_MODELS,
    Ultralytics,
    ensure_ultralytics,
    write_yolo_copy,
)

from utils.data.load import load_records  # noqa: E402
from utils.data.records import DataError, Record  # noqa: E402
from utils.data.spec import load_data_spec  # noqa: E402
from utils.eval.evaluate import (  # noqa: E402
    EvalSet,
    _coco_gt_dict,
    detections_to_results,
    evalset_from_records,
    official_coco,
)
from utils.eval.metrics import DetTable  # noqa: E402

SYSTEMS: dict[str, Any] = {"ours": Ours(), "reference": Reference(),
                           **{name: Ultralytics(name) for name in ULTRALYTICS_MODELS}}
UNSEEN = "11:outline,12:small"
UNSEEN_SIZES = "800,200,100"
Curve = list[list[float]]  # [[minutes, AP, AP50, epoch], ...] by minutes


# ------------------------------------------------------------------------------------------- curves, table
def ap_at(curve: Curve, minutes: float, col: int = 1, budget: float = 0.0) -> float | None:
    """AP (col 1) or AP50 (col 2) at `minutes`, linear between the curve's points and from (0, 0) to the first
    (an untrained detector scores 0). Past the curve's last point: None, except up to `budget` minutes, where a
    run that finished inside its budget still has its final weights (the final AP, nothing extrapolated)."""
    pts = [(0.0, 0.0)] + [(p[0], p[col]) for p in curve]
    if minutes > pts[-1][0]:
        return pts[-1][1] if minutes <= budget else None
    for (t0, a0), (t1, a1) in zip(pts, pts[1:]):
        if minutes <= t1:
            return a1 if t1 == t0 else a0 + (a1 - a0) * (minutes - t0) / (t1 - t0)
    return pts[-1][1]


def minutes_to_reach(curve: Curve, target: float, col: int = 1) -> float | None:
    """The first time the curve (linear between points, from (0, 0)) reaches `target`; None if it never does."""
    pts = [(0.0, 0.0)] + [(p[0], p[col]) for p in curve]
    if target <= 0:
        return 0.0
    for (t0, a0), (t1, a1) in zip(pts, pts[1:]):
        if a1 >= target:
            return t1 if a1 == a0 else t0 + (t1 - t0) * (target - a0) / (a1 - a0)
    return None


def cell(values: list[float | None], digits: int) -> str:
    """One value as is; several as mean (min-max); "-" when any is missing."""
    if not values or any(v is None for v in values):
        return "-"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{sum(values) / len(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def set_table(set_name: str, runs: dict[str, dict[str, dict]], at: list[float], budget: float = 0.0) -> str:
    """The markdown table of one set. runs: {system: {seed: {"curve": Curve, ...}}}; the target is the reference's
    final AP (its only run, or the mean of its runs); AP at a time up to `budget` holds a finished run's final AP."""
    ref = [r["curve"][-1][1] for r in runs.get("reference", {}).values() if r["curve"]]
    target = sum(ref) / len(ref) if ref else None
    head = (f"| system | runs | epochs | minutes | final AP | final AP50 | min to AP "
            f"{'-' if target is None else f'{target:.3f}'} (reference's final) | "
            + " | ".join(f"AP @ {m:g} min" for m in at) + " |")
    lines = [f"**{set_name}**", "", head, "|" + "---|" * (7 + len(at))]
    for system, seeds in runs.items():
        curves = [r["curve"] for r in seeds.values() if r["curve"]]
        if not curves:
            lines.append(f"| {system} | {len(seeds)} | no checkpoint |" + " |" * (5 + len(at)))
            continue
        row = [system, str(len(curves)), ", ".join(str(int(c[-1][3])) for c in curves),
               cell([c[-1][0] for c in curves], 1), cell([c[-1][1] for c in curves], 3),
               cell([c[-1][2] for c in curves], 3),
               cell([minutes_to_reach(c, target) for c in curves], 1) if target is not None else "-"]
        row += [cell([ap_at(c, m, budget=budget) for c in curves], 3) for m in at]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------- scoring
def ground_truth(records: list[Record], class_names: list[str], path: Path) -> EvalSet:
    """The test split's COCO instances json (image ids and category ids 1..K as the results json uses them)."""
    evalset = evalset_from_records(records, class_names)
    path.write_text(json.dumps(_coco_gt_dict(evalset)))
    evalset.coco_json = path
    return evalset


def score(evalset: EvalSet, dets: DetTable, results_json: Path) -> tuple[float, float]:
    """pycocotools' AP and AP50 of `dets`, written first as the COCO results json it reads."""
    results_json.write_text(json.dumps(detections_to_results(dets, evalset)))
    stats = official_coco(evalset, dets, results_json)
    return float(stats[0]), float(stats[1])


def curve_key(epochs: list[Any], evalset: EvalSet) -> dict:
    """What a run's scored curve depends on: its checkpoints (epoch, time, file) and the test split's ground truth."""
    return {"checkpoints": [[e.epoch, round(e.elapsed_s, 3), e.weights.name] for e in epochs],
            "ground_truth_sha1": hashlib.sha1(Path(evalset.coco_json).read_bytes()).hexdigest()}


def score_run(system: Any, ds: DataSet, evalset: EvalSet, run_dir: Path, st: Settings, reuse: bool = False) -> Curve:
    """Every checkpoint of a run scored on the test split; the curve is kept in tta_curve.json, and `reuse`
    (--score-only) takes it from there while the checkpoints and the ground truth are the ones it was scored on
    (re-predicting a 50-epoch run, or the reference's, costs minutes)."""
    epochs = system.epochs(run_dir)
    key, saved = curve_key(epochs, evalset), run_dir / "tta_curve.json"
    if reuse and saved.is_file():
        kept = json.loads(saved.read_text())
        if kept.get("key") == key:
            return kept["curve"]
    out = run_dir / "tta_scores"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    curve = []
    for e, dets in zip(epochs, system.detections(ds, run_dir, epochs, st)):
        ap, ap50 = score(evalset, dets, out / f"detections_epoch{e.epoch}.json")
        curve.append([round(e.elapsed_s / 60, 3), round(ap, 4), round(ap50, 4), e.epoch])
    curve = sorted(curve)
    saved.write_text(json.dumps({"key": key, "curve": curve}) + "\n")
    return curve


# ---------------------------------------------------------------------------------------------------- data
def unseen_sets(spec: str, sizes: str, out: Path) -> list[str]:
    """Data YAMLs of generated synthetic sets, `spec` "seed:style,...", `sizes` "train,val,test" image counts."""
    n_train, n_val, n_test = (int(v) for v in sizes.split(","))
    paths = []
    for item in spec.split(","):
        seed, style = item.split(":")
        name = f"synthetic_s{int(seed)}_{style}"
        path = out / "data" / f"{name}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"format: synthetic\npath: {out.resolve() / 'data' / name}\nseed: {int(seed)}\nstyle: {style}\n"
                        f"num_train: {n_train}\nnum_val: {n_val}\nnum_test: {n_test}\n")
        paths.append(str(path))
    return paths


def load_set(data: str, out: Path) -> DataSet:
    spec = load_data_spec(data)
    if not spec.has_split("test"):
        raise DataError(f"--data {data}: no test split to score on; add a 'test:' entry to its data YAML")
    name = "synthetic" if data == "synthetic" else Path(data).stem
    split = {s: load_records(spec, s)[0] for s in ("train", "val", "test")}
    d = out / name
    d.mkdir(parents=True, exist_ok=True)
    return DataSet(name, data if data == "synthetic" else str(Path(data).resolve()), d, list(spec.names),
                   split["train"], split["val"], split["test"])


# ------------------------------------------------------------------------------------------------- output
def machine(ultralytics: str | None) -> dict[str, Any]:
    return {"cpu": cpu_model(), "logical_cpus": os.cpu_count(), "physical_cores": physical_cores(),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
            "ultralytics": ultralytics, "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def plot_set(set_name: str, runs: dict[str, dict[str, dict]], m: dict[str, Any], path: Path) -> None:
    import matplotlib  # heavy, and only needed here
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, (system, seeds) in enumerate(runs.items()):
        for j, (seed, r) in enumerate(seeds.items()):
            if not r["curve"]:
                continue
            t = [0.0] + [p[0] for p in r["curve"]]
            for ax, col in zip(axes, (1, 2)):
                ax.plot(t, [0.0] + [p[col] for p in r["curve"]], marker=".", color=colours[k % len(colours)],
                        linestyle=("-", "--", ":", "-.")[j % 4], label=f"{system} (seed {seed})" if len(seeds) > 1
                        else system)
    for ax, what in zip(axes, ("AP (0.5:0.95)", "AP50")):
        ax.set_xlabel("wall-clock minutes of training")
        ax.set_ylabel(f"{what}, test split, pycocotools")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{set_name}: {m['cpu']}, {m['logical_cpus']} CPUs, torch {m['torch']}"
                 + (f", GPU {m['gpu']}" if m["gpu"] else ""), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(doc: dict[str, Any], out: Path, at: list[float]) -> str:
    tables = "\n".join(set_table(s, {sy: doc["runs"][sy][s] for sy in doc["runs"] if s in doc["runs"][sy]}, at,
                                 doc["settings"]["budget_min"]) for s in doc["sets"])
    m = doc["machine"]
    doc["table"] = (f"Machine: {m['cpu']}, {m['logical_cpus']} CPUs, torch {m['torch']}; budget "
                    f"{doc['settings']['budget_min']:g} min per run; `{doc['command']}`\n\n{tables}")
    (out / "time_to_accuracy.json").write_text(json.dumps(doc, indent=1) + "\n")
    (out / "time_to_accuracy.md").write_text(doc["table"])
    for s in doc["sets"]:
        plot_set(s, {sy: doc["runs"][sy][s] for sy in doc["runs"] if s in doc["runs"][sy]}, m, out / f"{s}.png")
    return doc["table"]


# --------------------------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", nargs="+", default=None, help="data YAMLs (or 'synthetic') with a test split; default "
                    "synthetic unless --unseen is given")
    ap.add_argument("--unseen", nargs="?", const=UNSEEN, default="", metavar="SEED:STYLE,...",
                    help=f"also generate and run synthetic sets in other styles (default {UNSEEN})")
    ap.add_argument("--unseen-sizes", default=UNSEEN_SIZES, help="train,val,test images of the --unseen sets")
    ap.add_argument("--systems", default="ours,reference,yolo26n,yolo11n")
    ap.add_argument("--budget", type=float, default=30.0, help="wall-clock minutes of training per run")
    ap.add_argument("--seeds", default="0,1", help="ours runs once per seed; each peer once, with the first")
    ap.add_argument("--at", default="5,10,25", help="minutes at which the table reads AP off each curve")
    ap.add_argument("--img", type=int, default=320, help="input size of every system")
    ap.add_argument("--batch", type=int, default=16, help="batch size of every system")
    ap.add_argument("--workers", type=int, default=2, help="data-loader processes of every system")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--reference-dir", default="", help="a checkout of bubbliiiing/yolov4-tiny-pytorch")
    ap.add_argument("--reference-epochs", type=int, default=0, help="the reference's epochs (default: as many as fit "
                    "the budget at the time of a 1-epoch probe run)")
    ap.add_argument("--reference-phi", type=int, default=3, help="its attention (0 none, 1 se, 2 cbam, 3 eca: ours' "
                    "default)")
    ap.add_argument("--ultralytics-python", default=str(DEFAULT_ULTRALYTICS_VENV / "bin" / "python"),
                    help="a Python with ultralytics installed (the default venv is made when missing)")
    ap.add_argument("--out", default="runs/time_to_accuracy")
    ap.add_argument("--score-only", action="store_true", help="score the runs already in --out, train nothing (a "
                    "run's curve is reused from its tta_curve.json while its checkpoints are unchanged)")
    ap.add_argument("--rescore", action="store_true", help="with --score-only: predict and score every checkpoint "
                    "again")
    args = ap.parse_args(argv)
    args.systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = [s for s in args.systems if s not in SYSTEMS]
    if unknown:
        ap.error(f"--systems: unknown {unknown}; choose from {', '.join(SYSTEMS)}")
    if "reference" in args.systems and not args.reference_dir:
        ap.error("--systems has 'reference': pass --reference-dir DIR, a clone of "
                 "https://github.com/bubbliiiing/yolov4-tiny-pytorch (or leave 'reference' out)")
    if args.budget <= 0:
        ap.error("--budget: minutes of training, > 0")
    args.seeds = [int(s) for s in args.seeds.split(",")]
    args.at = [float(m) for m in args.at.split(",")]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    st = Settings(args.budget, args.img, args.batch, args.workers, args.device,
                  Path(args.reference_dir).expanduser().resolve() if args.reference_dir else None,
                  args.reference_epochs, args.reference_phi, Path(args.ultralytics_python),
                  out / "ultralytics_settings")
    if "reference" in args.systems:
        SYSTEMS["reference"].checkout(st)  # before hours of other runs
    peers = [s for s in args.systems if s.startswith("yolo")]
    version = ensure_ultralytics(st.ultralytics_python, st) if peers else None
    data = (args.data or ([] if args.unseen else ["synthetic"])) + (
        unseen_sets(args.unseen, args.unseen_sizes, out) if args.unseen else [])
    sets = [load_set(d, out) for d in data]
    if len({ds.name for ds in sets}) < len(sets):
        raise DataError(f"--data {' '.join(data)}: two data sets of the same file name; rename one")
    for ds in sets if peers else []:
        ds.yolo_yaml = write_yolo_copy(ds)
    doc: dict[str, Any] = {
        "benchmark": "time_to_accuracy", "schema_version": 1,
        "created_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": "python benchmarks/time_to_accuracy.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": machine(version),
        "settings": {"budget_min": st.budget_min, "img": st.img, "batch": st.batch, "workers": st.workers,
                     "device": st.device, "seeds": args.seeds, "systems": args.systems, "data": data,
                     "reference_dir": str(st.reference_dir) if st.reference_dir else None,
                     "score_only": args.score_only},
        "systems": {s: SYSTEMS[s].about for s in args.systems},
        "sets": {}, "runs": {s: {} for s in args.systems},
    }
    for ds in sets:
        evalset = ground_truth(ds.test, ds.class_names, ds.dir / "test_ground_truth.json")
        doc["sets"][ds.name] = {"data": ds.data, "classes": ds.class_names, "train_images": len(ds.train),
                                "val_images": len(ds.val), "test_images": len(ds.test),
                                "ground_truth": str(evalset.coco_json)}
        for name in args.systems:
            system = SYSTEMS[name]
            for seed in args.seeds if name == "ours" else args.seeds[:1]:
                run_dir = out / "runs" / ds.name / f"{name}_seed{seed}"
                if not args.score_only:
                    shutil.rmtree(run_dir, ignore_errors=True)
                    busy = cpu_busy_fraction()
                    print(f"[{ds.name}] training {name} (seed {seed}) for {st.budget_min:g} min -> {run_dir}",
                          file=sys.stderr, flush=True)
                    info = {"cpu_busy_before_start": busy, **system.train(ds, seed, run_dir, st)}
                    (run_dir / "tta_run.json").write_text(json.dumps(info, indent=1))
                elif not run_dir.is_dir():
                    print(f"[{ds.name}] {name} (seed {seed}): no run in {run_dir}, skipped", file=sys.stderr)
                    continue
                saved = run_dir / "tta_run.json"
                info = json.loads(saved.read_text()) if saved.is_file() else {}
                print(f"[{ds.name}] scoring {name} (seed {seed})", file=sys.stderr, flush=True)
                curve = score_run(system, ds, evalset, run_dir, st, reuse=args.score_only and not args.rescore)
                doc["runs"][name].setdefault(ds.name, {})[str(seed)] = {"curve": curve, "run_dir": str(run_dir),
                                                                         "train": info}
                write_outputs(doc, out, args.at)
    print(write_outputs(doc, out, args.at))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (DataError, RuntimeError, OSError) as e:
        print(f"error: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
        sys.exit(1)
