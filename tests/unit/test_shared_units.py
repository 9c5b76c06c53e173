"""Pieces of the shared backends (issue 10): the PostgreSQL dialect adapter, the Redis state
operations against a real redis-server, and the breaker and limiter taking shared state on."""

from __future__ import annotations

import asyncio
import time

import pytest

from ccproxy.cache import ResponseCache
from ccproxy.errors import ProxyError
from ccproxy.pg import Row, describe, translate
from ccproxy.ratelimit import RateLimiter
from ccproxy.redact import without_password
from ccproxy.resilience import CircuitBreaker
from ccproxy.serving import Response
from ccproxy.shared import Shared, decode_response, encode_response


def test_translate_rewrites_only_what_differs():
    assert translate("SELECT * FROM requests WHERE id = ? AND ts < ?") == (
        "SELECT * FROM requests WHERE id = %s AND ts < %s"
    )
    assert translate("BEGIN IMMEDIATE") == "BEGIN"
    assert translate("SELECT name FROM model_names WHERE name LIKE ? ESCAPE '\\'") == (
        "SELECT name FROM model_names WHERE name ILIKE %s ESCAPE '\\'"
    )
    day = translate("SELECT date(minute * 60, 'unixepoch') AS day FROM u")
    assert day == "SELECT to_char(to_timestamp(minute * 60) AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS day FROM u"
    assert translate("SELECT 100%") == "SELECT 100%%"  # a literal percent survives psycopg's binding


def test_rows_read_by_index_and_name():
    kind = type("R", (Row,), {"_names": {"id": 0, "ts": 1}})
    row = kind(("req_1", 2.5))
    assert row[0] == "req_1" and row["ts"] == 2.5 and row.keys() == ["id", "ts"]
    with pytest.raises(KeyError):
        row["nope"]


def test_passwords_stay_out_of_described_urls():
    assert without_password("postgresql://user:s3cret@db:5432/x") == "postgresql://user@db:5432/x"
    assert without_password("redis://:s3cret@cache:6379/0") == "redis://cache:6379/0"
    assert without_password("redis://cache:6379") == "redis://cache:6379"
    assert describe("/var/lib/ccproxy/ccproxy.db") == "/var/lib/ccproxy/ccproxy.db"
    assert "s3cret" not in describe("postgres://u:s3cret@h/db")


def test_responses_round_trip_through_redis_encoding():
    original = Response(200, b'{"a":1}\n\nmore', [("x-one", "1"), ("retry-after", "3")], "application/json")
    copy = decode_response(encode_response(original))
    assert (copy.status, copy.body, copy.headers, copy.content_type) == (
        original.status,
        original.body,
        original.headers,
        original.content_type,
    )


def test_breaker_adopts_shared_state_and_pushes_what_matters():
    clock = [100.0]
    breaker = CircuitBreaker(threshold=3, cooldown=10, clock=lambda: clock[0])
    pushed: list[bool] = []
    breaker.on_record = pushed.append
    breaker.record(fault=False)
    assert pushed == []  # a success on a clean breaker is nobody's news
    breaker.record(fault=True)
    breaker.record(fault=False)
    assert pushed == [True, False]
    breaker.adopt(failures=3, open_for=4.0)  # another process opened it 6 s ago
    assert breaker.state == "open" and not breaker.allow()
    assert abs(breaker.retry_in() - 4.0) < 1e-6
    breaker.adopt(failures=0, open_for=0)  # and another one's probe closed it
    assert breaker.state == "closed" and breaker.allow()


def run(coro):
    return asyncio.run(coro)


def test_rate_window_is_atomic_across_clients(redis_server):
    async def scenario() -> tuple[list[float], float]:
        a, b = Shared(redis_server.url), Shared(redis_server.url)
        await a.start()
        await b.start()
        try:
            taken = await asyncio.gather(*(s.rate_take("up", 5, 0, 10) for s in (a, b) * 5))
            tokens_wait = (await a.rate_take("tok", 0, 100, 60))[0] + (await b.rate_take("tok", 0, 100, 60))[0]
            return [t[0] for t in taken], tokens_wait
        finally:
            await a.close()
            await b.close()

    waits, tokens_wait = run(scenario())
    assert sorted(w == 0 for w in waits) == [False] * 5 + [True] * 5  # exactly 5 of 10 went
    assert all(0 < w <= 60 for w in waits if w)
    assert 0 < tokens_wait <= 60  # the second 60 tokens do not fit in 100 a minute


def test_limiter_refuses_at_once_when_the_shared_wait_is_too_long(redis_server):
    async def scenario() -> list[str]:
        shared = Shared(redis_server.url)
        await shared.start()
        try:
            limiter = RateLimiter(rpm=2, max_wait=0.5, shared=shared, name="lim")
            outcomes = []
            for _ in range(3):
                try:
                    await limiter.acquire(1)
                    outcomes.append("went")
                except ProxyError as exc:
                    outcomes.append(f"{exc.status} {exc.error_type}")
            return outcomes
        finally:
            await shared.close()

    assert run(scenario()) == ["went", "went", "429 rate_limit_error"]


def test_circuit_state_is_shared(redis_server):
    async def scenario() -> dict[str, tuple[int, float]]:
        shared = Shared(redis_server.url)
        await shared.start()
        try:
            for _ in range(3):
                shared.circuit_push("up", True, threshold=3, cooldown=30)
            shared.circuit_push("ok", True, threshold=3, cooldown=30)
            await asyncio.sleep(0.1)  # (pushes are background tasks: one after the other here)
            shared.circuit_push("ok", False, threshold=3, cooldown=30)
            await asyncio.sleep(0.2)
            return await shared.circuit_states(["up", "ok", "never"])
        finally:
            await shared.close()

    states = run(scenario())
    assert states["up"][0] == 3 and 29 < states["up"][1] <= 30
    assert states["ok"][0] == 0 and states["ok"][1] <= 0
    assert states["never"] == (0, pytest.approx(-time.time(), abs=5))


def test_cache_falls_back_to_local_state_when_redis_dies(redis_server):
    calls = []

    async def fetch() -> Response:
        calls.append(1)
        await asyncio.sleep(0.05)
        return Response(200, b'{"ok":true}')

    async def scenario() -> list[str]:
        shared = Shared(redis_server.url)
        await shared.start()
        cache = ResponseCache(100, 1 << 20, 60, shared)
        try:
            hows = [how for _, how in await asyncio.gather(*(cache.get_or_fetch("k", fetch) for _ in range(5)))]
            hows.append((await cache.get_or_fetch("k", fetch))[1])
            redis_server.kill()
            hows.append((await cache.get_or_fetch("k2", fetch))[1])  # Redis gone: fetched, kept locally
            hows.append((await cache.get_or_fetch("k2", fetch))[1])
            assert not shared.up and shared.errors >= 1
            return hows
        finally:
            await shared.close()

    hows = run(scenario())
    assert sorted(hows[:5]) == ["miss"] + ["shared"] * 4
    assert hows[5:] == ["hit", "miss", "hit"]
    assert len(calls) == 2


def test_rate_script_slides_second_by_second(redis_server):
    """The Lua window with explicit times: room comes back as the buckets leave the minute."""

    async def scenario() -> list[int]:
        shared = Shared(redis_server.url)
        await shared.start()
        try:

            async def take(at: float, rpm: int = 3, tpm: int = 0, cost: int = 0) -> int:
                result = await shared._rate(keys=["t:slide"], args=[int(at * 1000), rpm, tpm, cost, 1, 0, 0, -1])
                return int(result[0])

            t0 = 1_800_000_000.0
            out = [await take(t0), await take(t0 + 10), await take(t0 + 20.5)]  # three fit
            out.append(await take(t0 + 30))  # full: the first leaves at t0 + 60
            out.append(await take(t0 + 60.2))  # it has left: room for one
            out.append(await take(t0 + 61))  # full again until t0 + 70
            out.append(await take(t0 + 500))  # long idle: everything expired at once
            out.append(await take(t0 + 500, rpm=0, tpm=100, cost=80))
            out.append(await take(t0 + 501, rpm=0, tpm=100, cost=30))  # 110 > 100: wait
            out.append(await take(t0 + 600, rpm=0, tpm=100, cost=500))  # alone, too big: goes
            return out
        finally:
            await shared.close()

    out = run(scenario())
    assert out[:3] == [0, 0, 0]
    assert out[3] == 30_000
    assert out[4] == 0
    assert out[5] == 9_000
    assert out[6:8] == [0, 0]
    assert 0 < out[8] <= 60_000
    assert out[9] == 0


def test_leases_are_taken_far_from_the_limit_and_shrink_near_it(redis_server):
    async def scenario() -> tuple[list[int], list[float], int, int]:
        shared = Shared(redis_server.url)
        await shared.start()
        try:
            far = [
                int(g)
                for g in (await shared._rate(keys=["t:lease"], args=[1_800_000_000_000, 10_000, 0, 0, 64, 0, 0, -1]))
            ]
            near = []
            for _ in range(4):
                near.append((await shared._rate(keys=["t:near"], args=[1_800_000_000_000, 12, 0, 0, 64, 0, 0, -1]))[1])
            limiter = RateLimiter(rpm=100_000, shared=shared, name="busy")
            for _ in range(200):
                await limiter.acquire(1)
            counted = int(await shared.client.hget(b"ccproxy:rate:busy", "r"))
            # an unspent lease comes back with the next call
            before = int(await shared.client.hget("t:lease", "r"))
            await shared._rate(keys=["t:lease"], args=[1_800_000_000_500, 10_000, 0, 0, 1, 60, 0, 1_800_000_000])
            returned = before - int(await shared.client.hget("t:lease", "r"))
            return far, near, counted, returned
        finally:
            await shared.close()

    far, near, counted, returned = run(scenario())
    assert far == [0, 64, 0]  # a whole lease (no token limit: no tokens counted beyond the request's)
    assert near == [1, 1, 1, 1]  # 12 a minute: (12 - taken) / 10 < 2, one at a time
    assert 200 <= counted <= 200 + 64  # 200 requests, four calls at most (leases of 64)
    assert returned == 60 - 1  # 60 given back, the new call's one request taken


def test_near_cache_follows_redis_and_its_clears(redis_server):
    async def fetch() -> Response:
        return Response(200, b'{"n":1}')

    async def scenario() -> list[object]:
        one, two = Shared(redis_server.url), Shared(redis_server.url)
        await one.start()
        await two.start()
        a, b = ResponseCache(10, 1 << 20, 60, one), ResponseCache(10, 1 << 20, 60, two)
        try:
            await b.follow_clears()  # (as the app's sync loop does from the start)
            out: list[object] = [(await a.get_or_fetch("k", fetch))[1]]
            out.append((await b.get_or_fetch("k", fetch))[1])  # from Redis, kept near
            out.append((b.shared_hits, b.store.hits))
            out.append((await b.get_or_fetch("k", fetch))[1])  # from its near-cache
            out.append((b.shared_hits, b.store.hits))
            await one.client.pexpire("ccproxy:cache:k", 50)  # near copies expire with Redis'
            c = ResponseCache(10, 1 << 20, 60, Shared(redis_server.url))
            await c.shared.start()
            await c.get_or_fetch("k", fetch)
            await asyncio.sleep(0.1)
            out.append(c.store.get("k") is None)
            await c.shared.close()
            await a.get_or_fetch("j", fetch)
            await b.get_or_fetch("j", fetch)
            out.append(await a.clear() >= 1)
            await b.follow_clears()
            out.append(len(b.store))
            return out
        finally:
            await one.close()
            await two.close()

    assert run(scenario()) == ["miss", "hit", (1, 0), "hit", (1, 1), True, True, 0]


def test_a_lock_is_released_only_by_its_holder(redis_server):
    async def scenario() -> list[object]:
        shared = Shared(redis_server.url)
        await shared.start()
        try:
            out: list[object] = [await shared.cache_lock("k", "first", 0.05)]
            out.append(await shared.cache_lock("k", "second", 30))  # still held
            await asyncio.sleep(0.1)
            out.append(await shared.cache_lock("k", "second", 30))  # expired: taken over
            await shared.cache_unlock("k", "first")  # the late first holder must not free it
            out.append(await shared.client.get("ccproxy:lock:k"))
            await shared.cache_unlock("k", "second")
            out.append(await shared.client.get("ccproxy:lock:k"))
            return out
        finally:
            await shared.close()

    assert run(scenario()) == [True, False, True, b"second", None]


def test_postgres_store_takes_what_sqlite_takes(postgres_server):
    """Flags given as booleans and text with NUL characters (PostgreSQL refuses both as-is)."""
    from ccproxy.dashboard import Dashboard
    from ccproxy.store import connect, migrate, write_batch

    url = postgres_server.new_database()
    conn = connect(url)
    assert migrate(conn) == migrate(conn) == 2  # applied once, then nothing to do
    record = {"id": "req_x", "ts": time.time(), "model": "claude-\x00sonnet", "streaming": True, "status": 200}
    write_batch(conn, [record])
    write_batch(conn, [record])  # the same record again: stored once
    conn.close()
    board = Dashboard(url)
    listed = board.requests(1, 10, "SONNET")  # LIKE ignores case on both engines
    assert listed["total"] == 1
    row = listed["requests"][0]
    assert row["model"] == "claude-sonnet" and row["response"]["isStreaming"] is True


def test_a_burst_beyond_the_pool_waits_instead_of_failing(redis_server):
    async def scenario() -> tuple[int, int]:
        shared = Shared(redis_server.url)
        await shared.start()
        try:
            # four times the pool's 64 connections at once (500 flaked on a loaded CI box: the last
            # ones waited longer than an operation's budget, which says nothing about the pool)
            found = await asyncio.gather(*(shared.cache_get(f"nothing-{i}") for i in range(256)))
            return sum(f is None for f in found), shared.errors
        finally:
            await shared.close()

    assert run(scenario()) == (256, 0)
