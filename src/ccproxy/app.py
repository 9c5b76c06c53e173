"""The application: a routes table, request handlers, the lifespan, and the logs.

``create_app(settings)`` builds it; Granian loads ``create_app_from_env`` as a factory in each
worker process. The object speaks ASGI (``__call__``, the default) and RSGI (``__rsgi__``); the
interface plumbing is in ``serving.py``. Every response a client sees is either the success body
or an Anthropic error envelope with a ``request-id`` header; nothing escapes as a bare 500.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
import orjson

from . import __version__, tokens
from .config import Settings
from .errors import ProxyError, Redactor, error_body, invalid_request
from .logs import JsonLinesWriter, setup_logging
from .routing import DEFAULT_UPSTREAM, Router, UpstreamOptions
from .schemas.anthropic import decode_count_tokens_request, decode_messages_request
from .serving import (
    ClientDisconnected,
    Request,
    Response,
    StreamResponse,
    asgi_lifespan,
    serve_asgi,
    serve_rsgi,
)
from .translate.chat_response import PING_EVENT, error_event
from .upstream.anthropic import AnthropicUpstream
from .upstream.base import Exchange, Upstream
from .upstream.chat import ChatUpstream
from .upstream.client import create_client
from .upstream.responses import ResponsesUpstream

log = logging.getLogger("ccproxy.app")

Handler = Callable[[Request], Awaitable["Response | StreamResponse"]]
TOKENS_INLINE_LIMIT = 64 * 1024  # larger count_tokens bodies are encoded off the event loop
PASS_THROUGH_HEADERS = ("anthropic-version", "anthropic-beta", "x-api-key")


class ProxyApp:
    def __init__(self, settings: Settings, upstream: Upstream | None = None) -> None:
        self.settings = settings
        self.router = Router(
            settings.big_model,
            settings.small_model,
            settings.reasoning_model_pattern,
            settings.max_tokens_limit,
            UpstreamOptions(
                reasoning_style=settings.reasoning_style,
                default_effort=settings.reasoning_effort,
                prompt_cache_key=settings.prompt_cache_key,
                schema_drop_keys=settings.schema_drop_keys,
            ),
            rules=settings.rules,
            upstreams=settings.upstreams,
        )
        self.redact = Redactor([k for k in (settings.api_key, *(u.api_key for u in settings.upstreams)) if k])
        self._adapters: dict[str, Upstream] = {DEFAULT_UPSTREAM: upstream} if upstream is not None else {}
        self.request_log: JsonLinesWriter | None = None
        self.error_log: JsonLinesWriter | None = None
        self.in_flight = 0
        # Request ids: unique per process without a syscall per request.
        self._ids = itertools.count(1)
        self._id_prefix = "req_" + os.urandom(6).hex()
        self.routes: dict[tuple[str, str], Handler] = {
            ("POST", "/v1/messages"): self.messages,
            ("POST", "/v1/messages/count_tokens"): self.count_tokens,
            ("POST", "/anthropic/v1/messages"): self.messages,
            ("POST", "/anthropic/v1/messages/count_tokens"): self.count_tokens,
            ("GET", "/v1/models"): self.models,
            ("GET", "/"): self.root,
            ("HEAD", "/"): self.root,
            ("GET", "/health"): self.health,
            ("HEAD", "/health"): self.health,
            ("GET", "/livez"): self.livez,
            ("POST", "/v1/chat/completions"): self.chat_completions,
        }
        self._paths = {path for _, path in self.routes}

    def adapter(self, name: str) -> Upstream:
        """The adapter of a named upstream, created on first use inside the serving loop."""
        adapter = self._adapters.get(name)
        if adapter is None:
            s = self.settings
            client = create_client(s.http_client, s.connect_timeout, s.read_timeout)
            if name == DEFAULT_UPSTREAM:
                if s.api_key is None:
                    raise ProxyError(500, "no default upstream is configured", "api_error")
                adapter = ChatUpstream(client, s.base_url, s.api_key, s.api_key_env, self.redact)
            else:
                config = next(u for u in s.upstreams if u.name == name)
                if config.kind == "anthropic":
                    adapter = AnthropicUpstream(client, config, self.redact)
                else:
                    kind = ResponsesUpstream if config.kind == "responses" else ChatUpstream
                    adapter = kind(
                        client, config.base_url, config.api_key or "", config.api_key_env, self.redact, config.headers
                    )
            self._adapters[name] = adapter
        return adapter

    def new_request_id(self) -> str:
        return f"{self._id_prefix}{next(self._ids):012x}"

    # --- interfaces -------------------------------------------------------------------------

    async def __rsgi__(self, scope: Any, proto: Any) -> None:
        await serve_rsgi(self.handle, self.new_request_id, scope, proto)

    def __rsgi_init__(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.run_until_complete(self.startup())

    def __rsgi_del__(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.run_until_complete(self.shutdown())

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await serve_asgi(self.handle, self.new_request_id, scope, receive, send)
        elif scope["type"] == "lifespan":
            await asgi_lifespan(self.startup, self.shutdown, receive, send)

    async def startup(self) -> None:
        s = self.settings
        if s.log_file is not None:
            self.request_log = JsonLinesWriter(s.log_file, s.log_file_max_bytes)
        if s.error_log_file is not None:
            self.error_log = JsonLinesWriter(s.error_log_file, s.log_file_max_bytes)
        if s.api_key is not None:  # create the pools inside the serving loop
            self.adapter(DEFAULT_UPSTREAM)
        for config in s.upstreams:
            self.adapter(config.name)
        # Verify the shipped encoding now (a corrupt install fails at start); build it lazily on
        # the first count_tokens, since it costs ~25 MB per worker that many never need.
        await asyncio.to_thread(tokens.verify_encoding_file)

    async def shutdown(self) -> None:
        for adapter in self._adapters.values():
            await adapter.close()
        for writer in (self.request_log, self.error_log):
            if writer is not None:
                await asyncio.to_thread(writer.close)

    # --- dispatch ---------------------------------------------------------------------------

    async def handle(self, req: Request) -> Response | StreamResponse:
        path = req.path
        if len(path) > 1 and path.endswith("/"):
            path = path.rstrip("/")
        handler = self.routes.get((req.method, path))
        try:
            if handler is None:
                if path.startswith("/v1/models/") and req.method == "GET":
                    handler = self.model
                elif path in self._paths:
                    raise ProxyError(405, f"method {req.method} is not allowed for {path}")
                else:
                    raise ProxyError(404, f"not found: {req.method} {path}", "not_found_error")
            return await handler(req)
        except ProxyError as exc:
            return error_response(exc, req.request_id)
        except ClientDisconnected:
            return Response(499, b"")
        except Exception as exc:  # a bug: report it as an envelope, never as a traceback page
            log.exception("unhandled error in %s %s", req.method, path)
            self.log_error(req.request_id, path, "api_error", f"internal error: {type(exc).__name__}")
            return error_response(ProxyError(500, "internal proxy error", "api_error"), req.request_id)

    # --- handlers ---------------------------------------------------------------------------

    async def messages(self, req: Request) -> Response | StreamResponse:
        started = time.perf_counter()
        body = await req.body(self.settings.max_request_bytes)
        parsed = decode(decode_messages_request, body)
        if not parsed.messages:
            raise invalid_request("messages: at least one message is required")
        if parsed.max_tokens < 1:
            raise invalid_request("max_tokens: must be at least 1")
        stream = parsed.stream
        exchange = Exchange(req.request_id, self.router.route(parsed.model), len(body), stream)
        session = req.header("x-claude-code-session-id")
        if session:  # logs correlate a session by a hash prefix, never by the id itself
            exchange.session = hashlib.sha256(session.encode()).hexdigest()[:16]
        upstream = self.adapter(exchange.route.upstream)
        if upstream.kind == "anthropic":
            exchange.query = req.query
            exchange.client_headers = {
                name: value for name in PASS_THROUGH_HEADERS if (value := req.header(name)) is not None
            }
        payload = upstream.prepare(parsed, body, exchange)
        del parsed, body  # a request can wait minutes on the upstream; keep only what it sends
        self.in_flight += 1
        try:
            if stream:
                events = await upstream.open_stream(payload, exchange)
            else:
                reply = await upstream.create(payload, exchange)
        except ProxyError as exc:
            self.in_flight -= 1
            exchange.status, exchange.error_type, exchange.error_message = exc.status, exc.error_type, exc.message
            self.log_request(exchange, started)
            raise
        except (asyncio.CancelledError, ClientDisconnected):
            self.in_flight -= 1
            exchange.status, exchange.error_type = 499, "client_disconnected"
            self.log_request(exchange, started)
            raise
        except Exception as exc:  # a bug: logged here, answered as a 500 envelope by handle()
            self.in_flight -= 1
            exchange.status, exchange.error_type = 500, "api_error"
            exchange.error_message = f"internal error: {type(exc).__name__}"
            self.log_request(exchange, started)
            raise
        if not stream or isinstance(events, Response):
            self.in_flight -= 1
            final = reply if not stream else events
            exchange.status = final.status  # type: ignore[union-attr]
            self.log_request(exchange, started)
            return final  # type: ignore[return-value]

        def on_close(outcome: BaseException | None) -> None:
            self.in_flight -= 1
            if isinstance(outcome, ClientDisconnected):
                exchange.status, exchange.error_type = 499, "client_disconnected"
            elif outcome is not None:
                exchange.error_type = "api_error"
                exchange.error_message = f"stream failed: {type(outcome).__name__}"
            self.log_request(exchange, started)

        return StreamResponse(
            events,
            on_close,
            ping=PING_EVENT,
            ping_interval=self.settings.ping_interval,
            on_error=lambda exc: error_event("api_error", "internal proxy error"),
            headers=exchange.relay_headers,
        )

    async def count_tokens(self, req: Request) -> Response:
        body = await req.body(self.settings.max_request_bytes)
        parsed = decode(decode_count_tokens_request, body)
        forwarded = await self._count_upstream(req, body, parsed.model)
        if forwarded is not None:
            return forwarded
        if len(body) > TOKENS_INLINE_LIMIT or not tokens.encoding_loaded():
            count = await asyncio.to_thread(tokens.count_request, parsed)
        else:
            count = tokens.count_request(parsed)
        return Response(200, orjson.dumps({"input_tokens": count}))

    async def _count_upstream(self, req: Request, body: bytes, model: str) -> Response | None:
        """Models served by an Anthropic upstream are counted by it (its tokenizer, not ours);
        when it cannot be reached the local estimate answers instead of an error."""
        try:
            route = self.router.route(model)
        except ProxyError:
            return None  # no route: the local count still tells the client the prompt's size
        upstream = self.adapter(route.upstream)
        if upstream.kind != "anthropic":
            return None
        exchange = Exchange(req.request_id, route, len(body), False)
        exchange.query = req.query
        exchange.client_headers = {
            name: value for name in PASS_THROUGH_HEADERS if (value := req.header(name)) is not None
        }
        try:
            return await upstream.count_tokens(upstream.prepare(None, body, exchange), exchange)  # type: ignore[attr-defined,arg-type]
        except ProxyError as exc:
            if exc.status in (502, 504):
                log.warning("count_tokens: Anthropic upstream unreachable, counting locally: %s", exc.message)
                return None
            raise

    async def models(self, req: Request) -> Response:
        data = self.router.models()
        first, last = (data[0]["id"], data[-1]["id"]) if data else (None, None)
        body = {"data": data, "has_more": False, "first_id": first, "last_id": last}
        return Response(200, orjson.dumps(body))

    async def model(self, req: Request) -> Response:
        model_id = req.path.rstrip("/").rsplit("/", 1)[-1]
        for entry in self.router.models():
            if entry["id"] == model_id:
                return Response(200, orjson.dumps(entry))
        raise ProxyError(404, f"model: {model_id}", "not_found_error")

    async def root(self, req: Request) -> Response:
        return Response(200, orjson.dumps({"status": "ok", "service": "ccproxy", "version": __version__}))

    async def health(self, req: Request) -> Response:
        return Response(200, b'{"status":"ok"}')

    async def livez(self, req: Request) -> Response:
        return Response(200, orjson.dumps({"status": "ok", "in_flight": self.in_flight, "draining": False}))

    async def chat_completions(self, req: Request) -> Response:
        raise invalid_request(
            "this is an Anthropic Messages API proxy: POST /v1/messages instead of "
            "/v1/chat/completions (it translates to the OpenAI upstream itself)"
        )

    # --- logs -------------------------------------------------------------------------------

    def log_request(self, exchange: Exchange, started: float) -> None:
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
                    "latency_ms": round((time.perf_counter() - started) * 1000, 2),
                    "request_bytes": exchange.body_size,
                    "stop_reason": exchange.stop_reason,
                    "usage": exchange.usage or None,
                    "error_type": exchange.error_type,
                    "upstream": exchange.route.upstream,
                    "session": exchange.session,
                    "ratelimit": exchange.ratelimit or None,
                }
            )
        if exchange.error_type and exchange.error_type != "client_disconnected":
            self.log_error(exchange.request_id, "/v1/messages", exchange.error_type, exchange.error_message or "")

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


def error_response(exc: ProxyError, request_id: str) -> Response:
    headers = list(exc.headers)
    if exc.error_type == "overloaded_error" or exc.status >= 500:
        headers.append(("x-should-retry", "true"))
    return Response(exc.status, error_body(exc.error_type, exc.message, request_id), headers)


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


def create_app(settings: Settings, upstream: Upstream | None = None) -> ProxyApp:
    setup_logging(settings.log_level)
    return ProxyApp(settings, upstream)


def create_app_from_env() -> ProxyApp:
    """Granian's factory target: each worker builds its app from the environment."""
    return create_app(Settings.from_env())
