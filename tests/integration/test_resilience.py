"""Fault injection: a scripted upstream misbehaves, the real proxy process must answer either the
complete correct response or a clean Anthropic error — never a truncated answer that looks
complete — within its timeouts (issue 7)."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from pathlib import Path

import anthropic
import httpx
import pytest

from tests.support.chat_answers import completion, text_stream
from tests.support.proxies import CLIENT_KEY, ask, free_port, metrics, post, raw_stream, start_proxy, stop_proxy
from tests.support.sse import assemble, parse_sse

pytestmark = pytest.mark.integration

ERROR_500 = {"status": 500, "json": {"error": {"message": "boom", "type": "server_error"}}}
ERROR_400 = {"status": 400, "json": {"error": {"message": "bad field", "type": "invalid_request_error"}}}


@pytest.fixture(scope="module")
def retrying(mock_upstream, tmp_path_factory):
    proxy = start_proxy(
        mock_upstream.base,
        tmp_path_factory.mktemp("retrying"),
        CCPROXY_MAX_RETRIES="2",
        CCPROXY_RETRY_BASE_DELAY="0.05",
        CCPROXY_RETRY_MAX_DELAY="0.2",
        CCPROXY_READ_TIMEOUT="1",
        CCPROXY_FIRST_BYTE_TIMEOUT="1",
        CCPROXY_PING_INTERVAL="0.3",
    )
    yield proxy
    stop_proxy(proxy)


# --- retries before the first byte ----------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_reset_before_first_byte_is_retried(retrying, mock_upstream, stream):
    if stream:
        key = mock_upstream.script({"reset": True}, {"sse": text_stream("fine")})
        events = raw_stream(retrying, ask(key))
        assert assemble(events)["content"][0]["text"] == "fine"
    else:
        key = mock_upstream.script({"reset": True}, {"json": completion("fine")})
        msg = retrying.client().messages.create(**ask(key))
        assert msg.content[0].text == "fine"
    assert len(mock_upstream.requests(key)) == 2


def test_burst_of_5xx_is_retried_until_success(retrying, mock_upstream):
    key = mock_upstream.script(ERROR_500, {"status": 502, "text": "bad gateway"}, {"json": completion("third time")})
    msg = retrying.client().messages.create(**ask(key))
    assert msg.content[0].text == "third time"
    assert len(mock_upstream.requests(key)) == 3


def test_retries_are_bounded_and_end_in_a_clean_error(retrying, mock_upstream):
    key = mock_upstream.script(ERROR_500)
    started = time.monotonic()
    with pytest.raises(anthropic.InternalServerError) as err:
        retrying.client().messages.create(**ask(key))
    assert err.value.body["type"] == "error" and err.value.body["error"]["type"] == "api_error"
    assert len(mock_upstream.requests(key)) == 3  # 1 + CCPROXY_MAX_RETRIES
    assert time.monotonic() - started < 3


def test_429_retry_after_is_honoured(retrying, mock_upstream):
    key = mock_upstream.script(
        {"status": 429, "headers": {"retry-after": "1"}, "json": {"error": {"message": "slow down"}}},
        {"json": completion("after waiting")},
    )
    msg = retrying.client().messages.create(**ask(key))
    assert msg.content[0].text == "after waiting"
    first, second = mock_upstream.requests(key)
    assert second["received_at"] - first["received_at"] >= 0.95


def test_429_with_a_long_retry_after_goes_back_to_the_client(retrying, mock_upstream):
    key = mock_upstream.script(
        {"status": 429, "headers": {"retry-after": "120"}, "json": {"error": {"message": "quota"}}}
    )
    resp = post(retrying, "/v1/messages", ask(key))
    assert resp.status_code == 429 and resp.headers["retry-after"] == "120"
    assert resp.json()["error"]["type"] == "rate_limit_error"
    assert len(mock_upstream.requests(key)) == 1


def test_client_errors_are_not_retried(retrying, mock_upstream):
    key = mock_upstream.script(ERROR_400)
    resp = post(retrying, "/v1/messages", ask(key))
    assert resp.status_code == 400 and resp.json()["error"]["type"] == "invalid_request_error"
    assert len(mock_upstream.requests(key)) == 1


def test_reset_mid_stream_is_never_retried(retrying, mock_upstream):
    key = mock_upstream.script({"sse": text_stream("partial", "more", "text"), "reset_after": 2})
    events = raw_stream(retrying, ask(key))
    names = [name for name, _ in events]
    assert names[-1] == "error" and "message_stop" not in names
    assert len(mock_upstream.requests(key)) == 1


@pytest.mark.parametrize(
    "spec",
    [
        {"sse": text_stream("partial")[:1], "done": False},
        {"sse": [{"choices": [{"index": 0, "delta": {"content": "x"}}]}, "{not json"]},
    ],
    ids=["truncated-sse", "invalid-json-chunk"],
)
def test_broken_streams_end_in_an_error_event(retrying, mock_upstream, spec):
    key = mock_upstream.script(spec)
    events = raw_stream(retrying, ask(key))
    assert events[-1][0] == "error" and "message_stop" not in [n for n, _ in events]


# --- timeouts -----------------------------------------------------------------------------------


def test_slow_upstream_times_out_cleanly(retrying, mock_upstream):
    key = mock_upstream.script({"json": completion("late"), "wait": 5})
    started = time.monotonic()
    resp = post(retrying, "/v1/messages", ask(key))
    elapsed = time.monotonic() - started
    assert resp.status_code == 504 and resp.json()["error"]["type"] == "timeout_error"
    assert elapsed < 4.5  # 3 attempts of 1 s plus short backoffs, never the upstream's 5 s
    key = mock_upstream.script({"sse": text_stream("late"), "wait": 5})
    started = time.monotonic()
    resp = post(retrying, "/v1/messages", ask(key, stream=True))
    assert resp.status_code == 504 and "CCPROXY_FIRST_BYTE_TIMEOUT" in resp.json()["error"]["message"]
    assert time.monotonic() - started < 4.5


def test_stalled_stream_ends_in_an_error_event_with_pings_before(retrying, mock_upstream):
    key = mock_upstream.script({"sse": text_stream("a", "b"), "hang_after": 1})
    started = time.monotonic()
    events = raw_stream(retrying, ask(key))
    assert time.monotonic() - started < 3
    assert events[-1][0] == "error" and events[-1][1]["error"]["type"] == "timeout_error"
    assert "message_stop" not in [n for n, _ in events]


def test_total_timeout_bounds_a_slow_stream(mock_upstream, tmp_path):
    proxy = start_proxy(mock_upstream.base, tmp_path, CCPROXY_TOTAL_TIMEOUT="1")
    try:
        key = mock_upstream.script({"sse": text_stream(*["tick"] * 50), "delay": 0.1})
        started = time.monotonic()
        events = raw_stream(proxy, ask(key))
        assert time.monotonic() - started < 2.5
        assert events[-1][0] == "error" and "CCPROXY_TOTAL_TIMEOUT" in events[-1][1]["error"]["message"]
    finally:
        stop_proxy(proxy)


# --- slow reader ----------------------------------------------------------------------------------


def _rss_kb(pid: int) -> int:
    total = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            total += int(line.split()[1])
    children = Path(f"/proc/{pid}/task/{pid}/children")
    for child in children.read_text().split() if children.exists() else []:
        total += _rss_kb(int(child))
    return total


def test_slow_reader_gets_everything_and_memory_stays_bounded(retrying, mock_upstream):
    piece = "x" * 1000
    key = mock_upstream.script({"sse": text_stream(*[piece] * 3000)})  # ~3 MB of deltas
    before = _rss_kb(retrying.proc.pid)
    with httpx.stream("POST", f"{retrying.base}/v1/messages", json=ask(key, stream=True), timeout=60) as resp:
        raw = b""
        for i, chunk in enumerate(resp.iter_raw(4096)):
            raw += chunk
            if i % 50 == 0:
                time.sleep(0.01)  # a reader much slower than the upstream
    message = assemble(parse_sse(raw))
    assert message["content"][0]["text"] == piece * 3000 and message["stop_reason"] == "end_turn"
    assert _rss_kb(retrying.proc.pid) - before < 64 * 1024  # bounded, not the whole stream buffered


# --- circuit breaker ----------------------------------------------------------------------------------


@pytest.fixture
def breaking(mock_upstream, tmp_path):
    proxy = start_proxy(mock_upstream.base, tmp_path, CCPROXY_CIRCUIT_THRESHOLD="5", CCPROXY_CIRCUIT_COOLDOWN="1")
    yield proxy
    stop_proxy(proxy)


def test_client_errors_never_open_the_circuit(breaking, mock_upstream):
    key = mock_upstream.script(ERROR_400)
    for _ in range(6):
        assert post(breaking, "/v1/messages", ask(key)).status_code == 400
    assert metrics(breaking)["upstreams"]["default"]["circuit"]["state"] == "closed"
    ok = mock_upstream.script({"json": completion("still fine")})
    assert post(breaking, "/v1/messages", ask(ok)).status_code == 200


def test_five_5xx_open_the_circuit_and_it_closes_after_recovery(breaking, mock_upstream):
    key = mock_upstream.script(ERROR_500)
    for _ in range(5):
        assert post(breaking, "/v1/messages", ask(key)).status_code == 500
    started = time.monotonic()
    resp = post(breaking, "/v1/messages", ask(key))
    assert time.monotonic() - started < 0.5  # refused at once, the upstream is not asked
    assert resp.status_code == 503 and resp.json()["error"]["type"] == "overloaded_error"
    assert "circuit is open" in resp.json()["error"]["message"] and int(resp.headers["retry-after"]) >= 1
    assert len(mock_upstream.requests(key)) == 5
    assert metrics(breaking)["upstreams"]["default"]["circuit"]["state"] == "open"
    time.sleep(1.1)  # the cooldown passes: one probe goes through and succeeds
    ok = mock_upstream.script({"json": completion("recovered")})
    assert post(breaking, "/v1/messages", ask(ok)).json()["content"][0]["text"] == "recovered"
    assert metrics(breaking)["upstreams"]["default"]["circuit"]["state"] == "closed"


def test_open_circuit_falls_back_to_the_next_upstream(mock_upstream, tmp_path):
    config = tmp_path / "routes.toml"
    config.write_text(
        f"""
[upstreams.down]
kind = "chat"
base_url = "http://127.0.0.1:{free_port()}/v1"

[[routes]]
match = "claude-sonnet-*"
upstream = "down"
model = "gpt-down"
fallback = [{{ upstream = "default", model = "gpt-backup" }}]
"""
    )
    proxy = start_proxy(
        mock_upstream.base, tmp_path / "data", CCPROXY_CONFIG=str(config), CCPROXY_CIRCUIT_THRESHOLD="2"
    )
    try:
        key = mock_upstream.script({"json": completion("from the backup")})
        for _ in range(2):
            assert post(proxy, "/v1/messages", ask(key)).status_code == 502  # the primary is unreachable
        resp = post(proxy, "/v1/messages", ask(key))
        assert resp.status_code == 200 and resp.json()["content"][0]["text"] == "from the backup"
        assert resp.json()["model"] == "claude-sonnet-5"
        [seen] = mock_upstream.requests(key)
        assert seen["body"]["model"] == "gpt-backup"
        assert metrics(proxy)["fallbacks"] >= 1
    finally:
        stop_proxy(proxy)


# --- response cache and in-flight de-duplication ---------------------------------------------------


@pytest.fixture(scope="module")
def caching(mock_upstream, tmp_path_factory):
    proxy = start_proxy(mock_upstream.base, tmp_path_factory.mktemp("caching"), CCPROXY_CACHE="on")
    yield proxy
    stop_proxy(proxy)


async def _many(proxy, body: dict, n: int) -> list:
    client = anthropic.AsyncAnthropic(base_url=proxy.base, api_key=CLIENT_KEY, max_retries=0, timeout=30)
    try:
        return await asyncio.gather(*(client.messages.create(**body) for _ in range(n)), return_exceptions=True)
    finally:
        await client.close()


def test_identical_concurrent_requests_share_one_upstream_call(caching, mock_upstream):
    key = mock_upstream.script({"json": completion("shared answer"), "wait": 0.5})
    started = time.monotonic()
    results = asyncio.run(_many(caching, ask(key), 100))
    elapsed = time.monotonic() - started
    assert all(not isinstance(r, BaseException) for r in results), [r for r in results if isinstance(r, BaseException)]
    assert {r.content[0].text for r in results} == {"shared answer"}
    assert len(mock_upstream.requests(key)) == 1
    assert elapsed < 0.5 + 2.5  # the upstream's latency plus client overhead on a small box
    # Later identical requests are hits; clearing the cache makes the next one go upstream.
    assert caching.client().messages.create(**ask(key)).content[0].text == "shared answer"
    assert len(mock_upstream.requests(key)) == 1
    stats = httpx.get(f"{caching.base}/v1/cache/stats").json()
    assert stats["hits"] >= 1 and stats["shared_in_flight"] >= 1 and stats["entries"] >= 1
    cleared = httpx.post(f"{caching.base}/v1/cache/clear").json()
    assert cleared["cleared"] >= 1
    caching.client().messages.create(**ask(key))
    assert len(mock_upstream.requests(key)) == 2


def test_a_failure_is_not_cached_and_releases_waiters_at_once(caching, mock_upstream):
    key = mock_upstream.script({**ERROR_400, "wait": 0.3}, {"json": completion("second try")})
    started = time.monotonic()
    results = asyncio.run(_many(caching, ask(key), 10))
    assert all(isinstance(r, anthropic.BadRequestError) for r in results)
    assert time.monotonic() - started < 2.5 and len(mock_upstream.requests(key)) == 1
    assert caching.client().messages.create(**ask(key)).content[0].text == "second try"


def test_streams_are_never_cached(caching, mock_upstream):
    key = mock_upstream.script({"sse": text_stream("s")})
    raw_stream(caching, ask(key))
    raw_stream(caching, ask(key))
    assert len(mock_upstream.requests(key)) == 2


# --- rate limiter -------------------------------------------------------------------------------------


def test_rate_limit_queue_bound_answers_429(mock_upstream, tmp_path):
    proxy = start_proxy(mock_upstream.base, tmp_path, CCPROXY_RPM="2", CCPROXY_RATE_QUEUE="0")
    try:
        key = mock_upstream.script({"json": completion("ok")})
        assert [post(proxy, "/v1/messages", ask(key)).status_code for _ in range(2)] == [200, 200]
        resp = post(proxy, "/v1/messages", ask(key))
        assert resp.status_code == 429 and resp.json()["error"]["type"] == "rate_limit_error"
        assert int(resp.headers["retry-after"]) >= 1 and len(mock_upstream.requests(key)) == 2
        assert metrics(proxy)["upstreams"]["default"]["rate_limit"]["rejected"] == 1
    finally:
        stop_proxy(proxy)


# --- metrics ------------------------------------------------------------------------------------------


def test_metrics_json_and_prometheus(retrying, mock_upstream):
    key = mock_upstream.script({"json": completion("counted")})
    post(retrying, "/v1/messages", ask(key))
    data = metrics(retrying)
    assert data["requests"]["total"] >= 1 and data["latency"]["count"] >= 1
    assert data["latency"]["p50"] is not None and data["latency"]["p99"] >= data["latency"]["p50"]
    assert data["native"]["implementation"] in ("cython", "python", "mixed")
    assert data["upstreams"]["default"]["circuit"]["state"] in ("closed", "open", "half_open")
    assert data["retries"] >= 1 and "api_error" in data["errors"]["by_type"]  # from the tests above
    text = httpx.get(f"{retrying.base}/metrics").text
    assert "# TYPE ccproxy_requests_total counter" in text
    assert 'ccproxy_request_duration_seconds_bucket{le="+Inf"}' in text
    assert 'ccproxy_native_info{implementation="' in text


# --- graceful drain --------------------------------------------------------------------------------------


def test_sigterm_mid_stream_drains(mock_upstream, tmp_path):
    proxy = start_proxy(mock_upstream.base, tmp_path, CCPROXY_DRAIN_TIMEOUT="10")
    key = mock_upstream.script({"sse": text_stream(*["tok"] * 15), "delay": 0.1})
    result: dict = {}

    def stream() -> None:
        with httpx.stream("POST", f"{proxy.base}/v1/messages", json=ask(key, stream=True), timeout=30) as resp:
            result["raw"] = resp.read()

    reader = threading.Thread(target=stream)
    reader.start()
    time.sleep(0.6)
    try:
        os.kill(proxy.proc.pid, signal.SIGTERM)
        time.sleep(0.3)
        health = httpx.get(f"{proxy.base}/health")
        assert health.status_code == 503
        assert health.json()["status"] == "draining" and health.json()["in_flight"] == 1
        live = httpx.get(f"{proxy.base}/livez").json()
        assert live["draining"] is True and live["in_flight"] == 1
        refused = post(proxy, "/v1/messages", ask("new request"))
        assert refused.status_code == 503 and refused.json()["error"]["type"] == "overloaded_error"
        reader.join(20)
        message = assemble(parse_sse(result["raw"]))
        assert message["stop_reason"] == "end_turn" and message["content"][0]["text"] == "tok" * 15
        assert proxy.proc.wait(15) == 0
    finally:
        stop_proxy(proxy)


def test_the_circuit_counts_requests_not_retries_and_stream_failures_count(mock_upstream, tmp_path):
    proxy = start_proxy(
        mock_upstream.base,
        tmp_path,
        CCPROXY_CIRCUIT_THRESHOLD="5",
        CCPROXY_CIRCUIT_COOLDOWN="1",
        CCPROXY_MAX_RETRIES="2",
        CCPROXY_RETRY_BASE_DELAY="0.01",
        CCPROXY_RETRY_MAX_DELAY="0.02",
    )
    try:
        key = mock_upstream.script(ERROR_500)
        statuses = [post(proxy, "/v1/messages", ask(key)).status_code for _ in range(6)]
        assert statuses == [500, 500, 500, 500, 500, 503]  # each request retried, counted once
        assert len(mock_upstream.requests(key)) == 15
        time.sleep(1.1)
        ok = mock_upstream.script({"json": completion("back")})
        assert post(proxy, "/v1/messages", ask(ok)).status_code == 200  # the probe closes it
        # five streams that break mid-way are five faults too
        broken = mock_upstream.script({"sse": text_stream("partial", "more"), "reset_after": 1})
        for _ in range(5):
            events = raw_stream(proxy, ask(broken))
            assert events[-1][0] == "error"
        assert metrics(proxy)["upstreams"]["default"]["circuit"]["state"] == "open"
    finally:
        stop_proxy(proxy)
