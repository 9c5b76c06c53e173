"""Process-local metrics: counters and latency histograms, as JSON (/v1/metrics) and in the
Prometheus text format (/metrics).

Histograms have fixed, log-spaced buckets (1 ms … ~10 min); percentiles are interpolated inside
the bucket that holds them, so they are real distribution figures at bucket resolution, without
keeping samples. Each worker process has its own figures (see docs/design.md).
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections import Counter
from typing import Any

# 1 ms to ~655 s, doubling: 21 upper bounds, then +Inf.
BOUNDS: tuple[float, ...] = tuple(0.001 * 2**i for i in range(21))


class Histogram:
    __slots__ = ("count", "counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(BOUNDS) + 1)
        self.count = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(BOUNDS, value)] += 1  # the first bucket whose bound >= value
        self.count += 1
        self.sum += value

    def percentile(self, q: float) -> float | None:
        if not self.count:
            return None
        rank = q * self.count
        seen = 0
        for i, n in enumerate(self.counts):
            if n and seen + n >= rank:
                low = BOUNDS[i - 1] if i > 0 else 0.0
                high = BOUNDS[i] if i < len(BOUNDS) else BOUNDS[-1] * 2
                return low + (high - low) * max(0.0, rank - seen) / n
            seen += n
        return BOUNDS[-1]

    def summary(self) -> dict[str, Any]:
        ms = {f"p{int(q * 100)}": self.percentile(q) for q in (0.5, 0.9, 0.95, 0.99)}
        return {
            "count": self.count,
            "mean_ms": round(self.sum / self.count * 1000, 2) if self.count else None,
            **{k: (round(v * 1000, 2) if v is not None else None) for k, v in ms.items()},
        }


class Metrics:
    def __init__(self) -> None:
        self.started = time.time()
        self.requests: Counter[tuple[str, int]] = Counter()  # (upstream, status)
        self.errors: Counter[str] = Counter()  # error type
        self.streams = 0
        self.retries = 0
        self.fallbacks = 0
        self.tokens: Counter[str] = Counter()  # input / output / cache_read / cache_creation
        self.latency = Histogram()  # whole request (for streams: until the last byte)
        self.first_byte = Histogram()  # until the upstream answered (streams)
        self.by_upstream: dict[str, Histogram] = {}

    def record(
        self,
        upstream: str,
        status: int,
        error_type: str | None,
        seconds: float,
        stream: bool,
        usage: dict[str, int],
    ) -> None:
        self.requests[(upstream, status)] += 1
        if error_type:
            self.errors[error_type] += 1
        if stream:
            self.streams += 1
        self.latency.observe(seconds)
        hist = self.by_upstream.get(upstream)
        if hist is None:
            hist = self.by_upstream[upstream] = Histogram()
        hist.observe(seconds)
        for name in ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens"):
            value = usage.get(name)
            if value:
                self.tokens[name] += value

    def snapshot(self) -> dict[str, Any]:
        total = sum(self.requests.values())
        by_status: Counter[str] = Counter()
        for (_, status), n in self.requests.items():
            by_status[str(status)] += n
        return {
            "uptime_seconds": round(time.time() - self.started, 1),
            "requests": {
                "total": total,
                "streaming": self.streams,
                "by_status": dict(by_status),
                "by_upstream": {
                    name: sum(n for (u, _), n in self.requests.items() if u == name) for name in self.by_upstream
                },
            },
            "errors": {"total": sum(self.errors.values()), "by_type": dict(self.errors)},
            "retries": self.retries,
            "fallbacks": self.fallbacks,
            "tokens": dict(self.tokens),
            "latency": self.latency.summary(),
            "first_byte": self.first_byte.summary(),
            "latency_by_upstream": {name: h.summary() for name, h in self.by_upstream.items()},
        }


def prometheus(metrics: Metrics, gauges: dict[str, float], labelled: dict[str, dict[str, float]]) -> bytes:
    """The Prometheus text exposition (format 0.0.4)."""
    lines: list[str] = []

    def family(name: str, kind: str, help_text: str) -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")

    family("ccproxy_requests_total", "counter", "Requests answered, by upstream and status.")
    for (upstream, status), n in sorted(metrics.requests.items()):
        lines.append(f'ccproxy_requests_total{{upstream="{_esc(upstream)}",status="{status}"}} {n}')
    family("ccproxy_errors_total", "counter", "Requests that ended in an error, by Anthropic error type.")
    for error_type, n in sorted(metrics.errors.items()):
        lines.append(f'ccproxy_errors_total{{type="{_esc(error_type)}"}} {n}')
    family("ccproxy_retries_total", "counter", "Upstream attempts retried.")
    lines.append(f"ccproxy_retries_total {metrics.retries}")
    family("ccproxy_tokens_total", "counter", "Tokens reported by upstreams.")
    for kind, n in sorted(metrics.tokens.items()):
        lines.append(f'ccproxy_tokens_total{{kind="{_esc(kind)}"}} {n}')
    for name, hist, help_text in (
        ("ccproxy_request_duration_seconds", metrics.latency, "Request duration, until the last byte."),
        ("ccproxy_upstream_first_byte_seconds", metrics.first_byte, "Time until a streaming upstream answered."),
    ):
        family(name, "histogram", help_text)
        cumulative = 0
        for bound, n in zip((*BOUNDS, float("inf")), hist.counts, strict=True):
            cumulative += n
            le = "+Inf" if bound == float("inf") else repr(bound)
            lines.append(f'{name}_bucket{{le="{le}"}} {cumulative}')
        lines.append(f"{name}_sum {hist.sum}")
        lines.append(f"{name}_count {hist.count}")
    for name, value in gauges.items():
        family(name, "gauge", name.replace("_", " "))
        lines.append(f"{name} {value}")
    for name, series in labelled.items():
        family(name, "gauge", name.replace("_", " "))
        for label, value in series.items():
            lines.append(f"{name}{{{label}}} {value}")
    return ("\n".join(lines) + "\n").encode()


def _esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
