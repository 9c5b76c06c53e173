"""OpenAPI coverage, header rules, the store (migrations, retention, query plans), and the
defensive Claude Code log parser (issue 8)."""

from __future__ import annotations

import json
import sqlite3
import time
import tracemalloc

import pytest
import yaml

from ccproxy.app import ProxyApp
from ccproxy.conversations import Conversations
from ccproxy.dashboard import Dashboard, parse_time
from ccproxy.errors import ProxyError
from ccproxy.headerrules import HeaderRules, apply, parse_rules
from ccproxy.openapi import openapi_spec, to_yaml
from ccproxy.store import MIGRATIONS, RequestStore, connect, migrate, write_batch
from tests.support.apps import make_app


def app() -> ProxyApp:
    return make_app()


# --- OpenAPI ------------------------------------------------------------------------------------


def test_every_route_is_documented():
    spec = openapi_spec()
    proxy = app()
    documented = {(method.upper(), path) for path, ops in spec["paths"].items() for method in ops}
    for method, path in proxy.routes:
        assert (method, path) in documented, f"{method} {path} is not in the OpenAPI spec"
    for method, prefix, _ in proxy.prefix_routes:
        assert any(m == method and p.startswith(prefix) and "{" in p for m, p in documented), prefix
    # and nothing documented that the app does not serve
    served = {(m, p) for m, p in proxy.routes} | {
        (m, p) for m, p in documented for pm, prefix, _ in proxy.prefix_routes if m == pm and p.startswith(prefix)
    }
    assert documented <= served


def test_yaml_and_json_describe_the_same_document():
    spec = openapi_spec()
    assert yaml.safe_load(to_yaml(spec)) == json.loads(json.dumps(spec))
    tricky = {"a": ["x: y", {"b": None, "c": [], "d": {}}], "e": 'quote " and \\ and #', "f": 1.5, "g": True}
    assert yaml.safe_load(to_yaml(tricky)) == tricky


# --- header rules -------------------------------------------------------------------------------


def test_header_rule_actions_are_case_insensitive_and_ordered():
    rules = parse_rules(
        [
            {"header": "X-Remove", "action": "block"},
            {"header": "x-set", "action": "set", "value": "new"},
            {"header": "User-Agent", "action": "replace", "find": "python", "value": "ccproxy"},
            {"header": "x-off", "action": "set", "value": "1", "enabled": False},
        ],
        "rules",
    )
    out = apply(rules, [("x-REMOVE", "1"), ("X-Set", "old"), ("user-agent", "python-httpx python"), ("a", "b")])
    assert out == [("user-agent", "ccproxy-httpx ccproxy"), ("a", "b"), ("x-set", "new")]


@pytest.mark.parametrize(
    ("rules", "fragment"),
    [
        ("nope", "must be a list"),
        ([{"header": "bad header", "action": "set"}], "[0].header"),
        ([{"header": "x", "action": "delete"}], "[0].action"),
        ([{"header": "x", "action": "set", "value": "a\r\nInjected: 1"}], "[0].value"),
        ([{"header": "x", "action": "set", "enabled": "yes"}], "[0].enabled"),
        ([{"header": "x", "action": "set", "colour": 1}], "unknown field"),
        ([{"header": "x", "action": "replace", "value": "v"}], "[0].find"),
    ],
)
def test_header_rules_validation(rules, fragment):
    with pytest.raises(ProxyError) as err:
        parse_rules(rules, "requestHeaderRules")
    assert err.value.status == 400 and fragment in err.value.message


def test_settings_document_validation():
    live = HeaderRules()
    with pytest.raises(ProxyError):
        live.load({"requestHeaderRules": [], "other": 1})
    live.load({"requestHeaderRules": [{"header": "X-A", "action": "set", "value": "1"}]})
    assert live.upstream_headers({"authorization": "k"}) == {"authorization": "k", "x-a": "1"}
    assert live.to_json()["responseHeaderRules"] == []


# --- store --------------------------------------------------------------------------------------


def _record(i: int, ts: float, **extra) -> dict:
    return {
        "id": f"req_{i:08d}",
        "ts": ts,
        "endpoint": "/v1/messages",
        "model": "claude-sonnet-5" if i % 2 else "claude-haiku-4-5",
        "routed_model": "gpt-big",
        "status": 200,
        "latency_ms": 100,
        "input_tokens": 10,
        "output_tokens": 2,
        **extra,
    }


@pytest.mark.parametrize("engine", ["sqlite", "postgresql"])
def test_lists_and_summaries_never_read_stored_bodies(engine, tmp_path, request):
    """With CCPROXY_LOG_BODIES a row holds up to 2 x 64 KB of bodies: /api/requests/summary
    (up to 100 k rows) and the list pages must not pull them into the worker (issue 16, 14)."""
    target = tmp_path / "db.sqlite" if engine == "sqlite" else request.getfixturevalue("postgres_server").new_database()
    conn = connect(target)
    migrate(conn)
    body = "x" * 100_000
    now = time.time()
    rows = [
        _record(i, now - i, request_body=body, response_body=body, method="POST", endpoint="/v1/messages")
        for i in range(300)
    ]
    rows[0]["endpoint"] = "/v1/messages/count_tokens"
    write_batch(conn, rows)
    conn.close()
    dashboard = Dashboard(target)
    dashboard.summary("all", None, None, 0, 0)  # (connection and statement set up outside the measure)
    tracemalloc.start()
    summary = dashboard.summary("all", None, None, 0, 0)
    page = dashboard.requests(1, 300, "all")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert summary["total"] == 300 and len(summary["requests"]) == 300
    assert peak < 8 << 20, peak  # the bodies alone are 60 MB
    assert summary["requests"][0]["endpoint"] == "/v1/messages/count_tokens"
    assert {r["method"] for r in summary["requests"]} == {"POST"}
    assert len(page["requests"]) == 300 and "body" not in page["requests"][0]
    full = dashboard.request(rows[0]["id"])["request"]
    assert full["body"] == body and full["response"]["body"] == body  # the detail view still has them


def test_migrations_are_versioned_and_idempotent(tmp_path):
    conn = connect(tmp_path / "db.sqlite")
    assert migrate(conn) == len(MIGRATIONS)
    assert migrate(conn) == len(MIGRATIONS)  # a second process finds it done
    versions = [r[0] for r in conn.execute("SELECT version FROM schema_version")]
    assert versions == list(range(1, len(MIGRATIONS) + 1))
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_store_writes_in_the_background_and_rolls_up(tmp_path):
    store = RequestStore(tmp_path / "db.sqlite")
    now = time.time()
    for i in range(500):
        store.add(_record(i, now - i))
    store.flush()
    board = Dashboard(tmp_path / "db.sqlite")
    assert board.requests(1, 10, "all")["total"] == 500
    stats = board.stats(None, None, None, None)
    assert stats["total_requests"] == 500 and stats["total_input_tokens"] == 5000
    store.close()


@pytest.mark.parametrize("count", [1, 7, 511, 512, 513, 1300])
def test_batches_of_any_size_are_written_whole_with_few_statements(tmp_path, count):
    """Rows go in chunks of a few fixed sizes: every row lands once, and the driver's statement
    cache holds a handful of INSERTs, not one per batch size (they are large)."""
    conn = connect(tmp_path / "db.sqlite")
    migrate(conn)
    traced = []
    conn.set_trace_callback(traced.append)
    now = time.time()
    write_batch(conn, [_record(i, now - i) for i in range(count)])
    assert conn.execute("SELECT count(*), count(DISTINCT id) FROM requests").fetchone() == (count, count)
    inserts = [t for t in traced if t.startswith("INSERT INTO requests")]
    # 512 rows at a time, then one chunk per set bit of the rest (sizes 256, 128, … 1)
    assert len(inserts) == count // 512 + bin(count % 512).count("1")


def test_full_queue_drops_and_counts(tmp_path, monkeypatch):
    monkeypatch.setattr(RequestStore, "queue_size", 10)
    store = RequestStore(tmp_path / "db.sqlite")
    store._stop.set()  # stop the writer so the queue fills
    store._thread.join()
    for i in range(25):
        store.add(_record(i, time.time()))
    assert store.dropped == 15


def test_retention_by_age_and_size(tmp_path):
    store = RequestStore(tmp_path / "db.sqlite", retention_days=1, max_bytes=1 << 20)
    now = time.time()
    big = "x" * 2000
    for i in range(1500):  # ~3 MB of bodies, half of them older than a day
        store.add(_record(i, now - (2 * 86400 if i < 750 else i), request_body=big))
    store.flush()
    conn = connect(tmp_path / "db.sqlite")
    store._retain(conn)
    remaining = conn.execute("SELECT count(*), min(ts) FROM requests").fetchone()
    assert remaining[1] > now - 86400  # everything older than a day is gone
    assert remaining[0] < 750  # and the size bound removed the oldest of the rest
    assert (
        conn.execute("SELECT count(*) FROM usage_minutes WHERE minute < ?", (int((now - 86400) // 60),)).fetchone()[0]
        == 0
    )
    store.close()


def test_list_and_stats_queries_use_indexes(tmp_path):
    store = RequestStore(tmp_path / "db.sqlite")
    store.close()
    conn = sqlite3.connect(tmp_path / "db.sqlite")
    plans = {
        "page": "SELECT * FROM requests ORDER BY ts DESC LIMIT 10 OFFSET 0",
        "range": "SELECT id FROM requests WHERE ts >= 1 AND ts < 2 ORDER BY ts DESC LIMIT 10",
        "latest": "SELECT max(ts) FROM requests",
        "prefix": "SELECT * FROM requests WHERE id >= 'req_1' AND id < 'req_2' LIMIT 2",
        "usage": "SELECT model, sum(requests) FROM usage_minutes WHERE minute >= 1 AND minute < 2 GROUP BY model",
        "hours": "SELECT model, sum(requests) FROM usage_hours WHERE hour >= 1 AND hour < 2 GROUP BY model",
        "model": "SELECT count(*) FROM requests WHERE model IN ('a', 'b')",
        "model page": "SELECT rowid, ts FROM requests WHERE model = 'a' ORDER BY ts DESC LIMIT 20",
    }
    for name, sql in plans.items():
        steps = [row[-1] for row in conn.execute("EXPLAIN QUERY PLAN " + sql)]
        reads = [s for s in steps if s.startswith(("SCAN", "SEARCH"))]
        assert reads and all("USING" in s for s in reads), (name, steps)  # no full-table scan


# --- conversations --------------------------------------------------------------------------------


def test_conversation_parser_survives_garbage(tmp_path):
    folder = tmp_path / "-p"
    folder.mkdir()
    (folder / "s1.jsonl").write_bytes(
        b'\xff\xfe not utf8\n[1,2]\n{"type":"user","message":"not a dict"}\n'
        b'{"type":"user","timestamp":"bad","message":{"role":"user","content":[{"type":"image"}]}}\n'
        b'{"type":"assistant","timestamp":"2026-01-01T00:00:00Z","message":{"role":"assistant","model":7}}\n'
    )
    (folder / "dir.jsonl").mkdir()
    conv = Conversations(tmp_path)
    listed = conv.list("all", 1, 10)
    assert listed["total"] == 1 and listed["conversations"][0]["requestCount"] == 2
    assert listed["conversations"][0]["model"] is None
    assert Conversations(tmp_path / "missing").list("all", 1, 10)["total"] == 0
    with pytest.raises(ProxyError):
        conv.get("../etc", "-p")


def test_time_parsing():
    assert parse_time("2026-01-02", "x") == parse_time("2026-01-02T00:00:00Z", "x")
    assert parse_time("2026-01-02", "x", end_of_day=True) - parse_time("2026-01-02", "x") == 86400
    assert parse_time("2026-01-02T01:00:00+01:00", "x") == parse_time("2026-01-02T00:00:00Z", "x")
    assert parse_time("2026-01-02T00:00:00 01:00", "x") == parse_time("2026-01-01T23:00:00Z", "x")  # '+' as space
    assert parse_time(None, "x") is None
    with pytest.raises(ProxyError):
        parse_time("01/02/2026", "x")


def test_an_unusable_database_degrades_cleanly(tmp_path):
    import asyncio

    blocked = tmp_path / "file"
    blocked.write_text("")
    proxy = make_app(db_path=blocked / "ccproxy.db")  # a directory that is a file

    async def start_and_stop() -> None:
        await proxy.startup()
        assert proxy.recorder.store is None  # serving goes on without a request log
        await proxy.shutdown()

    asyncio.run(start_and_stop())
    with pytest.raises(ProxyError) as err:
        Dashboard(blocked / "ccproxy.db").latest_date()
    assert err.value.status == 503  # the APIs say so in an Anthropic envelope
