"""Issue 16 against the real server: each test replays an attack from the review (a foreign
Host or Origin, a cross-site simple request, a hostile upstream, a leaked credential …) and
checks that it fails, and that what a real client does still works. docs/security.md."""

from __future__ import annotations

import base64
import contextlib
import gzip
import json
import os
import signal
import socket
import sqlite3
import stat
import threading
import time
from pathlib import Path

import anthropic
import httpx
import pytest

from tests.support.chat_answers import anthropic_message, completion
from tests.support.proxies import CLIENT_KEY, UPSTREAM_KEY, ask, post, start_proxy, stop_proxy
from tests.support.servers import free_port

pytestmark = pytest.mark.integration

PASSWORD = "dashboard-pass-0123"


def is_envelope(resp: httpx.Response, status: int, error_type: str) -> bool:
    body = resp.json()
    return resp.status_code == status and body["type"] == "error" and body["error"]["type"] == error_type


# --- 1. DNS rebinding: a foreign Host --------------------------------------------------------


@pytest.mark.parametrize("host", ["evil.example", "evil.example:11434", "rebind.attacker.test:80", "127.0.0.1.nip.io"])
def test_a_foreign_host_reads_nothing_and_spends_nothing(proxy, mock_upstream, host):
    key = mock_upstream.script({"json": completion("spent")})
    api = httpx.get(f"{proxy.base}/api/requests", headers={"host": host}, timeout=10)
    assert is_envelope(api, 403, "permission_error") and "CCPROXY_ALLOWED_HOSTS" in api.json()["error"]["message"]
    assert is_envelope(
        httpx.get(f"{proxy.base}/dashboard", headers={"host": host}, timeout=10), 403, "permission_error"
    )
    assert is_envelope(post(proxy, "/v1/messages", ask(key), host=host), 403, "permission_error")
    assert mock_upstream.requests(key) == []  # the key was not spent
    assert httpx.get(f"{proxy.base}/health", headers={"host": host}, timeout=10).status_code == 200  # probes


@pytest.mark.parametrize("host", ["localhost", "LOCALHOST:{port}", "127.0.0.1:{port}", "[::1]:{port}", "app.localhost"])
def test_loopback_hosts_are_served(proxy, mock_upstream, host):
    key = mock_upstream.script({"json": completion("fine")})
    resp = post(proxy, "/v1/messages", ask(key), host=host.format(port=proxy.port))
    assert resp.status_code == 200 and resp.json()["content"][0]["text"] == "fine"


def test_configured_public_names(mock_upstream, tmp_path):
    proxy = start_proxy(mock_upstream.base, tmp_path, CCPROXY_ALLOWED_HOSTS="proxy.example.com, *.corp.example")
    try:
        key = mock_upstream.script({"json": completion("named")})
        for host in ("proxy.example.com", "proxy.example.com:8443", "ai.corp.example", "a.b.corp.example"):
            assert post(proxy, "/v1/messages", ask(key), host=host).status_code == 200, host
        for host in ("example.com", "corp.example", "evilcorp.example", "proxy.example.com.evil.test"):
            assert post(proxy, "/v1/messages", ask(key), host=host).status_code == 403, host
        # a page on a configured name is the user's own (a reverse proxy may rewrite Host)
        resp = post(proxy, "/v1/messages", ask(key), origin="https://proxy.example.com")
        assert resp.status_code == 200
    finally:
        stop_proxy(proxy)


# --- 1 and 3. Cross-site pages: Origin, Sec-Fetch-Site, content types --------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {"origin": "http://evil.example"},
        {"origin": "null"},  # sandboxed frames and file:// pages
        {"origin": "http://127.0.0.1:1"},  # another local web app is another origin
        {"sec-fetch-site": "cross-site"},
        {"sec-fetch-site": "same-site"},
    ],
)
def test_requests_from_other_origins_are_refused(proxy, mock_upstream, headers):
    key = mock_upstream.script({"json": completion("spent")})
    assert is_envelope(post(proxy, "/v1/messages", ask(key), **headers), 403, "permission_error")
    assert is_envelope(post(proxy, "/v1/messages/count_tokens", ask(key), **headers), 403, "permission_error")
    resp = httpx.put(f"{proxy.base}/api/settings", json={"requestHeaderRules": []}, headers=headers, timeout=10)
    assert is_envelope(resp, 403, "permission_error")
    assert is_envelope(post(proxy, "/v1/cache/clear", b"", **headers), 403, "permission_error")
    assert mock_upstream.requests(key) == []


def test_same_origin_pages_and_plain_clients_are_served(proxy, mock_upstream):
    key = mock_upstream.script({"json": completion("mine")})
    same = post(proxy, "/v1/messages", ask(key), origin=proxy.base, **{"sec-fetch-site": "same-origin"})
    assert same.status_code == 200
    # a link or bookmark to the dashboard from another site is a navigation, and harmless
    nav = httpx.get(
        f"{proxy.base}/dashboard",
        headers={"sec-fetch-site": "cross-site", "sec-fetch-mode": "navigate", "sec-fetch-dest": "document"},
        timeout=10,
    )
    assert nav.status_code == 200


@pytest.mark.parametrize(
    "content_type", ["text/plain", "text/plain;charset=UTF-8", "application/x-www-form-urlencoded", None]
)
def test_json_routes_refuse_what_a_page_can_send_without_asking(proxy, mock_upstream, content_type):
    """A no-cors fetch or a form may send text/plain, a form encoding, or no type at all."""
    key = mock_upstream.script({"json": completion("spent")})
    body = json.dumps(ask(key)).encode()
    headers = {"x-api-key": CLIENT_KEY}
    if content_type:
        headers["content-type"] = content_type
    resp = httpx.post(f"{proxy.base}/v1/messages", content=body, headers=headers, timeout=10)
    assert is_envelope(resp, 415, "invalid_request_error")
    assert mock_upstream.requests(key) == []
    ok = post(proxy, "/v1/messages", body, **{"content-type": "application/json; charset=utf-8"})
    assert ok.status_code == 200


def test_cache_clear_and_metrics_behind_a_key_or_the_password(mock_upstream, tmp_path):
    proxy = start_proxy(
        mock_upstream.base,
        tmp_path,
        CCPROXY_CLIENT_API_KEYS=CLIENT_KEY,
        DASHBOARD_PASSWORD=PASSWORD,
        CCPROXY_CACHE="on",
        CCPROXY_PROTECT_METRICS="on",
    )
    basic = "Basic " + base64.b64encode(f"any:{PASSWORD}".encode()).decode()
    try:
        for path in ("/v1/cache/clear",):
            assert is_envelope(httpx.post(f"{proxy.base}{path}", timeout=10), 401, "authentication_error")
            wrong = httpx.post(f"{proxy.base}{path}", headers={"x-api-key": "sk-wrong-key-000"}, timeout=10)
            assert wrong.status_code == 401
            assert httpx.post(f"{proxy.base}{path}", headers={"x-api-key": CLIENT_KEY}, timeout=10).status_code == 200
            assert httpx.post(f"{proxy.base}{path}", headers={"authorization": basic}, timeout=10).status_code == 200
        for path in ("/metrics", "/v1/metrics", "/v1/cache/stats"):
            assert httpx.get(f"{proxy.base}{path}", timeout=10).status_code == 401, path
            bearer = httpx.get(f"{proxy.base}{path}", headers={"authorization": f"Bearer {CLIENT_KEY}"}, timeout=10)
            assert bearer.status_code == 200, path
            assert httpx.get(f"{proxy.base}{path}", headers={"authorization": basic}, timeout=10).status_code == 200
        assert httpx.get(f"{proxy.base}/health", timeout=10).status_code == 200  # probes stay open
    finally:
        stop_proxy(proxy)


# --- 4. Response headers and content types ----------------------------------------------------


def test_dashboard_answers_carry_the_security_headers(proxy):
    for path in ("/dashboard", "/dashboard/dashboard.js", "/api/requests", "/api/nothing-here"):
        resp = httpx.get(f"{proxy.base}{path}", timeout=10)
        csp = resp.headers.get("content-security-policy", "")
        assert "frame-ancestors 'none'" in csp and "default-src 'none'" in csp, path
        assert resp.headers.get("x-content-type-options") == "nosniff", path
        assert resp.headers.get("referrer-policy") == "no-referrer", path


@pytest.fixture(scope="module")
def anthropic_routed(mock_upstream, tmp_path_factory):
    data = tmp_path_factory.mktemp("security-anthropic")
    config = data / "routes.toml"
    config.write_text(
        f"""
[upstreams.anth]
kind = "anthropic"
base_url = "{mock_upstream.base}"
pass_client_key = true

[[routes]]
match = "claude-opus-*"
upstream = "anth"
"""
    )
    proxy = start_proxy(mock_upstream.base, data, CCPROXY_CONFIG=str(config), CCPROXY_CACHE="on")
    yield proxy
    stop_proxy(proxy)


@pytest.mark.parametrize("status", [200, 503])
def test_pass_through_never_relays_html_from_the_proxy_origin(anthropic_routed, mock_upstream, status):
    page = "<html><script>alert(document.cookie)</script></html>"
    key = mock_upstream.script({"status": status, "text": page, "headers": {"content-type": "text/html"}})
    for stream in (False, True):
        resp = post(anthropic_routed, "/v1/messages", ask(key, model="claude-opus-4-8", stream=stream))
        assert resp.headers["content-type"].startswith("application/json")
        assert resp.json()["type"] == "error" and "text/html" in resp.json()["error"]["message"]
        assert resp.status_code == (502 if status == 200 else 503)


def test_cache_is_keyed_on_the_forwarded_credential(anthropic_routed, mock_upstream):
    """pass_client_key: a request with a bogus key must not get the answer cached for a valid one."""
    key = mock_upstream.script({"json": anthropic_message("for the valid key only")})
    body = ask(key, model="claude-opus-4-8")
    first = post(anthropic_routed, "/v1/messages", body, **{"x-api-key": "sk-ant-valid-key-111111"})
    assert first.status_code == 200 and len(mock_upstream.requests(key)) == 1
    bogus = post(anthropic_routed, "/v1/messages", body, **{"x-api-key": "sk-ant-bogus-key-222222"})
    assert bogus.status_code == 200
    assert len(mock_upstream.requests(key)) == 2  # asked upstream with its own key, not served from cache
    assert mock_upstream.requests(key)[1]["headers"]["x-api-key"] == "sk-ant-bogus-key-222222"
    again = post(anthropic_routed, "/v1/messages", body, **{"x-api-key": "sk-ant-valid-key-111111"})
    assert again.status_code == 200 and len(mock_upstream.requests(key)) == 2  # a true hit
    beta = post(
        anthropic_routed, "/v1/messages", body, **{"x-api-key": "sk-ant-valid-key-111111", "anthropic-beta": "x-1"}
    )
    assert beta.status_code == 200 and len(mock_upstream.requests(key)) == 3  # beta flags change the answer


# --- 5. Files ------------------------------------------------------------------------------------


def test_data_files_are_private(mock_upstream, tmp_path):
    data = tmp_path / "fresh-data-dir"
    old_umask = os.umask(0o022)  # what the proxy inherits: a usual desktop umask
    try:
        proxy = start_proxy(mock_upstream.base, data, LOG_FILE_PATH=str(data / "log.jsonl"))
    finally:
        os.umask(old_umask)
    try:
        key = mock_upstream.script({"status": 500, "json": {"error": {"message": "boom"}}})
        post(proxy, "/v1/messages", ask(key))
        deadline = time.monotonic() + 10
        names = ("ccproxy.db", "ccproxy.db-wal", "ccproxy.db-shm", "error.jsonl", "log.jsonl")
        while time.monotonic() < deadline and not all((data / n).exists() for n in names):
            time.sleep(0.1)
        assert stat.S_IMODE(data.stat().st_mode) == 0o700
        for name in names:
            mode = stat.S_IMODE((data / name).stat().st_mode)
            assert mode & 0o077 == 0, f"{name} is {oct(mode)}"
    finally:
        stop_proxy(proxy)


# --- 6-7. A hostile upstream through the proxy ----------------------------------------------------


def worker_rss_mb(proxy) -> float:
    total = 0.0
    for pid in descendants(proxy.proc.pid):
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total = max(total, int(line.split()[1]) / 1024)
        except OSError:
            pass
    return total


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


@pytest.fixture
def fresh_proxy(mock_upstream, tmp_path):
    proxy = start_proxy(mock_upstream.base, tmp_path, CCPROXY_READ_TIMEOUT="3")
    yield proxy
    stop_proxy(proxy)


def test_a_gigabyte_answer_and_a_compression_bomb_cost_no_memory(fresh_proxy, mock_upstream):
    huge = {
        "flood": {
            "head": "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1073741824\r\n\r\n",
            "block": "x",
            "repeat": 1 << 20,
            "count": 1024,
        }
    }
    key = mock_upstream.script(huge)
    resp = post(fresh_proxy, "/v1/messages", ask(key))
    assert is_envelope(resp, 502, "api_error") and "larger than" in resp.json()["error"]["message"]
    bomb = gzip.compress(bytes(300 << 20), 9)
    head = (
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-encoding: gzip\r\n"
        f"content-length: {len(bomb)}\r\n\r\n"
    )
    key = mock_upstream.script({"raw": [head.encode().hex(), bomb.hex()]})
    resp = post(fresh_proxy, "/v1/messages", ask(key))
    assert is_envelope(resp, 502, "api_error") and "expands beyond" in resp.json()["error"]["message"]
    assert worker_rss_mb(fresh_proxy) < 250  # was 2.1 GB and 672 MB


def test_an_endless_header_line_does_not_stall_the_worker(fresh_proxy, mock_upstream):
    key = mock_upstream.script(
        {"flood": {"head": "HTTP/1.1 200 OK\r\nx-filler: ", "block": "a", "repeat": 1 << 20, "count": 300}}
    )
    result: list[httpx.Response] = []
    thread = threading.Thread(target=lambda: result.append(post(fresh_proxy, "/v1/messages", ask(key))))
    thread.start()
    began = time.monotonic()
    while thread.is_alive() and time.monotonic() - began < 20:
        assert httpx.get(f"{fresh_proxy.base}/health", timeout=2).status_code == 200
        time.sleep(0.05)
    thread.join(30)
    assert result and is_envelope(result[0], 502, "api_error")
    assert time.monotonic() - began < 10


def test_an_endless_event_ends_the_stream_in_an_error_event(fresh_proxy, mock_upstream):
    head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n"
    key = mock_upstream.script({"flood": {"head": head + "data: ", "block": "b", "repeat": 1 << 20, "count": 64}})
    with httpx.stream("POST", f"{fresh_proxy.base}/v1/messages", json=ask(key, stream=True), timeout=30) as resp:
        text = resp.read().decode()
    assert "event: error" in text and "message_stop" not in text
    assert "event larger than" in text  # stopped by the limit, not by the upstream giving up


def test_an_unrequested_extra_response_never_reaches_another_request(fresh_proxy, mock_upstream):
    from concurrent.futures import ThreadPoolExecutor

    first = mock_upstream.script({"json": completion("first"), "extra_response": True})
    assert post(fresh_proxy, "/v1/messages", ask(first)).json()["content"][0]["text"] == "first"
    time.sleep(0.3)  # the extra answer arrives on the idle connection
    keys = [mock_upstream.script({"json": completion(f"answer {i}"), "wait": 0.2}) for i in range(4)]
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda k: post(fresh_proxy, "/v1/messages", ask(k)), keys))
    assert [a.json()["content"][0]["text"] for a in answers] == [f"answer {i}" for i in range(4)]
    assert httpx.get(f"{fresh_proxy.base}/livez", timeout=5).json()["in_flight"] == 0


# --- 9. A client that leaves a non-streaming request ---------------------------------------------


@pytest.mark.parametrize("cache", ["off", "on"])
def test_a_client_that_leaves_cancels_the_upstream_call_and_is_logged_499(mock_upstream, tmp_path, cache):
    proxy = start_proxy(mock_upstream.base, tmp_path, CCPROXY_CACHE=cache)
    try:
        key = mock_upstream.script({"json": completion("too late"), "wait": 4})
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{proxy.base}/v1/messages", json=ask(key), headers={"x-api-key": CLIENT_KEY}, timeout=0.5)
        left = time.time()
        record: dict = {}
        for _ in range(60):
            record = mock_upstream.requests(key)[0]
            if "disconnected_at" in record or "finished_at" in record:
                break
            time.sleep(0.05)
        assert record.get("disconnected_at", left + 99) - left < 1.5  # the proxy hung up on the upstream
        log = proxy.data_dir / "log.jsonl"
        statuses: list[int] = []
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not statuses:
            statuses = [json.loads(line)["status"] for line in log.read_text().splitlines()] if log.exists() else []
            time.sleep(0.1)
        assert statuses == [499]  # not 200: the answer never reached anyone
        assert httpx.get(f"{proxy.base}/livez", timeout=5).json()["in_flight"] == 0
    finally:
        stop_proxy(proxy)


# --- 11. Header rules ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "fragment"),
    [
        ({"header": "x-evil\n", "action": "set", "value": "1"}, "header"),
        ({"header": "x-a", "action": "set", "value": "caf\u00e9 \u20ac"}, "value"),
        ({"header": "x-a", "action": "set", "value": "a\x00b"}, "value"),
        ({"header": "content-length", "action": "set", "value": "0"}, "content-length"),
        ({"header": "Transfer-Encoding", "action": "set", "value": "chunked"}, "transfer-encoding"),
        ({"header": "host", "action": "set", "value": "elsewhere.example"}, "host"),
        ({"header": "connection", "action": "block"}, "connection"),
    ],
)
def test_header_rules_that_would_break_framing_are_refused(proxy, rule, fragment):
    resp = httpx.put(f"{proxy.base}/api/settings", json={"requestHeaderRules": [rule]}, timeout=10)
    assert is_envelope(resp, 400, "invalid_request_error") and fragment in resp.json()["error"]["message"]


def test_a_bad_stored_rule_does_not_break_every_request(mock_upstream, tmp_path):
    """A rule saved by an older version (or by hand) that cannot be sent is ignored at load."""
    proxy = start_proxy(mock_upstream.base, tmp_path)
    stop_proxy(proxy)
    rules = {"requestHeaderRules": [{"header": "x-a", "action": "set", "value": "\u20ac", "find": "", "enabled": True}]}
    with sqlite3.connect(tmp_path / "ccproxy.db") as db:
        db.execute(
            "INSERT INTO settings VALUES ('header_rules', ?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (json.dumps(rules), time.time()),
        )
    proxy = start_proxy(mock_upstream.base, tmp_path)
    try:
        key = mock_upstream.script({"json": completion("still fine")})
        assert post(proxy, "/v1/messages", ask(key)).status_code == 200
    finally:
        stop_proxy(proxy)


# --- 12. Credentials in a base URL -------------------------------------------------------------


def test_userinfo_in_the_base_url_is_basic_auth_and_never_shown(mock_upstream, tmp_path):
    base = mock_upstream.base.replace("http://", "http://gateway-user:s3cret-gw-pw@")
    proxy = start_proxy(mock_upstream.base, tmp_path, OPENAI_BASE_URL=f"{base}/v1")
    try:
        key = mock_upstream.script({"status": 500, "json": {"error": {"message": "upstream broke"}}})
        resp = post(proxy, "/v1/messages", ask(key))
        sent = mock_upstream.requests(key)[0]["headers"]
        assert sent["authorization"] == "Basic " + base64.b64encode(b"gateway-user:s3cret-gw-pw").decode()
        assert "@" not in sent["host"] and "s3cret" not in sent["host"]
        assert "s3cret-gw-pw" not in resp.text
    finally:
        out = stop_proxy(proxy)
    assert "s3cret-gw-pw" not in out
    dead = f"http://gateway-user:s3cret-gw-pw@127.0.0.1:{free_port()}/v1"
    proxy = start_proxy(mock_upstream.base, tmp_path / "dead", OPENAI_BASE_URL=dead)
    try:
        resp = post(proxy, "/v1/messages", ask("x"))
        assert resp.status_code == 502 and "s3cret" not in resp.text and "gateway-user@" not in resp.text
    finally:
        out = stop_proxy(proxy)
    for path in (tmp_path / "dead").iterdir():
        if path.is_file() and path.suffix in (".jsonl", ".log"):
            assert "s3cret-gw-pw" not in path.read_text(errors="replace"), path
    assert "s3cret-gw-pw" not in out


# --- 13. Redaction of common secret formats ----------------------------------------------------------


def test_secrets_in_prompts_and_upstream_errors_are_redacted(mock_upstream, tmp_path):
    proxy = start_proxy(mock_upstream.base, tmp_path, CCPROXY_LOG_BODIES="on")
    secrets = [
        "AKIAIOSFODNN7EXAMPLE",
        "ghp_16C7e42F292c6912E7710c838347Ae178B4a",
        "xoxb-123456789012-1234567890123-AbCdEfGhIjKl",
        "password=hunter2024",
    ]
    try:
        key = mock_upstream.script({"json": completion("noted")})
        prompt = f"{key} here are my creds: " + " ".join(secrets)
        assert post(proxy, "/v1/messages", ask(prompt)).status_code == 200
        error_key = mock_upstream.script(
            {"status": 400, "json": {"error": {"message": f"bad token {secrets[1]} for user"}}}
        )
        resp = post(proxy, "/v1/messages", ask(error_key))
        assert resp.status_code == 400 and secrets[1] not in resp.text and "[REDACTED]" in resp.text
        time.sleep(0.5)
        listing = httpx.get(f"{proxy.base}/api/requests", timeout=10).json()["requests"]
        stored = [httpx.get(f"{proxy.base}/api/requests/{r['requestId']}", timeout=10).text for r in listing]
    finally:
        stop_proxy(proxy)
    everything = "".join(stored) + (tmp_path / "error.jsonl").read_text()
    for secret in (*secrets[:3], "hunter2024"):
        assert secret not in everything, secret
    assert UPSTREAM_KEY not in everything


# --- 16. Workers end with their parent ------------------------------------------------------------


def test_workers_and_the_writer_exit_when_the_main_process_is_killed(mock_upstream, tmp_path):
    proxy = start_proxy(mock_upstream.base, tmp_path, WEB_CONCURRENCY="2")
    children = descendants(proxy.proc.pid)
    assert len(children) >= 3  # two workers and the request log writer
    os.kill(proxy.proc.pid, signal.SIGKILL)
    proxy.proc.wait(10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(Path(f"/proc/{pid}").exists() and not _zombie(pid) for pid in children):
        time.sleep(0.1)
    alive = [pid for pid in children if Path(f"/proc/{pid}").exists() and not _zombie(pid)]
    assert alive == [], f"still running after the main process died: {alive}"
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", proxy.port), timeout=1):
        pass  # nobody serves the port any more


def test_the_worker_runs_the_configured_io_threads(mock_upstream, tmp_path):
    """CCPROXY_RUNTIME_THREADS reaches Granian: the worker runs that many runtime threads."""
    proxy = start_proxy(mock_upstream.base, tmp_path, CCPROXY_RUNTIME_THREADS="3")
    try:
        counts = []
        for pid in descendants(proxy.proc.pid):
            names = []
            for task in Path(f"/proc/{pid}/task").iterdir():
                with contextlib.suppress(OSError):
                    names.append((task / "comm").read_text().strip())
            counts.append(names.count("tokio-rt-worker"))
        assert 3 in counts, counts  # the worker (the writer and the main process run none)
    finally:
        stop_proxy(proxy)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return False


def test_anthropic_sdk_still_works_end_to_end(client, mock_upstream):
    key = mock_upstream.script({"json": completion("hello")})
    assert client.messages.create(**ask(key)).content[0].text == "hello"
    with pytest.raises(anthropic.PermissionDeniedError):
        client.messages.create(**ask(key), extra_headers={"origin": "http://evil.example"})
