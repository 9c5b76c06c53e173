"""The interface every upstream adapter implements, and the per-request record it fills."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..headerrules import HeaderRules
from ..routing import Route
from ..schemas.anthropic import MessagesRequest
from ..serving import Request, Response

# What a pass-through upstream may forward of the client's request (the key only when configured
# to; upstream/anthropic.py decides)
PASS_THROUGH_HEADERS = ("anthropic-version", "anthropic-beta", "x-api-key")


@dataclass(slots=True)
class Exchange:
    """What one request did, filled in as it goes; read by the request log and metrics."""

    request_id: str
    route: Route
    body_size: int
    stream: bool
    status: int = 200
    usage: dict[str, int] = field(default_factory=dict)
    stop_reason: str | None = None
    error_type: str | None = None
    error_message: str | None = None
    upstream_status: int | None = None
    client_headers: dict[str, str] = field(default_factory=dict)  # anthropic-* (+ x-api-key) for pass-through
    ratelimit: dict[str, str] = field(default_factory=dict)  # rate-limit headers an upstream reported
    relay_headers: list[tuple[str, str]] = field(default_factory=list)  # headers to add to a streamed reply
    session: str | None = None  # hash prefix of the client's session id, for correlation only
    query: str = ""  # the client's query string, forwarded by a pass-through
    tool_names: dict[str, str] = field(default_factory=dict)  # upstream → client tool names that differ
    cache: str | None = None  # response cache: "hit", "shared" (another request's call) or "miss"
    web_search: Any = None  # the request's web_search server tool, run by the proxy (chat_search.SearchPlan)
    # for the request store (store.py)
    endpoint: str = "/v1/messages"
    user_agent: str | None = None
    message_count: int = 0
    conversation: str | None = None  # hash prefix: the session id's, else the first message's
    request_body: str | None = None  # only with CCPROXY_LOG_BODIES, capped and redacted
    response_body: str | None = None

    def keep_client_side(self, req: Request) -> None:
        """Keep what a pass-through upstream forwards: the query string and anthropic-* headers."""
        self.query = req.query
        self.client_headers = {name: value for name in PASS_THROUGH_HEADERS if (value := req.header(name)) is not None}


class Upstream(Protocol):
    """One configured upstream: it turns a decoded Anthropic request into its own payload and
    its answers back into Anthropic responses or SSE bytes (through a translator)."""

    kind: str  # "chat" | "responses" | "anthropic"
    url: str
    header_rules: HeaderRules | None  # the dashboard's live header rules (set once, read per request)

    def prepare(self, req: MessagesRequest, body: bytes, exchange: Exchange) -> bytes:
        """The upstream request body (``body`` is the client's, for pass-through). Split from
        sending so the caller can let go of the decoded request (the largest thing a request
        holds) while it waits on the upstream."""
        ...

    async def count_tokens(self, body: bytes, exchange: Exchange) -> Response | None:
        """The upstream's own count of a count_tokens request, or None: count locally (only an
        Anthropic upstream has one). Raises ProxyError 502/504 when it cannot be reached."""
        ...

    def cache_scope(self, exchange: Exchange) -> str:
        """A short hash of what besides the body decides the answer (for the response cache)."""
        ...

    async def create(self, payload: bytes, exchange: Exchange) -> Response:
        """Non-streaming: the response to send (an Anthropic message), or raise ProxyError."""
        ...

    async def open_stream(self, payload: bytes, exchange: Exchange) -> AsyncIterator[bytes] | Response:
        """Streaming: returns once the upstream answered (or raises ProxyError): an iterator of
        Anthropic SSE bytes that ends with message_stop or an error event, or a whole Response
        when a pass-through upstream answered with an error."""
        ...

    async def close(self) -> None: ...
