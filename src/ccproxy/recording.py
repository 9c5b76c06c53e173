"""The request log: what one finished request did, written to the request store (SQLite or
PostgreSQL, ``store.py``) and the JSON-lines logs (``logs.py``), secrets redacted.

``Recorder.record(exchange)`` is the one place a finished request is written; the pipeline calls
it once per request, whatever the outcome. Bodies are kept only with ``CCPROXY_LOG_BODIES``,
capped at ``CCPROXY_LOG_BODY_MAX_BYTES`` and redacted. Nothing here blocks a request: every
writer is a bounded queue drained by a background thread (or the writer process).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
import zlib
from collections.abc import AsyncIterator
from typing import Any

from . import pg
from .config import Settings
from .logs import JsonLinesWriter
from .pg import describe
from .redact import Redactor
from .schemas.anthropic import MessagesRequest
from .serving import Request
from .store import RATELIMIT_HEADERS, RequestStore, StoreClient
from .upstream.base import Exchange

log = logging.getLogger("ccproxy.recording")


class Recorder:
    def __init__(self, settings: Settings, redact: Redactor) -> None:
        self.settings = settings
        self.redact = redact
        self.store: RequestStore | StoreClient | None = None
        self.request_log: JsonLinesWriter | None = None
        self.error_log: JsonLinesWriter | None = None
        self._store_task: asyncio.Task[None] | None = None

    @property
    def keeps_bodies(self) -> bool:
        return self.store is not None and self.settings.log_bodies

    async def start(self) -> None:
        s = self.settings
        if s.log_file is not None:
            self.request_log = JsonLinesWriter(s.log_file, s.log_file_max_bytes)
        if s.error_log_file is not None:
            self.error_log = JsonLinesWriter(s.error_log_file, s.log_file_max_bytes)
        if s.db_path is None:
            return
        if s.store_socket:  # the writer process ccproxy started (store.py)
            self.store = StoreClient(s.store_socket)
            self._store_task = asyncio.get_running_loop().create_task(self.store.run())
            return
        try:
            self.store = await asyncio.to_thread(RequestStore, s.db_path, s.log_retention_days, s.log_max_db_bytes)
        except (OSError, RuntimeError, *pg.DB_ERRORS) as exc:  # serve anyway; say why
            log.error("request log disabled: cannot open %s: %s", describe(s.db_path), exc)

    async def close(self) -> None:
        if self._store_task is not None:
            self._store_task.cancel()
        if isinstance(self.store, StoreClient):
            await self.store.close()
        elif self.store is not None:
            await asyncio.to_thread(self.store.close)
        for writer in (self.request_log, self.error_log):
            if writer is not None:
                await asyncio.to_thread(writer.close)

    # --- filled in while the request runs -----------------------------------------------------

    def describe(self, req: Request, parsed: MessagesRequest, body: bytes, exchange: Exchange) -> None:
        """What the store keeps about the request itself (only when there is a store)."""
        if exchange.session is None:
            session = req.header("x-claude-code-session-id")
            if session:  # logs correlate a session by a hash prefix, never by the id itself
                exchange.session = hashlib.sha256(session.encode()).hexdigest()[:16]
        if self.store is None:
            return
        exchange.endpoint = req.path
        exchange.user_agent = req.header("user-agent")
        exchange.message_count = len(parsed.messages)
        if exchange.session is not None:
            exchange.conversation = exchange.session
        else:  # no session id: the first message identifies a conversation across its turns
            exchange.conversation = conversation_hash(parsed.messages[0].content)
        if self.settings.log_bodies:
            exchange.request_body = self.loggable(body)

    def loggable(self, body: bytes) -> str:
        cap = self.settings.log_body_max_bytes
        text = body[:cap].decode("utf-8", "replace")
        if len(body) > cap:
            text += f"… [{len(body) - cap} more bytes not stored]"
        return self.redact(text)

    async def captured(self, events: AsyncIterator[bytes], exchange: Exchange) -> AsyncIterator[bytes]:
        """The stream as sent, kept (up to the body cap) for the request log."""
        kept = bytearray()
        cap = self.settings.log_body_max_bytes
        try:
            async for chunk in events:
                if len(kept) <= cap:
                    kept += chunk
                yield chunk
        finally:
            exchange.response_body = self.loggable(bytes(kept))
            closer = getattr(events, "aclose", None)
            if closer is not None:
                await closer()

    # --- written once it is finished ----------------------------------------------------------

    def record(self, exchange: Exchange, seconds: float) -> None:
        """Write one finished request (``seconds`` it took) to every configured log."""
        if self.store is not None:
            self.store.add_row(store_row(exchange, seconds * 1000))
        if self.request_log is not None:
            self.request_log.write(
                {
                    "ts": time.time(),
                    "request_id": exchange.request_id,
                    "model": exchange.route.requested_model,
                    "upstream_model": exchange.route.upstream_model,
                    "stream": exchange.stream,
                    "status": exchange.status,
                    "upstream_status": exchange.upstream_status,
                    "latency_ms": round(seconds * 1000, 2),
                    "request_bytes": exchange.body_size,
                    "stop_reason": exchange.stop_reason,
                    "usage": exchange.usage or None,
                    "error_type": exchange.error_type,
                    "upstream": exchange.route.upstream,
                    "session": exchange.session,
                    "ratelimit": exchange.ratelimit or None,
                    "cache": exchange.cache,
                }
            )
        if exchange.error_type and exchange.error_type != "client_disconnected":
            self.error(exchange.request_id, "/v1/messages", exchange.error_type, exchange.error_message or "")

    def error(self, request_id: str, path: str, error_type: str, message: str) -> None:
        """One line in the error log (messages redacted: upstream errors may echo a key)."""
        if self.error_log is not None:
            self.error_log.write(
                {
                    "ts": time.time(),
                    "request_id": request_id,
                    "path": path,
                    "error_type": error_type,
                    "message": self.redact(message),
                }
            )

    def counts(self) -> dict[str, int] | None:
        """This worker's store records: handed on, and dropped (queue full, no writer)."""
        if self.store is None:
            return None
        return {"written": self.store.written, "dropped": self.store.dropped}


def store_row(exchange: Exchange, latency_ms: float) -> list[Any]:
    """The request's row for the store, in ``store.COLUMNS`` order plus the detail object
    (only what is present). Built as a list: this runs for every request."""
    usage = exchange.usage
    route = exchange.route
    detail: dict[str, Any] = {}
    if exchange.endpoint != "/v1/messages":
        detail["endpoint"] = exchange.endpoint
    if exchange.user_agent:
        detail["user_agent"] = exchange.user_agent
    if exchange.session:
        detail["session"] = exchange.session
    if exchange.stream and exchange.status == 200 and exchange.error_type:
        detail["stream_error"] = exchange.error_message or exchange.error_type
    if exchange.request_body is not None:
        detail["request_body"] = exchange.request_body
    if exchange.response_body is not None:
        detail["response_body"] = exchange.response_body
    organization = None
    for name, value in exchange.ratelimit.items():
        column = RATELIMIT_HEADERS.get(name)
        if column is not None:
            with contextlib.suppress(ValueError):
                detail[column[0]] = column[1](value)
    if detail:
        organization = detail.pop("organization_id", None)
    return [
        exchange.request_id,
        time.time(),
        route.requested_model,
        route.upstream_model,
        route.upstream,
        exchange.status,
        int(latency_ms),
        1 if exchange.stream else 0,
        exchange.error_type,
        exchange.stop_reason,
        usage.get("input_tokens", 0),
        usage.get("output_tokens", 0),
        usage.get("cache_read_input_tokens", 0),
        usage.get("cache_creation_input_tokens", 0),
        exchange.message_count,
        exchange.conversation,
        organization,
        detail or None,
    ]


def conversation_hash(content: Any) -> str:
    """A grouping key from a conversation's first message: its first 4 KB of text (bounded
    cost whatever the message size; crc32 is enough for grouping and never sees a secret)."""
    if isinstance(content, str):
        text = content[:4096]
    else:
        text = next((b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text"), "")
        text = text[:4096] if isinstance(text, str) else ""
    data = text.encode("utf-8", "replace")
    return f"{zlib.crc32(data):08x}{len(data):08x}"
