"""The pooled HTTP client behind a small interface, so implementations can be swapped.

Adapters use only ``HttpClient.send`` and the ``UpstreamResponse`` it returns. Transport
failures come out as ``ProxyError`` (before any byte reached the client) or, while a body is
being read, as ``UpstreamReadError``; adapters never see a library's exceptions.

Implementations (``CCPROXY_HTTP_CLIENT``), chosen by measurement (docs/benchmarks.md):
``builtin`` (default: our own HTTP/1.1 client, ``http_builtin.py``), ``aiohttp``, ``httpx``,
``httpx-http2``, ``pyreqwest``. Each lives in its own module and imports its library only when
selected.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Protocol

from ..errors import ProxyError

CLIENTS = ("builtin", "aiohttp", "httpx", "httpx-http2", "pyreqwest")
DEFAULT_CLIENT = "builtin"


class UpstreamReadError(Exception):
    """The upstream connection failed or stalled while its body was being read."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message


class UpstreamResponse(Protocol):
    status: int
    headers: Mapping[str, str]  # lookups by lower-case name

    async def read(self) -> bytes: ...

    def iter_bytes(self) -> AsyncIterator[bytes]: ...

    async def close(self) -> None: ...


class HttpClient(Protocol):
    async def send(self, url: str, headers: Mapping[str, str], body: bytes) -> UpstreamResponse:
        """POST ``body``; returns once the status line and headers arrived."""
        ...

    async def close(self) -> None: ...


def read_failure(exc: UpstreamReadError) -> ProxyError:
    """A body that broke off before the answer was whole: 504 after a timeout, else 502."""
    return ProxyError(504 if exc.error_type == "timeout_error" else 502, exc.message)


def read_timeout_error(url: str) -> UpstreamReadError:
    return UpstreamReadError("timeout_error", f"upstream {url} stopped sending (read timeout)")


def connection_lost(exc: BaseException) -> UpstreamReadError:
    return UpstreamReadError("api_error", f"upstream connection lost: {describe(exc)}")


def describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def create_client(kind: str, connect_timeout: float, read_timeout: float, max_connections: int = 512) -> HttpClient:
    if kind == "builtin":
        from .http_builtin import BuiltinClient

        return BuiltinClient(connect_timeout, read_timeout, max_connections)
    if kind == "aiohttp":
        from .http_aiohttp import AiohttpClient

        return AiohttpClient(connect_timeout, read_timeout, max_connections)
    if kind in ("httpx", "httpx-http2"):
        from .http_httpx import HttpxClient

        return HttpxClient(connect_timeout, read_timeout, max_connections, http2=kind == "httpx-http2")
    if kind == "pyreqwest":
        from .http_pyreqwest import PyreqwestClient

        return PyreqwestClient(connect_timeout, read_timeout, max_connections)
    raise ValueError(f"unknown HTTP client {kind!r}; choose one of {', '.join(CLIENTS)}")
