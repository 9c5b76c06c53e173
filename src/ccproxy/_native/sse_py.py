"""Server-sent events: framing of outgoing events and incremental parsing of upstream streams.

Reference implementation of the ``sse`` pair. The parser works on bytes and only decodes
complete events, so a network read that splits a multi-byte UTF-8 character is harmless.
"""

from __future__ import annotations

import orjson


def frame_event(event: str, data: bytes) -> bytes:
    """One SSE event on the wire: ``event: <name>\\ndata: <json>\\n\\n``."""
    return b"event: " + event.encode() + b"\ndata: " + data + b"\n\n"


def content_delta(index: int, delta_type: str, field: str, value: str) -> bytes:
    """A whole ``content_block_delta`` event, the one a stream sends per upstream chunk:
    ``{"type":"content_block_delta","index":N,"delta":{"type":delta_type,field:value}}``."""
    return (
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":'
        + str(index).encode()
        + b',"delta":{"type":"'
        + delta_type.encode()
        + b'","'
        + field.encode()
        + b'":'
        + orjson.dumps(value)
        + b"}}\n\n"
    )


class SSEDecoder:
    """Feed raw bytes as they arrive; get back complete ``(event_name, data)`` pairs.

    ``event_name`` is None when the event had no ``event:`` line (OpenAI's chunks). Comment
    lines and events without data are skipped. Line endings may be LF or CRLF.
    """

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, chunk: bytes) -> list[tuple[str | None, bytes]]:
        buf = self._buf + chunk if self._buf else chunk
        if b"\r" in buf:
            buf = buf.replace(b"\r\n", b"\n")
        end = buf.rfind(b"\n\n")
        if end < 0:
            self._buf = buf
            return []
        self._buf = buf[end + 2 :]
        out: list[tuple[str | None, bytes]] = []
        for block in buf[:end].split(b"\n\n"):
            parsed = _parse_block(block)
            if parsed is not None:
                out.append(parsed)
        return out

    def flush(self) -> list[tuple[str | None, bytes]]:
        """Whatever complete-looking event is left when the stream ends without a blank line."""
        block, self._buf = self._buf.strip(b"\n"), b""
        parsed = _parse_block(block) if block else None
        return [parsed] if parsed is not None else []

    @property
    def pending(self) -> int:
        return len(self._buf)


def _parse_block(block: bytes) -> tuple[str | None, bytes] | None:
    if block.startswith(b"data: ") and b"\n" not in block:  # the common single-line event
        return None, block[6:]
    event: str | None = None
    data: list[bytes] = []
    for line in block.split(b"\n"):
        if not line or line[0] == 0x3A:  # blank or ":" comment
            continue
        field, _, value = line.partition(b":")
        if value[:1] == b" ":
            value = value[1:]
        if field == b"data":
            data.append(value)
        elif field == b"event":
            event = value.decode("utf-8", "replace").strip()
    if not data:
        return None
    return event, b"\n".join(data)
