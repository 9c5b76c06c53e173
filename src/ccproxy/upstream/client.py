"""The pooled HTTP client behind a small interface, so implementations can be swapped.

Adapters use only ``HttpClient.send`` and the ``UpstreamResponse`` it returns. Transport
failures come out as ``ProxyError`` (before any byte reached the client) or, while a body is
being read, as ``UpstreamReadError``; adapters never see a library's exceptions.

Implementations (``CCPROXY_HTTP_CLIENT``): ``builtin`` (the default, our own HTTP/1.1 client in
``http_builtin.py``, chosen by measurement, docs/benchmarks.md) and ``httpx`` (the one fallback,
``http_httpx.py``, imported only when selected). aiohttp, pyreqwest and httpx's HTTP/2 were
measured and dropped: every client must hold the same limits against a hostile upstream
(docs/security.md), and two are enough to keep honest.
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Protocol

from ..errors import ProxyError

CLIENTS = ("builtin", "httpx")
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
    async def send(self, url: str, headers: Mapping[str, str], body: bytes, method: str = "POST") -> UpstreamResponse:
        """Send ``body`` (POST; GET for a search engine's query URL); returns once the status
        line and headers arrived."""
        ...

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Limits:
    """What an upstream may send before the response is refused (docs/security.md). An
    upstream is not trusted: without these, one answer could take the worker's memory or CPU."""

    head_bytes: int = 64 * 1024  # status line and headers, informational responses included
    body_bytes: int = 32 << 20  # a whole (non-event-stream) body, after decompression
    event_bytes: int = 16 << 20  # one server-sent event: bytes without a blank line
    ratio: int = 200  # decompressed : compressed bytes, checked beyond RATIO_FLOOR

    @classmethod
    def for_responses(cls, max_bytes: int) -> Limits:
        return cls(body_bytes=max_bytes, event_bytes=min(max_bytes, 16 << 20))


RATIO_FLOOR = 1 << 20  # the first MiB of a compressed body may expand at any ratio
PIECE = 256 * 1024  # decompression output per step, so a bomb is caught after one step


class BodyGuard:
    """One response body on its way in: decodes ``content-encoding`` (gzip, zlib-wrapped or raw
    deflate) in bounded steps, and enforces ``Limits`` and the read timeout as *progress*:

    * an event stream must complete an event (a blank line) within ``read_timeout`` of the last
      one, so bytes trickling in without ever finishing an event time out, and one event may
      not grow beyond ``event_bytes``;
    * any other body must arrive whole within ``read_timeout`` of its head and stay below
      ``body_bytes``.

    ``feed`` returns the decoded bytes or raises ``UpstreamReadError``; ``finish`` raises when a
    compressed body was cut short. Both HTTP clients use it, so they hold the same limits.
    """

    __slots__ = (
        "_decoder",
        "_encoding",
        "_held",
        "_newline_tail",
        "_origin",
        "_pending",
        "_timeout",
        "decoded",
        "last_progress",
        "limits",
        "received",
        "sse",
    )

    def __init__(
        self, headers: Mapping[str, str], limits: Limits, read_timeout: float, origin: str, now: float
    ) -> None:
        self.limits = limits
        content_type = headers.get("content-type")
        self.sse = content_type is not None and content_type[:17].lower() == "text/event-stream"
        encoding = headers.get("content-encoding")  # (we ask for identity: usually absent)
        self._encoding = "" if encoding is None or encoding.strip().lower() == "identity" else encoding.strip().lower()
        self._decoder: zlib._Decompress | None = None
        self._held = b""  # the first byte of a deflate body, until the second tells its kind
        self._timeout = read_timeout
        self._origin = origin
        self.last_progress = now
        self.received = 0  # bytes as they came (compressed)
        self.decoded = 0
        self._pending = 0  # bytes of the current, unfinished event
        self._newline_tail = False

    def feed(self, data: bytes, now: float) -> bytes:
        if self._encoding:
            data = self._decode(data)
        if self.sse:
            end = data.rfind(b"\n\n")
            if end >= 0:
                end += 2
            else:
                end = data.rfind(b"\n\r\n")
                if end >= 0:
                    end += 3
                elif self._newline_tail and data[:1] in (b"\n", b"\r"):  # a blank line split by reads
                    end = 1
            if end >= 0:
                self._pending = len(data) - end
                self.last_progress = now
            else:
                self._pending += len(data)
                if self._pending > self.limits.event_bytes:
                    raise UpstreamReadError(
                        "api_error",
                        f"upstream {self._origin} sent an event larger than {self.limits.event_bytes} bytes",
                    )
            self._newline_tail = data[-1:] == b"\n"
        else:
            if not self._encoding:
                self.decoded += len(data)
            if self.decoded > self.limits.body_bytes:
                raise UpstreamReadError(
                    "api_error",
                    f"upstream {self._origin} sent a response larger than {self.limits.body_bytes} bytes "
                    "(CCPROXY_MAX_RESPONSE_BYTES)",
                )
        if now - self.last_progress > self._timeout:
            what = "completing an event" if self.sse else "finishing its response"
            raise UpstreamReadError(
                "timeout_error", f"upstream {self._origin} kept sending without {what} (read timeout)"
            )
        return data

    def progress(self, now: float) -> None:
        """The consumer, not the upstream, was the slow side until now: restart the clock."""
        self.last_progress = now

    def finish(self) -> None:
        decoder = self._decoder
        if self._encoding and (decoder is None or not decoder.eof):
            if decoder is None and not self.received:
                return  # an empty body (a HEAD-like answer, a 204)
            raise UpstreamReadError("api_error", f"upstream {self._origin} sent a truncated {self._encoding} body")

    def _decode(self, data: bytes) -> bytes:
        self.received += len(data)
        decoder = self._decoder
        if decoder is None:
            if self._encoding not in ("gzip", "x-gzip", "deflate"):
                raise UpstreamReadError(
                    "api_error",
                    f"upstream {self._origin} sent content-encoding {self._encoding!r}, which ccproxy does not "
                    "decode (it asks for identity)",
                )
            if self._encoding == "deflate":
                # "deflate" means zlib-wrapped (RFC 9110); some servers send it raw. The first two
                # bytes tell which: a zlib header is CM=8 and a multiple of 31.
                data = self._held + data
                if len(data) < 2:
                    self._held = data
                    return b""
                wrapped = (data[0] & 0x0F) == 8 and ((data[0] << 8) | data[1]) % 31 == 0
                decoder = zlib.decompressobj(zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS)
            else:
                decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
            self._decoder = decoder
        out = []
        while True:
            try:
                piece = decoder.decompress(data, PIECE)
            except zlib.error as exc:
                raise UpstreamReadError("api_error", f"upstream {self._origin} sent a corrupt body: {exc}") from None
            self.decoded += len(piece)
            if self.decoded > max(RATIO_FLOOR, self.limits.ratio * self.received) or (
                not self.sse and self.decoded > self.limits.body_bytes
            ):
                raise UpstreamReadError(
                    "api_error",
                    f"upstream {self._origin} sent a compressed body that expands beyond the limits "
                    f"({self.decoded} bytes from {self.received})",
                )
            out.append(piece)
            data = decoder.unconsumed_tail
            if decoder.eof and decoder.unused_data and self._encoding != "deflate":
                data = decoder.unused_data  # another gzip member follows
                decoder = self._decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
                continue
            if not data and len(piece) < PIECE:
                break
        return out[0] if len(out) == 1 else b"".join(out)


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
