"""Both HTTP clients against hostile and broken upstreams on loopback (docs/security.md, item 6-8
of issue 16): every attack here took memory, CPU or a request's answer before the limits."""

from __future__ import annotations

import asyncio
import gzip
import time
import tracemalloc
import zlib

import pytest

from ccproxy.errors import ProxyError
from ccproxy.upstream.client import CLIENTS, Limits, UpstreamReadError
from ccproxy.upstream.egress import NO_EGRESS
from ccproxy.upstream.http_builtin import _Pool
from ccproxy.upstream.registry import create_client
from tests.support.raw_http import SSE_HEAD, Server, bomb, chunk, response

HEADERS = {"authorization": "Bearer k", "content-type": "application/json"}
MB = 1 << 20


def run(coro):
    return asyncio.run(coro)


def client(kind: str, read_timeout: float = 5.0, max_connections: int = 8, connect_timeout: float = 2.0, **limits):
    return create_client(kind, connect_timeout, read_timeout, max_connections, Limits(**limits), NO_EGRESS)


@pytest.fixture(params=CLIENTS)
def kind(request) -> str:
    return request.param


async def read_all(resp) -> bytes:
    return b"".join([c async for c in resp.iter_bytes()])


def test_a_huge_body_stops_at_the_limit_without_buffering_it(kind):
    async def main() -> None:
        async def huge(reader, writer, n, request):
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1073741824\r\n\r\n")
            block = b"x" * MB
            for _ in range(1024):  # 1 GB, as fast as the client takes it
                writer.write(block)
                await writer.drain()
            return False

        async with Server(huge) as server:
            http = client(kind, body_bytes=4 * MB)
            resp = await http.send(server.url, HEADERS, b"{}")
            tracemalloc.start()
            with pytest.raises(UpstreamReadError) as err:
                await resp.read()
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            assert err.value.error_type == "api_error" and "larger than" in err.value.message
            assert peak < 24 * MB  # the limit and a read or two, never the gigabyte
            await asyncio.wait_for(server.closed.wait(), 5)  # and the upstream was hung up on
            await http.close()

    run(main())


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_a_compression_bomb_is_refused_after_one_step(kind, encoding):
    payload = bomb(300 * MB, "gzip" if encoding == "gzip" else "zlib")  # ~300 KB on the wire

    async def main() -> None:
        async def bomber(reader, writer, n, request):
            writer.write(response(payload, f"content-encoding: {encoding}\r\n"))
            await writer.drain()
            return True

        async with Server(bomber) as server:
            http = client(kind)
            tracemalloc.start()
            resp = await http.send(server.url, HEADERS, b"{}")
            with pytest.raises(UpstreamReadError) as err:
                await resp.read()
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            assert "expands beyond the limits" in err.value.message
            assert peak < 32 * MB, peak
            await http.close()

    run(main())


def test_deflate_zlib_wrapped_and_raw_and_a_truncated_gzip(kind):
    text = b'{"answer": "' + b"compressible " * 2000 + b'"}'
    zlib_wrapped = zlib.compress(text)
    raw = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    raw_deflate = raw.compress(text) + raw.flush()
    gz = gzip.compress(text)

    async def main() -> None:
        bodies = [
            (zlib_wrapped, "deflate"),
            (raw_deflate, "deflate"),
            (gz, "gzip"),
            (gz[: len(gz) // 2], "gzip"),
        ]

        async def answer(reader, writer, n, request):
            body, encoding = bodies[len(server.requests) - 1]  # (httpx opens a connection per request)
            writer.write(response(body, f"content-encoding: {encoding}\r\n"))
            await writer.drain()
            return True

        async with Server(answer) as server:
            http = client(kind)
            for _ in range(3):
                assert await (await http.send(server.url, HEADERS, b"{}")).read() == text
            resp = await http.send(server.url, HEADERS, b"{}")
            with pytest.raises(UpstreamReadError) as err:
                await resp.read()
            assert err.value.error_type == "api_error"
            await http.close()

    run(main())


def test_unknown_content_encoding_is_an_error_not_garbage(kind):
    async def main() -> None:
        async def brotli(reader, writer, n, request):
            writer.write(response(b"\x8b\x02\x80{}\x03", "content-encoding: br\r\n"))
            await writer.drain()
            return True

        async with Server(brotli) as server:
            http = client(kind)
            resp = await http.send(server.url, HEADERS, b"{}")
            with pytest.raises(UpstreamReadError) as err:
                await resp.read()
            assert "'br'" in err.value.message
            await http.close()

    run(main())


def test_an_endless_header_line_is_cut_off_quickly(kind):
    async def main() -> None:
        async def endless_header(reader, writer, n, request):
            writer.write(b"HTTP/1.1 200 OK\r\nx-filler: ")
            block = b"a" * MB
            try:
                for _ in range(300):  # a 300 MB header line
                    writer.write(block)
                    await writer.drain()
            except ConnectionError:
                pass
            return False

        async with Server(endless_header) as server:
            http = client(kind)
            began = time.process_time()
            with pytest.raises(ProxyError) as err:
                await http.send(server.url, HEADERS, b"{}")
            assert err.value.status == 502
            assert time.process_time() - began < 2.0  # was minutes of CPU (quadratic)
            await http.close()

    run(main())


def test_one_endless_event_is_refused_at_the_event_limit(kind):
    async def main() -> None:
        async def endless_event(reader, writer, n, request):
            writer.write(SSE_HEAD + chunk(b'data: {"choices":[]}\n\n') + chunk(b"data: "))
            block = b"b" * MB
            try:
                for _ in range(64):  # a 64 MB event, never ended by a blank line
                    writer.write(chunk(block))
                    await writer.drain()
            except ConnectionError:
                pass
            return False

        async with Server(endless_event) as server:
            http = client(kind, event_bytes=2 * MB)
            resp = await http.send(server.url, HEADERS, b"{}")
            seen = 0
            tracemalloc.start()
            with pytest.raises(UpstreamReadError) as err:
                async for piece in resp.iter_bytes():
                    seen += len(piece)
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            assert "event larger than" in err.value.message
            assert seen < 4 * MB and peak < 16 * MB
            await http.close()

    run(main())


def test_streams_of_ordinary_events_have_no_total_limit(kind):
    async def main() -> None:
        event = b'data: {"choices":[{"delta":{"content":"' + b"z" * 1000 + b'"}}]}\n\n'

        async def long_stream(reader, writer, n, request):
            writer.write(SSE_HEAD)
            for _ in range(3000):  # 3 MB of events, well past body_bytes
                writer.write(chunk(event))
            writer.write(b"0\r\n\r\n")
            await writer.drain()
            return True

        async with Server(long_stream) as server:
            http = client(kind, body_bytes=MB, event_bytes=64 * 1024)
            resp = await http.send(server.url, HEADERS, b"{}")
            assert len(await read_all(resp)) == 3000 * len(event)
            await http.close()

    run(main())


@pytest.mark.parametrize("phase", ["head", "event", "body"])
def test_trickling_bytes_do_not_defeat_the_read_timeout(kind, phase):
    async def main() -> None:
        async def trickle(reader, writer, n, request):
            if phase == "event":
                writer.write(SSE_HEAD + chunk(b'data: {"choices":[]}\n\n'))
            elif phase == "body":
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100000\r\n\r\n")
            try:
                for _ in range(200):  # a byte every 50 ms, never a complete head / event / body
                    writer.write(chunk(b"x") if phase == "event" else b"x" if phase == "body" else b"H")
                    await writer.drain()
                    await asyncio.sleep(0.05)
            except ConnectionError:
                pass
            return False

        async with Server(trickle) as server:
            http = client(kind, read_timeout=0.6)
            began = time.monotonic()
            if phase == "head":
                with pytest.raises(ProxyError) as err:
                    await http.send(server.url, HEADERS, b"{}")
                assert err.value.status in (502, 504)
            else:
                resp = await http.send(server.url, HEADERS, b"{}")
                with pytest.raises(UpstreamReadError) as read_err:
                    await read_all(resp)
                assert read_err.value.error_type == "timeout_error"
            assert time.monotonic() - began < 3.0  # the trickle would last 10 s
            await http.close()

    run(main())


@pytest.mark.parametrize("when", ["same write", "partial head in the same write", "later"])
def test_an_unrequested_extra_response_never_reaches_another_request(kind, when):
    """The upstream answers each request, then sends one more response nobody asked for."""

    async def main() -> None:
        async def doubles(reader, writer, n, request):
            tag = request.rsplit(b"\r\n\r\n", 1)[1]
            await asyncio.sleep(0.05 if tag != b'"first"' else 0)
            extra = response(b'"unrequested"')
            if when == "same write":
                writer.write(response(tag) + extra)
            elif when.startswith("partial"):
                writer.write(response(tag) + extra[:25])  # would stay in the parser for the next request
            else:
                writer.write(response(tag))
                await writer.drain()
                await asyncio.sleep(0.05)
                writer.write(extra)
            await writer.drain()
            return True

        async with Server(doubles) as server:
            http = client(kind)

            async def ask(tag: bytes) -> bytes:
                resp = await http.send(server.url, HEADERS, tag)
                return await resp.read()

            assert await ask(b'"first"') == b'"first"'
            await asyncio.sleep(0.2)  # the extra response arrives while the connection is idle
            answers = await asyncio.wait_for(asyncio.gather(ask(b'"a"'), ask(b'"b"'), ask(b'"c"')), 5)
            assert answers == [b'"a"', b'"b"', b'"c"']
            await http.close()

    run(main())


def test_waiting_for_a_free_connection_is_bounded_by_the_connect_timeout(kind):
    async def main() -> None:
        async def slow(reader, writer, n, request):
            await asyncio.sleep(3)
            writer.write(response())
            await writer.drain()
            return True

        async with Server(slow) as server:
            http = client(kind, max_connections=1, connect_timeout=0.3)
            first = asyncio.ensure_future(http.send(server.url, HEADERS, b"{}"))
            await asyncio.sleep(0.1)
            began = time.monotonic()
            with pytest.raises(ProxyError) as err:
                await http.send(server.url, HEADERS, b"{}")
            assert err.value.status == 504 and time.monotonic() - began < 1.5
            first.cancel()
            await http.close()

    run(main())


def test_a_pool_waiter_cancelled_after_its_wake_up_passes_it_on():
    async def main() -> None:
        pool = _Pool("http://127.0.0.1:9/v1/x", 5.0, 1, Limits(), NO_EGRESS)
        pool.count = 1  # the one connection allowed is busy
        loop = asyncio.get_running_loop()
        first = asyncio.ensure_future(pool._wait_for_room(loop.time() + 5))
        second = asyncio.ensure_future(pool._wait_for_room(loop.time() + 5))
        await asyncio.sleep(0.01)
        pool.count = 0
        pool._wake_one()  # room for one: the first waiter is woken …
        first.cancel()  # … and cancelled before it could run
        await asyncio.wait_for(second, 1)  # the second one must not wait forever
        assert first.cancelled()

    run(main())


def test_a_cancelled_read_closes_the_connection(kind):
    """A non-streaming read whose caller went away (the client disconnected) must stop the
    upstream, not leave the connection half-read."""

    async def main() -> None:
        async def slow_body(reader, writer, n, request):
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 10\r\n\r\n{")
            await writer.drain()
            await reader.read()  # returns when the client hangs up
            return False

        async with Server(slow_body) as server:
            http = client(kind)
            resp = await http.send(server.url, HEADERS, b"{}")
            reading = asyncio.ensure_future(resp.read())
            await asyncio.sleep(0.1)
            reading.cancel()
            await asyncio.wait_for(server.closed.wait(), 2)
            await http.close()

    run(main())
