"""The server interfaces: requests in, responses out, for ASGI (default) and RSGI.

Handlers are interface-neutral: they take a ``Request`` and return a ``Response`` (a whole body)
or a ``StreamResponse`` (SSE bytes). The adapters below do the I/O for ASGI and for Granian's
RSGI interface. RSGI measured ~20% cheaper per request, but in Granian 2.8 only ASGI's ``send``
waits for a slow client (backpressure); RSGI's ``send_bytes`` buffers without bound, so a stalled
client would make the proxy hold the whole upstream stream. Hence ASGI is the default and RSGI
an opt-in for trusted clients (docs/benchmarks.md).

``relay`` is the one streaming loop for both: it sends the events, sends a ``ping`` after
``ping_interval`` seconds of silence, and stops the upstream as soon as the client goes away.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from .errors import ProxyError, error_body

log = logging.getLogger("ccproxy.serving")

try:  # what Granian raises when a response is written to a client that is gone
    from granian._granian import RSGIProtocolClosed

    WRITE_FAILED: tuple[type[BaseException], ...] = (ConnectionError, RSGIProtocolClosed)
except ImportError:  # pragma: no cover - another ASGI server
    WRITE_FAILED = (ConnectionError,)

Headers = list[tuple[str, str]]
JSON = "application/json"
SSE_HEADERS: Headers = [
    ("content-type", "text/event-stream; charset=utf-8"),
    ("cache-control", "no-cache"),
    ("x-accel-buffering", "no"),
]


class ClientDisconnected(Exception):
    pass


class Request:
    __slots__ = ("_read", "disconnected", "header", "method", "path", "query", "request_id")

    def __init__(
        self,
        method: str,
        path: str,
        query: str,
        request_id: str,
        read: Callable[[int], Awaitable[bytes]],
        header: Callable[[str], str | None] = lambda name: None,
        disconnected: Callable[[], Awaitable[Any]] | None = None,
    ) -> None:
        self.method = method
        self.path = path
        self.query = query
        self.request_id = request_id
        self._read = read
        # ``header(name)``: a request header by lower-case name, or None. An attribute rather
        # than a method: one call per lookup on the request path, not two.
        self.header = header
        # returns when the client has gone away (only once the body was read)
        self.disconnected = disconnected

    async def body(self, limit: int) -> bytes:
        """The whole body; 413 ``request_too_large`` past ``limit`` bytes."""
        return await self._read(limit)


@dataclass(slots=True)
class Response:
    status: int
    body: bytes
    headers: Headers = field(default_factory=list)
    content_type: str = JSON


def error_response(exc: ProxyError, request_id: str) -> Response:
    """A ProxyError as the Anthropic error envelope; overloads and 5xx say "retry" as Anthropic does."""
    headers = list(exc.headers)
    if exc.error_type == "overloaded_error" or exc.status >= 500:
        headers.append(("x-should-retry", "true"))
    return Response(exc.status, error_body(exc.error_type, exc.message, request_id), headers)


@dataclass(slots=True)
class StreamResponse:
    events: AsyncIterator[bytes]
    on_close: Callable[[BaseException | None], None]  # called once the stream ended, however it ended
    ping: bytes = b""
    ping_interval: float = 15.0
    headers: Headers = field(default_factory=list)  # extra response headers
    on_error: Callable[[BaseException], bytes] | None = None  # final bytes for an unexpected failure


# --- requests waiting on their upstream: is the client still there? --------------------------
#
# Watching for a disconnect needs a pending ASGI receive() (or RSGI client_disconnect()) in a task
# of its own; per request that cost ~20 % of a small request (measured). What it saves, an
# upstream call running on for nobody, matters only for slow calls. So requests register (a set
# insertion) and one sweep per worker, every WATCH_INTERVAL seconds, starts a watcher for each
# request it finds waiting for the second time: a departure is noticed within 2 intervals.
# (The ``waiting`` set also keeps the entries alive; ``leave`` is in a ``finally``.)
WATCH_INTERVAL = 0.4


class WaitingRequest:
    """One request waiting on its upstream (``DisconnectWatch.enter`` / ``leave``)."""

    __slots__ = ("gone", "req", "seen", "task", "watch", "watcher")

    def __init__(self, watch: DisconnectWatch, req: Request, task: asyncio.Task[Any] | None) -> None:
        self.watch = watch
        self.req = req
        self.task = task
        self.watcher: asyncio.Future[Any] | None = None
        self.seen = False
        self.gone = False

    def start_watching(self) -> None:
        if self.req.disconnected is not None:
            self.watcher = asyncio.ensure_future(self.req.disconnected())
            self.watcher.add_done_callback(self._left)

    def _left(self, watcher: asyncio.Future[Any]) -> None:
        if self in self.watch.waiting and not watcher.cancelled() and watcher.exception() is None:
            self.gone = True
            if self.task is not None:
                self.task.cancel()


class DisconnectWatch:
    """The requests of one worker that wait on their upstream, and the sweep that watches the
    ones that wait long. Around a wait::

        waiting = watch.enter(req)
        try:
            ... await the upstream ...
        finally:
            watch.leave(waiting)  # raises ClientDisconnected when the client went away

    Once the client has gone, the task is cancelled, and ``leave`` turns that cancellation into
    ClientDisconnected (a cancellation from anywhere else passes unchanged)."""

    def __init__(self) -> None:
        self.waiting: set[WaitingRequest] = set()
        self._sweeper: asyncio.Task[None] | None = None

    def enter(self, req: Request) -> WaitingRequest:
        entry = WaitingRequest(self, req, asyncio.current_task())
        self.waiting.add(entry)
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep())
        return entry

    def leave(self, entry: WaitingRequest) -> None:
        self.waiting.discard(entry)
        if entry.watcher is not None:
            entry.watcher.cancel()
            if entry.gone and entry.task is not None:
                # only set while the task waited, so our cancellation is what propagates now
                entry.task.uncancel()
                raise ClientDisconnected

    async def _sweep(self) -> None:
        try:
            while self.waiting:
                await asyncio.sleep(WATCH_INTERVAL)
                for entry in list(self.waiting):
                    if entry.seen and entry.watcher is None:
                        entry.start_watching()
                    entry.seen = True
        finally:
            self._sweeper = None

    def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()


async def relay(
    stream: StreamResponse,
    write: Callable[[bytes], Awaitable[Any]],
    disconnected: Callable[[], Awaitable[Any]],
) -> None:
    """Send ``stream.events``; ping when idle; raise ClientDisconnected if the client leaves."""
    loop = asyncio.get_running_loop()
    lock = asyncio.Lock()
    last_sent = loop.time()
    interval = stream.ping_interval
    current = asyncio.current_task()
    gone = relaying = False

    async def keepalive() -> None:
        nonlocal last_sent
        while True:
            await asyncio.sleep(max(0.0, last_sent + interval - loop.time()))
            if loop.time() - last_sent >= interval:
                async with lock:
                    await write(stream.ping)
                last_sent = loop.time()

    async def watch() -> None:
        nonlocal gone
        await disconnected()
        gone = True
        if relaying and current is not None:
            current.cancel()

    helpers = [asyncio.create_task(keepalive()), asyncio.create_task(watch())]
    outcome: BaseException | None = None
    relaying = True
    try:
        try:
            async for chunk in stream.events:
                async with lock:
                    await write(chunk)
                last_sent = loop.time()
        except asyncio.CancelledError:
            relaying = False
            if gone:
                outcome = ClientDisconnected()
                raise outcome from None
            raise
        except WRITE_FAILED as exc:  # writing to a client that went away
            outcome = ClientDisconnected()
            raise outcome from exc
        except Exception as exc:  # a bug while translating: end the stream honestly
            log.exception("stream failed")
            outcome = exc
            if stream.on_error is not None:
                with contextlib.suppress(Exception):
                    async with lock:
                        await write(stream.on_error(exc))
        relaying = False
    finally:
        relaying = False
        for task in helpers:
            task.cancel()
        with contextlib.suppress(Exception):
            await stream.events.aclose()  # type: ignore[attr-defined]
        stream.on_close(outcome)


Handle = Callable[[Request], Awaitable["Response | StreamResponse"]]


# --- reading a body (both interfaces) ---------------------------------------------------------


def too_large(limit: int) -> ProxyError:
    return ProxyError(413, f"request body is larger than {limit} bytes", "request_too_large")


def declared_length(value: str | None, limit: int) -> int:
    """The body's declared content-length, -1 when none is; 413 when it is over ``limit``."""
    length = int(value) if value is not None and value.isdigit() else -1
    if length > limit:
        raise too_large(limit)
    return length


# --- RSGI (Granian) ----------------------------------------------------------------------------


async def serve_rsgi(handle: Handle, new_id: Callable[[], str], scope: Any, proto: Any) -> None:
    headers = scope.headers
    request_id = new_id()

    async def read(limit: int) -> bytes:
        if declared_length(headers.get("content-length"), limit) >= 0:
            return await proto()
        chunks, size = [], 0
        async for chunk in proto:
            size += len(chunk)
            if size > limit:
                raise too_large(limit)
            chunks.append(chunk)
        return b"".join(chunks)

    request = Request(
        scope.method, scope.path, scope.query_string, request_id, read, headers.get, proto.client_disconnect
    )
    response = await handle(request)
    if isinstance(response, Response):
        out = [("content-type", response.content_type), ("request-id", request_id), *response.headers]
        if scope.method == "HEAD":
            proto.response_empty(response.status, out)
        else:
            proto.response_bytes(response.status, out, response.body)
        return
    transport = proto.response_stream(200, [*SSE_HEADERS, ("request-id", request_id), *response.headers])
    with contextlib.suppress(ClientDisconnected):
        await relay(response, transport.send_bytes, proto.client_disconnect)


# --- ASGI --------------------------------------------------------------------------------------


async def serve_asgi(handle: Handle, new_id: Callable[[], str], scope: dict, receive: Any, send: Any) -> None:
    request_id = new_id()

    async def read(limit: int) -> bytes:
        # With a content-length, stop at its last byte: Granian sends every body chunk with
        # more_body=True and then an empty closing message, and each receive() is a hand-over
        # from its I/O thread (one of ~3 per request). A later receive() still works (disconnect).
        expected = declared_length(header("content-length"), limit)
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientDisconnected
            chunk = message.get("body", b"")
            if chunk:
                size += len(chunk)
                if size > limit:
                    raise too_large(limit)
                chunks.append(chunk)
            if size == expected or not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    query = scope.get("query_string", b"").decode("latin-1")
    by_name: dict[bytes, bytes] | None = None

    def header(name: str) -> str | None:
        nonlocal by_name
        if by_name is None:  # one pass over the headers, then lookups; the first of duplicates wins
            by_name = {key.lower(): value for key, value in reversed(scope["headers"])}
        value = by_name.get(name.encode("latin-1"))
        return None if value is None else value.decode("latin-1")

    async def disconnected() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    response = await handle(Request(scope["method"], scope["path"], query, request_id, read, header, disconnected))
    if isinstance(response, Response):
        body = b"" if scope["method"] == "HEAD" else response.body
        out = [
            (b"content-type", response.content_type.encode()),
            (b"request-id", request_id.encode()),
            (b"content-length", str(len(response.body)).encode()),
            *((k.encode("latin-1"), v.encode("latin-1")) for k, v in response.headers),
        ]
        await send({"type": "http.response.start", "status": response.status, "headers": out})
        await send({"type": "http.response.body", "body": body})
        return
    headers = [
        (k.encode("latin-1"), v.encode("latin-1"))
        for k, v in (*SSE_HEADERS, ("request-id", request_id), *response.headers)
    ]
    await send({"type": "http.response.start", "status": 200, "headers": headers})

    async def write(chunk: bytes) -> None:
        await send({"type": "http.response.body", "body": chunk, "more_body": True})

    try:
        await relay(response, write, disconnected)
    except ClientDisconnected:
        return
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def asgi_lifespan(
    startup: Callable[[], Awaitable[None]], shutdown: Callable[[], Awaitable[None]], receive: Any, send: Any
) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            try:
                await startup()
            except Exception as exc:
                await send({"type": "lifespan.startup.failed", "message": str(exc)})
                return
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await shutdown()
            await send({"type": "lifespan.shutdown.complete"})
            return
