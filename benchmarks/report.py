"""The README table from a document benchmarks/run.py wrote (`run.py --markdown FILE`): one row per
figure, its median, spread and number of runs; failed and skipped parts get a row saying why.
Reads the document only (standard library), so a saved document can be turned into the table anywhere."""
from __future__ import annotations

from typing import Any

from probes import tail


def section_result(doc: dict, name: str) -> dict | None:
    """A section's result when it ran to the end, else None."""
    sec = doc.get("sections", {}).get(name) or {}
    return sec.get("result") if sec.get("status") == "ok" else None


def figure(d: Any, key: str) -> tuple[float | None, float | None, float | None, int | None]:
    """(median, low, high, runs) of one measured figure, in any layout the suite's scripts write:
    {key: {"median", "min"/"p10", "max"/"p90", "runs"}}, {key: median, "min", "max", "runs"},
    {"median_ms", "p10_ms"/"min_ms", ...} or {key + "_median", key + "_min", ...}."""
    if not isinstance(d, dict):
        return None, None, None, None
    v = d.get(key)
    if isinstance(v, dict):
        d = {**d, **v}
        med = v.get("median")
        return med, d.get("min", d.get("p10")), d.get("max", d.get("p90")), runs_of(d.get("runs"))
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        sfx = key[len("median"):] if key.startswith("median") else ""
        return (v, d.get(f"min{sfx}", d.get(f"p10{sfx}")), d.get(f"max{sfx}", d.get(f"p90{sfx}")),
                runs_of(d.get("runs")))
    if f"{key}_median" in d:
        return (d[f"{key}_median"], d.get(f"{key}_min", d.get(f"{key}_p10")),
                d.get(f"{key}_max", d.get(f"{key}_p90")), runs_of(d.get("runs")))
    return None, None, None, None


def runs_of(v: Any) -> int | None:
    """A number of runs, given as a count or as the list of per-run values."""
    return len(v) if isinstance(v, list) else v


def fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        a = abs(v)
        return f"{v:.0f}" if a >= 100 else f"{v:.1f}" if a >= 10 else f"{v:.2f}" if a >= 0.1 else f"{v:.3g}"
    return str(v)


def machine_line(doc: dict) -> str:
    m = section_result(doc, "machine") or {}
    v = m.get("versions", {})
    gpu = m.get("gpu")
    gpu_text = (f"{gpu['name']} (driver {gpu.get('driver') or 'n/a'}, CUDA {gpu.get('cuda_runtime')})" if gpu
                else "no GPU")
    mode = " (--quick: smoke-run settings, not figures)" if doc.get("quick") else ""
    return (f"Machine: {m.get('cpu', 'n/a')}, {m.get('logical_cpus', 'n/a')} CPUs, {m.get('torch_threads', 'n/a')} "
            f"torch threads, native bf16: {fmt(m.get('native_bf16'))}; {gpu_text}; torch {v.get('torch', 'n/a')}, "
            f"torchvision {v.get('torchvision', 'n/a')}, onnxruntime {v.get('onnxruntime', 'n/a')}. "
            f"Device `{doc.get('device')}`, `{doc.get('command')}`, {doc.get('created_utc', '')}{mode}.")


def to_markdown(doc: dict) -> str:
    """The README table: one row per figure, median with its spread and number of runs."""
    rows: list[tuple[str, str, str, str, str]] = []

    def add(fig: str, setting: str, d: Any, key: str, unit: str) -> None:
        med, lo, hi, n = figure(d, key)
        spread = f"{fmt(lo)} – {fmt(hi)}" if lo is not None and hi is not None else ""
        rows.append((fig, setting, f"{fmt(med)} {unit}" if med is not None else "n/a", spread,
                     str(n) if n is not None else ""))

    def unavailable(fig: str, name: str) -> bool:
        """True (after a row saying why, when it ran and failed) where a section has no result."""
        sec = doc.get("sections", {}).get(name)
        if sec and sec.get("status") != "ok":
            rows.append((fig, f"{sec.get('status')}: {tail(sec.get('error'), 1)}", "", "", ""))
            return True
        return not sec

    if not unavailable("matmul", "matmul"):
        for k, v in section_result(doc, "matmul").items():
            if isinstance(v, dict):
                add("matmul", f"{k}, {v['n']}x{v['n']}", v, "gflop_per_s", "GFLOP/s")
    if not unavailable("data loader", "loader"):
        lr = section_result(doc, "loader")
        for k, v in lr.items():
            if k.startswith("workers_"):
                setting = f"{lr['img_size']} px, mosaic, batch {lr['batch_size']}, {k.split('_')[1]} workers"
                if v.get("status") == "error":
                    rows.append(("data loader", setting, "error", "", ""))
                else:
                    add("data loader", setting, v, "images_per_s", "images/s")
    if not unavailable("training step", "train"):
        tr = section_result(doc, "train")
        for name, v in tr.get("variants", {}).items():
            setting = f"{name}, {tr['img_size']} px, batch {tr['batch_size']}, phi {tr['phi']}"
            if v.get("status") == "ok":
                add("training step", setting, v, "images_per_s", "images/s")
                if "reference_images_per_s" in v:
                    rows.append(("training step", f"{setting}, bubbliiiing/yolov4-tiny-pytorch",
                                 f"{fmt(v['reference_images_per_s'])} images/s",
                                 f"ours {fmt(v.get('speedup_vs_reference'))}x as fast", ""))
            else:
                rows.append(("training step", setting, v.get("status", ""), v.get("reason") or tail(v.get("error"), 1),
                             ""))
    if not unavailable("inference", "inference"):
        inf = section_result(doc, "inference")
        size = inf["img_size"]
        for key, label in (("model_only_batch1", "model only, batch 1"), ("model_only_batched", "model only"),
                           ("model_only_gpu_large_batch", "model only")):
            for variant, t in inf.get(key, {}).items():
                batch = t.get("batch", 1)
                extra = f" ({fmt(t['x_of_flop_limit'])}x FLOP limit)" if "x_of_flop_limit" in t else ""
                if batch == 1:
                    add("inference latency", f"{label}, {variant}, {size}x{size}{extra}", t, "median_ms", "ms")
                else:
                    lo_hi = {"images_per_s": t["images_per_s"], "runs": t.get("runs"),
                             "min": round(batch / (t["max_ms"] / 1000), 2) if "max_ms" in t else None,
                             "max": round(batch / (t["min_ms"] / 1000), 2) if "min_ms" in t else None}
                    add("inference throughput", f"{label}, batch {batch}, {variant}, {size}x{size}{extra}", lo_hi,
                        "images_per_s", "images/s")
        e2e = inf.get("end_to_end", {})
        for variant, t in e2e.get("latency_batch1", {}).items():
            add("end to end (file -> boxes)", f"batch 1, {variant}, {size} long side", t, "median_ms", "ms")
        for variant, t in e2e.get("throughput", {}).items():
            add("end to end (file -> boxes)", f"batch {t.get('batch')}, {variant}", t, "images_per_s", "images/s")
    if not unavailable("evaluation", "eval"):
        ev = section_result(doc, "eval")
        for n, e in ev.get("sizes", {}).items():
            add("evaluation (metric only)", f"{n} images, ours (COCO + VOC, {ev.get('device', 'cpu')})", e["ours"],
                "metric_s", "s")
            add("evaluation (metric only)", f"{n} images, pycocotools", e["pycocotools"], "eval_s", "s")
    for name, v in doc.get("summary", {}).get("peak_memory", {}).items():
        if "rss_after_imports_mib" in v:  # our memory probes: peak RSS, and the RSS of the imports alone
            text = f"{fmt(v['peak_rss_mib'])} MiB RSS"
            if "cuda_max_allocated_mib" in v:
                text += f", {fmt(v['cuda_max_allocated_mib'])} MiB CUDA allocated"
            setting = f"{name.replace('_', ' ')} (RSS after imports {fmt(v.get('rss_after_imports_mib'))} MiB)"
            rows.append(("peak memory", setting, text, "", ""))
        elif "peak_memory_mib" in v:  # bench_train: peak RSS on CPU, CUDA allocator peak on GPU
            kind = "CUDA allocated" if doc.get("device") == "cuda" else "RSS"
            rows.append(("peak memory", name.replace("_", " "), f"{fmt(v['peak_memory_mib'])} MiB {kind}", "", ""))
        else:  # fields of another shape, shown as they are
            text = ", ".join(f"{k} {fmt(val)}" for k, val in v.items() if not isinstance(val, (dict, list)))
            rows.append(("peak memory", name.replace("_", " "), text or "n/a", "", ""))
    for name, t in doc.get("summary", {}).get("targets", {}).items():
        shown = {k: v for k, v in t.items() if k not in ("goal", "met")}
        met = f", met: {fmt(t['met'])}" if "met" in t else ""
        rows.append(("target", name.replace("_", " "), f"{', '.join(f'{k} {fmt(v)}' for k, v in shown.items())}",
                     f"goal {t.get('goal')}{met}", ""))
    lines = [machine_line(doc), "", "| figure | setting | median | spread (min – max or p10 – p90) | runs |",
             "|---|---|---|---|---|"]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in r) + " |" for r in rows]
    if doc.get("warnings"):
        lines += ["", *(f"- warning: {w}" for w in doc["warnings"])]
    return "\n".join(lines) + "\n"
