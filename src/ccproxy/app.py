"""The ASGI application: a routes table, request handlers, and the lifespan.

``create_app(settings)`` builds it; Granian loads ``create_app_from_env`` as a factory in
each worker process. Every response a client sees is either the success body or an
Anthropic error envelope with a ``request-id`` header; nothing escapes as a bare 500.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import msgspec
import orjson

from . import __version__, _native, tokens
from .config import Settings
from .errors import ProxyError, Redactor, error_body, invalid_request
from .logs import JsonLinesWriter, setup_logging
from .routing import Router
from .schemas.anthropic import decode_count_tokens_request, decode_messages_request
from .translate.chat_response import PING_EVENT, error_event
from .upstream.base import Exchange, Upstream
from .upstream.chat import ChatUpstream
from .upstream.client import HttpxClient

log = logging.getLogger("ccproxy.app")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
Handler = Callable[[Scope, Receive, Send, str], Awaitable[None]]

JSON_HEADERS = [(b"content-type", b"application/json")]
SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
TOKENS_INLINE_LIMIT = 64 * 1024  # larger count_tokens bodies are encoded off the event loop


class ClientDisconnected(Exception):
    pass


class ProxyApp:
    def __init__(self, settings: Settings, upstream: Upstream | None = None) -> None:
        self.settings = settings
        self.router = Router(
            settings.big_model,
            settings.small_model,
            settings.reasoning_model_pattern,
            settings.max_tokens_limit,
        )
        self.redact = Redactor([settings.api_key])
        self._upstream = upstream
        self.request_log: JsonLinesWriter | None = None
        self.error_log: JsonLinesWriter | None = None
        self.in_flight = 0
        self.routes: dict[tuple[str, str], Handler] = {
            ("POST", "/v1/messages"): self.messages,
            ("POST", "/v1/messages/count_tokens"): self.count_tokens,
            ("GET", "/v1/models"): self.models,
            ("GET", "/"): self.root,
            ("HEAD", "/"): self.root,
            ("GET", "/health"): self.health,
            ("HEAD", "/health"): self.health,
            ("GET", "/livez"): self.livez,
            ("POST", "/v1/chat/completions"): self.chat_completions,
        }
        self._paths = {path for _, path in self.routes}

    @property
    def upstream(self) -> Upstream:
        if self._upstream is None:  # created lazily so it binds to the serving event loop
            s = self.settings
            client = HttpxClient(s.connect_timeout, s.read_timeout)
            self._upstream = ChatUpstream(client, s.base_url, s.api_key, s.api_key_env, self.redact)
        return self._upstream

    # --- ASGI entry -------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self.http(scope, receive, send)
        elif kind == "lifespan":
            await self.lifespan(receive, send)

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        request_id = "req_" + os.urandom(12).hex()
        path = scope["path"]
        if len(path) > 1 and path.endswith("/"):
            path = path.rstrip("/")
        method = scope["method"]
        handler = self.routes.get((method, path))
        try:
            if handler is None:
                if path.startswith("/v1/models/") and method == "GET":
                    handler = self.model
                elif path in self._paths:
                    raise ProxyError(405, f"method {method} is not allowed for {path}")
                else:
                    raise ProxyError(404, f"not found: {method} {path}", "not_found_error")
            await handler(scope, receive, send, request_id)
        except ProxyError as exc:
            if not scope.get("ccproxy.started"):
                await send_error(send, exc, request_id, head=method == "HEAD")
        except ClientDisconnected:
            pass
        except Exception as exc:  # a bug: report it as an envelope, never as a traceback page
            log.exception("unhandled error in %s %s", method, path)
            self.log_error(request_id, path, "api_error", f"internal error: {type(exc).__name__}")
            if not scope.get("ccproxy.started"):
                await send_error(send, ProxyError(500, "internal proxy error", "api_error"), request_id)

    async def lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def startup(self) -> None:
        s = self.settings
        if s.log_file is not None:
            self.request_log = JsonLinesWriter(s.log_file, s.log_file_max_bytes)
        if s.error_log_file is not None:
            self.error_log = JsonLinesWriter(s.error_log_file, s.log_file_max_bytes)
        self.upstream  # noqa: B018 - create the pool inside the serving loop
        await asyncio.to_thread(tokens.load_encoding)  # fail at start, not at first count

    async def shutdown(self) -> None:
        if self._upstream is not None:
            await self._upstream.close()
        for writer in (self.request_log, self.error_log):
            if writer is not None:
                await asyncio.to_thread(writer.close)

    # --- handlers ---------------------------------------------------------------------------

    async def messages(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> None:
        started = time.perf_counter()
        body = await read_body(receive, self.settings.max_request_bytes)
        req = decode(decode_messages_request, body)
        if not req.messages:
            raise invalid_request("messages: at least one message is required")
        if req.max_tokens < 1:
            raise invalid_request("max_tokens: must be at least 1")
        exchange = Exchange(request_id, self.router.route(req.model), len(body), req.stream)
        self.in_flight += 1
        try:
            if req.stream:
                events = await self.upstream.open_stream(req, exchange)
                await self.stream(scope, send, receive, events, request_id)
            else:
                message = await self.upstream.create(req, exchange)
                await send_json(send, 200, orjson.dumps(message), request_id)
        except ProxyError as exc:
            exchange.status, exchange.error_type, exchange.error_message = (
                exc.status,
                exc.error_type,
                exc.message,
            )
            raise
        except ClientDisconnected:
            exchange.status, exchange.error_type = 499, "client_disconnected"
            raise
        finally:
            self.in_flight -= 1
            self.log_request(exchange, started)

    async def stream(
        self, scope: Scope, send: Send, receive: Receive, events: AsyncIterator[bytes], request_id: str
    ) -> None:
        """Relay SSE bytes; ping when idle; stop the upstream as soon as the client leaves."""
        lock = asyncio.Lock()
        loop = asyncio.get_running_loop()
        last_sent = loop.time()
        interval = self.settings.ping_interval
        current = asyncio.current_task()
        gone = relaying = False

        async def keepalive() -> None:
            nonlocal last_sent
            while True:
                await asyncio.sleep(max(0.0, last_sent + interval - loop.time()))
                if loop.time() - last_sent >= interval:
                    async with lock:
                        await send({"type": "http.response.body", "body": PING_EVENT, "more_body": True})
                    last_sent = loop.time()

        async def watch_disconnect() -> None:
            nonlocal gone
            while (await receive())["type"] != "http.disconnect":
                pass
            gone = True
            if relaying and current is not None:
                current.cancel()

        headers = [*SSE_HEADERS, (b"request-id", request_id.encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        scope["ccproxy.started"] = True
        helpers = [asyncio.create_task(keepalive()), asyncio.create_task(watch_disconnect())]
        relaying = True
        try:
            try:
                async for chunk in events:
                    async with lock:
                        await send({"type": "http.response.body", "body": chunk, "more_body": True})
                    last_sent = loop.time()
            except asyncio.CancelledError:
                relaying = False
                if gone:
                    raise ClientDisconnected from None
                raise
            except Exception as exc:  # a bug while translating: end the stream honestly
                log.exception("stream failed")
                self.log_error(request_id, "/v1/messages", "api_error", f"stream failed: {type(exc).__name__}")
                async with lock:
                    await send(
                        {
                            "type": "http.response.body",
                            "body": error_event("api_error", "internal proxy error"),
                            "more_body": True,
                        }
                    )
            relaying = False
            async with lock:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            for task in helpers:
                task.cancel()
            with contextlib.suppress(Exception):
                await events.aclose()  # type: ignore[attr-defined]

    async def count_tokens(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> None:
        body = await read_body(receive, self.settings.max_request_bytes)
        req = decode(decode_count_tokens_request, body)
        if len(body) > TOKENS_INLINE_LIMIT:
            count = await asyncio.to_thread(tokens.count_request, req)
        else:
            count = tokens.count_request(req)
        await send_json(send, 200, orjson.dumps({"input_tokens": count}), request_id)

    async def models(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> None:
        data = self.router.models()
        body = {
            "data": data,
            "has_more": False,
            "first_id": data[0]["id"],
            "last_id": data[-1]["id"],
        }
        await send_json(send, 200, orjson.dumps(body), request_id)

    async def model(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> None:
        model_id = scope["path"].rstrip("/").rsplit("/", 1)[-1]
        for entry in self.router.models():
            if entry["id"] == model_id:
                await send_json(send, 200, orjson.dumps(entry), request_id)
                return
        raise ProxyError(404, f"model: {model_id}", "not_found_error")

    async def root(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> None:
        body = orjson.dumps({"status": "ok", "service": "ccproxy", "version": __version__})
        await send_json(send, 200, body, request_id, head=scope["method"] == "HEAD")

    async def health(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> None:
        await send_json(send, 200, b'{"status":"ok"}', request_id, head=scope["method"] == "HEAD")

    async def livez(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> None:
        body = orjson.dumps({"status": "ok", "in_flight": self.in_flight, "draining": False})
        await send_json(send, 200, body, request_id)

    async def chat_completions(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> None:
        raise invalid_request(
            "this is an Anthropic Messages API proxy: POST /v1/messages instead of "
            "/v1/chat/completions (it translates to the OpenAI upstream itself)"
        )

    # --- logs -------------------------------------------------------------------------------

    def log_request(self, exchange: Exchange, started: float) -> None:
        if self.request_log is None:
            return
        record = {
            "ts": time.time(),
            "request_id": exchange.request_id,
            "model": exchange.route.requested_model,
            "upstream_model": exchange.route.upstream_model,
            "stream": exchange.stream,
            "status": exchange.status,
            "upstream_status": exchange.upstream_status,
            "latency_ms": round((time.perf_counter() - started) * 1000, 2),
            "request_bytes": exchange.body_size,
            "stop_reason": exchange.stop_reason,
            "usage": exchange.usage or None,
            "error_type": exchange.error_type,
        }
        self.request_log.write(record)
        if exchange.error_type and exchange.error_type != "client_disconnected":
            self.log_error(
                exchange.request_id,
                "/v1/messages",
                exchange.error_type,
                exchange.error_message or "",
            )

    def log_error(self, request_id: str, path: str, error_type: str, message: str) -> None:
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


# --- ASGI helpers ---------------------------------------------------------------------------


def decode(decoder: Callable[[bytes], Any], body: bytes) -> Any:
    try:
        return decoder(body)
    except msgspec.ValidationError as exc:
        raise invalid_request(_validation_message(str(exc))) from None
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError, ValueError, TypeError) as exc:
        # malformed JSON, invalid UTF-8 inside strings, nesting too deep …
        raise invalid_request(f"There was an error parsing the body of your request: {exc}") from None


def _validation_message(text: str) -> str:
    # msgspec: "Expected `int`, got `str` - at `$.max_tokens`" → "max_tokens: Expected `int`, got `str`"
    detail, sep, where = text.rpartition(" - at `$")
    if sep:
        return f"{where.rstrip('`').lstrip('.')}: {detail}"
    if text.startswith("Object missing required field `"):
        field = text.split("`")[1]
        return f"{field}: Field required"
    return text


async def read_body(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise ProxyError(413, f"request body is larger than {limit} bytes", "request_too_large")
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def send_json(send: Send, status: int, body: bytes, request_id: str, head: bool = False) -> None:
    headers = [
        *JSON_HEADERS,
        (b"request-id", request_id.encode()),
        (b"content-length", str(len(body)).encode()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else body})


async def send_error(send: Send, exc: ProxyError, request_id: str, head: bool = False) -> None:
    body = error_body(exc.error_type, exc.message, request_id)
    headers = [
        *JSON_HEADERS,
        (b"request-id", request_id.encode()),
        (b"content-length", str(len(body)).encode()),
        *((k.encode(), v.encode()) for k, v in exc.headers),
    ]
    if exc.error_type == "overloaded_error" or exc.status >= 500:
        headers.append((b"x-should-retry", b"true"))
    await send({"type": "http.response.start", "status": exc.status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else body})


def create_app(settings: Settings, upstream: Upstream | None = None) -> ProxyApp:
    setup_logging(settings.log_level)
    return ProxyApp(settings, upstream)


def create_app_from_env() -> ProxyApp:
    """Granian's factory target: each worker builds its app from the environment."""
    return create_app(Settings.from_env())


__all__ = ["ProxyApp", "_native", "create_app", "create_app_from_env"]
