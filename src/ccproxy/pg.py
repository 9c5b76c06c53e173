"""PostgreSQL for the request log (DATABASE_URL=postgresql://…), through psycopg 3.

``store.py`` and ``dashboard.py`` speak SQLite's SQL with ``?`` parameters. Rather than keep two
copies of every query, a PostgreSQL connection is wrapped so that the same statements run on
it: ``translate`` rewrites the few constructs that differ (parameters, LIKE's case rule, BEGIN
IMMEDIATE, SQLite's date and JSON functions) once per statement text, and rows come back addressable by
index and by name like ``sqlite3.Row``, with PostgreSQL's NUMERIC sums as plain ints;
parameters lose NUL characters and booleans become integers, as SQLite would store them. The
schema itself has its own migrations (``store.PG_MIGRATIONS``), since DDL differs the most.

Connections use autocommit, so ``BEGIN`` / ``COMMIT`` statements delimit transactions exactly
as on SQLite.
"""

from __future__ import annotations

import re
import sqlite3
from decimal import Decimal
from typing import Any

from .redact import without_password

# What a failing request-log database raises. psycopg's errors join once PostgreSQL is used:
# psycopg is imported then, not before (~20 MB per process that every SQLite user would carry).
# Read it as ``pg.DB_ERRORS`` when the exception is caught, never copied at import time.
DB_ERRORS: tuple[type[BaseException], ...] = (sqlite3.Error,)
_psycopg: Any = None


def driver() -> Any:
    """psycopg, imported on first use."""
    global _psycopg, DB_ERRORS
    if _psycopg is None:
        try:
            import psycopg
        except ImportError:  # the optional extra is missing
            raise RuntimeError("DATABASE_URL needs psycopg 3: pip install 'ccproxy[postgres]'") from None
        _psycopg = psycopg
        DB_ERRORS = (sqlite3.Error, psycopg.Error)
    return _psycopg


_DATE = re.compile(r"date\(([^()]*(?:\([^()]*\))?[^()]*), 'unixepoch'\)")
_JSON_FIELD = re.compile(r"json_extract\((\w+), '\$\.(\w+)'\)")
_JSON_REMOVE = re.compile(r"json_remove\((\w+)((?:, '\$\.\w+')+)\)")


def _json_remove(match: re.Match[str]) -> str:
    keys = re.findall(r"'\$\.(\w+)'", match.group(2))
    return f"({match.group(1)}::jsonb" + "".join(f" - '{key}'" for key in keys) + ")::text"


_translated: dict[str, str] = {}


def is_url(target: object) -> bool:
    return isinstance(target, str) and target.startswith(("postgres://", "postgresql://"))


def describe(target: object) -> str:
    """A store location fit for logs: a URL's password is left out."""
    return without_password(str(target)) if is_url(target) else str(target)


def translate(sql: str) -> str:
    """SQLite's dialect (as this project writes it) → PostgreSQL's. Cached per statement text."""
    out = _translated.get(sql)
    if out is None:
        out = sql.replace("%", "%%").replace("?", "%s")  # no literal '?' in our statements
        out = out.replace("BEGIN IMMEDIATE", "BEGIN")
        out = out.replace(" LIKE ", " ILIKE ")  # SQLite's LIKE ignores ASCII case
        out = _DATE.sub(r"to_char(to_timestamp(\1) AT TIME ZONE 'UTC', 'YYYY-MM-DD')", out)
        out = _JSON_FIELD.sub(r"(\1::jsonb ->> '\2')", out)
        out = _JSON_REMOVE.sub(_json_remove, out)
        if len(_translated) < 4096:
            _translated[sql] = out
    return out


class Row(tuple):  # type: ignore[type-arg]
    """A result row readable as ``row[0]`` and ``row["name"]`` (like ``sqlite3.Row``)."""

    _names: dict[str, int]

    def __getitem__(self, key: Any) -> Any:  # type: ignore[override]
        if isinstance(key, str):
            return tuple.__getitem__(self, self._names[key])
        return tuple.__getitem__(self, key)

    def keys(self) -> list[str]:
        return list(self._names)


def _value(value: Any) -> Any:
    """A parameter as SQLite would take it: PostgreSQL's text cannot hold NUL characters, and
    our integer flags may come as booleans."""
    if isinstance(value, str):
        return value.replace("\x00", "") if "\x00" in value else value
    return int(value) if isinstance(value, bool) else value


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):  # sum() over BIGINT is NUMERIC in PostgreSQL
        return int(value) if value == value.to_integral_value() else float(value)
    return value


def _row_factory(cursor: Any) -> Any:
    description = cursor.description or []
    kind = type("Row", (Row,), {"_names": {d.name: i for i, d in enumerate(description)}})
    return lambda values: kind(_plain(v) for v in values)


class Connection:
    """The subset of ``sqlite3.Connection`` the store and the dashboard use."""

    def __init__(self, url: str) -> None:
        self._conn = driver().connect(url, autocommit=True, row_factory=_row_factory, connect_timeout=10)

    def execute(self, sql: str, params: Any = ()) -> Any:
        return self._conn.execute(translate(sql), tuple(map(_value, params)))

    def executemany(self, sql: str, seq: Any) -> Any:
        cursor = self._conn.cursor()
        cursor.executemany(translate(sql), [tuple(map(_value, params)) for params in seq])
        return cursor

    @property
    def alive(self) -> bool:
        return not (self._conn.closed or self._conn.broken)

    def close(self) -> None:
        self._conn.close()
