"""A scripted OpenAI Chat Completions upstream for tests: a real process on loopback.

Run: ``python tests/support/mock_upstream.py [port [certfile keyfile]]``; it prints ``READY <port>``.
With a certificate and key it speaks HTTPS (tests of proxies and private CAs).

Tests register a script under a unique key (``POST /_scripts {"key", "responses": [...]}``)
and put the key somewhere in the request (usually the user's text; for a GET, the query
string: the proxy's web searches reach this mock as a SearXNG). A request whose body
contains a registered key gets that script's next response (the last one repeats) and is
recorded (``GET /_requests?key=K``). Other requests get a plain greeting.

A response spec is a JSON object:
  status, headers          HTTP status (default 200) and extra headers
  json | text              a complete body
  sse: [chunk | "raw"]     an SSE stream (chunks are JSON-encoded as ``data:`` lines)
  done: bool               append ``data: [DONE]`` (default true)
  raw_hex: [hex, …]        bytes written as separate network writes (split anywhere)
  delay: s                 pause before each SSE write
  reset_after: n           abort the connection after n SSE writes (no finish)
  hang_after: n            stop writing after n SSE writes but keep the connection open
  wait: s                  pause before the status line (a client hanging up meanwhile is
                           recorded as disconnected_at at once)
  raw: [hex, …]            the whole answer, head included, written as is; then the connection closes
  flood: {head, block, count}  write ``head`` then ``block`` ``count`` times (a hostile upstream)
  extra_response: bool     after the answer, one more response nobody asked for

Recorded requests carry received_at, and finished_at or disconnected_at (the proxy hung up).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from urllib.parse import parse_qs, unquote_plus, urlsplit

SCRIPTS: dict[str, list[dict]] = {}
RECORDED: dict[str, list[dict]] = {}

GREETING = {
    "id": "chatcmpl-mock",
    "object": "chat.completion",
    "model": "mock",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello from mock"},
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13},
}


def greeting_stream() -> list:
    base = {"id": "chatcmpl-mock", "object": "chat.completion.chunk", "model": "mock"}
    return [
        {
            **base,
            "choices": [
                {
                    "index": 0,
                    "delta": {"role": "assistant", "content": "Hello"},
                    "finish_reason": None,
                }
            ],
        },
        {
            **base,
            "choices": [{"index": 0, "delta": {"content": " from mock"}, "finish_reason": None}],
        },
        {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
        {
            **base,
            "choices": [],
            "usage": {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13},
        },
    ]


async def read_request(
    reader: asyncio.StreamReader,
) -> tuple[str, str, dict[str, str], bytes] | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    lines = head.decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return method, target, headers, body


def head(status: int, headers: dict[str, str]) -> bytes:
    lines = [f"HTTP/1.1 {status} X"] + [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def send_json(writer: asyncio.StreamWriter, status: int, body: bytes, extra: dict | None = None) -> None:
    headers = {
        "content-type": "application/json",
        "content-length": str(len(body)),
        **(extra or {}),
    }
    writer.write(head(status, headers) + body)
    await writer.drain()


async def chunk(writer: asyncio.StreamWriter, data: bytes) -> None:
    writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
    await writer.drain()


async def respond(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, spec: dict) -> bool:
    """Write one scripted response; False when the connection must not be reused."""
    if spec.get("wait"):
        try:  # the proxy sends nothing more on this connection: bytes or EOF mean it hung up
            if not await asyncio.wait_for(reader.read(1), spec["wait"]):
                raise ConnectionResetError("the client hung up while the answer was pending")
        except TimeoutError:
            pass
    if "raw" in spec:
        for piece in spec["raw"]:
            writer.write(bytes.fromhex(piece))
            await writer.drain()
        return False
    if "flood" in spec:
        flood = spec["flood"]
        writer.write(flood["head"].encode())
        block = flood["block"].encode() * (flood.get("repeat", 1))
        for _ in range(flood["count"]):
            writer.write(block)
            await writer.drain()
        return False
    if spec.get("reset"):  # hang up before a single byte of the answer
        writer.transport.abort()
        return False
    status = spec.get("status", 200)
    extra = spec.get("headers", {})
    if "json" in spec or "text" in spec:
        body = json.dumps(spec["json"]).encode() if "json" in spec else spec["text"].encode()
        await send_json(writer, status, body, extra)
        if spec.get("extra_response"):
            await send_json(writer, 200, json.dumps({**GREETING, "id": "chatcmpl-unrequested"}).encode())
        return True
    headers = {"content-type": "text/event-stream", "transfer-encoding": "chunked", **extra}
    writer.write(head(status, headers))
    writes: list[bytes] = []
    if "raw_hex" in spec:
        writes = [bytes.fromhex(h) for h in spec["raw_hex"]]
    else:
        for item in spec.get("sse", []):
            data = item if isinstance(item, str) else json.dumps(item, ensure_ascii=False)
            writes.append(f"data: {data}\n\n".encode())
        if spec.get("done", True):
            writes.append(b"data: [DONE]\n\n")
    for n, data in enumerate(writes):
        if spec.get("reset_after") == n:
            writer.transport.abort()
            return False
        if spec.get("hang_after") == n:
            await asyncio.sleep(3600)
        if spec.get("delay"):
            await asyncio.sleep(spec["delay"])
        await chunk(writer, data)
    if spec.get("reset_after") == len(writes):
        writer.transport.abort()
        return False
    await chunk(writer, b"")
    return True


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            request = await read_request(reader)
            if request is None:
                break
            method, target, headers, body = request
            url = urlsplit(target)
            if url.path == "/_scripts" and method == "POST":
                script = json.loads(body)
                SCRIPTS[script["key"]] = list(script["responses"])
                RECORDED.setdefault(script["key"], [])
                await send_json(writer, 200, b'{"ok":true}')
                continue
            if url.path == "/_requests":
                key = parse_qs(url.query).get("key", [""])[0]
                await send_json(writer, 200, json.dumps(RECORDED.get(key, [])).encode())
                continue
            # (a GET, e.g. a search engine's /search?q=…, carries its key in the query)
            text = body.decode("utf-8", "replace") + " " + unquote_plus(url.query)
            key = next((k for k in SCRIPTS if k in text), None)
            if key is None:
                stream = b'"stream":true' in body.replace(b" ", b"")
                spec = {"sse": greeting_stream()} if stream else {"json": GREETING}
            else:
                parsed = json.loads(body) if body else None
                RECORDED[key].append(
                    {
                        "method": method,
                        "path": url.path,
                        "query": url.query,
                        "headers": headers,
                        "body": parsed,
                        "received_at": time.time(),
                    }
                )
                queue = SCRIPTS[key]
                spec = queue.pop(0) if len(queue) > 1 else queue[0]
            record = RECORDED[key][-1] if key is not None else {}
            try:
                reusable = await respond(reader, writer, spec)
            except ConnectionError:
                # the proxy hung up on us (its client left): tests check how fast that happens
                record["disconnected_at"] = time.time()
                raise
            record["finished_at"] = time.time()
            if not reusable:
                return
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        writer.close()


async def main(port: int, tls: list[str]) -> None:
    context = None
    if tls:
        import ssl

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(tls[0], tls[1])
    server = await asyncio.start_server(handle, "127.0.0.1", port, ssl=context)
    print(f"READY {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 0, sys.argv[2:4]))
