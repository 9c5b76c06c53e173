"""State shared by several proxy processes through Redis (REDIS_URL; redis-py asyncio).

Without REDIS_URL every process keeps its own cache, rate windows and circuits (docs/resilience.md).
With it, they share:

- the response cache and in-flight de-duplication (``cache.py``): answers live under
  ``ccproxy:cache:<key>``; the process that wins ``SET ccproxy:lock:<key> NX`` asks the upstream,
  the others poll for its answer (or its failure, kept for a moment under ``ccproxy:fail:<key>``);
  each process keeps what it saw in its local store too (a near-cache, expiring with the Redis
  entry), dropped when a clear bumps ``ccproxy:cache-generation``;
- the rate limiter's window (``ratelimit.py``): per-second buckets of requests and tokens,
  checked and taken atomically by one Lua script;
- circuit-breaker state (``resilience.py``): consecutive faults and the open-until time per
  upstream, pushed on each outcome and read back every ``CIRCUIT_SYNC`` seconds.

Redis is never allowed to fail a request. Every operation has a short timeout; a failure marks
Redis down for ``DOWN_FOR`` seconds, during which everything runs on local state, and is
counted and logged (once per outage) and shown in /v1/metrics under ``shared``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable
from typing import Any, TypeVar

import orjson

from .errors import ProxyError
from .redact import without_password
from .serving import Response

log = logging.getLogger("ccproxy.shared")
T = TypeVar("T")

PREFIX = "ccproxy:"
TIMEOUT = 0.5  # seconds per Redis operation
DOWN_FOR = 2.0  # after a failure, local state only for this long, then try Redis again
CIRCUIT_SYNC = 0.25
FAIL_TTL_MS = 3000  # a leader's failure is handed to the waiters for this long

# Sliding minute in per-second buckets, all in one hash per upstream: fields r:<second> and
# t:<second> (requests, tokens), running totals r and t, and "from", the oldest second not yet
# dropped. Each call first drops the seconds that left the window (each second once, so the
# work is constant per call), then checks the totals and takes room. Returns 0 when the request
# was counted, else the milliseconds until it would fit (scanning the buckets: only then).
# Far from the limits a call takes a small lease (ARGV[5]: up to that many requests, at most
# 1 % of the free room, and 1 % of the free tokens) that the process spends locally for a
# second, so a busy proxy asks Redis once per lease rather than once per request; what it did
# not spend comes back with its next call (ARGV[6..8]: requests, tokens, their second). Below
# 200 free requests the lease is the one request, which keeps the limit exact where it matters.
# Returns {wait_ms, requests, tokens}.
_RATE = """
local key, now_ms = KEYS[1], tonumber(ARGV[1])
local rpm, tpm, cost = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local lease = tonumber(ARGV[5])
local back_r, back_t, back_second = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local now = math.floor(now_ms / 1000)
local low = now - 59
local head = redis.call('HMGET', key, 'from', 'r', 't')
local from, reqs, toks = tonumber(head[1]) or now, tonumber(head[2]) or 0, tonumber(head[3]) or 0
if from < low then
  if low - from > 60 then
    redis.call('DEL', key)
    reqs, toks = 0, 0
  else
    for s = from, low - 1 do
      local v = redis.call('HMGET', key, 'r:' .. s, 't:' .. s)
      local r, t = tonumber(v[1]) or 0, tonumber(v[2]) or 0
      if r ~= 0 or t ~= 0 then
        reqs, toks = reqs - r, toks - t
        redis.call('HDEL', key, 'r:' .. s, 't:' .. s)
      end
    end
    redis.call('HSET', key, 'r', reqs, 't', toks)
  end
  from = low
end
if (back_r > 0 or back_t > 0) and back_second >= from and redis.call('HEXISTS', key, 'r:' .. back_second) == 1 then
  redis.call('HINCRBY', key, 'r:' .. back_second, 0 - back_r)  -- (not -x: Lua's -0 is no integer)
  redis.call('HINCRBY', key, 't:' .. back_second, 0 - back_t)
  reqs, toks = reqs - back_r, toks - back_t
  redis.call('HSET', key, 'r', reqs, 't', toks)
end
local wait = 0
local over_r = rpm > 0 and reqs + 1 > rpm
local over_t = tpm > 0 and toks > 0 and toks + cost > tpm
if over_r or over_t then
  local freed_r, freed_t, done_r, done_t = 0, 0, not over_r, not over_t
  for s = from, now do
    local v = redis.call('HMGET', key, 'r:' .. s, 't:' .. s)
    freed_r, freed_t = freed_r + (tonumber(v[1]) or 0), freed_t + (tonumber(v[2]) or 0)
    if not done_r and reqs - freed_r + 1 <= rpm then done_r = true end
    if not done_t and (toks - freed_t + cost <= tpm or freed_t >= toks) then done_t = true end
    if done_r and done_t then wait = (s + 60) * 1000 - now_ms break end
  end
  if wait <= 0 then wait = 1000 end
  redis.call('HSET', key, 'from', from)
  return {wait, 0, 0}
end
local n = lease
if rpm > 0 then n = math.max(1, math.min(lease, math.floor((rpm - reqs) / 100))) end
local t = cost
if tpm > 0 then t = cost + math.max(0, math.floor((tpm - toks - cost) / 100)) end
redis.call('HSET', key, 'from', from)
redis.call('HINCRBY', key, 'r', n)
redis.call('HINCRBY', key, 't', t)
redis.call('HINCRBY', key, 'r:' .. now, n)
redis.call('HINCRBY', key, 't:' .. now, t)
redis.call('PEXPIRE', key, 70000)
return {0, n, t}
"""

# The upstream's reported usage replaces a request's estimate, in its second if still kept.
_RATE_CORRECT = """
local from = tonumber(redis.call('HGET', KEYS[1], 'from') or '-1')
local second, delta = tonumber(ARGV[1]), tonumber(ARGV[2])
if from >= 0 and second >= from and redis.call('HEXISTS', KEYS[1], 'r:' .. second) == 1 then
  redis.call('HINCRBY', KEYS[1], 't', delta)
  redis.call('HINCRBY', KEYS[1], 't:' .. second, delta)
end
return 0
"""

_UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# One outcome of a request to an upstream: a fault counts (and opens the circuit at the
# threshold), anything else resets the count and closes it.
_CIRCUIT = """
local key, fault, threshold = KEYS[1], ARGV[1], tonumber(ARGV[2])
local cooldown_ms, now_ms = tonumber(ARGV[3]), tonumber(ARGV[4])
if fault == '0' then
  redis.call('HSET', key, 'failures', 0, 'open_until', 0)
  return 0
end
local failures = redis.call('HINCRBY', key, 'failures', 1)
if failures >= threshold then
  local open_until = tonumber(redis.call('HGET', key, 'open_until') or '0')
  if open_until < now_ms then redis.call('HSET', key, 'open_until', now_ms + cooldown_ms) end
end
redis.call('PEXPIRE', key, cooldown_ms * 2 + 600000)
return failures
"""


class Unavailable(Exception):
    """Redis is down (or was, a moment ago): use local state."""


def encode_response(response: Response) -> bytes:
    head = orjson.dumps({"s": response.status, "h": response.headers, "c": response.content_type})
    return head + b"\n" + response.body


def decode_response(data: bytes) -> Response:
    head, _, body = data.partition(b"\n")
    meta = orjson.loads(head)
    return Response(meta["s"], body, [tuple(h) for h in meta["h"]], meta["c"])


class Shared:
    def __init__(self, url: str) -> None:
        self.url = url
        self.client: Any = None
        self._down_until = 0.0
        self.errors = 0
        self.fallbacks = 0  # operations answered from local state because Redis was down
        self.last_error: str | None = None
        self.outages = 0
        self._rate: Any = None
        self._circuit: Any = None
        self._rate_correct: Any = None
        self._unlock: Any = None
        self._tasks: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        """Create the client inside the serving loop; a first ping says whether Redis is there."""
        try:
            import redis.asyncio as redis
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff
        except ImportError:
            raise RuntimeError("REDIS_URL needs redis-py: pip install 'ccproxy[redis]'") from None
        # A blocking pool: a burst of more operations than connections waits for one (up to
        # the timeout) instead of failing, which would count as an outage.
        pool = redis.BlockingConnectionPool.from_url(
            self.url,
            max_connections=64,
            timeout=TIMEOUT * 2,  # waiting for a free connection may take the operation's whole budget
            socket_timeout=TIMEOUT,
            # A burst opens up to 64 connections at once, each a handshake of Python work on this
            # loop: on a busy box the last ones took longer than TIMEOUT and a healthy Redis was
            # declared down. Connecting may take the operation's whole budget (run's wait_for).
            socket_connect_timeout=TIMEOUT * 2,
            retry=Retry(NoBackoff(), 0),
        )
        self.client = redis.Redis(connection_pool=pool)
        self._rate = self.client.register_script(_RATE)
        self._circuit = self.client.register_script(_CIRCUIT)
        self._rate_correct = self.client.register_script(_RATE_CORRECT)
        self._unlock = self.client.register_script(_UNLOCK)
        try:
            await self.run(self.client.ping())
            log.info("shared state on Redis %s", without_password(self.url))
        except Unavailable:
            pass  # logged by run(); requests go on with local state

    async def close(self) -> None:
        if self.client is not None:
            await self.client.aclose()
            await self.client.connection_pool.disconnect()  # (a pool passed in is not closed by aclose)

    @property
    def up(self) -> bool:
        return self.client is not None and time.monotonic() >= self._down_until

    async def run(self, operation: Awaitable[T]) -> T:
        """Await a Redis operation; any failure marks Redis down and raises ``Unavailable``."""
        if not self.up:
            if asyncio.iscoroutine(operation):
                operation.close()
            self.fallbacks += 1
            raise Unavailable
        try:
            return await asyncio.wait_for(operation, TIMEOUT * 2)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # connection refused or reset, timeouts, server errors
            self.errors += 1
            self.fallbacks += 1
            self.last_error = f"{type(exc).__name__}: {exc}"[:300]
            if time.monotonic() >= self._down_until:
                self.outages += 1
                log.warning("Redis unreachable (%s): local state for now", self.last_error)
                # every pooled connection may be dead (a restarted server): start afresh later
                with contextlib.suppress(Exception):
                    await self.client.connection_pool.disconnect()
            self._down_until = time.monotonic() + DOWN_FOR
            raise Unavailable from None

    def spawn(self, operation: Awaitable[Any]) -> None:
        """Fire and forget (outcome pushes, corrections): failures are counted by ``run``."""

        async def go() -> None:
            with contextlib.suppress(Unavailable):
                await self.run(operation)

        task = asyncio.get_running_loop().create_task(go())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def stats(self) -> dict[str, Any]:
        return {
            "backend": "redis",
            "url": without_password(self.url),
            "state": "up" if self.up else "down (local state in use)",
            "errors": self.errors,
            "outages": self.outages,
            "local_fallbacks": self.fallbacks,
            "last_error": self.last_error,
        }

    # --- cache and in-flight de-duplication ------------------------------------------------

    async def cache_get(self, key: str) -> tuple[Response, float] | None:
        """The entry and the seconds it has left."""
        pipe = self.client.pipeline(transaction=False)
        pipe.get(PREFIX + "cache:" + key).pttl(PREFIX + "cache:" + key)
        data, left_ms = await self.run(pipe.execute())
        return (decode_response(data), max(0, left_ms) / 1000) if data is not None else None

    async def cache_generation(self) -> int:
        """Bumped by every clear: processes drop their near-cache when it changes."""
        return int(await self.run(self.client.get(PREFIX + "cache-generation")) or 0)

    async def cache_put(self, key: str, response: Response, ttl: float) -> None:
        await self.run(self.client.set(PREFIX + "cache:" + key, encode_response(response), px=max(1, int(ttl * 1000))))

    async def cache_lock(self, key: str, token: str, ttl: float) -> bool:
        return bool(await self.run(self.client.set(PREFIX + "lock:" + key, token, nx=True, px=int(ttl * 1000))))

    async def cache_unlock(self, key: str, token: str) -> None:
        """Release the lock if it is still ours (it may have expired and been taken since)."""
        await self.run(self._unlock(keys=[PREFIX + "lock:" + key], args=[token]))

    def cache_release(self, key: str, token: str) -> None:
        """``cache_unlock`` in the background (for a fetch that is being cancelled)."""
        if self.up:
            self.spawn(self._unlock(keys=[PREFIX + "lock:" + key], args=[token]))

    async def cache_fail(self, key: str, failure: Response | ProxyError) -> None:
        if isinstance(failure, ProxyError):
            data = b"E" + orjson.dumps([failure.status, failure.message, failure.error_type, failure.headers])
        else:
            data = b"R" + encode_response(failure)
        await self.run(self.client.set(PREFIX + "fail:" + key, data, px=FAIL_TTL_MS))

    async def cache_wait(self, key: str, deadline: float) -> Response | None:
        """Wait for another process's answer to ``key``: the response, or None once its lock is
        gone without one (try to lead then) or at the deadline. Its failure is raised."""
        delay = 0.005
        while time.monotonic() < deadline:
            pipe = self.client.pipeline(transaction=False)
            pipe.get(PREFIX + "cache:" + key).get(PREFIX + "fail:" + key).exists(PREFIX + "lock:" + key)
            cached, failed, locked = await self.run(pipe.execute())
            if cached is not None:
                return decode_response(cached)
            if failed is not None:
                if failed[:1] == b"E":
                    status, message, error_type, headers = orjson.loads(failed[1:])
                    raise ProxyError(status, message, error_type, [tuple(h) for h in headers or []])
                return decode_response(failed[1:])
            if not locked:
                return None
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 0.05)
        return None

    async def cache_clear(self) -> int:
        count = 0
        async for name in self.client.scan_iter(match=PREFIX + "cache:*", count=500):
            count += await self.client.delete(name)
        await self.client.incr(PREFIX + "cache-generation")
        return count

    # --- rate limits ------------------------------------------------------------------------

    async def rate_take(
        self, name: str, rpm: float, tpm: float, tokens: float, lease: int = 1, back: tuple[int, int, int] = (0, 0, -1)
    ) -> list[float]:
        """[0, second, requests, tokens] when room was taken in the shared window (the request's
        and possibly a lease beyond it), else [seconds until it would fit, -1, 0, 0]. ``back``:
        an unspent lease returned (requests, tokens, second)."""
        now_ms = int(time.time() * 1000)
        args = [now_ms, int(rpm), int(tpm), int(max(0, tokens)), lease, *back]
        wait_ms, granted, granted_tokens = await self.run(self._rate(keys=[f"{PREFIX}rate:{name}"], args=args))
        if wait_ms:
            return [int(wait_ms) / 1000, -1, 0, 0]
        return [0.0, now_ms // 1000, int(granted), int(granted_tokens)]

    def rate_correct(self, name: str, deltas: dict[int, int]) -> None:
        """Tokens reported minus tokens estimated, per second of the window (batched)."""

        async def send() -> None:
            pipe = self.client.pipeline(transaction=False)
            for second, delta in deltas.items():
                if delta:
                    await self._rate_correct(keys=[f"{PREFIX}rate:{name}"], args=[second, delta], client=pipe)
            await pipe.execute()

        self.spawn(send())

    # --- circuits ---------------------------------------------------------------------------

    def circuit_push(self, name: str, fault: bool, threshold: int, cooldown: float) -> None:
        self.spawn(
            self._circuit(
                keys=[f"{PREFIX}circuit:{name}"],
                args=[1 if fault else 0, threshold, int(cooldown * 1000), int(time.time() * 1000)],
            )
        )

    async def circuit_states(self, names: list[str]) -> dict[str, tuple[int, float]]:
        """name → (consecutive faults, seconds the circuit stays open; ≤ 0 when closed)."""
        pipe = self.client.pipeline(transaction=False)
        for name in names:
            pipe.hmget(f"{PREFIX}circuit:{name}", "failures", "open_until")
        rows = await self.run(pipe.execute())
        now = time.time()
        return {
            name: (int(failures or 0), float(open_until or 0) / 1000 - now)
            for name, (failures, open_until) in zip(names, rows, strict=True)
        }
