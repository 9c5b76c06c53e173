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
import functools
import logging
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import orjson

from . import pg
from .files import private_dir, private_file
from .logs import BatchWriter
from .parent import parent_alive

log = logging.getLogger("ccproxy.store")

# what a failing database raises, whichever engine it is

QUEUE_SIZE = 20_000
FLUSH_INTERVAL = 0.1
RETENTION_INTERVAL = 60.0

MIGRATIONS: tuple[str, ...] = (
    # 1: requests, per-minute usage roll-ups, settings
    """
    CREATE TABLE requests (
        id TEXT PRIMARY KEY,
        ts REAL NOT NULL,
        model TEXT,
        routed_model TEXT,
        upstream TEXT,
        status INTEGER,
        latency_ms INTEGER,
        streaming INTEGER NOT NULL DEFAULT 0,
        error_type TEXT,
        stop_reason TEXT,
        input_tokens INTEGER NOT NULL DEFAULT 0,
        output_tokens INTEGER NOT NULL DEFAULT 0,
        cache_read_tokens INTEGER NOT NULL DEFAULT 0,
        cache_creation_tokens INTEGER NOT NULL DEFAULT 0,
        message_count INTEGER,
        conversation_hash TEXT,
        organization_id TEXT,
        detail TEXT
    );
    CREATE INDEX requests_ts ON requests (ts);
    CREATE INDEX requests_model_ts ON requests (model, ts);
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
    # 2: hourly roll-ups (long ranges read ~60x fewer rows) and the requested and routed model
    # names seen (filters resolve substrings against this small table)
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
    CREATE TABLE model_names (name TEXT NOT NULL, routed INTEGER NOT NULL, PRIMARY KEY (name, routed))
        WITHOUT ROWID;
    INSERT OR IGNORE INTO model_names SELECT DISTINCT model, 0 FROM requests WHERE model IS NOT NULL;
    INSERT OR IGNORE INTO model_names SELECT DISTINCT routed_model, 1 FROM requests WHERE routed_model IS NOT NULL;
    """,
)

# The same schema for PostgreSQL (DATABASE_URL), version for version: wider integer types,
# ``id`` in the C collation (prefix lookups by range, byte order like SQLite's), no WITHOUT ROWID.
PG_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE requests (
        id TEXT COLLATE "C" PRIMARY KEY,
        ts DOUBLE PRECISION NOT NULL,
        model TEXT,
        routed_model TEXT,
        upstream TEXT,
        status INTEGER,
        latency_ms BIGINT,
        streaming INTEGER NOT NULL DEFAULT 0,
        error_type TEXT,
        stop_reason TEXT,
        input_tokens BIGINT NOT NULL DEFAULT 0,
        output_tokens BIGINT NOT NULL DEFAULT 0,
        cache_read_tokens BIGINT NOT NULL DEFAULT 0,
        cache_creation_tokens BIGINT NOT NULL DEFAULT 0,
        message_count INTEGER,
        conversation_hash TEXT,
        organization_id TEXT,
        detail TEXT
    );
    CREATE INDEX requests_ts ON requests (ts);
    CREATE INDEX requests_model_ts ON requests (model, ts);
    CREATE TABLE usage_minutes (
        minute BIGINT NOT NULL,
        model TEXT NOT NULL,
        org TEXT NOT NULL,
        requests BIGINT NOT NULL,
        input_tokens BIGINT NOT NULL,
        output_tokens BIGINT NOT NULL,
        cache_read_tokens BIGINT NOT NULL,
        cache_creation_tokens BIGINT NOT NULL,
        latency_ms_sum BIGINT NOT NULL,
        errors BIGINT NOT NULL,
        PRIMARY KEY (minute, model, org)
    );
    CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL, updated DOUBLE PRECISION NOT NULL);
    """,
    """
    CREATE TABLE usage_hours (
        hour BIGINT NOT NULL,
        model TEXT NOT NULL,
        org TEXT NOT NULL,
        requests BIGINT NOT NULL,
        input_tokens BIGINT NOT NULL,
        output_tokens BIGINT NOT NULL,
        cache_read_tokens BIGINT NOT NULL,
        cache_creation_tokens BIGINT NOT NULL,
        latency_ms_sum BIGINT NOT NULL,
        errors BIGINT NOT NULL,
        PRIMARY KEY (hour, model, org)
    );
    INSERT INTO usage_hours
        SELECT minute / 60, model, org, sum(requests), sum(input_tokens), sum(output_tokens),
               sum(cache_read_tokens), sum(cache_creation_tokens), sum(latency_ms_sum), sum(errors)
        FROM usage_minutes GROUP BY minute / 60, model, org;
    CREATE TABLE model_names (name TEXT NOT NULL, routed INTEGER NOT NULL, PRIMARY KEY (name, routed));
    INSERT INTO model_names SELECT DISTINCT model, 0 FROM requests WHERE model IS NOT NULL;
    INSERT INTO model_names SELECT DISTINCT routed_model, 1 FROM requests WHERE routed_model IS NOT NULL;
    """,
)

# Columns are what is filtered, sorted or summed; the rest of a record (endpoint, user agent,
# rate-limit headers, bodies, …) goes into one JSON ``detail`` column, since every bound column
# costs on each insert (36 columns measured 7.7 µs a row, 20 columns 3 µs).
COLUMNS = (
    "id",
    "ts",
    "model",
    "routed_model",
    "upstream",
    "status",
    "latency_ms",
    "streaming",
    "error_type",
    "stop_reason",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_creation_tokens",
    "message_count",
    "conversation_hash",
    "organization_id",
)
DETAIL_KEYS = (
    "method",
    "endpoint",
    "user_agent",
    "content_type",
    "session",
    "stream_error",
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
_ROW_MARKS = f"({', '.join('?' * (len(COLUMNS) + 1))})"
_INSERT_PREFIX = f"INSERT INTO requests ({', '.join(COLUMNS)}, detail) VALUES "
_INSERT_SUFFIX = " ON CONFLICT DO NOTHING"  # a record sent twice is stored once
_ROLLUP_TEMPLATE = """
    INSERT INTO {table} VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT ({key}, model, org) DO UPDATE SET
        requests = {table}.requests + excluded.requests,
        input_tokens = {table}.input_tokens + excluded.input_tokens,
        output_tokens = {table}.output_tokens + excluded.output_tokens,
        cache_read_tokens = {table}.cache_read_tokens + excluded.cache_read_tokens,
        cache_creation_tokens = {table}.cache_creation_tokens + excluded.cache_creation_tokens,
        latency_ms_sum = {table}.latency_ms_sum + excluded.latency_ms_sum,
        errors = {table}.errors + excluded.errors
"""
_ROLLUP = _ROLLUP_TEMPLATE.format(table="usage_minutes", key="minute")
_ROLLUP_HOURS = _ROLLUP_TEMPLATE.format(table="usage_hours", key="hour")
_NAMES = "INSERT INTO model_names VALUES (?, ?) ON CONFLICT DO NOTHING"
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


def connect(path: Path | str, readonly: bool = False) -> Any:
    """A connection to the store: a SQLite file, or PostgreSQL for a postgresql:// URL (a
    ``pg.Connection``, which runs the same statements)."""
    if pg.is_url(path):
        return pg.Connection(str(path))
    uri = f"file:{path}?mode=ro" if readonly else f"file:{path}"
    conn = sqlite3.connect(uri, uri=True, timeout=10.0, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout = 10000")
    if not readonly:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
    return conn


def migrate(conn: Any) -> int:
    """Apply the migrations this database has not seen; returns the schema version."""
    postgres = isinstance(conn, pg.Connection)
    conn.execute("BEGIN IMMEDIATE")  # one process migrates, the others wait and see it done
    try:
        if postgres:  # PostgreSQL's equivalent of SQLite's immediate write lock
            conn.execute("SELECT pg_advisory_xact_lock(7311531)")
        conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
        version = row[0] or 0
        for number, script in enumerate(PG_MIGRATIONS if postgres else MIGRATIONS, start=1):
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


# NOT NULL columns a record may leave out (OR IGNORE would otherwise skip such a row silently)
_DEFAULTS = {"streaming": 0, "input_tokens": 0, "output_tokens": 0, "cache_read_tokens": 0, "cache_creation_tokens": 0}


def row_from(record: dict[str, Any]) -> list[Any]:
    """A record given as a dict (tests, tools) → a row: ``COLUMNS`` values, then the detail
    object (or None). The app builds rows directly (``ProxyApp._store_row``)."""
    detail = {key: value for key in DETAIL_KEYS if (value := record.get(key)) is not None}
    return [*(record.get(name, _DEFAULTS.get(name)) for name in COLUMNS), detail or None]


INSERT_ROWS = 512  # rows per INSERT statement at most (18 parameters each: 9 216, under SQLite's 32 766)


@functools.lru_cache(maxsize=16)
def _insert_statement(rows: int) -> str:
    return _INSERT_PREFIX + ", ".join([_ROW_MARKS] * rows) + _INSERT_SUFFIX


_COL = {name: i for i, name in enumerate(COLUMNS)}


def write_batch(conn: Any, batch: list[dict[str, Any]]) -> None:
    """Insert request records (dicts) and add them to the roll-ups, in one transaction."""
    write_rows(conn, [row_from(r) for r in batch])


def write_rows(conn: Any, rows: list[Any]) -> None:
    """Insert rows (``row_from`` order) and add them to the roll-ups, in one transaction.

    Rows go in multi-row INSERTs and the roll-ups are summed here first, so a batch costs a
    handful of statements. That matters beyond SQLite's own time: the sqlite3 module releases
    the GIL around every statement step, and one step per row made threads hand the GIL back
    and forth for every request.
    """
    ts, model, org = _COL["ts"], _COL["model"], _COL["organization_id"]
    status, error = _COL["status"], _COL["error_type"]
    tokens = [_COL[c] for c in ("input_tokens", "output_tokens", "cache_read_tokens", "cache_creation_tokens")]
    latency = _COL["latency_ms"]
    sums: dict[tuple[int, str, str], list[int]] = {}
    names: set[tuple[str, int]] = set()
    for r in rows:
        key = (int(r[ts] // 60), r[model] or "", r[org] or "")
        total = sums.get(key)
        if total is None:
            total = sums[key] = [0, 0, 0, 0, 0, 0, 0]
        total[0] += 1
        for i, column in enumerate(tokens, start=1):
            total[i] += r[column] or 0
        total[5] += r[latency] or 0
        total[6] += 1 if (r[status] or 0) >= 400 or (r[error] and r[error] != "client_disconnected") else 0
        if r[model]:
            names.add((r[model], 0))
        if r[_COL["routed_model"]]:
            names.add((r[_COL["routed_model"]], 1))
    hours: dict[tuple[int, str, str], list[int]] = {}
    for (minute, model_name, org_id), total in sums.items():
        hour = hours.setdefault((minute // 60, model_name, org_id), [0] * 7)
        for i in range(7):
            hour[i] += total[i]
    last = len(COLUMNS)
    for r in rows:  # the detail object is stored as JSON text
        if r[last] is not None and not isinstance(r[last], str):
            r[last] = orjson.dumps(r[last]).decode()
    conn.execute("BEGIN")
    try:
        start = 0
        while start < len(rows):
            # Chunks of INSERT_ROWS, then powers of two: a handful of distinct statements. One
            # per row count would fill the driver's statement cache with up to 128 prepared
            # statements of thousands of parameters each (~16 MB held in the writer).
            left = len(rows) - start
            size = INSERT_ROWS if left >= INSERT_ROWS else 1 << (left.bit_length() - 1)
            chunk = rows[start : start + size]
            start += size
            values = [value for r in chunk for value in r]
            conn.execute(_insert_statement(size), values)
        conn.executemany(_ROLLUP, [(*key, *total) for key, total in sums.items()])
        conn.executemany(_ROLLUP_HOURS, [(*key, *total) for key, total in hours.items()])
        conn.executemany(_NAMES, list(names))
        conn.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(*pg.DB_ERRORS):
            conn.execute("ROLLBACK")
        raise


def retain(conn: Any, retention_days: float, max_bytes: int) -> None:
    """Delete what is older than the retention, then the oldest rows beyond the size bound."""
    try:
        if retention_days > 0:
            cutoff = time.time() - retention_days * 86400
            conn.execute("DELETE FROM requests WHERE ts < ?", (cutoff,))
            conn.execute("DELETE FROM usage_minutes WHERE minute < ?", (int(cutoff // 60),))
            conn.execute("DELETE FROM usage_hours WHERE hour < ?", (int(cutoff // 3600),))
        postgres = isinstance(conn, pg.Connection)
        if postgres:
            used = conn.execute("SELECT pg_total_relation_size('requests')").fetchone()[0]
        else:
            page_size = conn.execute("PRAGMA page_size").fetchone()[0]
            pages = conn.execute("PRAGMA page_count").fetchone()[0]
            free = conn.execute("PRAGMA freelist_count").fetchone()[0]
            used = (pages - free) * page_size
        if used > max_bytes:
            # drop the oldest rows (by count, in proportion to the excess plus 10 %)
            total = conn.execute("SELECT count(*) FROM requests").fetchone()[0]
            excess = min(total, int(total * ((used - max_bytes) / used + 0.1)) + 1)
            conn.execute("DELETE FROM requests WHERE id IN (SELECT id FROM requests ORDER BY ts LIMIT ?)", (excess,))
            log.info("request log: over %d bytes, removed the %d oldest requests", max_bytes, excess)
        if not postgres:  # (PostgreSQL's autovacuum reclaims the space)
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
    except pg.DB_ERRORS as exc:
        log.error("request log: retention failed: %s", exc)


class RequestStore(BatchWriter[list[Any]]):
    """The request log written in this process (no writer process: tests, ``python -m`` use
    without the ccproxy command): rows go through the shared batch writer (logs.BatchWriter)."""

    queue_size = QUEUE_SIZE

    @property
    def open_errors(self) -> tuple[type[BaseException], ...]:  # type: ignore[override]
        return (OSError, *pg.DB_ERRORS)

    def __init__(self, path: Path | str, retention_days: float = 30.0, max_bytes: int = 1 << 30) -> None:
        self.path = path
        self.retention_days = retention_days
        self.max_bytes = max_bytes
        self.written = 0
        if not pg.is_url(path):
            private_dir(path.parent)
            private_file(path)
        conn = connect(path)
        try:
            self.version = migrate(conn)
        finally:
            conn.close()
        self._conn: Any = None
        self._next_retention = time.monotonic() + 5.0
        super().__init__("request-store")

    def add(self, record: dict[str, Any]) -> None:
        self.put(row_from(record))

    def add_row(self, row: list[Any]) -> None:
        self.put(row)

    def open(self) -> None:
        self._conn = connect(self.path)

    def write_batch(self, batch: list[list[Any]]) -> None:
        try:
            write_rows(self._conn, batch)
            self.written += len(batch)
        except pg.DB_ERRORS as exc:
            self.dropped += len(batch)
            log.error("request log: cannot write %d record(s): %s", len(batch), exc)

    def tick(self) -> None:
        if time.monotonic() >= self._next_retention:
            self._next_retention = time.monotonic() + RETENTION_INTERVAL
            self._retain(self._conn)

    def shut(self) -> None:
        if self._conn is not None:
            self._conn.close()

    def _retain(self, conn: Any) -> None:
        retain(conn, self.retention_days, self.max_bytes)


# --- settings (small; read and written by the dashboard handlers of any worker) ---------------------


def get_setting(path: Path | str, key: str) -> tuple[str, float] | None:
    conn = connect(path)
    try:
        row = conn.execute("SELECT value, updated FROM settings WHERE key = ?", (key,)).fetchone()
    finally:
        conn.close()
    return (row[0], row[1]) if row else None


def put_setting(path: Path | str, key: str, value: str) -> float:
    now = time.time()
    conn = connect(path)
    try:
        conn.execute(
            "INSERT INTO settings VALUES (?, ?, ?) ON CONFLICT (key) DO UPDATE SET value = ?, updated = ?",
            (key, value, now, value, now),
        )
    finally:
        conn.close()
    return now


# --- one writer process per host ------------------------------------------------------------------
#
# ``ccproxy`` starts ``serve_store`` in its own process before Granian's workers; each worker
# sends its records there over a Unix socket (``StoreClient``), in length-prefixed orjson
# frames, once per FLUSH_INTERVAL. Keeping SQLite out of the workers matters for speed: a writer
# thread inside a worker competes with the event loop (and Granian's threads) for the GIL, which
# cost ~20 µs of CPU per request there; the worker's share is now one orjson.dumps per batch.
# It also gives the database a single writer however many workers run. Without the socket (the
# app built directly, as tests do) the worker keeps an in-process ``RequestStore``.

FRAME = 4  # bytes of big-endian length before each frame
MAX_FRAME = 64 << 20
CLIENT_BUFFER = 16 << 20  # a worker buffers at most this much for a slow writer, then drops


def serve_store(db_path: str, socket_path: str, retention_days: float, max_bytes: int) -> None:
    """The writer process: one thread, one SQLite connection. It reads the workers' frames
    (lists of rows) from ``socket_path`` and writes what arrived every FLUSH_INTERVAL."""
    import selectors
    import signal
    import socket

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Background work: when CPU is short the request path wins, and the log catches up in the
    # gaps (the workers' buffers are bounded; what does not fit is dropped and counted).
    with contextlib.suppress(OSError):
        os.nice(10)
    path: Path | str = db_path if pg.is_url(db_path) else Path(db_path)
    if isinstance(path, Path):
        private_dir(path.parent)
        private_file(path)
    conn = connect(path)
    migrate(conn)
    if isinstance(path, Path):
        # The only writer: rarer checkpoints (each copies the WAL's pages back and syncs). The
        # page cache stays small: a 64 MB one wrote no faster (~58k rows/s either way at 1M rows,
        # the OS caches the file) but grew the writer by its whole size on a busy day.
        conn.execute("PRAGMA cache_size = -4096")
        conn.execute("PRAGMA wal_autocheckpoint = 10000")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    parent = os.getppid()  # the ccproxy process: when it is gone, so are the workers (parent.py)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(socket_path + ".tmp")
    Path(socket_path + ".tmp").replace(socket_path)  # appears only once it accepts
    server.listen(64)
    server.setblocking(False)
    selector = selectors.DefaultSelector()
    selector.register(server, selectors.EVENT_READ)
    buffers: dict[socket.socket, bytearray] = {}
    rows: list[Any] = []
    next_flush = time.monotonic() + FLUSH_INTERVAL
    next_retention = time.monotonic() + 5.0
    stopping_since: float | None = None

    def flush() -> None:
        nonlocal rows, conn
        if rows:
            try:
                if not getattr(conn, "alive", True):  # PostgreSQL went away: reconnect (a SQLite file stays)
                    conn.close()
                    conn = connect(path)
                write_rows(conn, rows)
            except pg.DB_ERRORS as exc:
                log.error("request log: cannot write %d record(s): %s", len(rows), exc)
            rows = []

    while True:
        now = time.monotonic()
        if not stop.is_set() and not parent_alive(parent):
            log.error("the ccproxy process that started the request log writer is gone: stopping")
            stop.set()
        if stop.is_set() and stopping_since is None:
            stopping_since = now  # read what the workers still send for a moment, then finish
        if stopping_since is not None and (now - stopping_since > 2.0 or not buffers):
            break
        for key, _ in selector.select(max(0.0, next_flush - now)):
            sock = key.fileobj
            if sock is server:
                with contextlib.suppress(OSError):
                    client, _ = server.accept()
                    client.setblocking(False)
                    selector.register(client, selectors.EVENT_READ)
                    buffers[client] = bytearray()
                continue
            try:
                data = sock.recv(1 << 20)  # type: ignore[union-attr]
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            if not data:
                selector.unregister(sock)
                sock.close()  # type: ignore[union-attr]
                buffers.pop(sock, None)  # type: ignore[arg-type]
                continue
            buffer = buffers[sock]  # type: ignore[index]
            buffer += data
            while len(buffer) >= FRAME:
                size = int.from_bytes(buffer[:FRAME], "big")
                if len(buffer) < FRAME + size:
                    break
                frame = bytes(buffer[FRAME : FRAME + size])
                del buffer[: FRAME + size]
                with contextlib.suppress(orjson.JSONDecodeError):
                    rows.extend(orjson.loads(frame))
        now = time.monotonic()
        if now >= next_flush:
            flush()
            next_flush = now + FLUSH_INTERVAL
        if now >= next_retention:
            retain(conn, retention_days, max_bytes)
            next_retention = now + RETENTION_INTERVAL
    flush()
    selector.close()
    server.close()
    conn.close()


class StoreClient:
    """A worker's side of the writer process: ``add`` is a deque append; ``run`` (a task on
    the worker's loop) ships the records every FLUSH_INTERVAL. Records that cannot be shipped
    (no writer, or the writer lags by more than CLIENT_BUFFER) are dropped and counted."""

    def __init__(self, socket_path: str) -> None:
        self.socket_path = socket_path
        self.dropped = 0
        self.written = 0  # shipped to the writer
        self._pending: collections.deque[list[Any]] = collections.deque()
        self._writer: Any = None

    def add(self, record: dict[str, Any]) -> None:
        self.add_row(row_from(record))

    def add_row(self, row: list[Any]) -> None:
        if len(self._pending) < QUEUE_SIZE:
            self._pending.append(row)
        else:
            self.dropped += 1

    async def run(self) -> None:
        import asyncio

        while True:
            await asyncio.sleep(FLUSH_INTERVAL)
            await self._ship()

    async def _ship(self) -> None:
        import asyncio

        pending = self._pending
        if not pending:
            return
        batch = [pending.popleft() for _ in range(min(len(pending), 20_000))]
        if self._writer is None or self._writer.is_closing():
            try:
                _, self._writer = await asyncio.open_unix_connection(self.socket_path)
            except OSError as exc:
                self.dropped += len(batch)
                log.warning("request log writer unreachable (%s); %d record(s) dropped", exc, len(batch))
                return
        if self._writer.transport.get_write_buffer_size() > CLIENT_BUFFER:
            self.dropped += len(batch)
            return
        data = orjson.dumps(batch)  # one C call for the whole batch, details included
        self._writer.write(len(data).to_bytes(FRAME, "big") + data)
        self.written += len(batch)

    async def close(self) -> None:
        await self._ship()
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(Exception):
                await self._writer.wait_closed()


def _writer_main() -> None:
    """``python -m ccproxy.store``: the writer process the ccproxy command starts; its settings
    arrive as one JSON object on stdin."""
    import sys

    settings = orjson.loads(sys.stdin.buffer.read())
    serve_store(settings["db_path"], settings["socket_path"], settings["retention_days"], settings["max_bytes"])


if __name__ == "__main__":
    _writer_main()
