"""Retry policy and budget, circuit breaker, rate limiter, response cache, metrics (issue 7)."""

from __future__ import annotations

import asyncio

import pytest

from ccproxy.cache import ResponseCache
from ccproxy.errors import ProxyError
from ccproxy.metrics import Histogram, Metrics, prometheus
from ccproxy.ratelimit import RateLimiter
from ccproxy.resilience import CircuitBreaker, RetryBudget, RetryPolicy, is_fault, parse_retry_after
from ccproxy.serving import Response


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- circuit breaker ----------------------------------------------------------------------------


def test_breaker_counts_only_consecutive_faults():
    breaker = CircuitBreaker(threshold=5, cooldown=60, clock=Clock())
    for _ in range(4):
        breaker.record(fault=True)
    breaker.record(fault=False)  # a success (or a 4xx) resets the count
    for _ in range(4):
        breaker.record(fault=True)
    assert breaker.state == "closed" and breaker.allow()


def test_breaker_opens_half_opens_with_one_probe_and_closes():
    clock = Clock()
    breaker = CircuitBreaker(threshold=5, cooldown=60, clock=clock)
    for _ in range(5):
        breaker.record(fault=True)
    assert breaker.state == "open" and not breaker.allow() and 59 < breaker.retry_in() <= 60
    clock.now += 60
    assert breaker.allow()  # the probe
    assert breaker.state == "half_open" and not breaker.allow()  # only one at a time
    breaker.record(fault=True)  # the probe failed: open again, for a full cooldown
    assert breaker.state == "open" and not breaker.allow()
    clock.now += 60
    assert breaker.allow()
    breaker.record(fault=False)
    assert breaker.state == "closed" and breaker.allow() and breaker.snapshot()["times_opened"] == 2


def test_breaker_probe_released_when_the_client_left():
    clock = Clock()
    breaker = CircuitBreaker(threshold=1, cooldown=1, clock=clock)
    breaker.record(fault=True)
    clock.now += 1
    assert breaker.allow()
    breaker.release()
    assert breaker.allow()  # another probe may go


def test_fault_classification():
    assert is_fault(None) and is_fault(500) and is_fault(503) and is_fault(529)
    assert not is_fault(400) and not is_fault(429) and not is_fault(200)


# --- retries -------------------------------------------------------------------------------------


def test_retry_delays():
    policy = RetryPolicy(max_retries=3, base_delay=0.5, max_delay=2.0, max_retry_after=30)
    for retry, cap in ((0, 0.5), (1, 1.0), (2, 2.0)):
        assert all(0 <= policy.delay(retry, None) <= cap for _ in range(50))
    assert policy.delay(3, None) is None  # retries exhausted
    assert policy.delay(0, 7.0) == 7.0  # Retry-After wins
    assert policy.delay(0, 31.0) is None  # too long: the client decides
    assert parse_retry_after("2") == 2.0 and parse_retry_after("1.5") == 1.5
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") is None and parse_retry_after("-1") is None


def test_retry_budget_limits_retries_to_a_share_of_traffic():
    budget = RetryBudget(ratio=0.2, burst=2)
    assert budget.withdraw() and budget.withdraw() and not budget.withdraw()
    for _ in range(5):
        budget.deposit()  # five first attempts earn one retry
    assert budget.withdraw() and not budget.withdraw() and budget.exhausted == 2


# --- rate limiter -------------------------------------------------------------------------------------


def test_rate_limiter_rpm_queue_and_refusal():
    async def scenario():
        clock = Clock()
        limiter = RateLimiter(rpm=2, queue_limit=1, max_wait=5, clock=clock)
        await limiter.acquire(10)
        await limiter.acquire(10)
        # the third would wait ~60 s, longer than max_wait: refused with a Retry-After
        with pytest.raises(ProxyError) as err:
            await limiter.acquire(10)
        assert err.value.status == 429 and err.value.error_type == "rate_limit_error"
        assert dict(err.value.headers)["retry-after"] == "60"
        clock.now += 60  # the window slid: room again
        await limiter.acquire(10)
        assert limiter.snapshot()["window_requests"] == 1

    asyncio.run(scenario())


def test_rate_limiter_waits_its_turn_within_max_wait():
    async def scenario():
        limiter = RateLimiter(rpm=1, queue_limit=5, max_wait=5)
        limiter._window.append([limiter._clock() - 59.8, 1.0])  # a request 59.8 s ago
        started = asyncio.get_running_loop().time()
        await limiter.acquire(1)
        waited = asyncio.get_running_loop().time() - started
        assert 0.1 < waited < 1.0

    asyncio.run(scenario())


def test_rate_limiter_full_queue_refuses_at_once():
    async def scenario():
        limiter = RateLimiter(rpm=1, queue_limit=0, max_wait=60)
        await limiter.acquire(1)
        with pytest.raises(ProxyError) as err:
            await limiter.acquire(1)
        assert "queue is full" in err.value.message and limiter.rejected == 1

    asyncio.run(scenario())


def test_rate_limiter_tpm_and_adaptation():
    async def scenario():
        clock = Clock()
        limiter = RateLimiter(tpm=1000, queue_limit=0, clock=clock)
        entry = await limiter.acquire(900)
        limiter.correct(entry, 100)  # the upstream reported less than estimated
        await limiter.acquire(800)
        with pytest.raises(ProxyError):
            await limiter.acquire(200)
        limiter.adapt(throttled=True)  # an upstream 429: 80 % of the current limits
        assert limiter.effective_tpm == pytest.approx(800)
        for _ in range(10):
            limiter.adapt(throttled=False)  # ten successes: +10 % of the configured limit
        assert limiter.effective_tpm == pytest.approx(900)
        for _ in range(40):
            limiter.adapt(throttled=True)
        assert limiter.effective_tpm == pytest.approx(100)  # never below 10 %

    asyncio.run(scenario())


def test_rate_limiter_off_costs_nothing():
    async def scenario():
        limiter = RateLimiter()
        for _ in range(1000):
            await limiter.acquire(10**6)
        assert limiter.snapshot()["window_requests"] == 0

    asyncio.run(scenario())


# --- response cache -------------------------------------------------------------------------------


def test_cache_shares_one_fetch_and_stores_only_successes():
    async def scenario():
        cache = ResponseCache(10, 10**6, 60)
        calls = 0

        async def fetch() -> Response:
            nonlocal calls
            calls += 1
            await asyncio.sleep(0.05)
            return Response(200, b'{"ok":true}')

        results = await asyncio.gather(*(cache.get_or_fetch("k", fetch) for _ in range(50)))
        assert calls == 1 and {how for _, how in results} == {"miss", "shared"}
        assert (await cache.get_or_fetch("k", fetch))[1] == "hit"

        async def failing() -> Response:
            nonlocal calls
            calls += 1
            await asyncio.sleep(0.05)
            raise ProxyError(502, "upstream down")

        outcomes = await asyncio.gather(*(cache.get_or_fetch("f", failing) for _ in range(5)), return_exceptions=True)
        assert all(isinstance(o, ProxyError) for o in outcomes) and calls == 2
        assert "f" not in cache.store and not cache.inflight

        async def error_answer() -> Response:
            return Response(529, b"{}")

        assert (await cache.get_or_fetch("e", error_answer))[0].status == 529
        assert "e" not in cache.store

    asyncio.run(scenario())


def test_cache_leader_leaving_keeps_the_fetch_for_waiters_only():
    async def scenario():
        cache = ResponseCache(10, 10**6, 60)
        started = asyncio.Event()

        async def fetch() -> Response:
            started.set()
            await asyncio.sleep(0.1)
            return Response(200, b"{}")

        leader = asyncio.create_task(cache.get_or_fetch("k", fetch))
        await started.wait()
        waiter = asyncio.create_task(cache.get_or_fetch("k", fetch))
        await asyncio.sleep(0)
        leader.cancel()
        assert (await waiter)[1] == "shared"  # the waiter still got the answer
        # A leader alone: its fetch is cancelled with it.
        cancelled = asyncio.Event()

        async def slow() -> Response:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                cancelled.set()
                raise
            return Response(200, b"{}")

        alone = asyncio.create_task(cache.get_or_fetch("s", slow))
        await asyncio.sleep(0.01)
        alone.cancel()
        await asyncio.wait_for(cancelled.wait(), 1)
        assert not cache.inflight

    asyncio.run(scenario())


def test_cache_key_ignores_volatile_fields_and_separates_routes():
    body = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    key = ResponseCache.key(body, "default", "gpt-big")
    assert ResponseCache.key({**body, "metadata": {"user_id": "u"}}, "default", "gpt-big") == key
    assert ResponseCache.key(dict(reversed(body.items())), "default", "gpt-big") == key
    assert ResponseCache.key(body, "other", "gpt-big") != key
    assert ResponseCache.key(body, "default", "gpt-small") != key


# --- metrics -----------------------------------------------------------------------------------------


def test_histogram_percentiles_are_real_distribution_figures():
    hist = Histogram()
    for ms in range(1, 101):
        hist.observe(ms / 1000)
    summary = hist.summary()
    assert summary["count"] == 100 and summary["mean_ms"] == pytest.approx(50.5)
    assert 32 <= summary["p50"] <= 64 and 64 <= summary["p99"] <= 128  # within the bucket holding it
    assert summary["p50"] < summary["p90"] <= summary["p99"]
    assert Histogram().summary()["p50"] is None


def test_prometheus_text_is_well_formed():
    m = Metrics()
    m.record("default", 200, None, 0.02, True, {"input_tokens": 10, "output_tokens": 3})
    m.record("default", 529, "overloaded_error", 0.5, False, {})
    text = prometheus(m, {"ccproxy_in_flight_requests": 1}, {"ccproxy_circuit_state": {'upstream="default"': 0}})
    lines = text.decode().splitlines()
    assert 'ccproxy_requests_total{upstream="default",status="200"} 1' in lines
    assert 'ccproxy_errors_total{type="overloaded_error"} 1' in lines
    assert 'ccproxy_tokens_total{kind="input_tokens"} 10' in lines
    buckets = [line for line in lines if line.startswith("ccproxy_request_duration_seconds_bucket")]
    counts = [int(line.rsplit(" ", 1)[1]) for line in buckets]
    assert (
        counts == sorted(counts)
        and counts[-1] == 2
        and buckets[-1].startswith('ccproxy_request_duration_seconds_bucket{le="+Inf"}')
    )
    for line in lines:
        assert line.startswith("#") or len(line.rsplit(" ", 1)) == 2
