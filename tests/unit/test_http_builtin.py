"""The builtin HTTP/1.1 client against real loopback servers with scripted behaviour."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import Awaitable, Callable

import pytest

from ccproxy.errors import ProxyError
from ccproxy.upstream.client import UpstreamReadError
from ccproxy.upstream.http_builtin import HIGH_WATER, BuiltinClient

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[bool]]
HEADERS = {"authorization": "Bearer k", "content-type": "application/json"}


async def read_request(reader: asyncio.StreamReader) -> bytes | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return head + await reader.readexactly(length)


async def serve(handler: Handler) -> tuple[asyncio.AbstractServer, str, list[int]]:
    """Each connection: read requests and let ``handler`` answer; it returns False to stop."""
    connections: list[int] = []

    async def on_conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        n = 0
        while (request := await read_request(reader)) is not None:
            n += 1
            assert b"POST /v1/x HTTP/1.1" in request and b"authorization: Bearer k" in request
            if not await handler(reader, writer, n):
                break
        writer.close()

    server = await asyncio.start_server(on_conn, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}/v1/x", connections


def json_response(body: bytes = b'{"ok":true}', extra: str = "") -> bytes:
    return (
        f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n{extra}\r\n".encode()
        + body
    )


def run(coro):
    return asyncio.run(coro)


def test_keep_alive_reuses_one_connection():
    async def main() -> None:
        async def handler(reader, writer, n):
            writer.write(json_response(b'{"n":%d}' % n))
            await writer.drain()
            return True

        server, url, conns = await serve(handler)
        client = BuiltinClient(2, 2, 8)
        for i in range(1, 4):
            resp = await client.send(url, HEADERS, b"{}")
            assert resp.status == 200 and await resp.read() == b'{"n":%d}' % i
        assert len(conns) == 1
        await client.close()
        server.close()

    run(main())


def test_body_framings_chunked_eof_and_gzip():
    async def main() -> None:
        async def handler(reader, writer, n):
            if n == 1:  # an informational response first, then the answer
                writer.write(b"HTTP/1.1 103 Early Hints\r\nlink: </x>\r\n\r\n")
                writer.write(
                    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
                )
            elif n == 2:
                body = gzip.compress(b"zipped body")
                writer.write(json_response(body, "content-encoding: gzip\r\n"))
            else:
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nuntil the end")
                await writer.drain()
                return False  # closing the connection ends the body
            await writer.drain()
            return True

        server, url, _ = await serve(handler)
        client = BuiltinClient(2, 2, 8)
        first = await client.send(url, HEADERS, b"{}")
        assert first.status == 200
        chunks = [c async for c in first.iter_bytes()]
        assert b"".join(chunks) == b"hello world"
        assert await (await client.send(url, HEADERS, b"{}")).read() == b"zipped body"
        assert await (await client.send(url, HEADERS, b"{}")).read() == b"until the end"
        await client.close()
        server.close()

    run(main())


def test_stale_pooled_connection_is_retried_once_fresh_failures_are_not():
    async def main() -> None:
        async def closes_after_first(reader, writer, n):
            if n == 1:
                writer.write(json_response())
                await writer.drain()
                return True
            return False  # the second request on a reused connection: hang up without answering

        server, url, conns = await serve(closes_after_first)
        client = BuiltinClient(2, 2, 8)
        assert (await client.send(url, HEADERS, b"{}")).status == 200
        assert (await client.send(url, HEADERS, b"{}")).status == 200  # retried on a new connection
        assert len(conns) == 2
        await client.close()
        server.close()

        async def always_hangs_up(reader, writer, n):
            return False

        server, url, conns = await serve(always_hangs_up)
        client = BuiltinClient(2, 2, 8)
        with pytest.raises(ProxyError) as err:
            await client.send(url, HEADERS, b"{}")
        assert err.value.status == 502 and len(conns) == 1  # a fresh connection is never retried
        await client.close()
        server.close()

    run(main())


def test_slow_consumer_pauses_reading_so_buffering_stays_bounded():
    async def main() -> None:
        block = b"x" * 65536

        async def firehose(reader, writer, n):
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
            for _ in range(160):  # 10 MB as fast as the socket takes it
                writer.write(f"{len(block):x}\r\n".encode() + block + b"\r\n")
                await writer.drain()
            writer.write(b"0\r\n\r\n")
            await writer.drain()
            return True

        server, url, _ = await serve(firehose)
        client = BuiltinClient(2, 0.5, 8)  # a read timeout shorter than the slow reading below
        resp = await client.send(url, HEADERS, b"{}")
        total, peak = 0, 0
        async for chunk in resp.iter_bytes():
            total += len(chunk)
            peak = max(peak, len(chunk))
            if total < 2_000_000:
                await asyncio.sleep(0.02)  # slow reader: 100 reads over ~2 s
        assert total == 160 * 65536
        # bounded, never the whole 10 MB: the pause threshold plus one socket read (<= 256 KB)
        assert peak <= HIGH_WATER + 256 * 1024 + 65536
        await client.close()
        server.close()

    run(main())


def test_read_timeout_mid_body_and_abandoned_stream_closes_connection():
    async def main() -> None:
        closed = asyncio.Event()

        async def stalls(reader, writer, n):
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n4\r\npart\r\n")
            await writer.drain()
            await reader.read()  # returns when the client hangs up
            closed.set()
            return False

        server, url, _ = await serve(stalls)
        client = BuiltinClient(2, 0.3, 8)
        resp = await client.send(url, HEADERS, b"{}")
        with pytest.raises(UpstreamReadError) as err:
            async for _ in resp.iter_bytes():
                pass
        assert err.value.error_type == "timeout_error"
        await asyncio.wait_for(closed.wait(), 2)

        closed.clear()
        client = BuiltinClient(2, 30, 8)
        resp = await client.send(url, HEADERS, b"{}")
        async for _ in resp.iter_bytes():
            break
        await resp.close()  # abandon: the upstream must see the connection go at once
        await asyncio.wait_for(closed.wait(), 1)
        await client.close()
        server.close()

    run(main())


def test_connection_cap_queues_requests():
    async def main() -> None:
        async def slow(reader, writer, n):
            await asyncio.sleep(0.05)
            writer.write(json_response())
            await writer.drain()
            return True

        server, url, conns = await serve(slow)
        client = BuiltinClient(2, 5, 2)

        async def one() -> bytes:
            return await (await client.send(url, HEADERS, b"{}")).read()

        assert await asyncio.gather(*(one() for _ in range(6))) == [b'{"ok":true}'] * 6
        assert len(conns) == 2
        await client.close()
        server.close()

    run(main())


def test_unreachable_and_slow_headers():
    async def main() -> None:
        client = BuiltinClient(1, 0.3, 8)
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        server.close()
        await server.wait_closed()
        with pytest.raises(ProxyError) as err:
            await client.send(f"http://127.0.0.1:{port}/v1/x", HEADERS, b"{}")
        assert err.value.status == 502

        async def never_answers(reader, writer, n):
            await asyncio.sleep(5)
            return False

        server, url, _ = await serve(never_answers)
        with pytest.raises(ProxyError) as err:
            await client.send(url, HEADERS, b"{}")
        assert err.value.status == 504 and err.value.error_type == "timeout_error"
        await client.close()
        server.close()

    run(main())
