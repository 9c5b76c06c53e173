"""The interface every upstream adapter implements, and the per-request record it fills."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..routing import Route
from ..schemas.anthropic import MessagesRequest


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


class Upstream(Protocol):
    kind: str
    url: str

    def prepare(self, req: MessagesRequest, exchange: Exchange) -> bytes:
        """The upstream request body. Split from sending so the caller can let go of the
        decoded request (the largest thing a request holds) while it waits on the upstream."""
        ...

    async def create(self, payload: bytes, exchange: Exchange) -> dict[str, Any]:
        """Non-streaming: the Anthropic message, or raise ProxyError."""
        ...

    async def open_stream(self, payload: bytes, exchange: Exchange) -> AsyncIterator[bytes]:
        """Streaming: returns once the upstream accepted the request (or raises ProxyError);
        the iterator yields Anthropic SSE bytes and ends with message_stop or an error event."""
        ...

    async def close(self) -> None: ...
