"""Wall-clock timing of several callables, fair on a shared machine (benchmarks and the ablation's latency)."""
from __future__ import annotations

import statistics
import time
from typing import Callable


def interleaved(fns: dict[str, Callable[[], object]], runs: int, warmup: int,
                gap: float = 0.05) -> dict[str, dict[str, float]]:
    """Time each callable `runs` times, round-robin (rotating the order), so that load changes on a
    shared machine hit every pipeline alike. A callable may return its own elapsed seconds.

    `gap` seconds of idle before each call let the previous pipeline's OpenMP / onnxruntime worker
    threads stop spin-waiting, so one pipeline's threads never slow the next one down.
    """
    names = list(fns)
    times: dict[str, list[float]] = {n: [] for n in names}
    for rep in range(warmup + runs if names else 0):  # nothing to time: an empty result
        k = rep % len(names)
        for n in names[k:] + names[:k]:
            time.sleep(gap)
            t = time.perf_counter()
            own = fns[n]()
            dt = own if isinstance(own, float) else time.perf_counter() - t
            if rep >= warmup:
                times[n].append(dt)
    out = {}
    for n, ts in times.items():
        ts.sort()
        out[n] = {"median_ms": round(1000 * statistics.median(ts), 2), "p10_ms": round(1000 * ts[len(ts) // 10], 2),
                  "p90_ms": round(1000 * ts[min(len(ts) - 1, (9 * len(ts)) // 10)], 2),
                  "min_ms": round(1000 * ts[0], 2), "max_ms": round(1000 * ts[-1], 2), "runs": len(ts)}
    return out
