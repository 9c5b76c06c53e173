"""``HttpClient`` on httpx: the fallback behind ``CCPROXY_HTTP_CLIENT=httpx``.

It holds the builtin client's limits against a hostile upstream: bodies are read raw and go
through the same ``BodyGuard`` (size, one event, bounded decompression, progress), the head
must arrive within the read timeout, h11 bounds the head's size (16 KB), and waiting for a
connection is bounded by the connect timeout; connections are not reused (see below). Proxies
and the CA bundle come from ``Egress`` (never from httpx's own reading of the environment).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping

import httpx

from ..errors import ProxyError
from .client import (
    BodyGuard,
    Limits,
    UpstreamReadError,
    UpstreamResponse,
    connection_lost,
    describe,
    read_timeout_error,
)
from .egress import NO_EGRESS, Egress, Proxy, without_userinfo


class _Response:
    __slots__ = ("_guard", "_loop", "_resp", "_url", "headers", "status")

    def __init__(self, resp: httpx.Response, url: str, guard: BodyGuard) -> None:
        self._resp = resp
        self._url = url
        self._guard = guard
        self._loop = asyncio.get_running_loop()
        self.status = resp.status_code
        self.headers = resp.headers

    async def read(self) -> bytes:
        try:
            parts = [chunk async for chunk in self.iter_bytes()]
        finally:
            await self._resp.aclose()
        return b"".join(parts)

    async def iter_bytes(self) -> AsyncIterator[bytes]:
        guard, loop = self._guard, self._loop
        try:
            async for chunk in self._resp.aiter_raw():
                data = guard.feed(chunk, loop.time())
                if data:
                    yield data
            guard.finish()
        except httpx.TimeoutException:
            raise read_timeout_error(self._url) from None
        except httpx.HTTPError as exc:
            raise connection_lost(exc) from None
        except UpstreamReadError:
            await self._resp.aclose()
            raise

    async def close(self) -> None:
        await self._resp.aclose()


class HttpxClient:
    def __init__(
        self,
        connect_timeout: float,
        read_timeout: float,
        max_connections: int,
        limits: Limits | None = None,
        egress: Egress = NO_EGRESS,
    ) -> None:
        self._timeout = httpx.Timeout(
            connect=connect_timeout, read=read_timeout, write=read_timeout, pool=connect_timeout
        )
        # No keep-alive: httpcore keeps bytes that arrive right behind a response (in the same
        # read) and hands them to the next request on that connection as its answer, so an
        # upstream could cross two requests' answers. The builtin client refuses such bytes; this
        # fallback pays a connection per request instead (tests/unit/test_http_hostile.py).
        self._limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=0)
        self.read_timeout = read_timeout
        self.limits = limits or Limits()
        self.egress = egress
        self._verify = egress.ssl_context()
        self._clients: dict[Proxy | None, httpx.AsyncClient] = {}

    def _client_for(self, url: httpx.URL) -> tuple[httpx.AsyncClient, Proxy | None]:
        proxy = self.egress.proxy_for(url.scheme, url.host, url.port or (443 if url.scheme == "https" else 80))
        client = self._clients.get(proxy)
        if client is None:
            route = None
            if proxy is not None:
                headers = {"proxy-authorization": proxy.authorization} if proxy.authorization else None
                route = httpx.Proxy(f"http://{proxy.address}", headers=headers)
            client = self._clients[proxy] = httpx.AsyncClient(
                timeout=self._timeout,
                limits=self._limits,
                follow_redirects=False,
                trust_env=False,  # proxies and CAs come from Egress (config.py), not httpx's own reading
                proxy=route,
                verify=self._verify,
            )
        return client, proxy

    async def send(self, url: str, headers: Mapping[str, str], body: bytes, method: str = "POST") -> UpstreamResponse:
        shown = without_userinfo(url)
        target = httpx.URL(url)
        if target.userinfo:
            target = target.copy_with(username=None, password=None)
        client, proxy = self._client_for(target)
        request = client.build_request(method, target, headers={**headers, "accept-encoding": "identity"}, content=body)
        try:
            async with asyncio.timeout(self.read_timeout):  # the whole head, however it trickles
                resp = await client.send(request, stream=True)
        except (httpx.TimeoutException, TimeoutError) as exc:
            phase = "connecting to" if isinstance(exc, (httpx.ConnectTimeout, httpx.PoolTimeout)) else "waiting for"
            raise ProxyError(504, f"timed out {phase} the upstream at {shown}", "timeout_error") from None
        except httpx.HTTPError as exc:
            via = f" through the proxy {proxy.address}" if proxy is not None else ""
            raise ProxyError(502, f"cannot reach the upstream at {shown}{via}: {describe(exc)}", "api_error") from None
        origin = f"{target.scheme}://{target.netloc.decode('latin-1')}"
        guard = BodyGuard(resp.headers, self.limits, self.read_timeout, origin, asyncio.get_running_loop().time())
        return _Response(resp, shown, guard)

    async def close(self) -> None:
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()
