"""A fast mock OpenAI Chat Completions upstream for the load benchmark.

Raw asyncio protocol (uvloop when installed) with every response built once at start, so it
costs a few microseconds per request and is never the bottleneck (the harness shows this with
its ``direct`` runs). It answers any POST:

* body containing ``"stream":true`` → an SSE stream of ``--chunks`` content chunks, then a
  finish chunk, a usage chunk and ``[DONE]`` (chunked transfer encoding, one write);
* body containing ``SLOW-READER-STREAM`` → a very long stream (``--big-chunks`` chunks of
  ~1 KB), written as fast as the socket takes it, for the slow-reader memory test;
* anything else → one chat.completion JSON.

Run: ``python benchmarks/mock_openai.py --port 0`` prints ``READY <port>``.
"""

from __future__ import annotations

import argparse
import asyncio
import json

STREAM_MARK = b'"stream":true'
BIG_MARK = b"SLOW-READER-STREAM"

COMPLETION = {
    "id": "chatcmpl-bench",
    "object": "chat.completion",
    "created": 1700000000,
    "model": "bench-model",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello! This is a benchmark answer of modest length."},
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 1200, "completion_tokens": 12, "total_tokens": 1212},
}


def chunk(delta: dict, finish: str | None = None) -> dict:
    return {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "bench-model",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def sse_events(n: int, text: str) -> list[bytes]:
    events = [chunk({"role": "assistant", "content": ""})]
    events += [chunk({"content": text}) for _ in range(n)]
    events.append(chunk({}, "stop"))
    usage = {
        **chunk({}),
        "choices": [],
        "usage": {"prompt_tokens": 1200, "completion_tokens": n, "total_tokens": 1200 + n},
    }
    events.append(usage)
    out = [b"data: " + json.dumps(e, separators=(",", ":")).encode() + b"\n\n" for e in events]
    out.append(b"data: [DONE]\n\n")
    return out


def chunked(parts: list[bytes]) -> bytes:
    return b"".join(f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in parts) + b"0\r\n\r\n"


def build_responses(chunks: int, big_chunks: int) -> tuple[bytes, bytes, list[bytes]]:
    body = json.dumps(COMPLETION, separators=(",", ":")).encode()
    plain = (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )
    sse_head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
    stream = sse_head + chunked(sse_events(chunks, "tok "))
    big = sse_events(big_chunks, "x" * 1000)
    big_parts = [sse_head] + [chunked(big[i : i + 64])[:-5] for i in range(0, len(big), 64)] + [b"0\r\n\r\n"]
    return plain, stream, big_parts


class MockProtocol(asyncio.Protocol):
    def __init__(self, responses: tuple[bytes, bytes, list[bytes]]) -> None:
        self.plain, self.stream, self.big = responses
        self.buf = b""
        self.transport: asyncio.Transport | None = None
        self.big_task: asyncio.Future | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end]
            lower = head.lower()
            i = lower.find(b"content-length:")
            length = 0
            if i >= 0:
                j = head.find(b"\r\n", i)
                length = int(head[i + 15 : j if j >= 0 else len(head)])
            total = end + 4 + length
            if len(self.buf) < total:
                return
            body = self.buf[end + 4 : total]
            self.buf = self.buf[total:]
            if BIG_MARK in body:
                self.big_task = asyncio.ensure_future(self.send_big())
            elif STREAM_MARK in body:
                self.transport.write(self.stream)  # type: ignore[union-attr]
            else:
                self.transport.write(self.plain)  # type: ignore[union-attr]

    async def send_big(self) -> None:
        # write_eof-free fast writer: respects the transport's flow control via drain-like waits
        transport = self.transport
        assert transport is not None
        for part in self.big:
            if transport.is_closing():
                return
            transport.write(part)
            while transport.get_write_buffer_size() > 4 * 1024 * 1024 and not transport.is_closing():
                await asyncio.sleep(0.005)


async def serve(port: int, chunks: int, big_chunks: int) -> None:
    responses = build_responses(chunks, big_chunks)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: MockProtocol(responses), "127.0.0.1", port, backlog=4096)
    print(f"READY {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--chunks", type=int, default=200)
    parser.add_argument("--big-chunks", type=int, default=30000)
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(serve(args.port, args.chunks, args.big_chunks))


if __name__ == "__main__":
    main()
