"""Operations: the in-flight count and graceful drain, and the endpoints that report on them
(``/``, ``/health``, ``/livez``, ``/v1/metrics``, ``/metrics``, ``/v1/cache/*``)."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path

import orjson

from . import __version__, _native
from .cache import ResponseCache
from .metrics import Metrics, prometheus
from .recording import Recorder
from .serving import Request, Response
from .shared import Shared
from .upstream.registry import Upstreams

log = logging.getLogger("ccproxy.ops")


class Drain:
    """Requests in flight, and the drain the ccproxy main process asks for with SIGUSR1 when it
    got SIGTERM: refuse new requests, let the in-flight ones finish, then drop a marker file in
    ``drain_dir`` (the main process then stops this worker; cli.py)."""

    def __init__(self, drain_dir: Path | None) -> None:
        self.drain_dir = drain_dir
        self.in_flight = 0
        self.draining = False

    def begin(self) -> None:
        self.in_flight += 1

    def end(self) -> None:
        self.in_flight -= 1
        if self.draining and self.in_flight == 0:
            self._mark_drained()

    def start(self) -> None:
        if self.draining:
            return
        self.draining = True
        log.info("draining: %d request(s) in flight", self.in_flight)
        if self.in_flight == 0:
            self._mark_drained()

    def _mark_drained(self) -> None:
        if self.drain_dir is not None:
            with contextlib.suppress(OSError):
                (self.drain_dir / f"{os.getpid()}.drained").touch()


class Ops:
    def __init__(
        self,
        drain: Drain,
        metrics: Metrics,
        upstreams: Upstreams,
        cache: ResponseCache | None,
        shared: Shared | None,
        recorder: Recorder,
    ) -> None:
        self.drain = drain
        self.metrics = metrics
        self.upstreams = upstreams
        self.cache = cache
        self.shared = shared
        self.recorder = recorder

    async def root(self, req: Request) -> Response:
        return Response(200, orjson.dumps({"status": "ok", "service": "ccproxy", "version": __version__}))

    async def health(self, req: Request) -> Response:
        """The load balancer's signal: 200 healthy, or 503 draining after SIGTERM."""
        if self.drain.draining:
            body = {"status": "draining", "timestamp": _now_iso(), "in_flight": self.drain.in_flight}
            return Response(503, orjson.dumps(body))
        return Response(200, orjson.dumps({"status": "healthy", "timestamp": _now_iso()}))

    async def livez(self, req: Request) -> Response:
        drain = self.drain
        body = {"status": "ok", "timestamp": _now_iso(), "in_flight": drain.in_flight, "draining": drain.draining}
        return Response(200, orjson.dumps(body))

    async def metrics_json(self, req: Request) -> Response:
        data = self.metrics.snapshot()
        data["in_flight"] = self.drain.in_flight
        data["draining"] = self.drain.draining
        data["pid"] = os.getpid()
        data["upstreams"] = self.upstreams.snapshot()
        budget = self.upstreams.retry_budget
        data["retry_budget"] = {"tokens": round(budget.tokens, 2), "refused": budget.exhausted}
        data["cache"] = self.cache.stats() if self.cache is not None else {"enabled": False}
        data["shared"] = self.shared.stats() if self.shared is not None else {"backend": "local"}
        data["native"] = {"implementation": _native.IMPLEMENTATION, "modules": dict(_native.IMPLEMENTATIONS)}
        counts = self.recorder.counts()
        if counts is not None:
            data["request_log"] = counts
        data["version"] = __version__
        return Response(200, orjson.dumps(data))

    async def metrics_prometheus(self, req: Request) -> Response:
        circuits = {}
        for name in self.upstreams.names:
            state = self.upstreams.breaker(name).state
            circuits[f'upstream="{name}"'] = {"closed": 0, "half_open": 1, "open": 2}[state]
        gauges = {"ccproxy_in_flight_requests": self.drain.in_flight, "ccproxy_draining": int(self.drain.draining)}
        if self.shared is not None:  # 0 while Redis is unreachable and local state stands in
            gauges["ccproxy_shared_state_up"] = int(self.shared.up)
            gauges["ccproxy_shared_state_errors"] = self.shared.errors
        labelled: dict[str, dict[str, float]] = {
            "ccproxy_circuit_state": circuits,
            "ccproxy_native_info": {f'implementation="{_native.IMPLEMENTATION}"': 1},
        }
        if self.cache is not None:
            stats = self.cache.stats()
            labelled["ccproxy_cache_lookups"] = {'result="hit"': stats["hits"], 'result="miss"': stats["misses"]}
            gauges["ccproxy_cache_entries"] = stats["entries"]
            gauges["ccproxy_cache_bytes"] = stats["bytes"]
        body = prometheus(self.metrics, gauges, labelled)
        return Response(200, body, content_type="text/plain; version=0.0.4; charset=utf-8")

    async def cache_stats(self, req: Request) -> Response:
        return Response(200, orjson.dumps(self.cache.stats() if self.cache is not None else {"enabled": False}))

    async def cache_clear(self, req: Request) -> Response:
        cleared = await self.cache.clear() if self.cache is not None else 0
        return Response(200, orjson.dumps({"cleared": cleared, "enabled": self.cache is not None}))


def _now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
