"""The application: a routes table, request handlers, the lifespan, and the logs.

``create_app(settings)`` builds it; Granian loads ``create_app_from_env`` as a factory in each
worker process. The object speaks ASGI (``__call__``, the default) and RSGI (``__rsgi__``); the
interface plumbing is in ``serving.py``. Every response a client sees is either the success body
or an Anthropic error envelope with a ``request-id`` header; nothing escapes as a bare 500.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import os
import signal
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from random import getrandbits
from typing import Any
from urllib.parse import parse_qs, unquote

import msgspec
import orjson

from . import __version__, tokens
from .access import PROXY, SECURITY_HEADERS, Access, classify, require_json
from .cache import ResponseCache
from .cli import DRAIN_DIR_ENV, STORE_SOCKET_ENV
from .config import Settings
from .conversations import Conversations
from .dashboard import MAX_PAGE, MAX_SUMMARY, Dashboard, parse_int, parse_time
from .errors import ProxyError, error_body, invalid_request
from .headerrules import HeaderRules
from .headerrules import apply as apply_header_rules
from .logs import JsonLinesWriter, setup_logging
from .metrics import Metrics, prometheus
from .openapi import openapi_spec, static_file, to_yaml
from .parent import watch_parent
from .pg import describe
from .ratelimit import RateLimiter
from .redact import Redactor
from .resilience import RETRY_STATUSES, CircuitBreaker, RetryBudget, RetryPolicy, parse_retry_after
from .routing import DEFAULT_UPSTREAM, Route, Router, UpstreamOptions
from .schemas.anthropic import decode_count_tokens_request, decode_messages_request
from .serving import (
    ClientDisconnected,
    DisconnectWatch,
    Request,
    Response,
    StreamResponse,
    asgi_lifespan,
    serve_asgi,
    serve_rsgi,
)
from .shared import CIRCUIT_SYNC, Shared, Unavailable
from .store import DB_ERRORS, RATELIMIT_HEADERS, RequestStore, StoreClient, get_setting, put_setting
from .translate.chat_response import PING_EVENT, error_event
from .upstream.anthropic import AnthropicUpstream
from .upstream.base import Exchange, Upstream
from .upstream.chat import ChatUpstream
from .upstream.client import Limits, create_client
from .upstream.responses import ResponsesUpstream

log = logging.getLogger("ccproxy.app")

Handler = Callable[[Request], Awaitable["Response | StreamResponse"]]
TOKENS_INLINE_LIMIT = 64 * 1024  # larger count_tokens bodies are encoded off the event loop
PASS_THROUGH_HEADERS = ("anthropic-version", "anthropic-beta", "x-api-key")
MESSAGE_PATHS = frozenset({"/v1/messages", "/anthropic/v1/messages"})
PROXY_PREFIXES = ("/v1/messages", "/anthropic/", "/v1/models", "/v1/chat/")
# error types a stream records when its upstream failed mid-way (counted by the circuit breaker)
STREAM_FAULTS = frozenset({"timeout_error", "api_error", "overloaded_error"})


class Call:
    """One request on its way upstream: the decoded request and body until the payload exists
    (kept longer only when a fallback upstream may need its own translation)."""

    __slots__ = ("_payloads", "body", "estimated_tokens", "exchange", "keep", "parsed", "rate_entry")

    def __init__(self, parsed: Any, body: bytes, exchange: Exchange) -> None:
        self.parsed: Any = parsed
        self.body: bytes | None = body
        self.exchange = exchange
        self.keep = bool(exchange.route.fallbacks)
        self.estimated_tokens = len(body) / 4 + (parsed.max_tokens or 0)
        self._payloads: dict[str, bytes] = {}
        self.rate_entry: tuple[RateLimiter, list[float]] | None = None

    def json(self) -> Any:
        try:
            return orjson.loads(self.body)  # type: ignore[arg-type]
        except orjson.JSONDecodeError:  # integers beyond a double (valid JSON, decoded already)
            return msgspec.json.decode(self.body)  # type: ignore[arg-type]

    def payload(self, upstream: Upstream) -> bytes:
        name = self.exchange.route.upstream
        payload = self._payloads.get(name)
        if payload is None:
            if self.body is None:
                raise ProxyError(500, "request released before its payload was built", "api_error")
            payload = self._payloads[name] = upstream.prepare(self.parsed, self.body, self.exchange)
            if not self.keep:
                self.parsed = self.body = None
        return payload


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
        self.redact = Redactor(configured_secrets(settings))
        self._adapters: dict[str, Upstream] = {DEFAULT_UPSTREAM: upstream} if upstream is not None else {}
        self.request_log: JsonLinesWriter | None = None
        self.store: RequestStore | StoreClient | None = None
        self._store_task: asyncio.Task[None] | None = None
        self.error_log: JsonLinesWriter | None = None
        self.in_flight = 0
        self.draining = False
        self.metrics = Metrics()
        self.breakers: dict[str, CircuitBreaker] = {}
        self.retry_policy = RetryPolicy(
            settings.max_retries, settings.retry_base_delay, settings.retry_max_delay, settings.retry_max_after
        )
        self.retry_budget = RetryBudget(settings.retry_budget)
        # Redis for state several processes share (shared.py); None: each keeps its own
        self.shared = Shared(settings.redis_url) if settings.redis_url else None
        self._shared_task: asyncio.Task[None] | None = None
        self.cache = (
            ResponseCache(settings.cache_max_entries, settings.cache_max_bytes, settings.cache_ttl, self.shared)
            if settings.cache
            else None
        )
        self.header_rules = HeaderRules()
        self.dashboard = Dashboard(settings.db_path)
        self.conversations = Conversations(settings.projects_dir)
        self._settings_task: asyncio.Task[None] | None = None
        self._unwatch_parent: Callable[[], None] = lambda: None
        self.access = Access(settings)
        self.waiting = DisconnectWatch()  # requests waiting on their upstream, for disconnects
        self.limiters: dict[str, RateLimiter] = {}
        if settings.rpm or settings.tpm:
            for name in self._upstream_names():
                self.limiters[name] = RateLimiter(
                    settings.rpm,
                    settings.tpm,
                    settings.rate_queue,
                    settings.rate_max_wait,
                    shared=self.shared,
                    name=name,
                )
        # Request ids: unique per process without a syscall per request.
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
            ("GET", "/v1/metrics"): self.metrics_json,
            ("GET", "/metrics"): self.metrics_prometheus,
            ("GET", "/v1/cache/stats"): self.cache_stats,
            ("POST", "/v1/cache/clear"): self.cache_clear,
            ("GET", "/api/requests"): self.api_requests,
            ("DELETE", "/api/requests"): self.api_delete_requests,
            ("GET", "/api/requests/summary"): self.api_requests_summary,
            ("GET", "/api/requests/latest-date"): self.api_latest_date,
            ("GET", "/api/stats"): self.api_stats,
            ("GET", "/api/stats/dashboard"): self.api_stats_dashboard,
            ("GET", "/api/stats/hourly"): self.api_stats_hourly,
            ("GET", "/api/stats/models"): self.api_stats_models,
            ("GET", "/api/stats/organizations"): self.api_organizations,
            ("GET", "/api/conversations"): self.api_conversations,
            ("GET", "/api/conversations/project"): self.api_conversations_project,
            ("GET", "/api/settings"): self.api_get_settings,
            ("PUT", "/api/settings"): self.api_put_settings,
            ("GET", "/openapi.json"): self.openapi_json,
            ("GET", "/openapi.yaml"): self.openapi_yaml,
            ("GET", "/dashboard"): self.dashboard_page,
        }
        # paths with an {id} part: (method, prefix) → handler
        self.prefix_routes: tuple[tuple[str, str, Handler], ...] = (
            ("GET", "/api/requests/", self.api_request),
            ("GET", "/api/conversations/", self.api_conversation),
            ("GET", "/dashboard/", self.dashboard_asset),
            ("GET", "/v1/models/", self.model),
        )
        self._paths = {path for _, path in self.routes}
        self._kinds: dict[str, int] = {}  # path → access class (access.classify)

    # --- access control -----------------------------------------------------------------------

    def _rewrite_response_headers(self, response: Response | StreamResponse) -> Response | StreamResponse:
        headers = apply_header_rules(self.header_rules.response, response.headers)
        if isinstance(response, Response):  # never mutate: a cached Response is shared
            return Response(response.status, response.body, headers, response.content_type)
        response.headers = headers
        return response

    async def _reload_header_rules(self) -> None:
        assert self.settings.db_path is not None
        stored = await asyncio.to_thread(get_setting, self.settings.db_path, "header_rules")
        if stored is not None and stored[1] > self.header_rules.updated:
            try:
                self.header_rules.load(orjson.loads(stored[0]))
            except (ProxyError, orjson.JSONDecodeError) as exc:
                log.error("stored header rules are invalid, keeping the current ones: %s", exc)
            self.header_rules.updated = stored[1]

    async def _watch_settings(self) -> None:
        """Another worker may save settings: pick them up within a couple of seconds."""
        while True:
            await asyncio.sleep(SETTINGS_POLL_SECONDS)
            try:
                await self._reload_header_rules()
            except Exception as exc:  # the store is busy or gone: try again later
                log.debug("settings reload failed: %s", exc)

    def adapter(self, name: str) -> Upstream:
        """The adapter of a named upstream, created on first use inside the serving loop."""
        adapter = self._adapters.get(name)
        if adapter is None:
            s = self.settings
            client = create_client(
                s.http_client,
                s.connect_timeout,
                s.read_timeout,
                limits=Limits.for_responses(s.max_response_bytes),
                egress=s.egress,
            )
            if name == DEFAULT_UPSTREAM:
                if s.api_key is None:
                    raise ProxyError(500, "no default upstream is configured", "api_error")
                adapter = ChatUpstream(
                    client,
                    s.base_url,
                    s.api_key,
                    s.api_key_env,
                    self.redact,
                    basic_auth=s.base_url_auth,
                    think_tags=s.think_tags,
                )
            else:
                config = next(u for u in s.upstreams if u.name == name)
                if config.kind == "anthropic":
                    adapter = AnthropicUpstream(client, config, self.redact)
                else:
                    kind = ResponsesUpstream if config.kind == "responses" else ChatUpstream
                    adapter = kind(
                        client,
                        config.base_url,
                        config.api_key or "",
                        config.api_key_env,
                        self.redact,
                        config.headers,
                        basic_auth=config.basic_auth,
                        think_tags=config.options.think_tags,
                    )
            adapter.header_rules = self.header_rules  # type: ignore[attr-defined]
            self._adapters[name] = adapter
        return adapter

    def new_request_id(self) -> str:
        # Time first (ms, 11 hex digits), so the request log's primary key grows at its right
        # edge: a batch of inserts touches a few index pages, where random ids touched one page
        # per row (2-3x the writer's cost per row at 1 M rows). Then 36 random bits, unique
        # across processes and hosts. The dashboard's short id is the first 14 digits.
        return f"req_{int(time.time() * 1000):011x}{getrandbits(36):09x}"

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
        exposed = s.exposure_warning()
        if exposed:
            log.warning(exposed)
        if s.log_file is not None:
            self.request_log = JsonLinesWriter(s.log_file, s.log_file_max_bytes)
        if s.error_log_file is not None:
            self.error_log = JsonLinesWriter(s.error_log_file, s.log_file_max_bytes)
        if s.db_path is not None:
            socket_path = os.environ.get(STORE_SOCKET_ENV)
            if socket_path:  # the writer process ccproxy started (store.py)
                self.store = StoreClient(socket_path)
                self._store_task = asyncio.get_running_loop().create_task(self.store.run())
            else:
                try:
                    self.store = await asyncio.to_thread(
                        RequestStore, s.db_path, s.log_retention_days, s.log_max_db_bytes
                    )
                except (OSError, RuntimeError, *DB_ERRORS) as exc:  # serve anyway; say why
                    log.error("request log disabled: cannot open %s: %s", describe(s.db_path), exc)
            if self.store is not None:
                with contextlib.suppress(OSError, *DB_ERRORS):
                    await self._reload_header_rules()
                self._settings_task = asyncio.get_running_loop().create_task(self._watch_settings())
        if s.api_key is not None:  # create the pools inside the serving loop
            self.adapter(DEFAULT_UPSTREAM)
        for config in s.upstreams:
            self.adapter(config.name)
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            # the ccproxy main process sends SIGUSR1 when it got SIGTERM (see cli.py)
            asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, self.start_drain)
        if os.environ.get(DRAIN_DIR_ENV):  # started by the ccproxy command: end with it (parent.py)
            self._unwatch_parent = watch_parent(asyncio.get_running_loop())
        if self.shared is not None:
            await self.shared.start()
            self._shared_task = asyncio.get_running_loop().create_task(self._sync_shared())
        # Verify the shipped encoding now (a corrupt install fails at start); build it lazily on
        # the first count_tokens, since it costs ~25 MB per worker that many never need.
        await asyncio.to_thread(tokens.verify_encoding_file)

    async def _sync_shared(self) -> None:
        """Adopt the circuit states other processes pushed to Redis, and follow cache clears."""
        assert self.shared is not None
        names = self._upstream_names()
        while True:
            await asyncio.sleep(CIRCUIT_SYNC)
            if not self.shared.up:
                continue
            try:
                states = await self.shared.circuit_states(names)
                if self.cache is not None:
                    await self.cache.follow_clears()
            except Unavailable:
                continue
            for name, (failures, open_for) in states.items():
                self.breaker(name).adopt(failures, open_for)

    async def shutdown(self) -> None:
        self._unwatch_parent()
        self.waiting.close()
        if self._shared_task is not None:
            self._shared_task.cancel()
        if self.shared is not None:
            await self.shared.close()
        if self._settings_task is not None:
            self._settings_task.cancel()
        for adapter in self._adapters.values():
            await adapter.close()
        if self._store_task is not None:
            self._store_task.cancel()
        if isinstance(self.store, StoreClient):
            await self.store.close()
        elif self.store is not None:
            await asyncio.to_thread(self.store.close)
        for writer in (self.request_log, self.error_log):
            if writer is not None:
                await asyncio.to_thread(writer.close)

    # --- dispatch ---------------------------------------------------------------------------

    async def handle(self, req: Request) -> Response | StreamResponse:
        path = req.path
        if len(path) > 1 and path.endswith("/"):
            path = path.rstrip("/")
        handler = self.routes.get((req.method, path))
        kind = self._kinds.get(path)
        if kind is None:
            kind = classify(path)
            if len(self._kinds) < 4096:  # (any path may come; the known ones are few)
                self._kinds[path] = kind
        try:
            if handler is None:
                for method, prefix, candidate in self.prefix_routes:
                    if path.startswith(prefix) and len(path) > len(prefix):
                        if req.method != method:
                            raise ProxyError(405, f"method {req.method} is not allowed for {path}")
                        handler = candidate
                        break
                else:
                    if path in self._paths:
                        raise ProxyError(405, f"method {req.method} is not allowed for {path}")
                    raise ProxyError(404, f"not found: {req.method} {path}", "not_found_error")
            self.access.check(req, path, kind)
            response = await handler(req)
            if self.header_rules.response and path in MESSAGE_PATHS:
                response = self._rewrite_response_headers(response)
        except ProxyError as exc:
            response = error_response(exc, req.request_id)
        except ClientDisconnected:
            return Response(499, b"")
        except DB_ERRORS as exc:  # the request log's database failed (e.g. PostgreSQL restarting)
            log.warning("request log query failed in %s %s: %s", req.method, path, exc)
            unavailable = ProxyError(503, "the request log is unavailable right now; try again", "api_error")
            response = error_response(unavailable, req.request_id)
        except Exception as exc:  # a bug: report it as an envelope, never as a traceback page
            log.exception("unhandled error in %s %s", req.method, path)
            self.log_error(req.request_id, path, "api_error", f"internal error: {type(exc).__name__}")
            response = error_response(ProxyError(500, "internal proxy error", "api_error"), req.request_id)
        if kind > PROXY:  # dashboard, admin and metrics answers (a new list: never a shared one)
            response.headers = [*response.headers, *SECURITY_HEADERS]
        return response

    # --- handlers ---------------------------------------------------------------------------

    async def messages(self, req: Request) -> Response | StreamResponse:
        started = time.perf_counter()
        if self.draining:
            raise ProxyError(503, "ccproxy is shutting down; send the request again", "overloaded_error")
        require_json(req)
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
        if self.store is not None:
            self._describe_for_store(req, parsed, body, exchange)
        if exchange.route.upstream != DEFAULT_UPSTREAM or exchange.route.fallbacks:
            exchange.query = req.query
            exchange.client_headers = {
                name: value for name in PASS_THROUGH_HEADERS if (value := req.header(name)) is not None
            }
        call = Call(parsed, body, exchange)
        del parsed, body  # a request can wait minutes on the upstream; the Call keeps what it needs
        self._begin()
        try:
            if self.cache is not None and not stream:
                route = exchange.route
                scope = self.adapter(route.upstream).cache_scope(exchange)
                key = ResponseCache.key(call.json(), route.upstream, route.upstream_model, scope)
                waiting = self.waiting.enter(req)
                try:
                    outcome, how = await self.cache.get_or_fetch(key, lambda: self._with_deadline(self._attempts(call)))
                finally:
                    self.waiting.leave(waiting)
                exchange.cache = how
                if how != "miss":
                    exchange.status = outcome.status
                    exchange.usage = {}
            else:
                waiting = self.waiting.enter(req)  # a client that leaves cancels the wait
                try:
                    outcome = await self._with_deadline(self._attempts(call))
                finally:
                    self.waiting.leave(waiting)  # (raises ClientDisconnected then)
        except ProxyError as exc:
            exchange.status, exchange.error_type, exchange.error_message = exc.status, exc.error_type, exc.message
            self._finish(exchange, started, call)
            raise
        except (asyncio.CancelledError, ClientDisconnected):
            exchange.status, exchange.error_type = 499, "client_disconnected"
            self._finish(exchange, started, call)
            raise
        except Exception as exc:  # a bug: logged here, answered as a 500 envelope by handle()
            exchange.status, exchange.error_type = 500, "api_error"
            exchange.error_message = f"internal error: {type(exc).__name__}"
            self._finish(exchange, started, call)
            raise
        if isinstance(outcome, Response):
            exchange.status = outcome.status
            if self.store is not None and self.settings.log_bodies:
                exchange.response_body = self._loggable(outcome.body)
            self._finish(exchange, started, call)
            return outcome

        def on_close(failure: BaseException | None) -> None:
            breaker = self.breaker(exchange.route.upstream)
            if isinstance(failure, ClientDisconnected):
                exchange.status, exchange.error_type = 499, "client_disconnected"
                breaker.release()  # says nothing about the upstream
            else:
                if failure is not None:
                    exchange.error_type = "api_error"
                    exchange.error_message = f"stream failed: {type(failure).__name__}"
                # the upstream failed mid-stream (reset, idle timeout, error chunk) or not
                breaker.record(fault=failure is None and exchange.error_type in STREAM_FAULTS)
            self._finish(exchange, started, call)

        events = outcome if not self.settings.total_timeout else self._deadline_stream(outcome, exchange, started)
        if self.store is not None and self.settings.log_bodies:
            events = self._captured(events, exchange)
        return StreamResponse(
            events,
            on_close,
            ping=PING_EVENT,
            ping_interval=self.settings.ping_interval,
            on_error=lambda exc: error_event("api_error", "internal proxy error"),
            headers=exchange.relay_headers,
        )

    async def _with_deadline(self, work: Awaitable[Any]) -> Any:
        """Non-streaming requests as a whole, and streams until the upstream answered, within
        CCPROXY_TOTAL_TIMEOUT (the rest of a stream is bounded in _deadline_stream)."""
        total = self.settings.total_timeout
        if not total:
            return await work
        return await within(work, total, f"the request took longer than CCPROXY_TOTAL_TIMEOUT ({total:g} s)")

    async def _deadline_stream(
        self, events: AsyncIterator[bytes], exchange: Exchange, started: float
    ) -> AsyncIterator[bytes]:
        deadline = started + self.settings.total_timeout
        try:
            async with asyncio.timeout_at(asyncio.get_running_loop().time() + deadline - time.perf_counter()):
                async for chunk in events:
                    yield chunk
        except TimeoutError:
            exchange.error_type = "timeout_error"
            exchange.error_message = (
                f"the stream took longer than CCPROXY_TOTAL_TIMEOUT ({self.settings.total_timeout:g} s)"
            )
            yield error_event("timeout_error", exchange.error_message)
        finally:
            closer = getattr(events, "aclose", None)
            if closer is not None:
                await closer()

    async def _captured(self, events: AsyncIterator[bytes], exchange: Exchange) -> AsyncIterator[bytes]:
        """The stream as sent, kept (up to the body cap) for the request log."""
        kept = bytearray()
        cap = self.settings.log_body_max_bytes
        try:
            async for chunk in events:
                if len(kept) <= cap:
                    kept += chunk
                yield chunk
        finally:
            exchange.response_body = self._loggable(bytes(kept))
            closer = getattr(events, "aclose", None)
            if closer is not None:
                await closer()

    async def _attempts(self, call: Call) -> Response | AsyncIterator[bytes]:
        """Send the request upstream: retries (before anything reached the client), circuit
        breaking with fallback upstreams, and rate limiting. See resilience.py for the rules.

        A circuit breaker hears one outcome per request (its last attempt on that upstream), not
        one per attempt: five failed requests open a circuit, whatever the retries did."""
        held: set[str] = set()  # upstreams whose breaker let this request through
        outcomes: dict[str, bool] = {}  # upstream → fault, of its last attempt
        try:
            return await self._attempt_loop(call, held, outcomes)
        finally:
            for name in held:
                breaker = self.breaker(name)
                if name in outcomes:
                    breaker.record(fault=outcomes[name])
                else:
                    breaker.release()  # nothing reached the upstream, or the client left

    async def _attempt_loop(
        self, call: Call, held: set[str], outcomes: dict[str, bool]
    ) -> Response | AsyncIterator[bytes]:
        exchange = call.exchange
        primary = exchange.route
        self.retry_budget.deposit()
        retry = 0
        while True:
            route = self._pick(primary, held)
            if route is not exchange.route:
                self.metrics.fallbacks += route is not primary
                exchange.route = route
            limiter = self.limiters.get(route.upstream)
            upstream = self.adapter(route.upstream)
            payload = call.payload(upstream)
            entry = await limiter.acquire(call.estimated_tokens) if limiter is not None else None
            exchange.upstream_status = None
            error: ProxyError | None = None
            result: Any = None
            began = time.perf_counter()
            try:
                if exchange.stream:
                    result = await self._first_byte(upstream.open_stream(payload, exchange))
                    self.metrics.first_byte.observe(time.perf_counter() - began)
                else:
                    result = await upstream.create(payload, exchange)
            except ProxyError as exc:
                error = exc
            status = exchange.upstream_status
            if not (status is None and error is not None and error.status < 500):
                # an upstream fault: it answered 5xx, or never answered (we map that to 502/504);
                # a refusal before sending (e.g. no key for the upstream) says nothing about it
                outcomes[route.upstream] = (status or 0) >= 500 or (error is not None and error.status >= 500)
            if limiter is not None and entry is not None:
                limiter.adapt(throttled=status == 429)
                call.rate_entry = (limiter, entry)
            retryable = status in RETRY_STATUSES or (
                status is None and error is not None and error.status in (502, 504)
            )
            if error is None and not isinstance(result, Response):
                # A stream: from here on bytes reach the client, no more retries. Its breaker
                # hears the outcome when the stream ends (messages' on_close), not now.
                held.discard(route.upstream)
                outcomes.pop(route.upstream, None)
                return result
            if error is None and result.status < 400:
                return result
            if retryable:
                headers = error.headers if error is not None else result.headers
                after = parse_retry_after(next((v for k, v in headers if k.lower() == "retry-after"), None))
                delay = self.retry_policy.delay(retry, after)
                if delay is not None and self.retry_budget.withdraw():
                    retry += 1
                    self.metrics.retries += 1
                    log.info(
                        "retrying %s (attempt %d) in %.2f s after %s",
                        route.upstream,
                        retry + 1,
                        delay,
                        status or (error.message if error else "error"),
                    )
                    await asyncio.sleep(delay)
                    continue
            if error is not None:
                raise error
            return result

    def _pick(self, primary: Route, held: set[str]) -> Route:
        """The primary route, or the first fallback whose circuit lets a request through (a
        retry stays on an upstream that already let this request through)."""
        for route in (primary, *primary.fallbacks):
            if route.upstream in held or self.breaker(route.upstream).allow():
                held.add(route.upstream)
                return route
        breaker = self.breaker(primary.upstream)
        wait = max(1, round(breaker.retry_in()))
        raise ProxyError(
            503,
            f"upstream {primary.upstream!r} is unavailable: its circuit is open after {breaker.failures} consecutive "
            f"failures; retry in {wait} s",
            "overloaded_error",
            [("retry-after", str(wait))],
        )

    async def _first_byte(self, opening: Awaitable[Any]) -> Any:
        limit = self.settings.first_byte_timeout
        return await within(
            opening, limit, f"the upstream did not answer within CCPROXY_FIRST_BYTE_TIMEOUT ({limit:g} s)"
        )

    def breaker(self, upstream: str) -> CircuitBreaker:
        breaker = self.breakers.get(upstream)
        if breaker is None:
            s = self.settings
            breaker = self.breakers[upstream] = CircuitBreaker(s.circuit_threshold, s.circuit_cooldown)
            shared = self.shared
            if shared is not None:
                breaker.on_record = lambda fault: shared.circuit_push(
                    upstream, fault, s.circuit_threshold, s.circuit_cooldown
                )
        return breaker

    # --- in-flight accounting and drain --------------------------------------------------------

    def _begin(self) -> None:
        self.in_flight += 1

    def _finish(self, exchange: Exchange, started: float, call: Call | None = None) -> None:
        self.in_flight -= 1
        if call is not None and call.rate_entry is not None and exchange.usage:
            limiter, entry = call.rate_entry
            limiter.correct(entry, exchange.usage.get("input_tokens", 0) + exchange.usage.get("output_tokens", 0))
        seconds = time.perf_counter() - started
        self.metrics.record(
            exchange.route.upstream, exchange.status, exchange.error_type, seconds, exchange.stream, exchange.usage
        )
        self.log_request(exchange, started)
        if self.draining and self.in_flight == 0:
            self._mark_drained()

    def start_drain(self) -> None:
        """SIGUSR1 from the ccproxy main process (it got SIGTERM): refuse new requests, let the
        in-flight ones finish, and say so once none is left (the main process then stops us)."""
        if self.draining:
            return
        self.draining = True
        log.info("draining: %d request(s) in flight", self.in_flight)
        if self.in_flight == 0:
            self._mark_drained()

    def _mark_drained(self) -> None:
        folder = os.environ.get(DRAIN_DIR_ENV)
        if folder:
            with contextlib.suppress(OSError):
                (Path(folder) / f"{os.getpid()}.drained").touch()

    async def count_tokens(self, req: Request) -> Response:
        require_json(req)
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
        """The seed's load-balancer signal: 200 healthy, or 503 draining after SIGTERM."""
        if self.draining:
            body = {"status": "draining", "timestamp": _now_iso(), "in_flight": self.in_flight}
            return Response(503, orjson.dumps(body))
        return Response(200, orjson.dumps({"status": "healthy", "timestamp": _now_iso()}))

    async def livez(self, req: Request) -> Response:
        body = {"status": "ok", "timestamp": _now_iso(), "in_flight": self.in_flight, "draining": self.draining}
        return Response(200, orjson.dumps(body))

    async def metrics_json(self, req: Request) -> Response:
        from . import _native

        data = self.metrics.snapshot()
        data["in_flight"] = self.in_flight
        data["draining"] = self.draining
        data["pid"] = os.getpid()
        data["upstreams"] = {
            name: {
                "circuit": self.breaker(name).snapshot(),
                **({"rate_limit": self.limiters[name].snapshot()} if name in self.limiters else {}),
            }
            for name in self._upstream_names()
        }
        data["retry_budget"] = {
            "tokens": round(self.retry_budget.tokens, 2),
            "refused": self.retry_budget.exhausted,
        }
        data["cache"] = self.cache.stats() if self.cache is not None else {"enabled": False}
        data["shared"] = self.shared.stats() if self.shared is not None else {"backend": "local"}
        data["native"] = {"implementation": _native.IMPLEMENTATION, "modules": dict(_native.IMPLEMENTATIONS)}
        if self.store is not None:  # this worker's records: handed on, and dropped (queue full, no writer)
            data["request_log"] = {"written": self.store.written, "dropped": self.store.dropped}
        data["version"] = __version__
        return Response(200, orjson.dumps(data))

    async def metrics_prometheus(self, req: Request) -> Response:
        from . import _native

        circuits = {}
        for name in self._upstream_names():
            state = self.breaker(name).state
            circuits[f'upstream="{name}"'] = {"closed": 0, "half_open": 1, "open": 2}[state]
        gauges = {"ccproxy_in_flight_requests": self.in_flight, "ccproxy_draining": int(self.draining)}
        if self.shared is not None:  # 0 while Redis is unreachable and local state stands in
            gauges["ccproxy_shared_state_up"] = int(self.shared.up)
            gauges["ccproxy_shared_state_errors"] = self.shared.errors
        labelled: dict[str, dict[str, float]] = {
            "ccproxy_circuit_state": circuits,
            "ccproxy_native_info": {f'implementation="{_native.IMPLEMENTATION}"': 1},
        }
        if self.cache is not None:
            stats = self.cache.stats()
            labelled["ccproxy_cache_lookups"] = {'result="hit"': stats["hits"], 'result="miss"': stats["misses"]}
            gauges["ccproxy_cache_entries"] = stats["entries"]
            gauges["ccproxy_cache_bytes"] = stats["bytes"]
        body = prometheus(self.metrics, gauges, labelled)
        return Response(200, body, content_type="text/plain; version=0.0.4; charset=utf-8")

    async def cache_stats(self, req: Request) -> Response:
        return Response(200, orjson.dumps(self.cache.stats() if self.cache is not None else {"enabled": False}))

    async def cache_clear(self, req: Request) -> Response:
        cleared = await self.cache.clear() if self.cache is not None else 0
        return Response(200, orjson.dumps({"cleared": cleared, "enabled": self.cache is not None}))

    # --- dashboard APIs (dashboard.py, conversations.py; shapes of seed 001) ----------------------

    async def api_requests(self, req: Request) -> Response:
        q = query_params(req)
        page = parse_int(q.get("page"), "page", 1, 1, 10**9)
        limit = parse_int(q.get("limit"), "limit", 10, 1, MAX_PAGE)
        return json_response(await asyncio.to_thread(self.dashboard.requests, page, limit, q.get("model", "all")))

    async def api_delete_requests(self, req: Request) -> Response:
        return json_response(await asyncio.to_thread(self.dashboard.delete_requests))

    async def api_requests_summary(self, req: Request) -> Response:
        q = query_params(req)
        start = parse_time(q.get("start"), "start")
        end = parse_time(q.get("end"), "end")
        offset = parse_int(q.get("offset"), "offset", 0, 0, 10**9)
        limit = parse_int(q.get("limit"), "limit", 0, 0, MAX_SUMMARY)
        result = await asyncio.to_thread(self.dashboard.summary, q.get("model", "all"), start, end, offset, limit)
        return json_response(result)

    async def api_latest_date(self, req: Request) -> Response:
        return json_response(await asyncio.to_thread(self.dashboard.latest_date))

    async def api_request(self, req: Request) -> Response:
        request_id = unquote(req.path.rstrip("/").rsplit("/", 1)[-1])
        return json_response(await asyncio.to_thread(self.dashboard.request, request_id))

    async def api_stats(self, req: Request) -> Response:
        q = query_params(req)
        start = parse_time(q.get("start_date") or q.get("start"), "start_date")
        end = parse_time(q.get("end_date") or q.get("end"), "end_date", end_of_day=True)
        result = await asyncio.to_thread(self.dashboard.stats, start, end, q.get("model"), q.get("org"))
        return json_response(result)

    async def api_stats_dashboard(self, req: Request) -> Response:
        q = query_params(req)
        start = parse_time(q.get("start"), "start")
        end = parse_time(q.get("end"), "end", end_of_day=True)
        return json_response(await asyncio.to_thread(self.dashboard.daily, start, end, q.get("org")))

    async def api_stats_hourly(self, req: Request) -> Response:
        q = query_params(req)
        start, end = required_range(q)
        bucket = parse_int(q.get("bucket"), "bucket", 60, 1, 1440)
        return json_response(await asyncio.to_thread(self.dashboard.hourly, start, end, bucket, q.get("org")))

    async def api_stats_models(self, req: Request) -> Response:
        q = query_params(req)
        start, end = required_range(q)
        return json_response(await asyncio.to_thread(self.dashboard.models, start, end, q.get("org")))

    async def api_organizations(self, req: Request) -> Response:
        return json_response(await asyncio.to_thread(self.dashboard.organizations))

    async def api_conversations(self, req: Request) -> Response:
        q = query_params(req)
        page = parse_int(q.get("page"), "page", 1, 1, 10**9)
        limit = parse_int(q.get("limit"), "limit", 10, 1, MAX_PAGE)
        return json_response(await asyncio.to_thread(self.conversations.list, q.get("model", "all"), page, limit))

    async def api_conversations_project(self, req: Request) -> Response:
        project = query_params(req).get("project")
        return json_response(await asyncio.to_thread(self.conversations.by_project, project))

    async def api_conversation(self, req: Request) -> Response:
        session_id = unquote(req.path.rstrip("/").rsplit("/", 1)[-1])
        project = query_params(req).get("project")
        return json_response(await asyncio.to_thread(self.conversations.get, session_id, project))

    async def api_get_settings(self, req: Request) -> Response:
        if self.store is not None:
            await self._reload_header_rules()
        return json_response(self.header_rules.to_json())

    async def api_put_settings(self, req: Request) -> Response:
        require_json(req)
        body = await req.body(1 << 20)
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise invalid_request(f"settings: not valid JSON: {exc}") from None
        candidate = HeaderRules()
        candidate.load(data)  # validates; 400 naming the field
        if self.store is not None:
            updated = await asyncio.to_thread(
                put_setting, self.settings.db_path, "header_rules", orjson.dumps(candidate.to_json()).decode()
            )
        else:
            updated = time.time()
        self.header_rules.request, self.header_rules.response = candidate.request, candidate.response
        self.header_rules.updated = updated
        return json_response(self.header_rules.to_json())

    async def openapi_json(self, req: Request) -> Response:
        return Response(200, orjson.dumps(openapi_spec()), [("access-control-allow-origin", "*")])

    async def openapi_yaml(self, req: Request) -> Response:
        return Response(
            200, to_yaml(openapi_spec()).encode(), [("access-control-allow-origin", "*")], "application/x-yaml"
        )

    async def dashboard_page(self, req: Request) -> Response:
        return static_file("dashboard.html")

    async def dashboard_asset(self, req: Request) -> Response:
        return static_file(req.path.rsplit("/", 1)[-1])

    def _upstream_names(self) -> list[str]:
        names = [DEFAULT_UPSTREAM] if self.settings.api_key is not None else []
        return names + [u.name for u in self.settings.upstreams]

    async def chat_completions(self, req: Request) -> Response:
        raise invalid_request(
            "this is an Anthropic Messages API proxy: POST /v1/messages instead of "
            "/v1/chat/completions (it translates to the OpenAI upstream itself)"
        )

    # --- logs -------------------------------------------------------------------------------

    def _describe_for_store(self, req: Request, parsed: Any, body: bytes, exchange: Exchange) -> None:
        exchange.endpoint = req.path
        exchange.user_agent = req.header("user-agent")
        exchange.message_count = len(parsed.messages)
        if exchange.session is not None:
            exchange.conversation = exchange.session
        else:  # no session id: the first message identifies a conversation across its turns
            exchange.conversation = conversation_hash(parsed.messages[0].content)
        if self.settings.log_bodies:
            exchange.request_body = self._loggable(body)

    def _loggable(self, body: bytes) -> str:
        cap = self.settings.log_body_max_bytes
        text = body[:cap].decode("utf-8", "replace")
        if len(body) > cap:
            text += f"… [{len(body) - cap} more bytes not stored]"
        return self.redact(text)

    def _store_row(self, exchange: Exchange, latency_ms: float) -> list[Any]:
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

    def log_request(self, exchange: Exchange, started: float) -> None:
        if self.store is not None:
            self.store.add_row(self._store_row(exchange, (time.perf_counter() - started) * 1000))
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
                    "cache": exchange.cache,
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


SETTINGS_POLL_SECONDS = 2.0


async def within(work: Awaitable[Any], seconds: float, message: str) -> Any:
    """``work``, or a 504 timeout_error envelope saying ``message`` once ``seconds`` passed."""
    try:
        async with asyncio.timeout(seconds):
            return await work
    except TimeoutError:
        raise ProxyError(504, message, "timeout_error") from None


def query_params(req: Request) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(req.query, keep_blank_values=True).items()}


def required_range(q: dict[str, str]) -> tuple[float, float]:
    start = parse_time(q.get("start"), "start")
    end = parse_time(q.get("end"), "end", end_of_day=True)
    if start is None or end is None:
        raise invalid_request("start and end: both required (ISO 8601 date-times)")
    if end <= start:
        raise invalid_request("end: must be after start")
    return start, end


def json_response(data: Any) -> Response:
    return Response(200, orjson.dumps(data))


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


def _now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


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


def configured_secrets(settings: Settings) -> list[str]:
    """Configured credentials that go upstream and must never be shown: upstream keys, Basic
    credentials from base URLs (the header value and the password itself), proxy credentials."""
    secrets = [settings.api_key, *(u.api_key for u in settings.upstreams)]
    for basic in (settings.base_url_auth, *(u.basic_auth for u in settings.upstreams)):
        if basic:
            encoded = basic.removeprefix("Basic ")
            secrets.append(encoded)
            with contextlib.suppress(ValueError, UnicodeDecodeError):
                secrets.append(base64.b64decode(encoded).decode().partition(":")[2])
    for proxy in (settings.egress.https_proxy, settings.egress.http_proxy):
        if proxy is not None and proxy.authorization:
            secrets.append(proxy.authorization.removeprefix("Basic "))
    return [s for s in secrets if s]


def create_app(settings: Settings, upstream: Upstream | None = None) -> ProxyApp:
    setup_logging(settings.log_level)
    return ProxyApp(settings, upstream)


def create_app_from_env() -> ProxyApp:
    """Granian's factory target: each worker builds its app from the environment."""
    return create_app(Settings.from_env())
