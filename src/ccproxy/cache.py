"""The response cache for non-streaming requests, with in-flight de-duplication.

Opt-in (CCPROXY_CACHE=on). Entries live in the native ``LRUCache`` (bounded by entries and bytes,
expiring after the TTL), keyed by the native ``cache_key`` of the request plus the route that
serves it. Identical concurrent requests share one upstream call: the first one (the leader)
fetches, the others await its future. A failed fetch is never stored and its outcome (the error
response or exception) is handed to the waiters at once, so nobody waits on a call that already
ended. A leader whose client disconnects keeps fetching for the waiters only if any exist.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from ._native import LRUCache, cache_key
from .serving import Response


class _Flight:
    __slots__ = ("task", "waiters")

    def __init__(self, task: asyncio.Future[Response]) -> None:
        self.task = task
        self.waiters = 0


ENTRY_OVERHEAD = 256  # bytes counted per entry beyond its body (key, node, response object)


class ResponseCache:
    def __init__(self, max_entries: int, max_bytes: int, ttl: float) -> None:
        self.store = LRUCache(max_entries, max_bytes, ttl)
        self.inflight: dict[str, _Flight] = {}
        self.shared = 0  # requests answered by another request's upstream call
        self.stored = 0

    @staticmethod
    def key(request: Any, upstream: str, upstream_model: str) -> str:
        """``request`` is the decoded JSON body; volatile fields (metadata, stream) are excluded
        by the native hash, the route is added so two upstreams never share an entry."""
        return cache_key({"request": request, "upstream": upstream, "model": upstream_model})

    async def get_or_fetch(self, key: str, fetch: Callable[[], Awaitable[Response]]) -> tuple[Response, str]:
        """(response, how): how is "hit", "shared" or "miss"."""
        cached = self.store.get(key)
        if cached is not None:
            return cached, "hit"
        flight = self.inflight.get(key)
        if flight is not None:
            self.shared += 1
            flight.waiters += 1
            try:
                # shield: a waiter that leaves must not cancel the fetch the others wait for
                return await asyncio.shield(flight.task), "shared"
            finally:
                flight.waiters -= 1
        flight = self.inflight[key] = _Flight(asyncio.ensure_future(self._fetch(key, fetch)))
        try:
            return await asyncio.shield(flight.task), "miss"
        except asyncio.CancelledError:
            if flight.waiters == 0:  # nobody else needs the answer
                flight.task.cancel()
            raise

    async def _fetch(self, key: str, fetch: Callable[[], Awaitable[Response]]) -> Response:
        try:
            response = await fetch()
        finally:
            # success or failure, the next identical request starts afresh (failures are never
            # stored, and the waiters got the outcome from the task already)
            self.inflight.pop(key, None)
        if response.status == 200 and self.store.put(key, response, len(response.body) + ENTRY_OVERHEAD):
            self.stored += 1
        return response

    def clear(self) -> int:
        count = len(self.store)
        self.store.clear()
        return count

    def stats(self) -> dict[str, Any]:
        s = self.store
        lookups = s.hits + s.misses
        return {
            "enabled": True,
            "entries": len(s),
            "bytes": s.total_bytes,
            "max_entries": s.max_entries,
            "max_bytes": s.max_bytes,
            "ttl_seconds": s.ttl,
            "hits": s.hits,
            "misses": s.misses,
            "shared_in_flight": self.shared,
            "expirations": s.expirations,
            "evictions": s.evictions,
            "stored": self.stored,
            "in_flight": len(self.inflight),
            "hit_rate": round(s.hits / lookups, 4) if lookups else 0.0,
        }
