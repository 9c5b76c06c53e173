"""``HttpClient`` on pyreqwest (Rust reqwest/hyper behind a Python API)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from datetime import timedelta
from typing import Any

from pyreqwest.client import ClientBuilder
from pyreqwest.exceptions import ConnectError, ConnectTimeoutError, PyreqwestError, RequestTimeoutError

from ..errors import ProxyError
from .client import UpstreamResponse, connection_lost, describe, read_timeout_error


class _Headers(Mapping[str, str]):
    __slots__ = ("_resp",)

    def __init__(self, resp: Any) -> None:
        self._resp = resp

    def __getitem__(self, key: str) -> str:
        value = self._resp.get_header(key)
        if value is None:
            raise KeyError(key)
        return value

    def get(self, key: str, default: Any = None) -> Any:
        value = self._resp.get_header(key)
        return default if value is None else value

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(dict(self._resp.headers.items()))

    def __len__(self) -> int:
        return len(self._resp.headers)


class _Response:
    __slots__ = ("_request", "_resp", "_url", "headers", "status")

    def __init__(self, request: Any, resp: Any, url: str) -> None:
        self._request = request
        self._resp = resp
        self._url = url
        self.status = resp.status
        self.headers = _Headers(resp)

    async def read(self) -> bytes:
        try:
            return (await self._resp.bytes()).to_bytes()
        except RequestTimeoutError:
            raise read_timeout_error(self._url) from None
        except PyreqwestError as exc:
            raise connection_lost(exc) from None
        finally:
            await self.close()

    async def iter_bytes(self) -> AsyncIterator[bytes]:
        reader = self._resp.body_reader
        try:
            while (chunk := await reader.read_chunk()) is not None:
                yield chunk.to_bytes()
        except RequestTimeoutError:
            raise read_timeout_error(self._url) from None
        except PyreqwestError as exc:
            raise connection_lost(exc) from None

    async def close(self) -> None:
        if self._request is not None:
            request, self._request = self._request, None
            await request.__aexit__(None, None, None)


class PyreqwestClient:
    def __init__(self, connect_timeout: float, read_timeout: float, max_connections: int) -> None:
        self._client = (
            ClientBuilder()
            .connect_timeout(timedelta(seconds=connect_timeout))
            .read_timeout(timedelta(seconds=read_timeout))
            .max_connections(max_connections)
            .follow_redirects(False)
            .no_proxy()
            .build()
        )

    async def send(self, url: str, headers: Mapping[str, str], body: bytes) -> UpstreamResponse:
        # Without a tiny read-buffer limit, pyreqwest buffers a streamed body before returning
        # (seconds of added TTFB for SSE) and keeps draining a body it was told to close.
        request = (
            self._client.post(url)
            .headers(dict(headers))
            .body_bytes(body)
            .streamed_read_buffer_limit(1)
            .build_streamed()
        )
        try:
            resp = await request.__aenter__()
        except ConnectTimeoutError:
            raise ProxyError(504, f"timed out connecting to the upstream at {url}", "timeout_error") from None
        except RequestTimeoutError:
            raise ProxyError(504, f"timed out waiting for the upstream at {url}", "timeout_error") from None
        except ConnectError as exc:
            raise ProxyError(502, f"cannot reach the upstream at {url}: {describe(exc)}", "api_error") from None
        except PyreqwestError as exc:
            raise ProxyError(502, f"upstream request to {url} failed: {describe(exc)}", "api_error") from None
        return _Response(request, resp, url)

    async def close(self) -> None:
        await self._client.close()
