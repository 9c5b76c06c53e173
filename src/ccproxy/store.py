"""The request log store: embedded SQLite (WAL) in CCPROXY_DATA_DIR.

Writing never blocks a request: ``RequestStore.add`` is a bounded ``deque.append``; one
background thread per process drains it every 0.1 s and inserts the batch in one transaction,
together with per-minute usage roll-ups that keep the dashboard's statistics fast at any table
size. When the queue is full, records are dropped and counted (``dropped``). Retention (age and
database size) runs in the same thread once a minute.

Reads (the dashboard APIs, ``dashboard.py``) use their own connections; WAL lets them run
beside the writer. Several worker processes may share the file (SQLite's locking, busy timeout).

Schema changes are numbered migrations (``MIGRATIONS``), applied in order at open and recorded
in ``schema_version``.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("ccproxy.store")

QUEUE_SIZE = 20_000
FLUSH_INTERVAL = 0.1
RETENTION_INTERVAL = 60.0

MIGRATIONS: tuple[str, ...] = (
    # 1: requests, per-minute usage roll-ups, settings
    """
    CREATE TABLE requests (
        id TEXT PRIMARY KEY,
        ts REAL NOT NULL,
        method TEXT NOT NULL DEFAULT 'POST',
        endpoint TEXT NOT NULL,
        model TEXT,
        routed_model TEXT,
        upstream TEXT,
        status INTEGER,
        latency_ms INTEGER,
        streaming INTEGER NOT NULL DEFAULT 0,
        stream_error TEXT,
        error_type TEXT,
        stop_reason TEXT,
        input_tokens INTEGER NOT NULL DEFAULT 0,
        output_tokens INTEGER NOT NULL DEFAULT 0,
        cache_read_tokens INTEGER NOT NULL DEFAULT 0,
        cache_creation_tokens INTEGER NOT NULL DEFAULT 0,
        message_count INTEGER,
        user_agent TEXT,
        content_type TEXT,
        session TEXT,
        conversation_hash TEXT,
        organization_id TEXT,
        rl_requests_limit INTEGER,
        rl_requests_remaining INTEGER,
        rl_requests_reset TEXT,
        rl_tokens_limit INTEGER,
        rl_tokens_remaining INTEGER,
        rl_tokens_reset TEXT,
        rl_unified_status TEXT,
        rl_unified_5h_utilization REAL,
        rl_unified_5h_reset TEXT,
        rl_unified_7d_utilization REAL,
        rl_unified_7d_reset TEXT,
        request_body TEXT,
        response_body TEXT
    );
    CREATE INDEX requests_ts ON requests (ts);
    CREATE INDEX requests_model_ts ON requests (model, ts);
    CREATE INDEX requests_org ON requests (organization_id) WHERE organization_id IS NOT NULL;
    CREATE TABLE usage_minutes (
        minute INTEGER NOT NULL,
        model TEXT NOT NULL,
        org TEXT NOT NULL,
        requests INTEGER NOT NULL,
        input_tokens INTEGER NOT NULL,
        output_tokens INTEGER NOT NULL,
        cache_read_tokens INTEGER NOT NULL,
        cache_creation_tokens INTEGER NOT NULL,
        latency_ms_sum INTEGER NOT NULL,
        errors INTEGER NOT NULL,
        PRIMARY KEY (minute, model, org)
    ) WITHOUT ROWID;
    CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL, updated REAL NOT NULL);
    """,
    # 2: hourly roll-ups (long ranges read ~60x fewer rows), the model and organization names
    # seen (filters resolve substrings against these small tables), indexes for the routed-model
    # filter and for short ids (the last 10 characters the dashboard shows)
    """
    CREATE TABLE usage_hours (
        hour INTEGER NOT NULL,
        model TEXT NOT NULL,
        org TEXT NOT NULL,
        requests INTEGER NOT NULL,
        input_tokens INTEGER NOT NULL,
        output_tokens INTEGER NOT NULL,
        cache_read_tokens INTEGER NOT NULL,
        cache_creation_tokens INTEGER NOT NULL,
        latency_ms_sum INTEGER NOT NULL,
        errors INTEGER NOT NULL,
        PRIMARY KEY (hour, model, org)
    ) WITHOUT ROWID;
    INSERT INTO usage_hours
        SELECT minute / 60, model, org, sum(requests), sum(input_tokens), sum(output_tokens),
               sum(cache_read_tokens), sum(cache_creation_tokens), sum(latency_ms_sum), sum(errors)
        FROM usage_minutes GROUP BY minute / 60, model, org;
    CREATE TABLE model_names (name TEXT PRIMARY KEY) WITHOUT ROWID;
    INSERT OR IGNORE INTO model_names SELECT DISTINCT model FROM requests WHERE model IS NOT NULL;
    INSERT OR IGNORE INTO model_names SELECT DISTINCT routed_model FROM requests WHERE routed_model IS NOT NULL;
    CREATE INDEX requests_routed_ts ON requests (routed_model, ts);
    CREATE INDEX requests_id_tail ON requests (substr(id, -10));
    """,
)
SHORT_ID = 10  # characters of an id the dashboard shows, and looks up by index

COLUMNS = (
    "id",
    "ts",
    "method",
    "endpoint",
    "model",
    "routed_model",
    "upstream",
    "status",
    "latency_ms",
    "streaming",
    "stream_error",
    "error_type",
    "stop_reason",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_creation_tokens",
    "message_count",
    "user_agent",
    "content_type",
    "session",
    "conversation_hash",
    "organization_id",
    "rl_requests_limit",
    "rl_requests_remaining",
    "rl_requests_reset",
    "rl_tokens_limit",
    "rl_tokens_remaining",
    "rl_tokens_reset",
    "rl_unified_status",
    "rl_unified_5h_utilization",
    "rl_unified_5h_reset",
    "rl_unified_7d_utilization",
    "rl_unified_7d_reset",
    "request_body",
    "response_body",
)
_INSERT = f"INSERT OR REPLACE INTO requests ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
_ROLLUP_TEMPLATE = """
    INSERT INTO {table} VALUES (?, ?, ?, 1, ?, ?, ?, ?, ?, ?)
    ON CONFLICT ({key}, model, org) DO UPDATE SET
        requests = requests + 1,
        input_tokens = input_tokens + excluded.input_tokens,
        output_tokens = output_tokens + excluded.output_tokens,
        cache_read_tokens = cache_read_tokens + excluded.cache_read_tokens,
        cache_creation_tokens = cache_creation_tokens + excluded.cache_creation_tokens,
        latency_ms_sum = latency_ms_sum + excluded.latency_ms_sum,
        errors = errors + excluded.errors
"""
_ROLLUP = _ROLLUP_TEMPLATE.format(table="usage_minutes", key="minute")
_ROLLUP_HOURS = _ROLLUP_TEMPLATE.format(table="usage_hours", key="hour")
_NAMES = "INSERT OR IGNORE INTO model_names VALUES (?)"
# anthropic-ratelimit-* response headers → columns (numbers where Anthropic sends numbers)
RATELIMIT_HEADERS: dict[str, tuple[str, type]] = {
    "anthropic-ratelimit-requests-limit": ("rl_requests_limit", int),
    "anthropic-ratelimit-requests-remaining": ("rl_requests_remaining", int),
    "anthropic-ratelimit-requests-reset": ("rl_requests_reset", str),
    "anthropic-ratelimit-tokens-limit": ("rl_tokens_limit", int),
    "anthropic-ratelimit-tokens-remaining": ("rl_tokens_remaining", int),
    "anthropic-ratelimit-tokens-reset": ("rl_tokens_reset", str),
    "anthropic-ratelimit-unified-status": ("rl_unified_status", str),
    "anthropic-ratelimit-unified-5h-utilization": ("rl_unified_5h_utilization", float),
    "anthropic-ratelimit-unified-5h-reset": ("rl_unified_5h_reset", str),
    "anthropic-ratelimit-unified-7d-utilization": ("rl_unified_7d_utilization", float),
    "anthropic-ratelimit-unified-7d-reset": ("rl_unified_7d_reset", str),
    "anthropic-organization-id": ("organization_id", str),
}


def connect(path: Path, readonly: bool = False) -> sqlite3.Connection:
    uri = f"file:{path}?mode=ro" if readonly else f"file:{path}"
    conn = sqlite3.connect(uri, uri=True, timeout=10.0, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout = 10000")
    if not readonly:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
    return conn


def migrate(conn: sqlite3.Connection) -> int:
    """Apply the migrations this database has not seen; returns the schema version."""
    conn.execute("BEGIN IMMEDIATE")  # one process migrates, the others wait and see it done
    try:
        conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
        version = row[0] or 0
        for number, script in enumerate(MIGRATIONS, start=1):
            if number > version:
                for statement in script.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute("INSERT INTO schema_version VALUES (?)", (number,))
                version = number
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return version


def row_from(record: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(record.get(name) for name in COLUMNS)


def write_batch(conn: sqlite3.Connection, batch: list[dict[str, Any]]) -> None:
    """Insert request records and add them to the roll-ups, in one transaction."""
    rollups = [
        (
            int(r["ts"] // 60),
            r.get("model") or "",
            r.get("organization_id") or "",
            r.get("input_tokens") or 0,
            r.get("output_tokens") or 0,
            r.get("cache_read_tokens") or 0,
            r.get("cache_creation_tokens") or 0,
            r.get("latency_ms") or 0,
            1 if (r.get("status") or 0) >= 400 or r.get("stream_error") else 0,
        )
        for r in batch
    ]
    names = {r.get("model") for r in batch} | {r.get("routed_model") for r in batch}
    conn.execute("BEGIN")
    conn.executemany(_INSERT, [row_from(r) for r in batch])
    conn.executemany(_ROLLUP, rollups)
    conn.executemany(_ROLLUP_HOURS, [(r[0] // 60, *r[1:]) for r in rollups])
    conn.executemany(_NAMES, [(n,) for n in names if n])
    conn.execute("COMMIT")


class RequestStore:
    def __init__(self, path: Path, retention_days: float = 30.0, max_bytes: int = 1 << 30) -> None:
        self.path = path
        self.retention_days = retention_days
        self.max_bytes = max_bytes
        self.dropped = 0
        self.written = 0
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = connect(path)
        try:
            self.version = migrate(conn)
        finally:
            conn.close()
        self._pending: collections.deque[dict[str, Any]] = collections.deque()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="request-store", daemon=True)
        self._thread.start()

    def add(self, record: dict[str, Any]) -> None:
        if len(self._pending) < QUEUE_SIZE:
            self._pending.append(record)
        else:
            self.dropped += 1

    def close(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def flush(self, timeout: float = 5.0) -> None:
        """Wait until what was added so far is written (tests and shutdown)."""
        deadline = time.monotonic() + timeout
        while self._pending and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(FLUSH_INTERVAL * 1.5)

    def _run(self) -> None:
        conn = connect(self.path)
        pending = self._pending
        next_retention = time.monotonic() + 5.0
        try:
            while True:
                stopping = self._stop.wait(FLUSH_INTERVAL)
                batch = []
                while pending and len(batch) < 5000:
                    batch.append(pending.popleft())
                if batch:
                    self._write(conn, batch)
                if time.monotonic() >= next_retention:
                    next_retention = time.monotonic() + RETENTION_INTERVAL
                    self._retain(conn)
                if stopping and not pending:
                    break
        finally:
            conn.close()

    def _write(self, conn: sqlite3.Connection, batch: list[dict[str, Any]]) -> None:
        try:
            write_batch(conn, batch)
            self.written += len(batch)
        except sqlite3.Error as exc:
            self.dropped += len(batch)
            log.error("request log: cannot write %d record(s): %s", len(batch), exc)
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")

    def _retain(self, conn: sqlite3.Connection) -> None:
        try:
            if self.retention_days > 0:
                cutoff = time.time() - self.retention_days * 86400
                conn.execute("DELETE FROM requests WHERE ts < ?", (cutoff,))
                conn.execute("DELETE FROM usage_minutes WHERE minute < ?", (int(cutoff // 60),))
                conn.execute("DELETE FROM usage_hours WHERE hour < ?", (int(cutoff // 3600),))
            page_size = conn.execute("PRAGMA page_size").fetchone()[0]
            pages = conn.execute("PRAGMA page_count").fetchone()[0]
            free = conn.execute("PRAGMA freelist_count").fetchone()[0]
            used = (pages - free) * page_size
            if used > self.max_bytes:
                # drop the oldest rows (by count, in proportion to the excess plus 10 %)
                total = conn.execute("SELECT count(*) FROM requests").fetchone()[0]
                excess = min(total, int(total * ((used - self.max_bytes) / used + 0.1)) + 1)
                conn.execute(
                    "DELETE FROM requests WHERE id IN (SELECT id FROM requests ORDER BY ts LIMIT ?)", (excess,)
                )
                log.info("request log: over %d bytes, removed the %d oldest requests", self.max_bytes, excess)
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except sqlite3.Error as exc:
            log.error("request log: retention failed: %s", exc)

    # --- settings (small, read and written from handlers) ---

    def get_setting(self, key: str) -> tuple[str, float] | None:
        conn = connect(self.path)
        try:
            row = conn.execute("SELECT value, updated FROM settings WHERE key = ?", (key,)).fetchone()
        finally:
            conn.close()
        return (row[0], row[1]) if row else None

    def put_setting(self, key: str, value: str) -> float:
        now = time.time()
        conn = connect(self.path)
        try:
            conn.execute(
                "INSERT INTO settings VALUES (?, ?, ?) ON CONFLICT (key) DO UPDATE SET value = ?, updated = ?",
                (key, value, now, value, now),
            )
        finally:
            conn.close()
        return now
