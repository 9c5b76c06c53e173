"""The pooled HTTP client behind a small interface, so another implementation can be swapped in.

Adapters use only ``HttpClient.send`` and the ``UpstreamResponse`` it returns. Transport
failures come out as ``ProxyError`` (before any byte reached the client) or, while a body is
being read, as ``UpstreamReadError``; adapters never see httpx exceptions.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Protocol

import httpx

from ..errors import ProxyError


class UpstreamReadError(Exception):
    """The upstream connection failed or stalled while its body was being read."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message


class UpstreamResponse(Protocol):
    status: int
    headers: Mapping[str, str]

    async def read(self) -> bytes: ...

    def iter_bytes(self) -> AsyncIterator[bytes]: ...

    async def close(self) -> None: ...


class HttpClient(Protocol):
    async def send(self, url: str, headers: Mapping[str, str], body: bytes) -> UpstreamResponse:
        """POST ``body``; returns once the status line and headers arrived."""
        ...

    async def close(self) -> None: ...


class _HttpxResponse:
    __slots__ = ("_resp", "_url", "headers", "status")

    def __init__(self, resp: httpx.Response, url: str) -> None:
        self._resp = resp
        self._url = url
        self.status = resp.status_code
        self.headers = resp.headers

    async def read(self) -> bytes:
        try:
            return await self._resp.aread()
        except httpx.TimeoutException:
            raise UpstreamReadError("timeout_error", f"upstream {self._url} stopped sending (read timeout)") from None
        except httpx.HTTPError as exc:
            raise UpstreamReadError("api_error", f"upstream connection lost: {_describe(exc)}") from None
        finally:
            await self._resp.aclose()

    async def iter_bytes(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._resp.aiter_bytes():
                yield chunk
        except httpx.TimeoutException:
            raise UpstreamReadError("timeout_error", f"upstream {self._url} stopped sending (read timeout)") from None
        except httpx.HTTPError as exc:
            raise UpstreamReadError("api_error", f"upstream connection lost: {_describe(exc)}") from None

    async def close(self) -> None:
        await self._resp.aclose()


class HttpxClient:
    """httpx.AsyncClient with one keep-alive pool per process (HTTP/1.1)."""

    def __init__(self, connect_timeout: float, read_timeout: float, max_connections: int = 512) -> None:
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(connect=connect_timeout, read=read_timeout, write=read_timeout, pool=connect_timeout),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections // 2),
            follow_redirects=False,
            trust_env=False,  # the upstream is configured explicitly; ignore *_PROXY env surprises
        )

    async def send(self, url: str, headers: Mapping[str, str], body: bytes) -> UpstreamResponse:
        request = self._client.build_request("POST", url, headers=headers, content=body)
        try:
            resp = await self._client.send(request, stream=True)
        except httpx.TimeoutException as exc:
            phase = "connecting to" if isinstance(exc, (httpx.ConnectTimeout, httpx.PoolTimeout)) else "waiting for"
            raise ProxyError(504, f"timed out {phase} the upstream at {url}", "timeout_error") from None
        except httpx.HTTPError as exc:
            raise ProxyError(502, f"cannot reach the upstream at {url}: {_describe(exc)}", "api_error") from None
        return _HttpxResponse(resp, url)

    async def close(self) -> None:
        await self._client.aclose()


def _describe(exc: Exception) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
