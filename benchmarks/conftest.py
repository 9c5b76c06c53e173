"""The native regression gate: ``pytest benchmarks/ --benchmark-only``.

Every op in test_native.py is benchmarked twice in one run, Cython and the pure-Python fallback
(the pair's reference). At the end the gate compares the two *minimum* times of each op (the
estimate least moved by other work on a shared machine) and fails the run when the
fallback/Cython ratio is below the op's floor. Ratios measured in the same run are stable where
absolute times are not.
"""

from __future__ import annotations

import pytest

# Minimum fallback/Cython ratio per op (benchmark group). See docs/benchmarks.md.
FLOORS: dict[str, float] = {
    "sse.decode_stream": 3.0,
    "sse.content_delta": 3.0,
    "sse.frame_event": 3.0,
    "jsonsize.claude_code_request": 3.0,
    "cachekey.claude_code_request": 3.0,
    "lru.evict_heavy": 3.0,
    "lru.hit_heavy": 3.0,
}


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    bench = getattr(session.config, "_benchmarksession", None)
    if bench is None or not getattr(bench, "benchmarks", None):
        return
    medians: dict[str, dict[str, float]] = {}
    for meta in bench.benchmarks:
        impl = meta.name.rsplit("[", 1)[-1].rstrip("]")
        medians.setdefault(meta.group, {})[impl] = meta.stats.min
    failures = []
    lines = ["", "native gate (fallback / Cython, minimum times of one run):"]
    for group, floor in FLOORS.items():
        pair = medians.get(group, {})
        if "python" not in pair or "cython" not in pair:
            failures.append(f"{group}: not measured for both implementations ({sorted(pair)})")
            continue
        ratio = pair["python"] / pair["cython"]
        status = "ok" if ratio >= floor else "BELOW FLOOR"
        lines.append(f"  {group:32s} {ratio:6.2f}x  (floor {floor:.1f}x)  {status}")
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
