"""``HttpClient`` of our own: HTTP/1.1 over asyncio protocols with llhttp (httptools) parsing.

Why: under load the generic clients spent more CPU on a request than the whole rest of the proxy
(aiohttp ~40 % of a request, httpx collapses at c≥32; docs/benchmarks.md). A proxy talks to one
upstream with a fixed set of headers, so most of that work can be done once:

* the request head (method, path, host and the adapter's headers) is built once per header set;
  a request is one vectored write of head + body;
* one ``asyncio.Protocol`` per connection feeds llhttp; body chunks are queued for the reader,
  and reading from the socket pauses above ``HIGH_WATER`` bytes, so a slow consumer never makes
  us buffer a whole upstream stream;
* one timer per connection (not a task per read) enforces the read timeout, which is paused
  while the consumer, not the upstream, is the slow side;
* connections return to a LIFO pool when a response completes with keep-alive; an abandoned
  response aborts its connection, so the upstream stops generating;
* a request that fails on a *reused* connection before any response byte arrived (the server
  closed it while idle) is retried once on a new connection; nothing else is retried here.

The upstream is not trusted (docs/security.md): the response head is bounded in bytes and must be
whole within the read timeout of sending, bodies go through ``BodyGuard`` (size, one event,
decompression, progress), a connection carries exactly one response per request (bytes nobody
asked for close it; it can be in the idle pool once), and waiting for a free connection is
bounded by the connect timeout.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections import deque
from collections.abc import AsyncIterator, Mapping
from urllib.parse import urlsplit

import httptools

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

HIGH_WATER = 256 * 1024  # buffered body bytes at which reading from the socket pauses
LOW_WATER = 64 * 1024
IDLE_KEEP = 30.0  # seconds an idle pooled connection is kept


class _Retry(Exception):
    """A reused connection died before the response started: safe to send again."""


class _Unrequested(Exception):
    """The upstream began a response no request is waiting for."""


class _PoolTimeout(TimeoutError):
    """No connection became free within the connect timeout."""


class _Response:
    __slots__ = ("_chunks", "_conn", "_done", "_error", "_raw", "_waiter", "buffered", "guard", "headers", "status")

    def __init__(self, conn: _Connection, status: int, headers: dict[str, str], guard: BodyGuard) -> None:
        self._conn = conn
        self.status = status
        self.headers = headers
        self.guard = guard
        self._raw: list[bytes] = []  # body pieces of the current socket read, not yet checked
        self._chunks: deque[bytes] = deque()
        self.buffered = 0
        self._done = False
        self._error: UpstreamReadError | None = None
        self._waiter: asyncio.Future[None] | None = None

    # called by the connection
    def feed(self, data: bytes) -> None:
        self._raw.append(data)  # (llhttp hands over each chunk of a chunked body apart)

    def flush(self, now: float) -> None:
        """The body bytes of one socket read, checked and decoded at once (not per chunk of a
        chunked body: a stream arrives as hundreds of them). Raises UpstreamReadError."""
        raw = self._raw
        data = raw[0] if len(raw) == 1 else b"".join(raw)
        raw.clear()
        data = self.guard.feed(data, now)
        if not data:
            return
        self._chunks.append(data)
        self.buffered += len(data)
        if self.buffered > HIGH_WATER:
            self._conn.pause()
        self._wake()

    def finish(self, now: float) -> None:
        try:
            if self._raw:
                self.flush(now)
            self.guard.finish()
        except UpstreamReadError as exc:
            self.fail(exc)
            return
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
        try:
            parts = [chunk async for chunk in self.iter_bytes()]
        except BaseException:  # failed, or cancelled (the client left): nobody reads the rest
            self._abandon()
            raise
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def close(self) -> None:
        self._abandon()

    def _abandon(self) -> None:
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
        self.busy = False  # a request was sent and its response has not completed
        self.pooled = False  # in the pool's idle list
        self.reusable = False  # the response just completed with keep-alive: release after parsing
        self.idle_since = 0.0
        self.last_data = 0.0
        self.sent_at = 0.0
        self.head_bytes = 0
        self.read_timeout = 0.0
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
        if not self.busy:  # bytes nobody asked for (e.g. a second response): never trust this socket again
            self.abort()
            return
        self.got_bytes = True
        now = self.last_data = self.loop.time()
        in_head = self.head_waiter is not None
        try:
            self.parser.feed_data(data)
            response = self.response
            if response is not None and response._raw:
                response.flush(now)
        except httptools.HttpParserError as exc:
            cause = exc.__context__
            self._fail(cause if isinstance(cause, UpstreamReadError) else connection_lost(exc))
            self.abort()
            return
        except UpstreamReadError as exc:  # past a limit (BodyGuard)
            self._fail(exc)
            self.abort()
            return
        if in_head and self.head_waiter is not None:  # the head is still incomplete
            self.head_bytes += len(data)
            if self.head_bytes > self.pool.limits.head_bytes:
                self._fail(
                    UpstreamReadError(
                        "api_error",
                        f"upstream {self.pool.origin} sent a response head over {self.pool.limits.head_bytes} bytes",
                    )
                )
                self.abort()
            elif now - self.sent_at > self.read_timeout:
                self._fail(read_timeout_error(self.pool.origin))
                self.abort()
        if self.reusable:
            self.reusable = False
            if not self.closed:
                self.pool.release(self)

    def eof_received(self) -> bool:
        response = self.response
        if (
            response is not None
            and response.headers.get("transfer-encoding") is None
            and "content-length" not in response.headers
            and self.head_waiter is None
        ):
            response.finish(self.loop.time())  # a body delimited by the connection closing
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
    def on_message_begin(self) -> None:
        # The first byte of a second response in the read that ended the first (even a partial
        # head, which would otherwise stay in the parser for the next request to inherit).
        if not self.busy:
            raise _Unrequested

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
        guard = BodyGuard(headers, self.pool.limits, self.read_timeout, self.pool.origin, self.last_data)
        self.response = _Response(self, status, headers, guard)
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
        self.busy = False
        self._stop_timer()
        if response is not None:
            response.finish(self.last_data)
        if self.parser.should_keep_alive() and not self.closed:
            self.reusable = True  # released once this read is parsed whole (see data_received)
        else:
            self.abort()

    # --- requests ---
    def start(self, head: bytes, body: bytes, read_timeout: float) -> asyncio.Future[_Response]:
        self.busy = True
        self.got_bytes = False
        self.head_bytes = 0
        self.read_timeout = read_timeout
        self.head_waiter = self.loop.create_future()
        self.sent_at = self.last_data = self.loop.time()
        self.timer = self.loop.call_later(read_timeout, self._check_idle)
        assert self.transport is not None
        self.transport.writelines((head, body))
        return self.head_waiter

    def _check_idle(self) -> None:
        """The read timeout: the head must be whole within it of sending; after that the
        upstream may not stay silent for longer (``BodyGuard`` handles bytes without progress)."""
        timeout = self.read_timeout
        if self.head_waiter is None and self.response is None:
            self.timer = None
            return
        now = self.loop.time()
        since = self.sent_at if self.head_waiter is not None else self.last_data
        waited = now - since
        if self.paused or waited < timeout:  # a paused read means the consumer is the slow side
            self.timer = self.loop.call_later(timeout if self.paused else timeout - waited, self._check_idle)
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
            if self.response is not None:
                self.response.guard.progress(self.last_data)
            self.transport.resume_reading()

    def abort(self) -> None:
        self.closed = True
        self.busy = False
        self.reusable = False
        self._stop_timer()
        if self.transport is not None:
            self.transport.abort()


class _Pool:
    """Connections to one origin: idle ones LIFO, a cap on how many exist."""

    def __init__(self, url: str, connect_timeout: float, limit: int, limits: Limits, egress: Egress) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "localhost"
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.origin = without_userinfo(f"{parts.scheme}://{parts.netloc}")
        self.ssl = egress.ssl_context() if parts.scheme == "https" else None
        self.proxy: Proxy | None = egress.proxy_for(parts.scheme, self.host, self.port)
        # a plain-HTTP upstream through a proxy: requests in absolute form, to the proxy
        self.absolute_form = self.proxy is not None and self.ssl is None
        self.connect_timeout = connect_timeout
        self.limit = limit
        self.limits = limits
        self.loop = asyncio.get_running_loop()
        self.idle: list[_Connection] = []
        self.count = 0
        self.waiters: deque[asyncio.Future[None]] = deque()

    async def acquire(self) -> _Connection:
        now = self.loop.time()
        while self.idle:
            conn = self.idle.pop()
            conn.pooled = False
            if not conn.closed and now - conn.idle_since < IDLE_KEEP:
                conn.reused = True
                return conn
            conn.abort()
        if self.count >= self.limit:
            await self._wait_for_room(now + self.connect_timeout)
            if self.idle:
                return await self.acquire()
        self.count += 1
        try:
            conn = await asyncio.wait_for(self._connect(), self.connect_timeout)
        except BaseException:
            self.count -= 1
            self._wake_one()
            raise
        return conn

    async def _wait_for_room(self, deadline: float) -> None:
        """Wait (until ``deadline``) for a connection to go idle or away. A waiter that is
        cancelled or times out after it was woken passes the wake-up on, so none is lost."""
        while self.count >= self.limit and not self.idle:
            waiter = self.loop.create_future()
            self.waiters.append(waiter)
            try:
                async with asyncio.timeout_at(deadline):
                    await waiter
            except TimeoutError:
                self._pass_on(waiter)
                raise _PoolTimeout(
                    f"all {self.limit} connections to {self.origin} stayed busy for {self.connect_timeout:g} s"
                ) from None
            except BaseException:
                self._pass_on(waiter)
                raise

    def _pass_on(self, waiter: asyncio.Future[None]) -> None:
        if waiter.done() and not waiter.cancelled():
            self._wake_one()  # we were woken but will not use the room: the next waiter may
        else:
            waiter.cancel()  # still queued: _wake_one skips it

    async def _connect(self) -> _Connection:
        proxy = self.proxy
        if proxy is None:
            _, conn = await self.loop.create_connection(
                lambda: _Connection(self),
                self.host,
                self.port,
                ssl=self.ssl,
                server_hostname=self.host if self.ssl else None,
            )
            return conn
        if self.absolute_form:
            _, conn = await self.loop.create_connection(lambda: _Connection(self), proxy.host, proxy.port)
            return conn
        sock = await self._tunnel(proxy)
        try:
            _, conn = await self.loop.create_connection(
                lambda: _Connection(self), sock=sock, ssl=self.ssl, server_hostname=self.host
            )
        except BaseException:
            sock.close()
            raise
        return conn

    async def _tunnel(self, proxy: Proxy) -> socket.socket:
        """A socket through ``proxy`` to the upstream (HTTP CONNECT), ready for TLS."""
        loop = self.loop
        target = f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"
        infos = await loop.getaddrinfo(proxy.host, proxy.port, type=socket.SOCK_STREAM)
        error: OSError | None = None
        for family, kind, proto, _, address in infos:
            sock = socket.socket(family, kind, proto)
            sock.setblocking(False)
            try:
                await loop.sock_connect(sock, address)
                break
            except OSError as exc:
                sock.close()
                error = exc
        else:
            raise error or OSError(f"cannot resolve the proxy {proxy.address}")
        try:
            lines = [f"CONNECT {target} HTTP/1.1", f"host: {target}"]
            if proxy.authorization:
                lines.append(f"proxy-authorization: {proxy.authorization}")
            await loop.sock_sendall(sock, ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
            head = b""
            while b"\r\n\r\n" not in head:  # the proxy sends nothing after its head until we speak TLS
                data = await loop.sock_recv(sock, 4096)
                if not data:
                    raise ConnectionResetError(f"the proxy {proxy.address} closed the tunnel")
                head += data
                if len(head) > self.limits.head_bytes:
                    raise ConnectionError(f"the proxy {proxy.address} sent an oversized answer")
            status_line = head.split(b"\r\n", 1)[0].decode("latin-1")
            parts = status_line.split(" ", 2)
            if len(parts) < 2 or not parts[1].startswith("2") or not head.endswith(b"\r\n\r\n"):
                raise ConnectionRefusedError(f"the proxy {proxy.address} refused CONNECT {target}: {status_line}")
        except BaseException:
            sock.close()
            raise
        return sock

    def release(self, conn: _Connection) -> None:
        if conn.pooled or conn.busy or conn.closed:  # never twice, never while a response is open
            return
        conn.pooled = True
        conn.idle_since = self.loop.time()
        self.idle.append(conn)
        self._wake_one()

    def forget(self, conn: _Connection) -> None:
        if conn.pooled:
            conn.pooled = False
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
        idle, self.idle = self.idle, []
        for conn in idle:
            conn.pooled = False
            conn.abort()


class BuiltinClient:
    def __init__(
        self,
        connect_timeout: float,
        read_timeout: float,
        max_connections: int,
        limits: Limits | None = None,
        egress: Egress = NO_EGRESS,
    ) -> None:
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.max_connections = max_connections
        self.limits = limits or Limits()
        self.egress = egress
        self._pools: dict[str, _Pool] = {}
        self._heads: dict[tuple[str, int], tuple[Mapping[str, str], bytes]] = {}

    def _head(self, url: str, headers: Mapping[str, str], pool: _Pool, method: str = "POST") -> bytes:
        key = (url, id(headers))
        cached = self._heads.get(key) if method == "POST" else None
        if cached is not None and cached[0] is headers:
            return cached[1]
        parts = urlsplit(url)
        host = parts.netloc.rpartition("@")[2]  # never userinfo in the head
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        if pool.absolute_form:
            path = f"{parts.scheme}://{host}{path}"
        lines = [f"{method} {path} HTTP/1.1", f"host: {host}", "accept-encoding: identity"]
        if pool.absolute_form and pool.proxy is not None and pool.proxy.authorization:
            lines.append(f"proxy-authorization: {pool.proxy.authorization}")
        lines += [f"{k}: {v}" for k, v in headers.items() if k.lower() not in ("host", "content-length")]
        head = ("\r\n".join(lines) + "\r\ncontent-length: ").encode("latin-1")
        if method == "POST" and len(self._heads) < 64:  # adapters reuse one headers object per upstream
            self._heads[key] = (headers, head)
        return head

    async def send(self, url: str, headers: Mapping[str, str], body: bytes, method: str = "POST") -> UpstreamResponse:
        origin_key = url.split("/", 3)[2] if "://" in url else url
        pool = self._pools.get(origin_key)
        if pool is None:
            pool = self._pools[origin_key] = _Pool(
                url, self.connect_timeout, self.max_connections, self.limits, self.egress
            )
        head = self._head(url, headers, pool, method) + str(len(body)).encode() + b"\r\n\r\n"
        shown = url if "@" not in url else without_userinfo(url)  # (what messages may show)
        for attempt in (1, 2):
            try:
                conn = await pool.acquire()
            except _PoolTimeout as exc:
                raise ProxyError(504, f"no connection to the upstream at {shown}: {exc}", "timeout_error") from None
            except TimeoutError:
                raise ProxyError(504, f"timed out connecting to the upstream at {shown}", "timeout_error") from None
            except ssl.SSLError as exc:
                raise ProxyError(
                    502, f"TLS with the upstream at {shown} failed: {describe(exc)} (CCPROXY_CA_BUNDLE?)", "api_error"
                ) from None
            except OSError as exc:
                via = f" through the proxy {pool.proxy.address}" if pool.proxy is not None else ""
                raise ProxyError(
                    502, f"cannot reach the upstream at {shown}{via}: {describe(exc)}", "api_error"
                ) from None
            try:
                return await conn.start(head, body, self.read_timeout)
            except _Retry:
                if attempt == 2:
                    break
            except UpstreamReadError as exc:
                if exc.error_type == "timeout_error":
                    raise ProxyError(504, f"timed out waiting for the upstream at {shown}", "timeout_error") from None
                raise ProxyError(502, f"upstream {shown} failed before answering: {exc.message}", "api_error") from None
            except asyncio.CancelledError:
                conn.abort()
                raise
        raise ProxyError(502, f"upstream {shown} closed the connection before answering", "api_error")

    async def close(self) -> None:
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()
