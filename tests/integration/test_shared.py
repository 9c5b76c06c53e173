"""Several proxy processes sharing state through a real Redis server (issue 10): one upstream
call for duplicated concurrent requests, a rate limit and a circuit enforced across processes,
and Redis going away without a single client request failing."""

from __future__ import annotations

import concurrent.futures
import time

import httpx
import pytest

from tests.support.chat_answers import completion
from tests.support.proxies import ask, metrics, post, start_proxy, stop_proxy

pytestmark = pytest.mark.integration


@pytest.fixture
def two_proxies(mock_upstream, redis_server, tmp_path, request):
    env = getattr(request, "param", {})
    proxies = [
        start_proxy(mock_upstream.base, tmp_path / name, REDIS_URL=redis_server.url, CCPROXY_DB_PATH="off", **env)
        for name in ("a", "b")
    ]
    try:
        yield proxies
    finally:
        for proxy in proxies:
            stop_proxy(proxy)


@pytest.mark.parametrize("two_proxies", [{"CCPROXY_CACHE": "on"}], indirect=True)
def test_duplicated_concurrent_requests_reach_the_upstream_once(two_proxies, mock_upstream):
    key = mock_upstream.script({"json": completion("computed once"), "wait": 1.0})
    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(lambda i: post(two_proxies[i % 2], "/v1/messages", ask(key)), range(20)))
    assert [a.status_code for a in answers] == [200] * 20
    assert {a.json()["content"][0]["text"] for a in answers} == {"computed once"}
    assert len(mock_upstream.requests(key)) == 1
    # and later identical requests are answered from the cache, by either process
    for proxy in two_proxies:
        assert post(proxy, "/v1/messages", ask(key)).json()["content"][0]["text"] == "computed once"
    assert len(mock_upstream.requests(key)) == 1
    assert all(metrics(p)["shared"]["state"] == "up" for p in two_proxies)
    assert sum(metrics(p)["cache"]["hits"] for p in two_proxies) >= 2
    # clearing through one proxy clears for both
    assert httpx.post(f"{two_proxies[0].base}/v1/cache/clear").json()["cleared"] >= 1
    time.sleep(0.6)  # the other process drops its near-cache within 0.25 s
    post(two_proxies[1], "/v1/messages", ask(key))
    assert len(mock_upstream.requests(key)) == 2


@pytest.mark.parametrize("two_proxies", [{"CCPROXY_CACHE": "on"}], indirect=True)
def test_a_failed_shared_fetch_is_not_cached(two_proxies, mock_upstream):
    key = mock_upstream.script({"status": 400, "json": {"error": {"message": "bad thing"}}, "wait": 0.5})
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda i: post(two_proxies[i % 2], "/v1/messages", ask(key)), range(6)))
    assert {a.status_code for a in answers} == {400}
    assert all(a.json()["type"] == "error" and "bad thing" in a.json()["error"]["message"] for a in answers)
    calls = len(mock_upstream.requests(key))
    assert calls <= 2  # one per process at most (the waiters got the leader's failure)
    post(two_proxies[0], "/v1/messages", ask(key))
    assert len(mock_upstream.requests(key)) == calls + 1  # never stored


@pytest.mark.parametrize("two_proxies", [{"CCPROXY_RPM": "4", "CCPROXY_RATE_MAX_WAIT": "1"}], indirect=True)
def test_rate_limit_is_enforced_across_processes(two_proxies, mock_upstream):
    key = mock_upstream.script({"json": completion("ok")})
    answers = [post(two_proxies[i % 2], "/v1/messages", ask(key, str(i))) for i in range(8)]
    statuses = [a.status_code for a in answers]
    assert statuses.count(200) == 4 and statuses.count(429) == 4, statuses
    refused = next(a for a in answers if a.status_code == 429)
    assert refused.json()["error"]["type"] == "rate_limit_error"
    assert int(refused.headers["retry-after"]) >= 1
    assert len(mock_upstream.requests(key)) == 4
    # each process alone saw at most 2 of them pass
    assert all(metrics(p)["upstreams"]["default"]["rate_limit"]["window_requests"] <= 2 for p in two_proxies)


@pytest.mark.parametrize(
    "two_proxies", [{"CCPROXY_CIRCUIT_THRESHOLD": "3", "CCPROXY_CIRCUIT_COOLDOWN": "30"}], indirect=True
)
def test_a_circuit_opened_by_one_process_is_open_in_the_other(two_proxies, mock_upstream):
    key = mock_upstream.script({"status": 500, "json": {"error": {"message": "down"}}})
    for i in range(3):
        assert post(two_proxies[0], "/v1/messages", ask(key, str(i))).status_code == 500
    deadline = time.monotonic() + 3
    while metrics(two_proxies[1])["upstreams"]["default"]["circuit"]["state"] != "open":
        assert time.monotonic() < deadline, "the other process never saw the circuit open"
        time.sleep(0.05)
    refused = post(two_proxies[1], "/v1/messages", ask(key, "b"))
    assert refused.status_code == 503 and refused.json()["error"]["type"] == "overloaded_error"
    assert len(mock_upstream.requests(key)) == 3  # the second process did not call the upstream


def test_redis_going_away_loses_no_request(mock_upstream, redis_server, tmp_path):
    proxy = start_proxy(
        mock_upstream.base,
        tmp_path,
        REDIS_URL=redis_server.url,
        CCPROXY_CACHE="on",
        CCPROXY_RPM="100000",
        CCPROXY_CIRCUIT_THRESHOLD="5",
        WEB_CONCURRENCY="2",
    )
    try:
        key = mock_upstream.script({"json": completion("steady"), "wait": 0.02})
        statuses: list[int] = []

        def burst(n: int) -> None:
            with concurrent.futures.ThreadPoolExecutor(8) as pool:
                statuses.extend(
                    a.status_code for a in pool.map(lambda i: post(proxy, "/v1/messages", ask(key, str(i))), range(n))
                )

        burst(40)
        redis_server.kill()  # mid-run: requests keep going on local state
        burst(80)
        assert statuses == [200] * 120
        down = [metrics(proxy)["shared"] for _ in range(4)]
        assert any(m["state"].startswith("down") and m["errors"] >= 1 for m in down), down
        assert "Redis unreachable" in (tmp_path / "stdout.log").read_text()
        redis_server.start()  # back on the same port: used again once the pause is over
        time.sleep(2.5)
        burst(20)
        assert statuses == [200] * 140
        assert any(metrics(proxy)["shared"]["state"] == "up" for _ in range(4))
    finally:
        stop_proxy(proxy)


def test_starts_and_serves_without_redis(mock_upstream, tmp_path):
    proxy = start_proxy(
        mock_upstream.base,
        tmp_path,
        REDIS_URL="redis://:redis-secret-pw@127.0.0.1:1/0",
        CCPROXY_CACHE="on",
        CCPROXY_RPM="100",
    )
    try:
        key = mock_upstream.script({"json": completion("no redis")})
        assert post(proxy, "/v1/messages", ask(key)).json()["content"][0]["text"] == "no redis"
        assert post(proxy, "/v1/messages", ask(key)).json()["content"][0]["text"] == "no redis"
        assert len(mock_upstream.requests(key)) == 1  # the local cache answered the second
        shared = metrics(proxy)["shared"]
        assert shared["backend"] == "redis" and shared["state"].startswith("down")
        assert shared["url"] == "redis://127.0.0.1:1/0"
        assert "ccproxy_shared_state_up 0" in httpx.get(f"{proxy.base}/metrics").text
        text = httpx.get(f"{proxy.base}/v1/metrics").text + (tmp_path / "stdout.log").read_text()
        assert "redis-secret-pw" not in text
    finally:
        stop_proxy(proxy)


def test_postgres_going_away_fails_no_request_and_logging_resumes(mock_upstream, tmp_path):
    from tests.support.servers import PostgresServer

    server = PostgresServer()  # its own server: this test stops it
    try:
        url = server.new_database()
        proxy = start_proxy(mock_upstream.base, tmp_path, DATABASE_URL=url)
        try:
            key = mock_upstream.script({"json": completion("logged")})

            def logged_total() -> int:
                return httpx.get(f"{proxy.base}/api/requests").json()["total"]

            assert post(proxy, "/v1/messages", ask(key, "1")).status_code == 200
            deadline = time.monotonic() + 5
            while logged_total() < 1:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            server.halt()
            assert [post(proxy, "/v1/messages", ask(key, str(i))).status_code for i in range(5)] == [200] * 5
            down = httpx.get(f"{proxy.base}/api/requests")
            assert down.status_code == 503 and down.json()["error"]["type"] == "api_error"
            server.start()
            time.sleep(0.3)
            assert post(proxy, "/v1/messages", ask(key, "after")).status_code == 200
            deadline = time.monotonic() + 10
            while True:  # the writer reconnects with its next batch; the dashboard with its next query
                resp = httpx.get(f"{proxy.base}/api/requests")
                if resp.status_code == 200 and resp.json()["total"] >= 2:
                    break
                assert time.monotonic() < deadline, resp.text
                time.sleep(0.1)
            assert "pg-secret-password-123" not in (tmp_path / "stdout.log").read_text()
        finally:
            stop_proxy(proxy)
    finally:
        server.stop()


@pytest.mark.parametrize("two_proxies", [{"CCPROXY_RPM": "10", "CCPROXY_RATE_MAX_WAIT": "1"}], indirect=True)
def test_a_concurrent_burst_gets_exactly_the_limit_across_processes(two_proxies, mock_upstream):
    key = mock_upstream.script({"json": completion("ok"), "wait": 0.05})
    with concurrent.futures.ThreadPoolExecutor(24) as pool:
        answers = pool.map(lambda i: post(two_proxies[i % 2], "/v1/messages", ask(key, str(i))), range(24))
        statuses = [a.status_code for a in answers]
    assert statuses.count(200) == 10 and statuses.count(429) == 14, statuses
    assert len(mock_upstream.requests(key)) == 10
