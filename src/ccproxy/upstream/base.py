"""The interface every upstream adapter implements, and the per-request record it fills."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol

from ..routing import Route
from ..schemas.anthropic import MessagesRequest
from ..serving import Response


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
    # for the request store (store.py)
    endpoint: str = "/v1/messages"
    user_agent: str | None = None
    message_count: int = 0
    conversation: str | None = None  # hash prefix: the session id's, else the first message's
    request_body: str | None = None  # only with CCPROXY_LOG_BODIES, capped and redacted
    response_body: str | None = None


class Upstream(Protocol):
    kind: str
    url: str

    def prepare(self, req: MessagesRequest, body: bytes, exchange: Exchange) -> bytes:
        """The upstream request body (``body`` is the client's, for pass-through). Split from
        sending so the caller can let go of the decoded request (the largest thing a request
        holds) while it waits on the upstream."""
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
