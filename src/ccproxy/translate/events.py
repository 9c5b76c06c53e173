"""Anthropic Messages output shared by every translator and upstream adapter: ids, whole
messages, the SSE events of a stream (PROTOCOL.md §3), error and ping events, and the
``StreamTranslator`` interface the adapters drive.
"""

from __future__ import annotations

import itertools
import secrets
from typing import Any, Protocol

import orjson

from .._native import frame_event


class StreamTranslator(Protocol):
    """Upstream stream → Anthropic SSE bytes, one upstream event at a time.

    The adapter calls ``start`` once, ``feed`` per upstream SSE event (``event`` is its
    ``event:`` name, ``None`` when absent), then ``finish`` when the upstream stream ended, or
    ``fail`` when it broke. ``finish`` raises ``StreamFailure`` when the upstream never said it
    was done: the closing events are sent only for a stream that really ended."""

    @property
    def upstream_done(self) -> bool:
        """The upstream's own end marker was seen: stop reading."""
        ...

    @property
    def stop_reason(self) -> str | None: ...

    def start(self) -> bytes: ...

    def feed(self, data: bytes, event: str | None = None) -> bytes: ...

    def feed_all(self, items: list[tuple[str | None, bytes]], out: list[bytes]) -> None:
        """``feed`` for each ``(event, data)`` pair of one upstream read, the event bytes
        appended to ``out`` (so those of the pairs before a failure are kept)."""
        ...

    def finish(self) -> bytes: ...

    def fail(self, error_type: str, message: str) -> bytes: ...

    def final_usage(self) -> dict[str, int]: ...


class StreamFailure(Exception):
    """The upstream stream cannot be completed; becomes an SSE ``error`` event."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message


# Ids: a random per-process prefix and a counter, unique without a syscall per id.
_ID_PREFIX = secrets.token_hex(6)
_id_counter = itertools.count(1)


def new_message_id() -> str:
    return f"msg_{_ID_PREFIX}{next(_id_counter):012x}"


def new_tool_id() -> str:
    return f"toolu_{_ID_PREFIX}{next(_id_counter):012x}"


def search_blocks(srv_id: str, query: str, content: Any) -> list[dict[str, Any]]:
    """One web search as Anthropic's server tool blocks: the ``server_tool_use`` and its
    ``web_search_tool_result`` (``content``: the result items, or an error object)."""
    return [
        {"type": "server_tool_use", "id": srv_id, "name": "web_search", "input": {"query": query}},
        {"type": "web_search_tool_result", "tool_use_id": srv_id, "content": content},
    ]


def with_searches(usage: dict[str, Any], searches: int) -> dict[str, Any]:
    """Usage that counts the web searches made (``server_tool_use``)."""
    return {**usage, "server_tool_use": {"web_search_requests": searches}}


def assistant_message(
    requested_model: str, content: list[dict[str, Any]], stop_reason: str, usage: dict[str, int]
) -> dict[str, Any]:
    """A complete Anthropic message; an answer with no blocks gets one empty text block, which is
    what clients that read content[0] expect."""
    return {
        "id": new_message_id(),
        "type": "message",
        "role": "assistant",
        "model": requested_model,
        "content": content or [{"type": "text", "text": ""}],
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": usage,
    }


def client_tool_name(name: str, tool_names: dict[str, str] | None) -> str:
    """The client's tool name for one the upstream saw shortened (chat_request.upstream_tool_name)."""
    return tool_names.get(name, name) if tool_names else name


def message_events(message: dict[str, Any]) -> bytes:
    """A complete Anthropic message as the event stream a streaming client expects.

    Used when an upstream answers a streaming request with a plain JSON completion.
    """
    out = [message_start_of(message)]
    out += [block_events(index, block) for index, block in enumerate(message["content"])]
    out.append(message_end(message["stop_reason"], message["usage"], message["stop_sequence"]))
    return b"".join(out)


def message_start_of(message: dict[str, Any]) -> bytes:
    start = {**message, "content": [], "stop_reason": None, "stop_sequence": None}
    return frame_event("message_start", orjson.dumps({"type": "message_start", "message": start}))


def block_events(index: int, block: dict[str, Any]) -> bytes:
    """One whole content block as start, delta(s) and stop events (Anthropic's streaming shape:
    tool inputs arrive as ``input_json_delta``; a web_search_tool_result comes whole in its start)."""
    kind = block["type"]
    delta: dict[str, Any] | None
    if kind == "text":
        empty: dict[str, Any] = {"type": "text", "text": ""}
        delta = {"type": "text_delta", "text": block["text"]}
    elif kind == "thinking":
        empty = {"type": "thinking", "thinking": "", "signature": ""}
        delta = {"type": "thinking_delta", "thinking": block["thinking"]}
    elif kind in ("tool_use", "server_tool_use"):
        empty = {**block, "input": {}}
        delta = {"type": "input_json_delta", "partial_json": orjson.dumps(block["input"]).decode()}
    else:  # web_search_tool_result and other result blocks
        empty, delta = block, None
    out = [
        frame_event(
            "content_block_start", orjson.dumps({"type": "content_block_start", "index": index, "content_block": empty})
        )
    ]
    deltas = (
        [{"type": "citations_delta", "citation": c} for c in block.get("citations") or ()] if kind == "text" else []
    )
    if delta is not None:
        deltas.append(delta)
    for one in deltas:
        out.append(
            frame_event(
                "content_block_delta", orjson.dumps({"type": "content_block_delta", "index": index, "delta": one})
            )
        )
    out.append(frame_event("content_block_stop", orjson.dumps({"type": "content_block_stop", "index": index})))
    return b"".join(out)


def message_end(stop_reason: str, usage: dict[str, Any], stop_sequence: str | None = None) -> bytes:
    delta = {
        "type": "message_delta",
        "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
        "usage": usage,
    }
    return frame_event("message_delta", orjson.dumps(delta)) + frame_event("message_stop", b'{"type":"message_stop"}')


def error_event(error_type: str, message: str) -> bytes:
    return frame_event("error", orjson.dumps({"type": "error", "error": {"type": error_type, "message": message}}))


PING_EVENT = frame_event("ping", b'{"type":"ping"}')


def message_start_event(message_id: str, model: str, input_estimate: int) -> bytes:
    """The first event of every translated stream; true usage follows in message_delta."""
    message = {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "content": [],
        "model": model,
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {
            "input_tokens": input_estimate,
            "output_tokens": 0,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        },
    }
    return frame_event("message_start", orjson.dumps({"type": "message_start", "message": message}))
