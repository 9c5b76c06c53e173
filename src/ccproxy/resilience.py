"""Retries and circuit breaking around upstream calls.

The rules, in one place:
- An attempt is *retryable* when the upstream never answered (connection refused or reset,
  connect or first-byte timeout) or answered 429, 500, 502, 503, 504 or 529 — and only before
  anything reached the client. A stream that already sent bytes is never retried.
- An attempt is an *upstream fault* when the upstream never answered or answered 5xx/529. The
  circuit breaker hears one outcome per request, its last attempt's (app.py ``_attempts``). 4xx
  (429 included) are the client's or the quota's business and never open a circuit.
- Retries wait ``min(max_delay, base * 2**n)`` with full jitter, or the upstream's Retry-After
  when it names one (a Retry-After above ``max_retry_after`` is not waited for: the client gets
  the 429 with the header and decides itself).
- A retry budget keeps retries from multiplying load when an upstream is down: each first
  attempt deposits ``ratio`` of a token (bucket capped at ``burst``), each retry takes a whole one.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504, 529})


def is_fault(upstream_status: int | None) -> bool:
    """Whether an attempt that ended with this upstream status (None: no answer) counts against
    the upstream's health."""
    return upstream_status is None or upstream_status >= 500


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds form; HTTP dates are rare upstream)."""
    if not value:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


@dataclass(slots=True)
class RetryPolicy:
    max_retries: int = 2
    base_delay: float = 0.5
    max_delay: float = 8.0
    max_retry_after: float = 30.0

    def delay(self, retry: int, retry_after: float | None) -> float | None:
        """Seconds to wait before retry number ``retry`` (0-based), or None: do not retry."""
        if retry >= self.max_retries:
            return None
        if retry_after is not None:
            return retry_after if retry_after <= self.max_retry_after else None
        return random.uniform(0, min(self.max_delay, self.base_delay * (2**retry)))


class RetryBudget:
    """A token bucket shared by all requests of a process: retries may add at most ``ratio`` of
    the first-attempt traffic (plus a ``burst`` for quiet periods)."""

    def __init__(self, ratio: float = 0.2, burst: float = 10.0) -> None:
        self.ratio = ratio
        self.burst = burst
        self.tokens = burst
        self.exhausted = 0  # retries refused for lack of budget

    def deposit(self) -> None:
        self.tokens = min(self.burst, self.tokens + self.ratio)

    def withdraw(self) -> bool:
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        self.exhausted += 1
        return False


CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


class CircuitBreaker:
    """Per-upstream breaker: ``threshold`` consecutive faults open it for ``cooldown`` seconds;
    then one probe is let through (half-open): success closes it, a fault opens it again. Any
    non-fault answer (2xx, 4xx) resets the fault count."""

    def __init__(self, threshold: int = 5, cooldown: float = 60.0, clock=time.monotonic) -> None:
        self.threshold = threshold
        self.cooldown = cooldown
        self._clock = clock
        self.state = CLOSED
        self.failures = 0
        self.opened_at = 0.0
        self.opened_count = 0
        self._probing = False
        # With Redis (shared.py): each outcome is also pushed there, and the state other
        # processes pushed is adopted by ``adopt`` (the app polls it).
        self.on_record: Callable[[bool], None] | None = None
        self.remote_failures = 0

    def allow(self) -> bool:
        """May a request go to this upstream now? In half-open state only one probe at a time."""
        if self.state == CLOSED:
            return True
        if self.state == OPEN:
            if self._clock() - self.opened_at < self.cooldown:
                return False
            self.state = HALF_OPEN
            self._probing = False
        if self._probing:
            return False
        self._probing = True
        return True

    def retry_in(self) -> float:
        """Seconds until an open circuit lets a probe through."""
        if self.state != OPEN:
            return 0.0
        return max(0.0, self.cooldown - (self._clock() - self.opened_at))

    def record(self, fault: bool) -> None:
        if self.on_record is not None and (fault or self.failures or self.remote_failures or self.state != CLOSED):
            self.on_record(fault)  # (a success only matters to others when something failed)
        if not fault:
            self.state, self.failures, self._probing = CLOSED, 0, False
            return
        self.failures += 1
        if self.state == HALF_OPEN or self.failures >= self.threshold:
            if self.state != OPEN:
                self.opened_count += 1
            self.state, self.opened_at, self._probing = OPEN, self._clock(), False

    def adopt(self, failures: int, open_for: float) -> None:
        """Take on the shared state: open for ``open_for`` more seconds (> 0), or closed by
        another process's success (no faults left)."""
        self.remote_failures = failures
        if open_for > 0 and self.state == CLOSED:
            self.opened_count += 1
            self.state, self.opened_at, self._probing = OPEN, self._clock() - (self.cooldown - open_for), False
        elif open_for <= 0 and failures == 0 and self.state == OPEN:
            self.state, self.failures, self._probing = CLOSED, 0, False

    def release(self) -> None:
        """An allowed attempt ended without telling anything about the upstream (the client left)."""
        self._probing = False

    def snapshot(self) -> dict[str, object]:
        return {
            "state": self.state,
            "consecutive_failures": self.failures,
            "times_opened": self.opened_count,
            "retry_in_seconds": round(self.retry_in(), 3),
        }
