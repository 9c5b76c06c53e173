"""The native regression gate: ``pytest benchmarks/ --benchmark-only``.

Every op in test_native.py is benchmarked twice in one run, Cython and the pure-Python fallback
(the pair's reference). At the end the gate compares the two *minimum* times of each op (the
estimate least moved by other work on a shared machine) and fails the run when the
fallback/Cython ratio is below the op's floor. Ratios measured in the same run are stable where
absolute times are not.

On a shared 2-core machine a burst of other work can still land on one side of a pair for the
whole of its measuring window (pytest-benchmark times Cython, then the fallback, a second each).
So an op below its floor is measured once more before it fails: both sides alternately, in short
slices with the garbage collector off, the minimum slice of each kept. A burst then hits both
sides alike instead of one.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import Any

import pytest

# Minimum reference/subject ratio per benchmark group: fallback/Cython for a native op, and for
# the request-side groups (test_request.py) the ids named in PAIRS. See docs/benchmarks.md.
FLOORS: dict[str, float] = {
    "sse.decode_stream": 3.0,
    "sse.content_delta": 3.0,
    "sse.frame_event": 3.0,
    "sse.text_of_chunk": 3.0,
    "sse.text_run": 3.0,
    "jsonsize.claude_code_request": 3.0,
    "cachekey.claude_code_request": 3.0,
    "lru.evict_heavy": 3.0,
    "lru.hit_heavy": 3.0,
    "request.repeated_turn": 3.0,
    "request.translate_turn": 2.0,
}
# group -> (subject id, reference id); native ops: ("cython", "python")
PAIRS: dict[str, tuple[str, str]] = {
    "request.repeated_turn": ("repeated", "first"),
    "request.translate_turn": ("translate", "json_roundtrip"),
}


# group -> implementation ("cython" / "python") -> the zero-argument call that was benchmarked
_CALLS: dict[str, dict[str, Callable[[], Any]]] = {}


@pytest.fixture
def gated(benchmark: Any) -> Callable[..., Any]:
    """``gated(group, fn, *args)``: benchmark ``fn(*args)`` in ``group`` and keep the call for the
    gate's interleaved re-measure."""

    def run(group: str, fn: Callable[..., Any], *args: Any) -> Any:
        benchmark.group = group
        impl = benchmark.name.rsplit("[", 1)[-1].rstrip("]")
        _CALLS.setdefault(group, {})[impl] = (lambda: fn(*args)) if args else fn
        return benchmark(fn, *args)

    return run


def _slice_time(call: Callable[[], Any], number: int) -> float:
    start = time.perf_counter()
    for _ in range(number):
        call()
    return (time.perf_counter() - start) / number


def interleaved_ratio(python: Callable[[], Any], cython: Callable[[], Any], slices: int = 15) -> float:
    """Reference/subject (fallback/Cython) ratio of minimum times, the two measured alternately
    in ~20 ms slices."""
    number = max(1, int(0.02 / max(_slice_time(python, 3), 1e-9)))
    best = {"python": float("inf"), "cython": float("inf")}
    enabled = gc.isenabled()
    gc.disable()
    try:
        for i in range(slices):
            order = (("python", python), ("cython", cython)) if i % 2 else (("cython", cython), ("python", python))
            for impl, call in order:
                best[impl] = min(best[impl], _slice_time(call, number))
    finally:
        if enabled:
            gc.enable()
    return best["python"] / best["cython"]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    bench = getattr(session.config, "_benchmarksession", None)
    if bench is None or not getattr(bench, "benchmarks", None):
        return
    medians: dict[str, dict[str, float]] = {}
    for meta in bench.benchmarks:
        impl = meta.name.rsplit("[", 1)[-1].rstrip("]")
        medians.setdefault(meta.group, {})[impl] = meta.stats.min
    failures = []
    lines = ["", "native gate (fallback / Cython, or reference / subject; minimum times of one run):"]
    for group, floor in FLOORS.items():
        subject, reference = PAIRS.get(group, ("cython", "python"))
        pair = medians.get(group, {})
        if reference not in pair or subject not in pair:
            failures.append(f"{group}: not measured for both {subject} and {reference} ({sorted(pair)})")
            continue
        ratio = pair[reference] / pair[subject]
        note = ""
        calls = _CALLS.get(group, {})
        if ratio < floor and reference in calls and subject in calls:
            again = interleaved_ratio(calls[reference], calls[subject])
            note = f"  (first {ratio:.2f}x, measured again interleaved)"
            ratio = max(ratio, again)
        status = "ok" if ratio >= floor else "BELOW FLOOR"
        lines.append(f"  {group:32s} {ratio:6.2f}x  (floor {floor:.1f}x)  {status}{note}")
        if ratio < floor:
            failures.append(f"{group}: {ratio:.2f}x < {floor:.1f}x")
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    text = "\n".join(lines + [f"  FAILED: {f}" for f in failures])
    if reporter is not None:
        reporter.write_line(text)
    else:
        print(text)
    if failures and session.exitstatus == 0:
        session.exitstatus = 1
