"""The application, composed: the parts of one worker, the route table, dispatch and the lifespan.

``create_app(settings)`` builds it; Granian loads ``create_app_from_env`` as a factory in each
worker process. The object speaks ASGI (``__call__``, the default) and RSGI (``__rsgi__``); the
interface plumbing is in ``serving.py``. Every response a client sees is either the success body
or an Anthropic error envelope with a ``request-id`` header; nothing escapes as a bare 500.

Where the work is done (docs/design.md walks one request through them):

* ``pipeline.py``: ``POST /v1/messages``, decode to record;
* ``anthropic_api.py``: count_tokens and the model list;
* ``upstream/registry.py``: the upstreams' adapters, breakers, limiters and retry budget;
* ``recording.py``: the request log; ``ops.py``: drain, health and metrics endpoints;
* ``dashboard_api.py``: the dashboard's page, its APIs and settings;
* ``access.py``: who may call what, checked here before any handler runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from random import getrandbits
from typing import Any

from . import pg, tokens
from .access import PROXY, SECURITY_HEADERS, Access, classify
from .anthropic_api import AnthropicApi
from .cache import ResponseCache
from .config import Settings
from .dashboard_api import DashboardApi
from .errors import ProxyError
from .headerrules import HeaderRules
from .headerrules import apply as apply_header_rules
from .logs import setup_logging
from .metrics import Metrics
from .ops import Drain, Ops
from .parent import watch_parent
from .pipeline import Messages
from .recording import Recorder
from .redact import Redactor
from .routing import Router, UpstreamOptions
from .serving import (
    ClientDisconnected,
    Request,
    Response,
    StreamResponse,
    asgi_lifespan,
    error_response,
    serve_asgi,
    serve_rsgi,
)
from .shared import CIRCUIT_SYNC, Shared, Unavailable
from .upstream.base import Upstream
from .upstream.registry import Upstreams

log = logging.getLogger("ccproxy.app")

Handler = Callable[[Request], Awaitable["Response | StreamResponse"]]
MESSAGE_PATHS = frozenset({"/v1/messages", "/anthropic/v1/messages"})


class ProxyApp:
    def __init__(self, settings: Settings, upstream: Upstream | None = None) -> None:
        """``upstream``: an adapter to use as the default upstream instead of the configured one."""
        self.settings = s = settings
        self.router = Router(
            s.big_model,
            s.small_model,
            s.reasoning_model_pattern,
            s.max_tokens_limit,
            UpstreamOptions(
                reasoning_style=s.reasoning_style,
                default_effort=s.reasoning_effort,
                prompt_cache_key=s.prompt_cache_key,
                schema_drop_keys=s.schema_drop_keys,
            ),
            rules=s.rules,
            upstreams=s.upstreams,
            context_window=s.context_window,
        )
        self.redact = Redactor(s.secrets())
        self.header_rules = HeaderRules()  # edited from the dashboard, read by every adapter
        # Redis for state several processes share (shared.py); None: each keeps its own
        self.shared = Shared(s.redis_url) if s.redis_url else None
        self.upstreams = Upstreams(s, self.redact, self.header_rules, self.shared, upstream)
        self.cache = (
            ResponseCache(s.cache_max_entries, s.cache_max_bytes, s.cache_ttl, self.shared) if s.cache else None
        )
        self.metrics = Metrics()
        self.drain = Drain(s.drain_dir)
        self.recorder = Recorder(s, self.redact)
        self.access = Access(s)
        self.messages = Messages(s, self.router, self.upstreams, self.cache, self.metrics, self.recorder, self.drain)
        self.api = AnthropicApi(s, self.router, self.upstreams)
        self.ops = Ops(self.drain, self.metrics, self.upstreams, self.cache, self.shared, self.recorder)
        self.dashboard = DashboardApi(s, self.header_rules, lambda: self.recorder.store is not None)
        self._tasks: list[asyncio.Task[None]] = []
        self._unwatch_parent: Callable[[], None] = lambda: None

        self.routes: dict[tuple[str, str], Handler] = {
            ("POST", "/v1/messages"): self.messages,
            ("POST", "/anthropic/v1/messages"): self.messages,
            ("POST", "/v1/messages/count_tokens"): self.api.count_tokens,
            ("POST", "/anthropic/v1/messages/count_tokens"): self.api.count_tokens,
            ("GET", "/v1/models"): self.api.models,
            ("POST", "/v1/chat/completions"): self.api.chat_completions,
            ("GET", "/"): self.ops.root,
            ("HEAD", "/"): self.ops.root,
            ("GET", "/health"): self.ops.health,
            ("HEAD", "/health"): self.ops.health,
            ("GET", "/livez"): self.ops.livez,
            ("GET", "/v1/metrics"): self.ops.metrics_json,
            ("GET", "/metrics"): self.ops.metrics_prometheus,
            ("GET", "/v1/cache/stats"): self.ops.cache_stats,
            ("POST", "/v1/cache/clear"): self.ops.cache_clear,
        }
        dashboard_routes, dashboard_prefixed = self.dashboard.routes()
        self.routes.update(dashboard_routes)
        # paths with an {id} part: (method, prefix) → handler
        self.prefix_routes: tuple[tuple[str, str, Handler], ...] = (
            *dashboard_prefixed,
            ("GET", "/v1/models/", self.api.model),
        )
        self._paths = {path for _, path in self.routes}
        self._kinds: dict[str, int] = {}  # path → access class (access.classify)

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

    # --- lifespan -----------------------------------------------------------------------------

    async def startup(self) -> None:
        s = self.settings
        loop = asyncio.get_running_loop()
        exposed = s.exposure_warning()
        if exposed:
            log.warning(exposed)
        await self.recorder.start()
        if self.recorder.store is not None:
            await self.dashboard.start()
        self.upstreams.start()  # the adapters' pools belong to the serving loop
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            # the ccproxy main process sends SIGUSR1 when it got SIGTERM (see cli.py)
            loop.add_signal_handler(signal.SIGUSR1, self.drain.start)
        if s.drain_dir is not None:  # started by the ccproxy command: end with it (parent.py)
            self._unwatch_parent = watch_parent(loop)
        if self.shared is not None:
            await self.shared.start()
            self._tasks.append(loop.create_task(self._follow_shared()))
        # Verify the shipped encoding now (a corrupt install fails at start); build it lazily on
        # the first count_tokens, since it costs ~25 MB per worker that many never need.
        await asyncio.to_thread(tokens.verify_encoding_file)

    async def _follow_shared(self) -> None:
        """Adopt the circuit states other processes pushed to Redis, and follow cache clears."""
        assert self.shared is not None
        while True:
            await asyncio.sleep(CIRCUIT_SYNC)
            if not self.shared.up:
                continue
            with contextlib.suppress(Unavailable):
                await self.upstreams.adopt_shared_circuits()
                if self.cache is not None:
                    await self.cache.follow_clears()

    async def shutdown(self) -> None:
        self._unwatch_parent()
        self.messages.waiting.close()
        for task in self._tasks:
            task.cancel()
        if self.shared is not None:
            await self.shared.close()
        self.dashboard.close()
        await self.upstreams.close()
        await self.recorder.close()

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
                handler = self._prefixed(req.method, path)
            self.access.check(req, path, kind)
            response = await handler(req)
            if self.header_rules.response and path in MESSAGE_PATHS:
                response = self._rewrite_response_headers(response)
        except ProxyError as exc:
            response = error_response(exc, req.request_id)
        except ClientDisconnected:
            return Response(499, b"")
        except pg.DB_ERRORS as exc:  # the request log's database failed (e.g. PostgreSQL restarting)
            log.warning("request log query failed in %s %s: %s", req.method, path, exc)
            unavailable = ProxyError(503, "the request log is unavailable right now; try again", "api_error")
            response = error_response(unavailable, req.request_id)
        except Exception as exc:  # a bug: report it as an envelope, never as a traceback page
            log.exception("unhandled error in %s %s", req.method, path)
            self.recorder.error(req.request_id, path, "api_error", f"internal error: {type(exc).__name__}")
            response = error_response(ProxyError(500, "internal proxy error", "api_error"), req.request_id)
        if kind > PROXY:  # dashboard, admin and metrics answers (a new list: never a shared one)
            response.headers = [*response.headers, *SECURITY_HEADERS]
        return response

    def _prefixed(self, method: str, path: str) -> Handler:
        for route_method, prefix, handler in self.prefix_routes:
            if path.startswith(prefix) and len(path) > len(prefix):
                if method != route_method:
                    raise ProxyError(405, f"method {method} is not allowed for {path}")
                return handler
        if path in self._paths:
            raise ProxyError(405, f"method {method} is not allowed for {path}")
        raise ProxyError(404, f"not found: {method} {path}", "not_found_error")

    def _rewrite_response_headers(self, response: Response | StreamResponse) -> Response | StreamResponse:
        headers = apply_header_rules(self.header_rules.response, response.headers)
        if isinstance(response, Response):  # never mutate: a cached Response is shared
            return Response(response.status, response.body, headers, response.content_type)
        response.headers = headers
        return response


def create_app(settings: Settings, upstream: Upstream | None = None) -> ProxyApp:
    setup_logging(settings.log_level)
    return ProxyApp(settings, upstream)


def create_app_from_env() -> ProxyApp:
    """Granian's factory target: each worker builds its app from the environment."""
    return create_app(Settings.from_env())
