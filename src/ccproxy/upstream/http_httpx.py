"""``HttpClient`` on httpx (HTTP/1.1, or HTTP/2 with ``http2=True`` where the upstream offers it)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping

import httpx

from ..errors import ProxyError
from .client import UpstreamResponse, connection_lost, describe, read_timeout_error


class _Response:
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
            raise read_timeout_error(self._url) from None
        except httpx.HTTPError as exc:
            raise connection_lost(exc) from None
        finally:
            await self._resp.aclose()

    async def iter_bytes(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._resp.aiter_bytes():
                yield chunk
        except httpx.TimeoutException:
            raise read_timeout_error(self._url) from None
        except httpx.HTTPError as exc:
            raise connection_lost(exc) from None

    async def close(self) -> None:
        await self._resp.aclose()


class HttpxClient:
    def __init__(self, connect_timeout: float, read_timeout: float, max_connections: int, http2: bool = False) -> None:
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(connect=connect_timeout, read=read_timeout, write=read_timeout, pool=connect_timeout),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            follow_redirects=False,
            trust_env=False,  # the upstream is configured explicitly; ignore *_PROXY surprises
            http2=http2,
        )

    async def send(self, url: str, headers: Mapping[str, str], body: bytes) -> UpstreamResponse:
        request = self._client.build_request("POST", url, headers=headers, content=body)
        try:
            resp = await self._client.send(request, stream=True)
        except httpx.TimeoutException as exc:
            phase = "connecting to" if isinstance(exc, (httpx.ConnectTimeout, httpx.PoolTimeout)) else "waiting for"
            raise ProxyError(504, f"timed out {phase} the upstream at {url}", "timeout_error") from None
        except httpx.HTTPError as exc:
            raise ProxyError(502, f"cannot reach the upstream at {url}: {describe(exc)}", "api_error") from None
        return _Response(resp, url)

    async def close(self) -> None:
        await self._client.aclose()
