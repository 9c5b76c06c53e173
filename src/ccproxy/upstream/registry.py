"""The configured upstreams of one worker and what it keeps per upstream: its adapter (with its
HTTP client's pool), circuit breaker and rate limiter; and the retry policy and budget they share.

Adapters are created inside the serving loop (their pools belong to it): at startup for every
configured upstream, or on first use. Circuits follow the other processes' through Redis when
``REDIS_URL`` is set (``adopt_shared_circuits``).
"""

from __future__ import annotations

from typing import Any

from ..config import Settings
from ..errors import ProxyError
from ..headerrules import HeaderRules
from ..ratelimit import RateLimiter
from ..redact import Redactor
from ..resilience import CircuitBreaker, RetryBudget, RetryPolicy
from ..routing import DEFAULT_UPSTREAM, UpstreamOptions
from ..shared import Shared
from ..websearch import Engine, create_engine
from .anthropic import AnthropicUpstream
from .base import Upstream
from .chat import ChatUpstream
from .client import CLIENTS, HttpClient, Limits
from .egress import NO_EGRESS, Egress
from .http_builtin import BuiltinClient
from .responses import ResponsesUpstream


class Upstreams:
    def __init__(
        self,
        settings: Settings,
        redact: Redactor,
        header_rules: HeaderRules,
        shared: Shared | None,
        default: Upstream | None = None,
    ) -> None:
        self.settings = settings
        self.redact = redact
        self.header_rules = header_rules
        self.shared = shared
        self.names = ([DEFAULT_UPSTREAM] if settings.api_key is not None else []) + [u.name for u in settings.upstreams]
        self._adapters: dict[str, Upstream] = {DEFAULT_UPSTREAM: default} if default is not None else {}
        self.breakers: dict[str, CircuitBreaker] = {}
        self.limiters: dict[str, RateLimiter] = {}
        if settings.rpm or settings.tpm:
            for name in self.names:
                self.limiters[name] = RateLimiter(
                    settings.rpm, settings.tpm, settings.rate_queue, settings.rate_max_wait, shared=shared, name=name
                )
        self.retry_policy = RetryPolicy(
            settings.max_retries, settings.retry_base_delay, settings.retry_max_delay, settings.retry_max_after
        )
        self.retry_budget = RetryBudget(settings.retry_budget)
        self._search: Engine | None = None  # the web search engine the Chat adapters share

    def start(self) -> None:
        """Create every configured adapter (call inside the serving loop)."""
        for name in self.names:
            self.adapter(name)

    async def close(self) -> None:
        for adapter in self._adapters.values():
            await adapter.close()
        if self._search is not None:
            await self._search.client.close()

    def search_engine(self) -> Engine | None:
        """The engine that runs web_search for upstreams without one (created on first use)."""
        if self._search is None:
            s = self.settings
            client = create_client(
                s.http_client, s.connect_timeout, 30.0, limits=Limits.for_responses(4 << 20), egress=s.egress
            )
            self._search = create_engine(s.web_search, client)
        return self._search

    def adapter(self, name: str) -> Upstream:
        """The adapter of a named upstream, created on first use inside the serving loop."""
        adapter = self._adapters.get(name)
        if adapter is None:
            adapter = self._adapters[name] = self._create(name)
        return adapter

    def _create(self, name: str) -> Upstream:
        s = self.settings
        client = create_client(
            s.http_client,
            s.connect_timeout,
            s.read_timeout,
            limits=Limits.for_responses(s.max_response_bytes),
            egress=s.egress,
        )
        adapter: Upstream
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
                search=self.search_engine(),
                provider_search=self._searches_itself(s.base_url),
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
                    search=None if config.options.web_search == "off" else self.search_engine(),
                    provider_search=config.kind == "chat" and self._searches_itself(config.base_url, config.options),
                )
        adapter.header_rules = self.header_rules
        return adapter

    def _searches_itself(self, base_url: str, options: UpstreamOptions | None = None) -> bool:
        """Whether a Chat upstream searches by itself (OpenRouter's web plugin): the routing file
        says "plugin", or, with "auto" (and CCPROXY_WEB_SEARCH=auto), it is OpenRouter. Responses
        upstreams always use their own web_search tool."""
        mode = options.web_search if options is not None else "auto"
        if mode == "plugin":
            return True
        return mode == "auto" and self.settings.web_search.mode == "auto" and "openrouter.ai" in base_url

    def breaker(self, name: str) -> CircuitBreaker:
        breaker = self.breakers.get(name)
        if breaker is None:
            s = self.settings
            breaker = self.breakers[name] = CircuitBreaker(s.circuit_threshold, s.circuit_cooldown)
            shared = self.shared
            if shared is not None:
                breaker.on_record = lambda fault: shared.circuit_push(
                    name, fault, s.circuit_threshold, s.circuit_cooldown
                )
        return breaker

    async def adopt_shared_circuits(self) -> None:
        """Take over the circuit states other processes pushed to Redis (raises Unavailable)."""
        assert self.shared is not None
        for name, (failures, open_for) in (await self.shared.circuit_states(self.names)).items():
            self.breaker(name).adopt(failures, open_for)

    def snapshot(self) -> dict[str, Any]:
        """Per upstream: its circuit and rate limit (for /v1/metrics)."""
        return {
            name: {
                "circuit": self.breaker(name).snapshot(),
                **({"rate_limit": self.limiters[name].snapshot()} if name in self.limiters else {}),
            }
            for name in self.names
        }


def create_client(
    kind: str,
    connect_timeout: float,
    read_timeout: float,
    max_connections: int = 512,
    limits: Limits | None = None,
    egress: Egress = NO_EGRESS,
) -> HttpClient:
    """A pooled client of the kind CCPROXY_HTTP_CLIENT names (upstream/client.py has the interface)."""
    limits = limits or Limits()
    if kind == "builtin":
        return BuiltinClient(connect_timeout, read_timeout, max_connections, limits, egress)
    if kind == "httpx":
        from .http_httpx import HttpxClient  # (only when chosen: it imports httpx)

        return HttpxClient(connect_timeout, read_timeout, max_connections, limits, egress)
    raise ValueError(f"unknown HTTP client {kind!r}; choose one of {', '.join(CLIENTS)}")
