"""The floor: the thinnest Python pass-through hop, to measure CCProxy against.

Granian (RSGI, the cheapest interface it offers) receives the body, forwards it unchanged over a
pooled keep-alive aiohttp connection, and relays the answer: whole for JSON, chunk by chunk for
event streams. No parsing, no translation, no logging. It uses the same server and the same
upstream client class as the proxy, so the ratio proxy/floor isolates what CCProxy itself adds.

Run: ``FLOOR_UPSTREAM=http://127.0.0.1:PORT/v1/chat/completions \
granian --interface rsgi --workers 1 --port P benchmarks.floor:app``
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


app = Floor()
