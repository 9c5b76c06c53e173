"""The floor: the thinnest Python pass-through hop, to measure CCProxy against.

Granian receives the body, forwards it unchanged over a pooled keep-alive aiohttp connection,
and relays the answer: whole for JSON, chunk by chunk for event streams. No parsing, no
translation, no logging. Two variants on the same server and client class as the proxy:

* ``app`` (RSGI): the fastest hop Granian allows, but without backpressure on streamed bodies;
* ``asgi_app`` (ASGI): ~20% slower, and memory-safe with slow clients, like the proxy's default.

Run: ``FLOOR_UPSTREAM=http://127.0.0.1:PORT/v1/chat/completions \
granian --interface rsgi --workers 1 --port P benchmarks.floor:app``
(or ``--interface asgi benchmarks.floor:asgi_app``).
"""

from __future__ import annotations

import os

import aiohttp

UPSTREAM = os.environ.get("FLOOR_UPSTREAM", "http://127.0.0.1:8001/v1/chat/completions")
FORWARD_HEADERS = {"content-type": "application/json", "authorization": "Bearer floor"}


class Floor:
    def __init__(self) -> None:
        self.session: aiohttp.ClientSession | None = None

    async def __rsgi__(self, scope, proto) -> None:  # type: ignore[no-untyped-def]
        if self.session is None:  # created inside the serving loop
            self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), auto_decompress=False)
        body = await proto()
        async with self.session.post(UPSTREAM, data=body, headers=FORWARD_HEADERS) as resp:
            ctype = resp.headers.get("content-type", "application/json")
            if ctype.startswith("text/event-stream"):
                transport = proto.response_stream(resp.status, [("content-type", ctype)])
                async for chunk in resp.content.iter_any():
                    await transport.send_bytes(chunk)
            else:
                proto.response_bytes(resp.status, [("content-type", ctype)], await resp.read())

    async def __call__(self, scope, receive, send) -> None:  # type: ignore[no-untyped-def]
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if self.session is None:
            self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), auto_decompress=False)
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        async with self.session.post(UPSTREAM, data=body, headers=FORWARD_HEADERS) as resp:
            ctype = resp.headers.get("content-type", "application/json")
            headers = [(b"content-type", ctype.encode())]
            await send({"type": "http.response.start", "status": resp.status, "headers": headers})
            if ctype.startswith("text/event-stream"):
                async for chunk in resp.content.iter_any():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b""})
            else:
                await send({"type": "http.response.body", "body": await resp.read()})


app = Floor()
asgi_app = app
