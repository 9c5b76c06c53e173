"""The response cache for non-streaming requests, with in-flight de-duplication.

Opt-in (CCPROXY_CACHE=on). Entries live in the native ``LRUCache`` (bounded by entries and bytes,
expiring after the TTL), keyed by the native ``cache_key`` of the request plus the route that
serves it. Identical concurrent requests share one upstream call: the first one (the leader)
fetches, the others await its future. A failed fetch is never stored and its outcome (the error
response or exception) is handed to the waiters at once, so nobody waits on a call that already
ended. A leader whose client disconnects keeps fetching for the waiters only if any exist.

With Redis (REDIS_URL, ``shared.py``) the entries live there instead and the de-duplication
spans processes: within a process the flight is the same; across processes the flight that
takes Redis' lock fetches and the others wait for its answer (or its failure). Whenever Redis
is unreachable the local store and flights take over, so a request never fails because of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from ._native import LRUCache, cache_key
from .errors import ProxyError
from .serving import Response
from .shared import Shared, Unavailable


class _Flight:
    __slots__ = ("task", "waiters")

    def __init__(self, task: asyncio.Future[tuple[Response, str]]) -> None:
        self.task = task
        self.waiters = 0


ENTRY_OVERHEAD = 256  # bytes counted per entry beyond its body (key, node, response object)


class ResponseCache:
    LOCK_TTL = 30.0  # a leader slower than this lets another process fetch too

    def __init__(self, max_entries: int, max_bytes: int, ttl: float, shared: Shared | None = None) -> None:
        self.store = LRUCache(max_entries, max_bytes, ttl)
        self.inflight: dict[str, _Flight] = {}
        self.shared = shared
        self.shared_waits = 0  # requests answered by another request's upstream call
        self.stored = 0
        self.shared_hits = 0  # hits from Redis (the local store counts its own)
        self.shared_misses = 0
        self._generation: int | None = None

    @staticmethod
    def key(request: Any, upstream: str, upstream_model: str, scope: str = "") -> str:
        """``request`` is the decoded JSON body; volatile fields (metadata, stream) are excluded
        by the native hash, the route is added so two upstreams never share an entry, and the
        adapter's ``scope`` (a hash of what else it forwards: the client's own key, beta flags,
        the query string) so an answer is never served to a request that would not get it."""
        return cache_key({"request": request, "upstream": upstream, "model": upstream_model, "scope": scope})

    async def get_or_fetch(self, key: str, fetch: Callable[[], Awaitable[Response]]) -> tuple[Response, str]:
        """(response, how): how is "hit", "shared" or "miss"."""
        cached = self.store.get(key)  # with Redis: the near-cache of what this process saw
        if cached is not None:
            return cached, "hit"
        shared = self.shared if self.shared is not None and self.shared.up else None
        if shared is not None:
            try:
                found = await shared.cache_get(key)
            except Unavailable:
                shared = None
            else:
                if found is not None:
                    self.shared_hits += 1
                    self._keep(key, found[0], found[1])
                    return found[0], "hit"
                self.shared_misses += 1
        flight = self.inflight.get(key)
        if flight is not None:
            self.shared_waits += 1
            flight.waiters += 1
            try:
                # shield: a waiter that leaves must not cancel the fetch the others wait for
                return (await asyncio.shield(flight.task))[0], "shared"
            finally:
                flight.waiters -= 1
        flight = self.inflight[key] = _Flight(asyncio.ensure_future(self._fetch(key, fetch, shared)))
        try:
            return await asyncio.shield(flight.task)
        except asyncio.CancelledError:
            if flight.waiters == 0:  # nobody else needs the answer
                flight.task.cancel()
            raise

    async def _fetch(
        self, key: str, fetch: Callable[[], Awaitable[Response]], shared: Shared | None
    ) -> tuple[Response, str]:
        try:
            if shared is not None:
                return await self._fetch_shared(key, fetch, shared)
            response = await fetch()
        finally:
            # success or failure, the next identical request starts afresh (failures are never
            # stored, and the waiters got the outcome from the task already)
            self.inflight.pop(key, None)
        self._keep(key, response)
        return response, "miss"

    def _keep(self, key: str, response: Response, left: float | None = None) -> None:
        """Store locally; ``left``: the seconds the entry has left elsewhere (Redis), so the
        near-cache copy expires with it."""
        now = None if left is None else time.monotonic() - max(0.0, self.store.ttl - left)
        if response.status == 200 and self.store.put(key, response, len(response.body) + ENTRY_OVERHEAD, now):
            self.stored += 1

    async def _fetch_shared(
        self, key: str, fetch: Callable[[], Awaitable[Response]], shared: Shared
    ) -> tuple[Response, str]:
        """Lead (take Redis' lock, fetch, publish) or wait for the process that leads."""
        deadline = time.monotonic() + self.LOCK_TTL
        lock = uuid.uuid4().hex
        token: str | None = None  # the lock's token once we hold it
        with contextlib.suppress(Unavailable):  # (Redis gone: fetch without the lock)
            while time.monotonic() < deadline:  # (a leader that takes this long: fetch too)
                if await shared.cache_lock(key, lock, self.LOCK_TTL):
                    token = lock
                    break
                answer = await shared.cache_wait(key, deadline)  # raises the leader's failure
                if answer is not None:
                    self.shared_waits += 1
                    self._keep(key, answer)
                    return answer, "shared"
        try:
            response = await fetch()
        except ProxyError as exc:
            await self._settle(shared, shared.cache_fail(key, exc), key, token)
            raise
        except BaseException:
            if token is not None:
                shared.cache_release(key, token)  # (this task may be cancelled: no awaiting here)
            raise
        if response.status == 200:
            self._keep(key, response)
            await self._settle(shared, shared.cache_put(key, response, self.store.ttl), key, token)
        else:
            await self._settle(shared, shared.cache_fail(key, response), key, token)
        return response, "miss"

    @staticmethod
    async def _settle(shared: Shared, publish: Awaitable[None], key: str, token: str | None) -> None:
        """Publish the outcome (while Redis is there), then release the lock if we hold it."""
        with contextlib.suppress(Unavailable):
            await publish
        if token is not None:
            with contextlib.suppress(Unavailable):
                await shared.cache_unlock(key, token)

    async def follow_clears(self) -> None:
        """Drop the near-cache when another process cleared the shared cache (polled)."""
        assert self.shared is not None
        generation = await self.shared.cache_generation()
        if self._generation is not None and generation != self._generation:
            self.store.clear()
        self._generation = generation

    async def clear(self) -> int:
        count = len(self.store)
        self.store.clear()
        if self.shared is not None:
            with contextlib.suppress(Unavailable):
                count += await self.shared.run(self.shared.cache_clear())
        return count

    def stats(self) -> dict[str, Any]:
        s = self.store
        hits, misses = s.hits + self.shared_hits, s.misses + self.shared_misses
        lookups = hits + misses
        return {
            "enabled": True,
            "entries": len(s),
            "bytes": s.total_bytes,
            "max_entries": s.max_entries,
            "max_bytes": s.max_bytes,
            "ttl_seconds": s.ttl,
            "hits": hits,
            "misses": misses,
            "shared_in_flight": self.shared_waits,
            "expirations": s.expirations,
            "evictions": s.evictions,
            "stored": self.stored,
            "in_flight": len(self.inflight),
            "hit_rate": round(hits / lookups, 4) if lookups else 0.0,
            **({"redis_hits": self.shared_hits, "redis_misses": self.shared_misses} if self.shared else {}),
        }
