"""``HttpClient`` on aiohttp (the fastest third-party option measured; docs/benchmarks.md)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping

import aiohttp

from ..errors import ProxyError
from .client import UpstreamResponse, connection_lost, describe, read_timeout_error


class _Response:
    __slots__ = ("_resp", "_url", "headers", "status")

    def __init__(self, resp: aiohttp.ClientResponse, url: str) -> None:
        self._resp = resp
        self._url = url
        self.status = resp.status
        self.headers = resp.headers  # case-insensitive

    async def read(self) -> bytes:
        try:
            return await self._resp.read()
        except (TimeoutError, aiohttp.ServerTimeoutError):
            raise read_timeout_error(self._url) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise connection_lost(exc) from None
        finally:
            self._resp.release()

    async def iter_bytes(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._resp.content.iter_any():
                yield chunk
        except (TimeoutError, aiohttp.ServerTimeoutError):
            raise read_timeout_error(self._url) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise connection_lost(exc) from None

    async def close(self) -> None:
        # A fully read body returns the connection to the pool; anything else closes it,
        # so an abandoned stream never leaves unread bytes on a pooled connection.
        if self._resp.content.is_eof():
            self._resp.release()
        else:
            self._resp.close()


class AiohttpClient:
    def __init__(self, connect_timeout: float, read_timeout: float, max_connections: int) -> None:
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    def _new_session(self) -> aiohttp.ClientSession:
        # Built on first use so it binds to the serving event loop.
        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self._max_connections, keepalive_timeout=60, ttl_dns_cache=300),
            timeout=aiohttp.ClientTimeout(total=None, connect=self._connect_timeout, sock_read=self._read_timeout),
            trust_env=False,
            skip_auto_headers=("User-Agent",),
        )

    async def send(self, url: str, headers: Mapping[str, str], body: bytes) -> UpstreamResponse:
        session = self._session
        if session is None:
            session = self._session = self._new_session()
        try:
            resp = await session.post(url, data=body, headers=headers, allow_redirects=False)
        except (TimeoutError, aiohttp.ServerTimeoutError):
            raise ProxyError(504, f"timed out waiting for the upstream at {url}", "timeout_error") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise ProxyError(502, f"cannot reach the upstream at {url}: {describe(exc)}", "api_error") from None
        return _Response(resp, url)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
