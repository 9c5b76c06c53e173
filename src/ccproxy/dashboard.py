"""The dashboard's JSON APIs (shapes of seed 001), read from the request store.

Every query here is synchronous and runs in a worker thread (``asyncio.to_thread``) on one
read connection per thread. Lists page through the ``requests`` table by its indexes (``ts``,
``(model, ts)``, the id); statistics read the roll-ups (whole
hours from ``usage_hours``, ragged edges and small buckets from ``usage_minutes``), so their
cost follows the time range, not the number of logged requests. Bad parameters raise a 400
``invalid_request_error`` naming them.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from . import pg
from .errors import ProxyError, invalid_request
from .store import connect

MAX_PAGE = 1000  # largest page of /api/requests
MAX_SUMMARY = 100_000  # "limit=0 (unlimited)" of /api/requests/summary is capped here

# Lists never read the stored bodies (up to 2 x 64 KB a row with CCPROXY_LOG_BODIES): the
# database drops them from the detail column, or picks the two fields a summary shows, so a
# 100 k-row summary costs the rows it returns, not their bodies (pg.translate has the
# PostgreSQL spelling of both functions).
_ROW_COLUMNS = (
    "id, ts, model, routed_model, upstream, status, latency_ms, streaming, error_type, stop_reason, input_tokens,"
    " output_tokens, cache_read_tokens, cache_creation_tokens, message_count, conversation_hash, organization_id"
)
_LIST_COLUMNS = _ROW_COLUMNS + ", json_remove(detail, '$.request_body', '$.response_body') AS detail"
_SUMMARY_COLUMNS = (
    "id, ts, model, routed_model, status, latency_ms, input_tokens, output_tokens, cache_read_tokens,"
    " cache_creation_tokens, conversation_hash, message_count, stop_reason, upstream, streaming, error_type,"
    " json_extract(detail, '$.method') AS method, json_extract(detail, '$.endpoint') AS endpoint"
)


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(value: str | None, name: str, default: float | None = None, end_of_day: bool = False) -> float | None:
    """ISO 8601 (with Z or an offset; naive means UTC) or YYYY-MM-DD → epoch seconds."""
    if value is None or value == "":
        return default
    text = value.strip().replace(" ", "+") if "T" in value else value.strip()
    try:
        if len(text) == 10:
            day = datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC)
            return day.timestamp() + (86400 if end_of_day else 0)
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise invalid_request(f"{name}: not an ISO 8601 date-time or YYYY-MM-DD date: {value!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def parse_int(value: str | None, name: str, default: int, low: int, high: int) -> int:
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise invalid_request(f"{name}: must be an integer, got {value!r}") from None
    if not low <= number <= high:
        raise invalid_request(f"{name}: must be between {low} and {high}, got {number}")
    return number


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _like(text: str) -> str:
    return "%" + _escape(text) + "%"


class Dashboard:
    def __init__(self, db_path: Path | str | None) -> None:
        self.db_path = db_path
        self._local = threading.local()

    def _conn(self) -> sqlite3.Connection:
        if self.db_path is None:
            raise ProxyError(503, "the request log is off (CCPROXY_DB_PATH=off)", "api_error")
        conn = getattr(self._local, "conn", None)
        if conn is None or not getattr(conn, "alive", True):  # (a PostgreSQL session can break)
            try:
                conn = connect(self.db_path)
                conn.execute("SELECT 1 FROM requests LIMIT 0")
            except pg.DB_ERRORS as exc:
                raise ProxyError(503, f"the request log is unavailable: {exc}", "api_error") from None
            if isinstance(conn, sqlite3.Connection):  # (pg.Connection's rows read by name already)
                conn.row_factory = sqlite3.Row
            self._local.conn = conn
        return conn

    # --- requests ---------------------------------------------------------------------------

    def requests(self, page: int, limit: int, model: str) -> dict[str, Any]:
        where, args = self._model_filter(model)
        conn = self._conn()
        total = conn.execute(f"SELECT count(*) FROM requests {where}", args).fetchone()[0]
        offset = (page - 1) * limit
        if not where or not where.startswith("WHERE model IN"):
            rows = conn.execute(
                f"SELECT {_LIST_COLUMNS} FROM requests {where} ORDER BY ts DESC LIMIT ? OFFSET ?",
                (*args, limit, offset),
            ).fetchall()
        else:
            rows = self._filtered_page(conn, args, offset, limit)
        return {"requests": [request_log(r, full=False) for r in rows], "total": total, "page": page, "limit": limit}

    @staticmethod
    def _filtered_page(conn: sqlite3.Connection, names: list[str], offset: int, limit: int) -> list[sqlite3.Row]:
        """One page of the requests whose model is in ``names``, newest first. Each name is read
        newest-first from the (model, ts) index, at most offset + limit entries; merging those
        few beats sorting every match (SQLite's plan for an IN with ORDER BY), which cost half a
        second at a million rows."""
        wanted = offset + limit
        candidates: dict[str, float] = {}
        for name in names:
            for request_id, ts in conn.execute(
                "SELECT id, ts FROM requests WHERE model = ? ORDER BY ts DESC LIMIT ?", (name, wanted)
            ):
                candidates[request_id] = ts
        chosen = sorted(candidates, key=lambda r: candidates[r], reverse=True)[offset:wanted]
        if not chosen:
            return []
        marks = ", ".join("?" * len(chosen))
        return conn.execute(
            f"SELECT {_LIST_COLUMNS} FROM requests WHERE id IN ({marks}) ORDER BY ts DESC", chosen
        ).fetchall()

    def delete_requests(self) -> dict[str, Any]:
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        deleted = conn.execute("DELETE FROM requests").rowcount
        conn.execute("DELETE FROM usage_minutes")
        conn.execute("DELETE FROM usage_hours")
        conn.execute("DELETE FROM model_names")
        conn.execute("COMMIT")
        return {"message": f"deleted {deleted} logged requests", "deleted": deleted}

    def summary(self, model: str, start: float | None, end: float | None, offset: int, limit: int) -> dict[str, Any]:
        where, args = self._model_filter(model)
        clauses = [where[len("WHERE ") :]] if where else []
        if start is not None:
            clauses.append("ts >= ?")
            args.append(start)
        if end is not None:
            clauses.append("ts < ?")
            args.append(end)
        sql_where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
        conn = self._conn()
        total = conn.execute(f"SELECT count(*) FROM requests {sql_where}", args).fetchone()[0]
        rows = conn.execute(
            f"SELECT {_SUMMARY_COLUMNS} FROM requests {sql_where} ORDER BY ts DESC LIMIT ? OFFSET ?",
            (*args, limit or MAX_SUMMARY, offset),
        ).fetchall()
        return {"requests": [request_summary(r) for r in rows], "total": total, "offset": offset, "limit": limit}

    def latest_date(self) -> dict[str, Any]:
        row = self._conn().execute("SELECT max(ts) FROM requests").fetchone()
        return {"latestDate": iso(row[0])}

    def request(self, request_id: str) -> dict[str, Any]:
        conn = self._conn()
        row = conn.execute("SELECT * FROM requests WHERE id = ?", (request_id,)).fetchone()
        if row is None and len(request_id) >= 4:
            # a short id: the start of an id (the dashboard shows the 14 characters after "req_"),
            # found through the primary key's index
            prefix = request_id if request_id.startswith("req_") else "req_" + request_id
            rows = conn.execute(
                "SELECT * FROM requests WHERE id >= ? AND id < ? LIMIT 2", (prefix, prefix + "\uffff")
            ).fetchall()
            if len(rows) > 1:
                raise invalid_request(f"id: {request_id!r} matches several requests; give more of it")
            row = rows[0] if rows else None
        if row is None:
            raise ProxyError(404, f"request {request_id!r} not found", "not_found_error")
        return {"request": request_log(row, full=True), "fullId": row["id"]}

    def _model_filter(self, model: str) -> tuple[str, list[Any]]:
        """A substring filter on the requested model (through its (model, ts) index), resolved
        against the few names ever seen; when it names only upstream models, the routed model
        is searched instead (no index: rare, and slower on a big log)."""
        if not model or model == "all":
            return "", []
        found = (
            self._conn()
            .execute("SELECT name, routed FROM model_names WHERE name LIKE ? ESCAPE '\\'", (_like(model),))
            .fetchall()
        )
        requested = [name for name, routed in found if not routed]
        names, column = (requested, "model") if requested else ([n for n, _ in found], "routed_model")
        if not names:
            return "WHERE 1 = 0", []
        return f"WHERE {column} IN ({', '.join('?' * len(names))})", names

    # --- statistics (from the roll-ups) ----------------------------------------------------------

    def _usage(
        self, start: float | None, end: float | None, model: str | None, org: str | None, minutes: bool = False
    ) -> tuple[str, list[Any]]:
        """A subquery of usage rows (minute, model, org, requests, tokens…, latency, errors) that
        covers [start, end) exactly: whole hours from ``usage_hours``, the ragged edges from
        ``usage_minutes``."""
        filters, fargs = [], []
        if model and model != "all":
            filters.append("model LIKE ? ESCAPE '\\'")
            fargs.append(_like(model))
        if org:
            filters.append("org = ?")
            fargs.append(org)
        cols = "model, org, requests, input_tokens, output_tokens, cache_read_tokens, cache_creation_tokens,"
        cols += " latency_ms_sum, errors"
        lo = int(start // 60) if start is not None else None
        hi = int(-(-end // 60)) if end is not None else None
        hour_lo = -(-lo // 60) if lo is not None else None
        hour_hi = hi // 60 if hi is not None else None
        parts: list[str] = []
        args: list[Any] = []

        def part(table: str, key: str, scale: int, low: int | None, high: int | None) -> None:
            where = list(filters)
            pargs: list[Any] = list(fargs)
            if low is not None:
                where.insert(0, f"{key} >= ?")
                pargs.insert(0, low)
            if high is not None:
                where.insert(1 if low is not None else 0, f"{key} < ?")
                pargs.insert(1 if low is not None else 0, high)
            clause = f" WHERE {' AND '.join(where)}" if where else ""
            parts.append(f"SELECT {key} * {scale} AS minute, {cols} FROM {table}{clause}")
            args.extend(pargs)

        if minutes or (hour_lo is not None and hour_hi is not None and hour_lo >= hour_hi):
            part("usage_minutes", "minute", 1, lo, hi)  # minute resolution asked, or inside one hour
        else:
            part("usage_hours", "hour", 60, hour_lo, hour_hi)
            if lo is not None and lo < hour_lo * 60:  # type: ignore[operator]
                part("usage_minutes", "minute", 1, lo, hour_lo * 60)  # type: ignore[operator]
            if hi is not None and hour_hi * 60 < hi:  # type: ignore[operator]
                part("usage_minutes", "minute", 1, hour_hi * 60, hi)  # type: ignore[operator]
        return "(" + " UNION ALL ".join(parts) + ") AS usage", args

    def stats(self, start: float | None, end: float | None, model: str | None, org: str | None) -> dict[str, Any]:
        source, args = self._usage(start, end, model, org)
        rows = (
            self._conn()
            .execute(
                "SELECT model, sum(requests), sum(input_tokens), sum(output_tokens),"
                f" sum(cache_read_tokens + cache_creation_tokens) FROM {source} GROUP BY model",
                args,
            )
            .fetchall()
        )
        by_model = {
            r[0]: {"request_count": r[1], "input_tokens": r[2], "output_tokens": r[3], "cache_tokens": r[4]}
            for r in rows
        }
        return {
            "total_requests": sum(m["request_count"] for m in by_model.values()),
            "total_input_tokens": sum(m["input_tokens"] for m in by_model.values()),
            "total_output_tokens": sum(m["output_tokens"] for m in by_model.values()),
            "total_cache_tokens": sum(m["cache_tokens"] for m in by_model.values()),
            "requests_by_model": by_model,
            "start_date": iso(start),
            "end_date": iso(end),
        }

    def daily(self, start: float | None, end: float | None, org: str | None) -> dict[str, Any]:
        source, args = self._usage(start, end, None, org)
        rows = (
            self._conn()
            .execute(
                "SELECT date(minute * 60, 'unixepoch') AS day, sum(input_tokens + output_tokens), sum(requests)"
                f" FROM {source} GROUP BY day ORDER BY day",
                args,
            )
            .fetchall()
        )
        return {"dailyStats": [{"date": r[0], "tokens": r[1], "requests": r[2]} for r in rows]}

    def hourly(self, start: float, end: float, bucket: int, org: str | None) -> dict[str, Any]:
        source, args = self._usage(start, end, None, org, minutes=True)
        step = bucket * 60
        base = int(start // 60) * 60
        rows = (
            self._conn()
            .execute(
                f"SELECT (minute * 60 - ?) / ? AS slot, sum(input_tokens + output_tokens), sum(requests),"
                f" sum(latency_ms_sum) FROM {source} GROUP BY slot ORDER BY slot",
                (base, step, *args),
            )
            .fetchall()
        )
        found = {r[0]: r for r in rows}
        slots = min(int((end - base) // step) + (1 if (end - base) % step else 0), 10_000)
        out = []
        for slot in range(slots):
            at = base + slot * step
            row = found.get(slot)
            out.append(
                {
                    "hour": time.gmtime(at).tm_hour if bucket >= 60 else slot,
                    "label": time.strftime("%H:%M", time.gmtime(at)),
                    "start": iso(at),
                    "tokens": row[1] if row else 0,
                    "requests": row[2] if row else 0,
                }
            )
        tokens = sum(r[1] for r in rows)
        requests = sum(r[2] for r in rows)
        latency = sum(r[3] for r in rows)
        return {
            "hourlyStats": out,
            "todayTokens": tokens,
            "todayRequests": requests,
            "avgResponseTime": int(latency / requests) if requests else 0,
        }

    def models(self, start: float, end: float, org: str | None) -> dict[str, Any]:
        source, args = self._usage(start, end, None, org)
        rows = (
            self._conn()
            .execute(
                f"SELECT model, sum(input_tokens + output_tokens) AS tokens, sum(requests) FROM {source}"
                " GROUP BY model ORDER BY tokens DESC, model",
                args,
            )
            .fetchall()
        )
        return {"modelStats": [{"model": r[0], "tokens": r[1], "requests": r[2]} for r in rows]}

    def organizations(self) -> dict[str, Any]:
        rows = self._conn().execute("SELECT DISTINCT org FROM usage_hours WHERE org != '' ORDER BY org").fetchall()
        return {"organizations": [r[0] for r in rows]}


def _detail(row: sqlite3.Row) -> dict[str, Any]:
    text = row["detail"]
    if not text:
        return {}
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError:
        return {}
    return data if isinstance(data, dict) else {}


def _ratelimit(row: sqlite3.Row, detail: dict[str, Any]) -> dict[str, Any] | None:
    fields = {
        "organizationId": row["organization_id"],
        "requestsLimit": detail.get("rl_requests_limit"),
        "requestsRemaining": detail.get("rl_requests_remaining"),
        "requestsReset": detail.get("rl_requests_reset"),
        "tokensLimit": detail.get("rl_tokens_limit"),
        "tokensRemaining": detail.get("rl_tokens_remaining"),
        "tokensReset": detail.get("rl_tokens_reset"),
        "unifiedStatus": detail.get("rl_unified_status"),
        "unifiedUtilization5h": detail.get("rl_unified_5h_utilization"),
        "unifiedReset5h": detail.get("rl_unified_5h_reset"),
        "unifiedUtilization7d": detail.get("rl_unified_7d_utilization"),
        "unifiedReset7d": detail.get("rl_unified_7d_reset"),
    }
    return fields if any(v is not None for v in fields.values()) else None


def _usage(row: sqlite3.Row) -> dict[str, int]:
    return {
        "input_tokens": row["input_tokens"],
        "output_tokens": row["output_tokens"],
        "cache_creation_input_tokens": row["cache_creation_tokens"],
        "cache_read_input_tokens": row["cache_read_tokens"],
    }


def request_log(row: sqlite3.Row, full: bool) -> dict[str, Any]:
    detail = _detail(row)
    completed = row["ts"]
    started = completed - (row["latency_ms"] or 0) / 1000
    out: dict[str, Any] = {
        "requestId": row["id"],
        "timestamp": iso(started),
        "method": detail.get("method", "POST"),
        "endpoint": detail.get("endpoint", "/v1/messages"),
        "model": row["model"],
        "originalModel": row["model"],
        "routedModel": row["routed_model"],
        "upstream": row["upstream"],
        "userAgent": detail.get("user_agent"),
        "contentType": detail.get("content_type"),
        "conversationHash": row["conversation_hash"],
        "sessionHash": detail.get("session"),
        "messageCount": row["message_count"],
        "organizationId": row["organization_id"],
        "usage": _usage(row),
        "stopReason": row["stop_reason"],
        "errorType": row["error_type"],
        "response": {
            "statusCode": row["status"],
            "responseTime": row["latency_ms"],
            "isStreaming": bool(row["streaming"]),
            "completedAt": iso(completed),
            "streamError": detail.get("stream_error"),
            "rateLimit": _ratelimit(row, detail),
        },
    }
    if full:
        out["body"] = detail.get("request_body")
        out["response"]["body"] = detail.get("response_body")
    return out


def request_summary(row: sqlite3.Row) -> dict[str, Any]:
    return {
        "requestId": row["id"],
        "timestamp": iso(row["ts"] - (row["latency_ms"] or 0) / 1000),
        "method": row["method"] or "POST",
        "endpoint": row["endpoint"] or "/v1/messages",
        "model": row["model"],
        "originalModel": row["model"],
        "routedModel": row["routed_model"],
        "upstream": row["upstream"],
        "statusCode": row["status"],
        "responseTime": row["latency_ms"],
        "isStreaming": bool(row["streaming"]),
        "errorType": row["error_type"],
        "usage": _usage(row),
        "conversationHash": row["conversation_hash"],
        "messageCount": row["message_count"],
        "stopReason": row["stop_reason"],
    }
