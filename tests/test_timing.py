"""utils.engine.timing.interleaved: round-robin order, warm-up dropped, statistics of the timed calls."""
from __future__ import annotations

from utils.engine.timing import interleaved


def test_round_robin_rotates_and_drops_warmup():
    calls: list[str] = []
    own = {"a": iter([9.0, 0.001, 0.003, 0.002]), "b": iter([9.0, 0.010, 0.030, 0.020])}

    def make(name):
        def fn():
            calls.append(name)
            return next(own[name])  # a float: the callable's own elapsed seconds
        return fn

    out = interleaved({"a": make("a"), "b": make("b")}, runs=3, warmup=1, gap=0.0)
    assert calls == ["a", "b", "b", "a", "a", "b", "b", "a"]  # order rotated every round
    assert out["a"] == {"median_ms": 2.0, "p10_ms": 1.0, "p90_ms": 3.0, "min_ms": 1.0, "max_ms": 3.0, "runs": 3}
    assert out["b"]["median_ms"] == 20.0 and out["b"]["max_ms"] == 30.0  # the 9-second warm-up call is not counted


def test_callables_without_own_time_are_timed_by_the_clock():
    out = interleaved({"noop": lambda: None}, runs=5, warmup=0, gap=0.0)
    assert out["noop"]["runs"] == 5 and 0 <= out["noop"]["min_ms"] <= out["noop"]["median_ms"] < 50


def test_nothing_to_time_gives_an_empty_result():
    assert interleaved({}, runs=3, warmup=1) == {}
