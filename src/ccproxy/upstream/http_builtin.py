"""``HttpClient`` of our own: HTTP/1.1 over asyncio protocols with llhttp (httptools) parsing.

Why: under load the generic clients spent more CPU on a request than the whole rest of the proxy
(aiohttp ~40 % of a request, httpx collapses at c≥32; docs/benchmarks.md). A proxy talks to one
upstream with a fixed set of headers, so most of that work can be done once:

* the request head (method, path, host and the adapter's headers) is built once per header set;
  a request is one vectored write of head + body;
* one ``asyncio.Protocol`` per connection feeds llhttp; body chunks are queued for the reader,
  and reading from the socket pauses above ``HIGH_WATER`` bytes, so a slow consumer never makes
  us buffer a whole upstream stream;
* one idle timer per connection (not a task per read) enforces the read timeout, which is paused
  while the consumer, not the upstream, is the slow side;
* connections return to a LIFO pool when a response completes with keep-alive; an abandoned
  response aborts its connection, so the upstream stops generating;
* a request that fails on a *reused* connection before any response byte arrived (the server
  closed it while idle) is retried once on a new connection; nothing else is retried here.
"""

from __future__ import annotations

import asyncio
import ssl
import zlib
from collections import deque
from collections.abc import AsyncIterator, Mapping
from urllib.parse import urlsplit

import httptools

from ..errors import ProxyError
from .client import UpstreamReadError, UpstreamResponse, connection_lost, describe, read_timeout_error

HIGH_WATER = 256 * 1024  # buffered body bytes at which reading from the socket pauses
LOW_WATER = 64 * 1024
IDLE_KEEP = 30.0  # seconds an idle pooled connection is kept


class _Retry(Exception):
    """A reused connection died before the response started: safe to send again."""


class _Response:
    __slots__ = ("_chunks", "_conn", "_decoder", "_done", "_error", "_waiter", "buffered", "headers", "status")

    def __init__(self, conn: _Connection, status: int, headers: dict[str, str]) -> None:
        self._conn = conn
        self.status = status
        self.headers = headers
        self._chunks: deque[bytes] = deque()
        self.buffered = 0
        self._done = False
        self._error: UpstreamReadError | None = None
        self._waiter: asyncio.Future[None] | None = None
        encoding = headers.get("content-encoding", "").lower()
        self._decoder = (
            zlib.decompressobj(16 + zlib.MAX_WBITS if encoding == "gzip" else -zlib.MAX_WBITS)
            if encoding in ("gzip", "deflate")
            else None
        )

    # called by the connection
    def feed(self, data: bytes) -> None:
        if self._decoder is not None:
            data = self._decoder.decompress(data)
            if not data:
                return
        self._chunks.append(data)
        self.buffered += len(data)
        if self.buffered > HIGH_WATER:
            self._conn.pause()
        self._wake()

    def finish(self) -> None:
        self._done = True
        self._wake()

    def fail(self, error: UpstreamReadError) -> None:
        if not self._done:
            self._error = error
            self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # used by adapters
    async def iter_bytes(self) -> AsyncIterator[bytes]:
        while True:
            if self._chunks:
                chunks = self._chunks
                data = chunks.popleft() if len(chunks) == 1 else b"".join(chunks)
                chunks.clear()
                self.buffered = 0
                self._conn.resume()
                yield data
            elif self._done:
                return
            elif self._error is not None:
                raise self._error
            else:
                self._waiter = asyncio.get_running_loop().create_future()
                await self._waiter
                self._waiter = None

    async def read(self) -> bytes:
        parts = [chunk async for chunk in self.iter_bytes()]
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def close(self) -> None:
        if not self._done:
            self._conn.abort()  # the rest is unwanted: stop the upstream instead of draining it


class _Connection(asyncio.Protocol):
    def __init__(self, pool: _Pool) -> None:
        self.pool = pool
        self.loop = pool.loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.reused = False
        self.paused = False
        self.idle_since = 0.0
        self.last_data = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.head_waiter: asyncio.Future[_Response] | None = None
        self.response: _Response | None = None
        self.header_list: list[tuple[bytes, bytes]] = []
        self.got_bytes = False
        self.informational = False

    # --- asyncio.Protocol ---
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        self.last_data = self.loop.time()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(connection_lost(exc))
            self.abort()

    def eof_received(self) -> bool:
        response = self.response
        if (
            response is not None
            and response.headers.get("transfer-encoding") is None
            and "content-length" not in response.headers
            and self.head_waiter is None
        ):
            response.finish()  # a body delimited by the connection closing
            self.response = None
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._stop_timer()
        if self.head_waiter is not None or self.response is not None:
            reason = exc or ConnectionResetError("upstream closed the connection")
            if self.head_waiter is not None and self.reused and not self.got_bytes:
                self._fail(_Retry())
            else:
                self._fail(connection_lost(reason))
        self.pool.forget(self)

    # --- llhttp callbacks ---
    def on_header(self, name: bytes, value: bytes) -> None:
        self.header_list.append((name, value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if status < 200:  # 100 Continue / 103 Early Hints: the real answer follows
            self.header_list = []
            self.informational = True
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in self.header_list}
        self.header_list = []
        self.response = _Response(self, status, headers)
        waiter, self.head_waiter = self.head_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(self.response)

    def on_body(self, body: bytes) -> None:
        if self.response is not None:
            self.response.feed(body)

    def on_message_complete(self) -> None:
        if self.informational:
            self.informational = False
            return
        response, self.response = self.response, None
        keep_alive = self.parser.should_keep_alive()
        self._stop_timer()
        if response is not None:
            response.finish()
        if keep_alive and not self.closed:
            self.pool.release(self)
        else:
            self.abort()

    # --- requests ---
    def start(self, head: bytes, body: bytes, read_timeout: float) -> asyncio.Future[_Response]:
        self.got_bytes = False
        self.head_waiter = self.loop.create_future()
        self.last_data = self.loop.time()
        self.timer = self.loop.call_later(read_timeout, self._check_idle, read_timeout)
        assert self.transport is not None
        self.transport.writelines((head, body))
        return self.head_waiter

    def _check_idle(self, timeout: float) -> None:
        if self.head_waiter is None and self.response is None:
            self.timer = None
            return
        idle = self.loop.time() - self.last_data
        if self.paused or idle < timeout:  # a paused read means the consumer is the slow side
            self.timer = self.loop.call_later(timeout - idle if not self.paused else timeout, self._check_idle, timeout)
            return
        self.timer = None
        self._fail(read_timeout_error(self.pool.origin))
        self.abort()

    def _stop_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _fail(self, error: Exception) -> None:
        waiter, self.head_waiter = self.head_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)
        response, self.response = self.response, None
        if response is not None and isinstance(error, UpstreamReadError):
            response.fail(error)

    def pause(self) -> None:
        if not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self.paused and self.transport is not None and not self.closed:
            self.paused = False
            self.last_data = self.loop.time()
            self.transport.resume_reading()

    def abort(self) -> None:
        self.closed = True
        self._stop_timer()
        if self.transport is not None:
            self.transport.abort()


class _Pool:
    """Connections to one origin: idle ones LIFO, a cap on how many exist."""

    def __init__(self, url: str, connect_timeout: float, limit: int) -> None:
        parts = urlsplit(url)
        self.origin = f"{parts.scheme}://{parts.netloc}"
        self.host = parts.hostname or "localhost"
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.ssl = ssl.create_default_context() if parts.scheme == "https" else None
        self.connect_timeout = connect_timeout
        self.limit = limit
        self.loop = asyncio.get_running_loop()
        self.idle: list[_Connection] = []
        self.count = 0
        self.waiters: deque[asyncio.Future[None]] = deque()

    async def acquire(self) -> _Connection:
        now = self.loop.time()
        while self.idle:
            conn = self.idle.pop()
            if not conn.closed and now - conn.idle_since < IDLE_KEEP:
                conn.reused = True
                return conn
            conn.abort()
        while self.count >= self.limit:
            waiter = self.loop.create_future()
            self.waiters.append(waiter)
            await waiter
            if self.idle:
                return await self.acquire()
        self.count += 1
        try:
            _, conn = await asyncio.wait_for(
                self.loop.create_connection(
                    lambda: _Connection(self),
                    self.host,
                    self.port,
                    ssl=self.ssl,
                    server_hostname=self.host if self.ssl else None,
                ),
                self.connect_timeout,
            )
        except BaseException:
            self.count -= 1
            self._wake_one()
            raise
        return conn

    def release(self, conn: _Connection) -> None:
        conn.idle_since = self.loop.time()
        self.idle.append(conn)
        self._wake_one()

    def forget(self, conn: _Connection) -> None:
        if conn in self.idle:
            self.idle.remove(conn)
        self.count -= 1
        self._wake_one()

    def _wake_one(self) -> None:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def close(self) -> None:
        for conn in self.idle:
            conn.abort()
        self.idle.clear()


class BuiltinClient:
    def __init__(self, connect_timeout: float, read_timeout: float, max_connections: int) -> None:
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.max_connections = max_connections
        self._pools: dict[str, _Pool] = {}
        self._heads: dict[tuple[str, int], tuple[Mapping[str, str], bytes]] = {}

    def _head(self, url: str, headers: Mapping[str, str]) -> bytes:
        key = (url, id(headers))
        cached = self._heads.get(key)
        if cached is not None and cached[0] is headers:
            return cached[1]
        parts = urlsplit(url)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        lines = [f"POST {path} HTTP/1.1", f"host: {parts.netloc}", "accept-encoding: identity"]
        lines += [f"{k}: {v}" for k, v in headers.items() if k.lower() not in ("host", "content-length")]
        head = ("\r\n".join(lines) + "\r\ncontent-length: ").encode("latin-1")
        if len(self._heads) < 64:  # adapters reuse one headers object per upstream
            self._heads[key] = (headers, head)
        return head

    async def send(self, url: str, headers: Mapping[str, str], body: bytes) -> UpstreamResponse:
        origin_key = url.split("/", 3)[2] if "://" in url else url
        pool = self._pools.get(origin_key)
        if pool is None:
            pool = self._pools[origin_key] = _Pool(url, self.connect_timeout, self.max_connections)
        head = self._head(url, headers) + str(len(body)).encode() + b"\r\n\r\n"
        for attempt in (1, 2):
            try:
                conn = await pool.acquire()
            except TimeoutError:
                raise ProxyError(504, f"timed out connecting to the upstream at {url}", "timeout_error") from None
            except OSError as exc:
                raise ProxyError(502, f"cannot reach the upstream at {url}: {describe(exc)}", "api_error") from None
            try:
                return await conn.start(head, body, self.read_timeout)
            except _Retry:
                if attempt == 2:
                    break
            except UpstreamReadError as exc:
                if exc.error_type == "timeout_error":
                    raise ProxyError(504, f"timed out waiting for the upstream at {url}", "timeout_error") from None
                raise ProxyError(502, f"upstream {url} failed before answering: {exc.message}", "api_error") from None
            except asyncio.CancelledError:
                conn.abort()
                raise
        raise ProxyError(502, f"upstream {url} closed the connection before answering", "api_error")

    async def close(self) -> None:
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()
