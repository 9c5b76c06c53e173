"""The request log store and the dashboard APIs against a real server with a populated store
(issue 8): shapes of seed 001, pagination, filters, bad parameters, auth, header rules, secrets.

Every test runs twice: on the embedded SQLite store and on PostgreSQL (DATABASE_URL, a real
server on loopback, issue 10); the assertions are the same."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import anthropic
import httpx
import pytest

from ccproxy.store import RequestStore
from tests.support.chat_answers import completion, text_stream
from tests.support.proxies import CLIENT_KEY, UPSTREAM_KEY, ask, start_proxy, stop_proxy

pytestmark = pytest.mark.integration

SECRET_IN_PROMPT = "sk-ant-api03-PromptSecret0123456789abcdef"
NOW = time.time()


def _session(path: Path, session: str, cwd: str, model: str, first: str, minutes_ago: int) -> None:
    start = NOW - minutes_ago * 60
    stamp = lambda s: time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(start + s))  # noqa: E731
    lines = [
        {"type": "summary", "summary": "a summary line", "leafUuid": "x"},
        {
            "type": "user",
            "sessionId": session,
            "cwd": cwd,
            "uuid": "u1",
            "timestamp": stamp(0),
            "message": {"role": "user", "content": first},
        },
        "{not json at all",
        {
            "type": "assistant",
            "sessionId": session,
            "uuid": "a1",
            "parentUuid": "u1",
            "timestamp": stamp(30),
            "message": {"role": "assistant", "model": model, "content": [{"type": "text", "text": "sure"}]},
        },
        {
            "type": "user",
            "uuid": "u2",
            "timestamp": stamp(90),
            "message": {"role": "user", "content": [{"type": "text", "text": "thanks"}]},
        },
    ]
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")


@pytest.fixture(scope="module")
def projects(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("claude-projects")
    (root / "-work-alpha").mkdir()
    (root / "-work-beta").mkdir()
    _session(
        root / "-work-alpha" / "11111111-aaaa.jsonl",
        "11111111-aaaa",
        "/work/alpha",
        "claude-opus-4-8",
        "fix the bug",
        30,
    )
    _session(
        root / "-work-alpha" / "22222222-bbbb.jsonl", "22222222-bbbb", "/work/alpha", "claude-haiku-4-5", "hello", 10
    )
    _session(
        root / "-work-beta" / "33333333-cccc.jsonl", "33333333-cccc", "/work/beta", "claude-sonnet-5", "write tests", 5
    )
    (root / "-work-beta" / "notes.txt").write_text("not a session")
    (root / "-work-beta" / "44444444-empty.jsonl").write_text("garbage\n\n")
    return root


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def backend(request) -> str:
    return request.param


def _store_env(backend: str, request) -> dict[str, str]:
    if backend == "sqlite":
        return {}
    return {"DATABASE_URL": request.getfixturevalue("postgres_server").new_database()}


@pytest.fixture
def store_env(backend, request) -> dict[str, str]:
    """The proxy's environment for the store under test: a fresh PostgreSQL database each time."""
    return _store_env(backend, request)


@pytest.fixture(scope="module")
def logged(mock_upstream, tmp_path_factory, projects, backend, request):
    data = tmp_path_factory.mktemp("dashboard")
    env = _store_env(backend, request)
    proxy = start_proxy(
        mock_upstream.base,
        data,
        CCPROXY_LOG_BODIES="on",
        CLAUDE_PROJECTS_DIR=str(projects),
        **env,
    )
    proxy.database_url = env.get("DATABASE_URL")
    client = proxy.client()
    key = mock_upstream.script({"json": completion("logged answer")})
    for i in range(3):
        client.messages.create(
            model="claude-sonnet-5",
            max_tokens=10,
            messages=[{"role": "user", "content": f"{key} turn {i} {SECRET_IN_PROMPT}"}],
            extra_headers={"x-claude-code-session-id": "session-secret-id-123"},
        )
    skey = mock_upstream.script({"sse": text_stream("streamed", " answer")})
    with client.messages.stream(
        model="claude-haiku-4-5", max_tokens=10, messages=[{"role": "user", "content": skey}]
    ) as stream:
        stream.get_final_message()
    broken = mock_upstream.script({"sse": text_stream("partial", "x"), "reset_after": 1})
    with httpx.stream(
        "POST",
        f"{proxy.base}/v1/messages",
        json={
            "model": "claude-haiku-4-5",
            "max_tokens": 5,
            "stream": True,
            "messages": [{"role": "user", "content": broken}],
        },
        headers={"x-api-key": CLIENT_KEY},
    ) as resp:
        resp.read()
    # History from earlier days and an Anthropic organization, written as a second process would.
    store = RequestStore(proxy.database_url or data / "ccproxy.db")
    for day in (1, 2):
        for n in range(2):
            store.add(
                {
                    "id": f"req_history_{day}_{n}",
                    "ts": NOW - day * 86400,
                    "endpoint": "/v1/messages",
                    "model": "claude-opus-4-8",
                    "routed_model": "claude-opus-4-8",
                    "upstream": "anth",
                    "status": 200,
                    "latency_ms": 1200,
                    "input_tokens": 1000,
                    "output_tokens": 100,
                    "cache_read_tokens": 500,
                    "organization_id": "org-history",
                    "rl_requests_remaining": 49,
                    "rl_unified_status": "allowed",
                    "rl_unified_5h_utilization": 0.25,
                }
            )
    store.flush()
    store.close()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and httpx.get(f"{proxy.base}/api/requests").json()["total"] < 9:
        time.sleep(0.1)
    yield proxy
    stop_proxy(proxy)


def get(proxy, path: str, **params) -> httpx.Response:
    return httpx.get(f"{proxy.base}{path}", params=params)


# --- requests -------------------------------------------------------------------------------


def test_requests_list_shapes_pagination_and_filter(logged):
    data = get(logged, "/api/requests", limit=3).json()
    assert data["total"] == 9 and len(data["requests"]) == 3
    newest = data["requests"][0]
    assert newest["model"] == "claude-haiku-4-5" and newest["routedModel"] == "gpt-small"
    for field in ("requestId", "timestamp", "method", "endpoint", "originalModel", "conversationHash", "messageCount"):
        assert field in newest
    assert newest["response"]["isStreaming"] is True and newest["response"]["streamError"]  # the reset stream
    page2 = get(logged, "/api/requests", limit=3, page=2).json()["requests"]
    assert not {r["requestId"] for r in page2} & {r["requestId"] for r in data["requests"]}
    sonnet = get(logged, "/api/requests", model="sonnet", limit=50).json()
    assert sonnet["total"] == 3 and {r["model"] for r in sonnet["requests"]} == {"claude-sonnet-5"}
    assert get(logged, "/api/requests", model="gpt-small").json()["total"] == 2  # routed model matches too
    assert get(logged, "/api/requests", model="all").json()["total"] == 9


def test_one_request_by_full_or_short_id_with_redacted_body(logged):
    listed = get(logged, "/api/requests", model="sonnet", limit=1).json()["requests"][0]
    full = get(logged, f"/api/requests/{listed['requestId']}").json()
    assert full["fullId"] == listed["requestId"]
    short = get(logged, f"/api/requests/{listed['requestId'][4:18]}").json()
    assert short["fullId"] == listed["requestId"]
    request = full["request"]
    assert request["usage"] == {
        "input_tokens": 20,
        "output_tokens": 5,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 10,
    }
    assert "turn" in request["body"] and SECRET_IN_PROMPT not in request["body"] and "[REDACTED]" in request["body"]
    assert "logged answer" in request["response"]["body"]
    assert request["sessionHash"] and "session-secret-id" not in json.dumps(full)
    history = get(logged, "/api/requests/req_history_1_0").json()["request"]
    assert history["response"]["rateLimit"]["requestsRemaining"] == 49
    assert history["response"]["rateLimit"]["unifiedUtilization5h"] == 0.25
    missing = get(logged, "/api/requests/req_nope_nope")
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found_error"


def test_summary_time_range_and_latest_date(logged):
    start = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(NOW - 3600))
    recent = get(logged, "/api/requests/summary", start=start).json()
    assert recent["total"] == 5 and recent["offset"] == 0 and recent["limit"] == 0
    item = recent["requests"][0]
    assert set(item) >= {"requestId", "timestamp", "statusCode", "responseTime", "usage", "stopReason", "routedModel"}
    limited = get(logged, "/api/requests/summary", limit=2, offset=1).json()
    assert len(limited["requests"]) == 2 and limited["total"] == 9
    older = get(logged, "/api/requests/summary", end=start).json()
    assert older["total"] == 4 and all(r["model"] == "claude-opus-4-8" for r in older["requests"])
    latest = get(logged, "/api/requests/latest-date").json()["latestDate"]
    assert (
        latest.endswith("Z")
        and abs(time.mktime(time.strptime(latest[:19], "%Y-%m-%dT%H:%M:%S")) - time.mktime(time.gmtime(NOW))) < 600
    )


# --- statistics ----------------------------------------------------------------------------------


def test_stats_totals_by_model_and_org(logged):
    stats = get(logged, "/api/stats").json()
    assert stats["total_requests"] == 9
    opus = stats["requests_by_model"]["claude-opus-4-8"]
    assert opus == {"request_count": 4, "input_tokens": 4000, "output_tokens": 400, "cache_tokens": 2000}
    org = get(logged, "/api/stats", org="org-history").json()
    assert org["total_requests"] == 4
    today = time.strftime("%Y-%m-%d", time.gmtime(NOW))
    assert get(logged, "/api/stats", start_date=today, end_date=today).json()["total_requests"] == 5
    assert get(logged, "/api/stats/organizations").json() == {"organizations": ["org-history"]}


def test_daily_hourly_and_model_stats(logged):
    daily = get(logged, "/api/stats/dashboard").json()["dailyStats"]
    assert len(daily) == 3 and daily[0]["tokens"] == 2200 and daily[0]["requests"] == 2
    start_ts = (int(NOW) // 3600 - 3) * 3600
    # (the live requests were made when this backend's fixture ran, which on a slow run can be
    # minutes after NOW: the range ends now, not at NOW)
    end_ts = int(time.time()) + 60
    start = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start_ts))
    end = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(end_ts))
    hourly = get(logged, "/api/stats/hourly", start=start, end=end).json()
    assert hourly["todayRequests"] == 5 and len(hourly["hourlyStats"]) == -(-(end_ts - start_ts) // 3600)
    assert sum(b["requests"] for b in hourly["hourlyStats"]) == 5
    assert {"hour", "label", "tokens", "requests"} <= set(hourly["hourlyStats"][0])
    fine = get(logged, "/api/stats/hourly", start=start, end=end, bucket=15).json()
    assert (
        len(fine["hourlyStats"]) == -(-(end_ts - start_ts) // 900)
        and sum(b["requests"] for b in fine["hourlyStats"]) == 5
    )
    week_ago = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(NOW - 7 * 86400))
    models = get(logged, "/api/stats/models", start=week_ago, end=end).json()["modelStats"]
    assert models[0] == {"model": "claude-opus-4-8", "tokens": 4400, "requests": 4}


@pytest.mark.parametrize(
    ("path", "params", "fragment"),
    [
        ("/api/stats/hourly", {}, "start and end"),
        ("/api/stats/hourly", {"start": "yesterday", "end": "2026-01-01"}, "start:"),
        ("/api/stats/hourly", {"start": "2026-01-02", "end": "2026-01-01"}, "end:"),
        ("/api/stats/hourly", {"start": "2026-01-01", "end": "2026-01-02", "bucket": "0"}, "bucket:"),
        ("/api/stats/models", {"start": "2026-01-01"}, "start and end"),
        ("/api/requests", {"page": "zero"}, "page:"),
        ("/api/requests", {"limit": "100000"}, "limit:"),
        ("/api/requests/summary", {"start": "not-a-date"}, "start:"),
        ("/api/stats", {"start_date": "2026-13-45"}, "start_date:"),
        ("/api/conversations/project", {}, "project:"),
    ],
)
def test_bad_parameters_are_400_with_a_clear_message(logged, path, params, fragment):
    resp = get(logged, path, **params)
    assert resp.status_code == 400
    body = resp.json()
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    assert fragment in body["error"]["message"]


# --- conversations ----------------------------------------------------------------------------------


def test_conversations_from_claude_code_logs(logged):
    data = get(logged, "/api/conversations").json()
    assert data["total"] == 3 and data["hasMore"] is False
    first = data["conversations"][0]
    assert first["id"] == "33333333-cccc" and first["projectPath"] == "/work/beta" and first["projectName"] == "beta"
    assert first["firstMessage"] == "write tests" and first["requestCount"] == 3 and first["duration"] == 90_000
    assert first["model"] == "claude-sonnet-5"
    paged = get(logged, "/api/conversations", limit=2, page=1).json()
    assert len(paged["conversations"]) == 2 and paged["hasMore"] is True
    assert get(logged, "/api/conversations", model="haiku").json()["total"] == 1
    project = get(logged, "/api/conversations/project", project="/work/alpha").json()
    assert {c["id"] for c in project["conversations"]} == {"11111111-aaaa", "22222222-bbbb"}
    one = get(logged, "/api/conversations/11111111-aaaa", project="-work-alpha").json()
    assert one["sessionId"] == "11111111-aaaa" and [m["type"] for m in one["messages"]] == ["user", "assistant", "user"]
    assert get(logged, "/api/conversations/99999999-none", project="/work/alpha").status_code == 404
    assert get(logged, "/api/conversations/11111111-aaaa", project="/nowhere").status_code == 404
    assert get(logged, "/api/conversations/..", project="-work-alpha").status_code in (400, 404)


# --- settings: header rules ---------------------------------------------------------------------------


def test_header_rules_are_validated_persisted_and_applied_live(logged, mock_upstream):
    assert get(logged, "/api/settings").json() == {"requestHeaderRules": [], "responseHeaderRules": []}
    bad = httpx.put(f"{logged.base}/api/settings", json={"requestHeaderRules": [{"header": "x-a", "action": "nuke"}]})
    assert bad.status_code == 400 and "requestHeaderRules[0].action" in bad.json()["error"]["message"]
    bad = httpx.put(f"{logged.base}/api/settings", json={"responseHeaderRules": [{"header": "x", "action": "replace"}]})
    assert bad.status_code == 400 and "find" in bad.json()["error"]["message"]
    json_type = {"content-type": "application/json"}
    assert httpx.put(f"{logged.base}/api/settings", content=b"{oops", headers=json_type).status_code == 400
    rules = {
        "requestHeaderRules": [
            {"header": "X-Team", "action": "set", "value": "platform"},
            {"header": "USER-AGENT", "action": "block"},
            {"header": "x-disabled", "action": "set", "value": "no", "enabled": False},
        ],
        "responseHeaderRules": [
            {"header": "x-served-by", "action": "set", "value": "ccproxy-test"},
            {"header": "Request-Id", "action": "block"},
        ],
    }
    saved = httpx.put(f"{logged.base}/api/settings", json=rules)
    assert saved.status_code == 200 and saved.json()["requestHeaderRules"][0]["header"] == "x-team"
    key = mock_upstream.script({"json": completion("ruled")})
    raw = logged.client().messages.with_raw_response.create(
        model="claude-sonnet-5", max_tokens=5, messages=[{"role": "user", "content": key}]
    )
    assert raw.headers["x-served-by"] == "ccproxy-test"
    [seen] = mock_upstream.requests(key)
    assert seen["headers"]["x-team"] == "platform" and "x-disabled" not in seen["headers"]
    assert "user-agent" not in seen["headers"]
    assert get(logged, "/api/settings").json()["responseHeaderRules"][0]["value"] == "ccproxy-test"
    httpx.put(f"{logged.base}/api/settings", json={"requestHeaderRules": [], "responseHeaderRules": []})


def test_settings_survive_a_restart(mock_upstream, tmp_path, store_env):
    proxy = start_proxy(mock_upstream.base, tmp_path, **store_env)
    rules = {"requestHeaderRules": [{"header": "x-kept", "action": "set", "value": "1"}], "responseHeaderRules": []}
    assert httpx.put(f"{proxy.base}/api/settings", json=rules).status_code == 200
    stop_proxy(proxy)
    again = start_proxy(mock_upstream.base, tmp_path, **store_env)
    try:
        assert httpx.get(f"{again.base}/api/settings").json()["requestHeaderRules"][0]["header"] == "x-kept"
        key = mock_upstream.script({"json": completion("kept")})
        again.client().messages.create(
            model="claude-sonnet-5", max_tokens=5, messages=[{"role": "user", "content": key}]
        )
        assert mock_upstream.requests(key)[0]["headers"]["x-kept"] == "1"
    finally:
        stop_proxy(again)


def test_delete_requests(mock_upstream, tmp_path, store_env):
    proxy = start_proxy(mock_upstream.base, tmp_path, **store_env)
    try:
        key = mock_upstream.script({"json": completion("x")})
        proxy.client().messages.create(
            model="claude-sonnet-5", max_tokens=5, messages=[{"role": "user", "content": key}]
        )
        deadline = time.monotonic() + 5
        while get(proxy, "/api/requests").json()["total"] < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        deleted = httpx.delete(f"{proxy.base}/api/requests").json()
        assert deleted["deleted"] == 1 and "message" in deleted
        assert get(proxy, "/api/requests").json()["total"] == 0
        assert get(proxy, "/api/stats").json()["total_requests"] == 0
        assert get(proxy, "/api/requests/latest-date").json() == {"latestDate": None}
    finally:
        stop_proxy(proxy)


# --- auth ----------------------------------------------------------------------------------------------


def test_dashboard_password_guards_api_and_page_but_not_the_proxy(mock_upstream, tmp_path, store_env):
    proxy = start_proxy(mock_upstream.base, tmp_path, DASHBOARD_PASSWORD="open sesame", **store_env)
    try:
        for path in ("/api/stats", "/api/requests", "/dashboard", "/dashboard/dashboard.js", "/api/settings"):
            resp = httpx.get(f"{proxy.base}{path}")
            assert resp.status_code == 401 and resp.headers["www-authenticate"].startswith("Basic")
            assert resp.json()["error"]["type"] == "authentication_error"
        wrong = "Basic " + base64.b64encode(b"admin:guess").decode()
        assert httpx.get(f"{proxy.base}/api/stats", headers={"authorization": wrong}).status_code == 401
        right = "Basic " + base64.b64encode(b"anyone:open sesame").decode()
        assert httpx.get(f"{proxy.base}/api/stats", headers={"authorization": right}).status_code == 200
        assert httpx.get(f"{proxy.base}/dashboard", headers={"authorization": right}).status_code == 200
        key = mock_upstream.script({"json": completion("no auth needed")})
        msg = proxy.client().messages.create(
            model="claude-sonnet-5", max_tokens=5, messages=[{"role": "user", "content": key}]
        )
        assert msg.content[0].text == "no auth needed"
        assert httpx.get(f"{proxy.base}/health").status_code == 200
    finally:
        stop_proxy(proxy)


def test_client_api_keys(mock_upstream, tmp_path, store_env):
    proxy = start_proxy(mock_upstream.base, tmp_path, CCPROXY_CLIENT_API_KEYS=f"other-key,{CLIENT_KEY}", **store_env)
    try:
        key = mock_upstream.script({"json": completion("allowed")})
        assert (
            proxy.client()
            .messages.create(model="claude-sonnet-5", max_tokens=5, messages=[{"role": "user", "content": key}])
            .content[0]
            .text
            == "allowed"
        )
        stranger = anthropic.Anthropic(base_url=proxy.base, api_key="sk-ant-stranger-000000", max_retries=0)
        with pytest.raises(anthropic.AuthenticationError):
            stranger.messages.create(model="claude-sonnet-5", max_tokens=5, messages=[{"role": "user", "content": key}])
        bearer = httpx.post(
            f"{proxy.base}/v1/messages",
            json={"model": "claude-sonnet-5", "max_tokens": 5, "messages": [{"role": "user", "content": key}]},
            headers={"authorization": "Bearer other-key"},
        )
        assert bearer.status_code == 200
        assert httpx.get(f"{proxy.base}/health").status_code == 200  # health stays open
    finally:
        stop_proxy(proxy)


# --- secrets ---------------------------------------------------------------------------------------------


def test_no_key_reaches_the_store_logs_or_any_api_response(logged):
    time.sleep(0.3)
    secrets = (UPSTREAM_KEY, CLIENT_KEY, SECRET_IN_PROMPT, "session-secret-id-123")
    files = [p for p in logged.data_dir.iterdir() if p.is_file() and p.name != "stdout.log"]
    if logged.database_url is None:
        assert any(p.name.startswith("ccproxy.db") for p in files)
    else:  # every table's rows, as text
        import psycopg

        with psycopg.connect(logged.database_url) as conn:
            tables = [r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
            assert "requests" in tables
            dump = "".join(str(conn.execute(f"SELECT * FROM {t}").fetchall()) for t in tables)
        assert "claude-sonnet-5" in dump
        for secret in (*secrets, "pg-secret-password-123"):
            assert secret not in dump
    for path in [*files, logged.data_dir / "stdout.log"]:
        data = path.read_bytes()
        for secret in (*secrets, "pg-secret-password-123"):
            assert secret.encode() not in data, f"{secret[:12]}… found in {path.name}"
    bodies = []
    for path in ("/api/requests?limit=100", "/api/requests/summary", "/api/stats", "/api/settings", "/v1/metrics"):
        bodies.append(httpx.get(f"{logged.base}{path}").text)
    for item in httpx.get(f"{logged.base}/api/requests?limit=100").json()["requests"]:
        bodies.append(httpx.get(f"{logged.base}/api/requests/{item['requestId']}").text)
    for text in bodies:
        for secret in secrets:
            assert secret not in text


def test_several_workers_share_one_log_and_the_settings(mock_upstream, tmp_path, store_env):
    proxy = start_proxy(mock_upstream.base, tmp_path, WEB_CONCURRENCY="2", **store_env)
    try:
        key = mock_upstream.script({"json": completion("many")})
        workers = set()
        for _ in range(30):
            assert (
                httpx.post(f"{proxy.base}/v1/messages", json=ask(key), headers={"x-api-key": CLIENT_KEY}).status_code
                == 200
            )
            workers.add(get(proxy, "/v1/metrics").json()["pid"])
        assert len(workers) == 2  # both workers served, and both logged through the one writer
        deadline = time.monotonic() + 5
        while get(proxy, "/api/requests").json()["total"] < 30 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert get(proxy, "/api/requests").json()["total"] == 30
        rules = {"requestHeaderRules": [{"header": "x-everywhere", "action": "set", "value": "1"}]}
        assert httpx.put(f"{proxy.base}/api/settings", json=rules).status_code == 200
        time.sleep(2.5)  # the other worker polls the settings every 2 s
        key = mock_upstream.script({"json": completion("ruled")})
        for _ in range(10):
            httpx.post(f"{proxy.base}/v1/messages", json=ask(key), headers={"x-api-key": CLIENT_KEY})
        assert all(r["headers"].get("x-everywhere") == "1" for r in mock_upstream.requests(key))
    finally:
        stop_proxy(proxy)
