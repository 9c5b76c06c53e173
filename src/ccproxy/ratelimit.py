"""Client-side adaptive rate limiting per upstream (optional: CCPROXY_RPM / CCPROXY_TPM).

A sliding one-minute window of (time, tokens) per upstream. A request that fits the window goes
at once; one that does not waits its turn in a FIFO queue until enough of the window has slid
by. The queue is bounded (CCPROXY_RATE_QUEUE) and so is the wait (CCPROXY_RATE_MAX_WAIT): a
request that would exceed either is answered 429 rate_limit_error with a Retry-After at once,
instead of piling up.

Adaptive: every upstream 429 lowers the effective limits to 80 % of their current value (never
below 10 % of the configured ones); every 10 consecutive successes raise them by 10 % of the
configured ones, back up to the configured limits. Tokens are first counted from an estimate
of the request and corrected to the upstream's reported usage when the answer arrives.

With Redis (REDIS_URL, ``shared.py``) the window is shared by every process: a Lua script checks
and takes room atomically in per-second buckets; a request that does not fit waits here (the
local queue's bounds still apply) and asks again. This process's own window is kept too, for
its metrics and for when Redis is unreachable, when the limiter falls back to it alone.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque

from .errors import ProxyError
from .shared import Shared, Unavailable

WINDOW = 60.0
LEASE = 64  # most requests one call to Redis may take room for (shared.py's rate script)
LEASE_SECONDS = 1.0  # and for how long this process may spend them


class RateLimiter:
    def __init__(
        self,
        rpm: int = 0,
        tpm: int = 0,
        queue_limit: int = 100,
        max_wait: float = 30.0,
        clock=time.monotonic,
        shared: Shared | None = None,
        name: str = "",
    ) -> None:
        self.shared = shared
        self.name = name
        self._lease = [0.0, 0, 0.0, -1]  # [valid until, requests, tokens, second]: see shared.py
        self._asking: asyncio.Future[None] | None = None
        self._corrections: dict[int, int] = {}
        self._next_correction = 0.0
        self.rpm, self.tpm = rpm, tpm
        self.queue_limit = queue_limit
        self.max_wait = max_wait
        self.factor = 1.0
        self._clock = clock
        self._window: deque[list[float]] = deque()  # [time, tokens]
        self._tokens = 0.0
        self._slid_to = float("-inf")
        self._turn = asyncio.Lock()  # FIFO: asyncio locks wake waiters in order
        self.queued = 0
        self.rejected = 0
        self.backoffs = 0
        self._successes = 0

    @property
    def effective_rpm(self) -> float:
        return self.rpm * self.factor

    @property
    def effective_tpm(self) -> float:
        return self.tpm * self.factor

    def _slide(self, now: float) -> None:
        window = self._window
        self._slid_to = max(self._slid_to, now - WINDOW)  # entries at or before this are gone
        while window and window[0][0] <= now - WINDOW:
            self._tokens -= window.popleft()[1]

    def _wait_needed(self, tokens: float, now: float) -> float:
        """Seconds until a request of ``tokens`` fits, or 0."""
        self._slide(now)
        waits = [0.0]
        allowed = max(1, math.floor(self.effective_rpm))
        if self.rpm and len(self._window) >= allowed:
            # the entry whose expiry makes room for one more
            waits.append(self._window[len(self._window) - allowed][0] + WINDOW - now)
        if self.tpm and self._tokens + tokens > self.effective_tpm and self._window:
            # wait until enough old entries leave; a single request bigger than the whole
            # budget goes once the window is empty
            need, freed = self._tokens + tokens - self.effective_tpm, 0.0
            for stamp, used in self._window:
                freed += used
                if freed >= need:
                    waits.append(stamp + WINDOW - now)
                    break
            else:
                waits.append(self._window[-1][0] + WINDOW - now)
        return max(waits)

    async def acquire(self, tokens: float) -> list[float]:
        """Wait for room; returns the window entry (to settle with the real usage later)."""
        if not self.rpm and not self.tpm:
            return [0.0, 0.0]
        if self.shared is not None and self.shared.up:
            try:
                return await self._acquire_shared(tokens)
            except Unavailable:
                pass  # this process's window alone until Redis is back
        now = self._clock()
        if not self._turn.locked() and self._wait_needed(tokens, now) <= 0:
            return self._take(tokens, now)
        if self.queued >= self.queue_limit:
            self.rejected += 1
            raise self._refusal(f"rate limit queue is full ({self.queue_limit} requests waiting)")
        self.queued += 1
        try:
            async with self._turn:
                while True:
                    now = self._clock()
                    wait = self._wait_needed(tokens, now)
                    if wait <= 0:
                        return self._take(tokens, now)
                    if wait > self.max_wait:
                        self.rejected += 1
                        raise self._refusal("rate limit reached", wait)
                    await asyncio.sleep(wait)
        finally:
            self.queued -= 1

    async def _acquire_shared(self, tokens: float) -> list[float]:
        assert self.shared is not None
        while True:
            lease = self._lease
            now = self._clock()
            if now < lease[0] and lease[1] >= 1 and (not self.tpm or lease[2] >= tokens):
                lease[1] -= 1  # room this process already holds in the shared window
                lease[2] -= tokens
                return self._take_shared(tokens, now, int(lease[3]))
            if self._asking is None:
                break
            await asyncio.shield(self._asking)  # one request renews the lease; the others wait
        self._asking = asyncio.get_running_loop().create_future()
        try:
            wait, second = await self._ask(tokens)  # (a grant is the new lease before others look)
        finally:
            self._asking.set_result(None)
            self._asking = None
        if wait > 0:
            if self.queued >= self.queue_limit:
                self.rejected += 1
                raise self._refusal(f"rate limit queue is full ({self.queue_limit} requests waiting)", wait)
            started = self._clock()
            self.queued += 1
            try:
                while wait > 0:
                    if self._clock() - started + wait > self.max_wait:
                        self.rejected += 1
                        raise self._refusal("rate limit reached", wait)
                    await asyncio.sleep(wait)
                    wait, second = await self._ask(tokens)
            finally:
                self.queued -= 1
        return self._take_shared(tokens, self._clock(), int(second))

    async def _ask(self, tokens: float) -> tuple[float, float]:
        """Ask Redis for room, giving back what the current lease did not spend; a grant beyond
        this request becomes the new lease. (seconds to wait or 0, the bucket's second)"""
        assert self.shared is not None
        lease, self._lease = self._lease, [0.0, 0, 0.0, -1]
        back = (max(0, int(lease[1])), max(0, int(lease[2])), int(lease[3]))
        wait, second, granted, granted_tokens = await self.shared.rate_take(
            self.name, self.effective_rpm, self.effective_tpm, tokens, LEASE, back
        )
        if wait <= 0:
            self._lease = [self._clock() + LEASE_SECONDS, granted - 1, granted_tokens - tokens, second]
        return wait, second

    def _take_shared(self, tokens: float, now: float, second: int) -> list[float]:
        entry = self._take(tokens, now)
        entry.append(float(second))  # the shared bucket it was counted in
        return entry

    def _take(self, tokens: float, now: float) -> list[float]:
        entry = [now, tokens]
        self._window.append(entry)
        self._tokens += tokens
        return entry

    def correct(self, entry: list[float], actual_tokens: float) -> None:
        """Replace an entry's estimate with the tokens the upstream reported."""
        if len(entry) > 2 and self.shared is not None:
            second = int(entry[2])
            self._corrections[second] = self._corrections.get(second, 0) + int(actual_tokens - entry[1])
            now = self._clock()
            if now >= self._next_correction:  # one batch to Redis at most every 0.25 s
                self._next_correction = now + 0.25
                self.shared.rate_correct(self.name, self._corrections)
                self._corrections = {}
        if entry[0] > self._slid_to:  # still in the window (a scan would cost O(window))
            self._tokens += actual_tokens - entry[1]
            entry[1] = actual_tokens

    def adapt(self, throttled: bool) -> None:
        """After each upstream answer: back off on 429, recover slowly on success."""
        if throttled:
            self.backoffs += 1
            self._successes = 0
            self.factor = max(0.1, self.factor * 0.8)
        else:
            self._successes += 1
            if self._successes >= 10 and self.factor < 1.0:
                self._successes = 0
                self.factor = min(1.0, self.factor + 0.1)

    def _refusal(self, why: str, wait: float | None = None) -> ProxyError:
        retry = max(1, math.ceil(wait if wait is not None else self._wait_needed(0, self._clock()) or 1))
        return ProxyError(
            429,
            f"{why}: limits {self._describe()}; retry in {retry} s",
            "rate_limit_error",
            [("retry-after", str(retry))],
        )

    def _describe(self) -> str:
        parts = []
        if self.rpm:
            parts.append(f"{self.effective_rpm:.0f} requests/min")
        if self.tpm:
            parts.append(f"{self.effective_tpm:.0f} tokens/min")
        return ", ".join(parts)

    def snapshot(self) -> dict[str, object]:
        self._slide(self._clock())
        return {
            "rpm": self.rpm,
            "tpm": self.tpm,
            "effective_rpm": round(self.effective_rpm, 1),
            "effective_tpm": round(self.effective_tpm, 1),
            "window_requests": len(self._window),
            "window_tokens": round(self._tokens),
            "queued": self.queued,
            "rejected": self.rejected,
            "backoffs": self.backoffs,
        }
