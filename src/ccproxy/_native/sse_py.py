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


# A Chat chunk that carries nothing but a piece of text, in the compact shape OpenAI and the
# servers copying it write: the translator takes its text without decoding the chunk.
TEXT_START = b'"choices":[{"index":0,"delta":{'
TEXT_ROLE = b'"role":"assistant",'
TEXT_CONTENT = b'"content":"'
TEXT_ENDS = (b'"},"finish_reason":null}]', b'"},"logprobs":null,"finish_reason":null}]')
NOT_TEXT_ONLY = (b'"usage":{', b'"error"', b'"x_groq"')


def text_of_chunk(data: bytes) -> str | None:
    """The text of a text-only chunk, or None: decode that chunk in full. The text runs from
    ``"content":"`` to the next quote, which must begin one of TEXT_ENDS. A quote inside the
    text, another key, usage, an error, or a string JSON would not accept also mean None."""
    at = data.find(TEXT_START)
    if at < 0:
        return None
    at += len(TEXT_START)
    if data.startswith(TEXT_ROLE, at):
        at += len(TEXT_ROLE)
    if not data.startswith(TEXT_CONTENT, at):
        return None
    at += len(TEXT_CONTENT)
    end = data.find(b'"', at)
    if end < 0 or not (data.startswith(TEXT_ENDS[0], end) or data.startswith(TEXT_ENDS[1], end)):
        return None  # (an escaped quote ends the search early: the full decode reads those)
    if any(marker in data for marker in NOT_TEXT_ONLY):
        return None
    try:  # (JSON's rules: escapes, no raw control characters, valid UTF-8)
        return orjson.loads(b'"' + data[at:end] + b'"')
    except orjson.JSONDecodeError:
        return None


def text_run(items: list[tuple[str | None, bytes]], start: int, index: int) -> tuple[bytes, int, int]:
    """The ``text_delta`` events of the text-only chunks that lead ``items[start:]`` (the
    ``(event, data)`` pairs ``SSEDecoder.feed`` returns), all for the open text block ``index``:
    ``(events, pairs consumed, characters)``. Stops at the first pair that is anything else."""
    parts = []
    chars = 0
    k = start
    for event, data in items[start:]:
        if event is not None:
            break
        text = text_of_chunk(data)
        if text is None:
            break
        if text:
            parts.append(content_delta(index, "text_delta", "text", text))
            chars += len(text)
        k += 1
    return b"".join(parts), k - start, chars
