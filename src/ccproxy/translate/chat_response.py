"""OpenAI Chat Completions response / chunk stream → Anthropic message / events (PROTOCOL.md §1, §3).

``ChatStreamTranslator`` is the explicit state machine: feed it one upstream SSE data payload
at a time, get back the Anthropic event bytes to send. Its rules:

* Blocks are sequential; the open block is closed before the next starts.
* Text and thinking stream live. Tool calls are keyed by the upstream ``index``; the first
  tool streams live, and a second one starts only once the first one's arguments form a
  complete JSON object (fragments of several tool calls may interleave). Fragments for tools
  that cannot stream yet are buffered and flushed in first-seen order at the end.
* Arguments pass through ``JsonObjectPrefix``, so the ``partial_json`` of every tool block
  concatenates to a valid object even when the upstream's is malformed or truncated.
* The closing events go out only when the upstream finished properly (a finish reason was
  seen); otherwise ``finish()`` raises ``StreamFailure`` and the caller sends an SSE error
  event: never a fake ``message_stop``.
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec
import orjson

from .._native import IMPLEMENTATIONS, content_delta, frame_event, text_of_chunk, text_run
from ..schemas.openai_chat import (
    ChatChunk,
    ChatCompletion,
    ToolCall,
    Usage,
    decode_chunk,
)
from .chat_fields import (
    TEXT,
    THINKING,
    ThinkTags,
    arguments_text,
    content_parts,
    map_usage,
    parse_arguments,
    reasoning_of,
    split_think,
    stop_reason_for,
    url_citation,
)
from .events import (
    StreamFailure,
    assistant_message,
    client_tool_name,
    error_event,
    message_start_event,
    new_message_id,
    new_tool_id,
)
from .json_prefix import JsonObjectPrefix

log = logging.getLogger("ccproxy.translate")


def completion_to_message(
    resp: ChatCompletion,
    requested_model: str,
    input_estimate: int,
    tool_names: dict[str, str] | None = None,
    think_tags: bool = True,
) -> dict[str, Any]:
    if resp.error is not None and not resp.choices:
        raise StreamFailure(*_error_of(resp.error))
    if not resp.choices:
        raise StreamFailure("api_error", "upstream response has no choices")
    choice = next((c for c in resp.choices if c.index == 0), resp.choices[0])
    msg = choice.message
    content: list[dict[str, Any]] = []
    chars = 0
    if msg is not None:
        thought, text = content_parts(msg.content)
        if think_tags and not thought and text:
            thought, text = split_think(text)
        reasoning = reasoning_of(msg.reasoning_content, msg.reasoning, msg.reasoning_details) or thought
        if reasoning:
            content.append({"type": "thinking", "thinking": reasoning, "signature": ""})
            chars += len(reasoning)
        text = text or msg.refusal or ""
        if text:
            block: dict[str, Any] = {"type": "text", "text": text}
            citations = [c for a in msg.annotations or () if (c := url_citation(a, text))]
            if citations:
                block["citations"] = citations
            content.append(block)
            chars += len(text)
        for call in msg.tool_calls or []:
            fn = call.function
            args = arguments_text(fn.arguments) if fn else None
            chars += len(args or "")
            content.append(
                {
                    "type": "tool_use",
                    "id": call.id or new_tool_id(),
                    "name": client_tool_name((fn.name if fn else None) or "", tool_names),
                    "input": parse_arguments(args),
                }
            )
    has_tools = any(block["type"] == "tool_use" for block in content)
    return assistant_message(
        requested_model,
        content,
        stop_reason_for(choice.finish_reason, has_tools),
        map_usage(resp.usage, input_estimate, max(1, chars // 4)),
    )


def _error_text(error: Any) -> str:
    if isinstance(error, dict):
        return str(error.get("message") or orjson.dumps(error).decode())
    return str(error)


def _error_of(error: Any) -> tuple[str, str]:
    """(Anthropic error type, message) of an error object an upstream sent instead of an answer
    (OpenRouter's in-stream ``error``, Groq's ``event: error`` frames)."""
    code = error.get("code") if isinstance(error, dict) else None
    kind = error.get("type") if isinstance(error, dict) else None
    if code in (429, "429", "rate_limit_exceeded") or kind in ("rate_limit_error", "rate_limit_exceeded"):
        error_type = "rate_limit_error"
    elif code in (502, 503, 529, "502", "503", "529") or kind in ("overloaded_error", "server_overloaded"):
        error_type = "overloaded_error"
    else:
        error_type = "api_error"
    return error_type, f"upstream error: {_error_text(error)}"


# --- streaming -----------------------------------------------------------------------------


_TEXT, _THINKING, _TOOL = TEXT, THINKING, 3
_DELTA_TYPES = {_TEXT: ("text_delta", "text"), _THINKING: ("thinking_delta", "thinking")}


class _ToolState:
    __slots__ = ("checker", "id", "index", "name", "pending", "upstream_id")

    def __init__(self, call_id: str, name: str) -> None:
        self.id = call_id
        self.upstream_id: str | None = None  # the id the upstream gave, if any
        self.name = name
        self.pending: list[str] = []
        self.checker = JsonObjectPrefix()
        self.index: int | None = None  # content block index once started


# Most chunks of a stream carry nothing but a piece of text. The native ``text_of_chunk`` reads
# such a chunk in ~0.4 µs; decoding it into structs takes ~0.8 µs more. Its pure twin is slower
# than msgspec (byte searches in Python), so without the native module every chunk is decoded.
FAST_TEXT = IMPLEMENTATIONS.get("sse") == "cython"


class ChatStreamTranslator:
    """One per streamed request: Chat chunks in, Anthropic SSE event bytes out."""

    def __init__(
        self,
        requested_model: str,
        input_estimate: int,
        message_id: str | None = None,
        tool_names: dict[str, str] | None = None,
        think_tags: bool = True,
    ) -> None:
        self.model = requested_model
        self._think: ThinkTags | None = ThinkTags() if think_tags else None
        self.tool_names = tool_names
        self.message_id = message_id or new_message_id()
        self.input_estimate = input_estimate
        self.finish_reason: str | None = None
        self.usage: Usage | None = None
        self.upstream_done = False  # "[DONE]" seen
        self.closed = False  # message_stop or error sent
        self._next_index = 0
        self._open: int = 0  # kind of the open block (0: none)
        self._open_tool: _ToolState | None = None
        self._tools: dict[int | str, _ToolState] = {}
        self._tool_order: list[_ToolState] = []
        self._live: _ToolState | None = None
        self._last_key: int | str | None = None
        self._trailing: list[tuple[int, str]] = []  # text/thinking held back behind tools
        self._chars = 0
        self._out: list[bytes] = []

    # -- public API --

    def start(self) -> bytes:
        return message_start_event(self.message_id, self.model, self.input_estimate)

    def feed_all(self, items: list[tuple[str | None, bytes]], out: list[bytes]) -> None:
        """Every pair of one upstream read. Runs of text-only chunks into an open text block
        (most of a stream) become their events in one native call (``text_run``)."""
        i, n = 0, len(items)
        while i < n:
            if FAST_TEXT and self._open == _TEXT and self._think is None and not self._tool_order:
                events, used, chars = text_run(items, i, self._next_index - 1)
                if used:
                    if events:
                        out.append(events)
                    self._chars += chars
                    i += used
                    continue
            event, data = items[i]
            piece = self.feed(data, event)
            if piece:
                out.append(piece)
            i += 1

    def feed(self, data: bytes, event: str | None = None) -> bytes:
        """One upstream SSE ``data:`` payload → the event bytes to send (maybe empty)."""
        if data == b"[DONE]":
            self.upstream_done = True
            return b""
        if event is not None and event == "error":  # (Groq): the data is an error object, or plain text
            try:
                error = orjson.loads(data)
            except orjson.JSONDecodeError:
                error = data.decode("utf-8", "replace")
            raise StreamFailure(*_error_of(error.get("error", error) if isinstance(error, dict) else error))
        if FAST_TEXT and self._think is None:  # (think tags still being looked for: the full path)
            text = text_of_chunk(data)
            if text is not None:
                if text:
                    self._content(_TEXT, text)
                if not self._out:
                    return b""
                out = b"".join(self._out)
                self._out.clear()
                return out
        try:
            chunk = decode_chunk(data)
        except msgspec.DecodeError:
            raise StreamFailure("api_error", "upstream sent an invalid stream chunk") from None
        except msgspec.ValidationError as exc:
            raise StreamFailure("api_error", f"upstream sent an unexpected stream chunk: {exc}") from None
        self._apply(chunk)
        if not self._out:
            return b""
        out = b"".join(self._out)
        self._out.clear()
        return out

    def finish(self) -> bytes:
        """Closing events once the upstream ended; raises StreamFailure if it never finished:
        no finish_reason and no ``[DONE]`` (some servers, Snowflake Cortex among them, never
        send a finish_reason but end with ``[DONE]``: that is a normal end)."""
        if self.finish_reason is None:
            if not self.upstream_done:
                raise StreamFailure(
                    "api_error",
                    "upstream stream ended before the response was complete (no finish_reason)",
                )
            self.finish_reason = "stop"
        if self._think is not None:
            for kind, piece in self._think.flush():
                self._content(kind, piece)
        out = self._out
        if self._live is not None:
            self._flush_tool(self._live)
            self._close_block()
            self._live = None
        for tool in self._tool_order:
            if tool.index is None:
                self._start_tool(tool)
                self._flush_tool(tool)
                self._close_block()
        for kind, text in self._trailing:
            self._emit_text(kind, text)
        if self._next_index == 0:
            self._emit_text(_TEXT, "")
        self._close_block()
        usage = map_usage(self.usage, self.input_estimate, max(1, self._chars // 4))
        delta = {
            "type": "message_delta",
            "delta": {"stop_reason": self.stop_reason, "stop_sequence": None},
            "usage": usage,
        }
        out.append(frame_event("message_delta", orjson.dumps(delta)))
        out.append(frame_event("message_stop", b'{"type":"message_stop"}'))
        self.closed = True
        result = b"".join(out)
        out.clear()
        return result

    def final_usage(self) -> dict[str, int]:
        return map_usage(self.usage, self.input_estimate, max(1, self._chars // 4))

    @property
    def stop_reason(self) -> str | None:
        if self.finish_reason is None:
            return None
        return stop_reason_for(self.finish_reason, bool(self._tool_order))

    def fail(self, error_type: str, message: str) -> bytes:
        self.closed = True
        self._out.clear()
        return error_event(error_type, message)

    # -- chunk handling --

    def _apply(self, chunk: ChatChunk) -> None:
        if chunk.error is not None:
            raise StreamFailure(*_error_of(chunk.error))
        if chunk.usage is not None:  # (cumulative where sent in every chunk: the last one counts)
            self.usage = chunk.usage
        elif chunk.x_groq is not None and chunk.x_groq.usage is not None:
            self.usage = chunk.x_groq.usage
        for choice in chunk.choices or ():
            if choice.index != 0:
                continue
            delta = choice.delta
            if delta is not None:
                text = delta.content
                reasoning = delta.reasoning_content or delta.reasoning
                if text is not None and text.__class__ is not str:  # a list of parts
                    thought, text = content_parts(text)
                    reasoning = reasoning or thought
                if not reasoning and delta.reasoning_details is not None:
                    reasoning = reasoning_of(None, None, delta.reasoning_details)
                if reasoning:
                    self._content(_THINKING, reasoning)
                if text:
                    think = self._think
                    if think is None:
                        self._content(_TEXT, text)
                    else:
                        for kind, piece in think.feed(text):
                            self._content(kind, piece)
                        if think.settled:  # plain text from here on: no more per-chunk work
                            self._think = None
                if delta.refusal:
                    self._content(_TEXT, delta.refusal)
                if delta.tool_calls:
                    for call in delta.tool_calls:
                        self._tool_fragment(call)
            if choice.finish_reason:
                self.finish_reason = choice.finish_reason

    def _content(self, kind: int, text: str) -> None:
        self._chars += len(text)
        if self._tool_order:
            if not self._tools_settled():
                if self._trailing and self._trailing[-1][0] == kind:
                    self._trailing[-1] = (kind, self._trailing[-1][1] + text)
                else:
                    self._trailing.append((kind, text))
                return
            if self._live is not None:
                self._close_block()
                self._live = None
        self._emit_text(kind, text)

    def _tools_settled(self) -> bool:
        """Every tool seen so far is streamed and complete, so a new block may open."""
        live = self._live
        if live is not None and not live.checker.done:
            return False
        return all(tool.index is not None for tool in self._tool_order) and not self._trailing

    def _emit_text(self, kind: int, text: str) -> None:
        if self._open != kind:
            self._close_block()
            index = self._next_index
            self._next_index += 1
            self._open = kind
            block: dict[str, Any] = (
                {"type": "text", "text": ""} if kind == _TEXT else {"type": "thinking", "thinking": "", "signature": ""}
            )
            self._out.append(
                frame_event(
                    "content_block_start",
                    orjson.dumps({"type": "content_block_start", "index": index, "content_block": block}),
                )
            )
        if text:
            delta_type, field = _DELTA_TYPES[kind]
            self._out.append(content_delta(self._next_index - 1, delta_type, field, text))

    def _close_block(self) -> None:
        if self._open == _TOOL and self._open_tool is not None:
            # Close whatever the arguments left open (or send "{}" for no arguments).
            suffix = self._open_tool.checker.complete()
            if suffix:
                self._json_delta(self._open_tool, suffix)
            self._open_tool = None
        if self._open:
            self._out.append(
                b'event: content_block_stop\ndata: {"type":"content_block_stop","index":'
                + str(self._next_index - 1).encode()
                + b"}\n\n"
            )
            self._open = 0

    def _tool_fragment(self, call: ToolCall) -> None:
        fn = call.function
        call_id = call.id or None  # (later fragments may carry id: "")
        key: int | str | None = call.index
        if key is None:  # servers that omit index: match by id, else continue the last call
            if call_id is not None:
                key = call_id
            elif self._last_key is not None:
                key = self._last_key
            else:
                key = 0
        tool = self._tools.get(key)
        if tool is not None and call_id is not None and tool.upstream_id not in (None, call_id):
            # Another call under an index already used (servers that number every call 0).
            key = call_id
            tool = self._tools.get(key)
        if tool is None:
            tool = _ToolState(call_id or new_tool_id(), (fn.name if fn else None) or "")
            tool.upstream_id = call_id
            self._tools[key] = tool
            self._tool_order.append(tool)
        elif fn is not None and fn.name and not tool.name:
            tool.name = fn.name
        self._last_key = key
        arguments = arguments_text(fn.arguments) if fn is not None else None
        if arguments:
            self._chars += len(arguments)
            if tool.index is not None and tool is not self._live:
                log.warning("dropped arguments for tool call %s after its block closed", tool.id)
            else:
                tool.pending.append(arguments)
        self._advance_tools()

    def _advance_tools(self) -> None:
        while True:
            live = self._live
            if live is not None:
                self._flush_tool(live)
                if not live.checker.done:
                    return
                waiting = next((t for t in self._tool_order if t.index is None), None)
                if waiting is None:
                    return
                self._close_block()
                self._live = None
            waiting = next((t for t in self._tool_order if t.index is None), None)
            if waiting is None or not waiting.name:
                return
            self._start_tool(waiting)
            self._live = waiting

    def _start_tool(self, tool: _ToolState) -> None:
        self._close_block()
        tool.index = self._next_index
        self._next_index += 1
        self._open = _TOOL
        self._open_tool = tool
        block = {"type": "tool_use", "id": tool.id, "name": client_tool_name(tool.name, self.tool_names), "input": {}}
        self._out.append(
            frame_event(
                "content_block_start",
                orjson.dumps({"type": "content_block_start", "index": tool.index, "content_block": block}),
            )
        )

    def _flush_tool(self, tool: _ToolState) -> None:
        if tool.pending:
            was_broken = tool.checker.broken
            text = tool.checker.feed("".join(tool.pending))
            tool.pending.clear()
            if tool.checker.broken and not was_broken:
                log.warning("upstream sent malformed arguments for tool call %s; repaired", tool.id)
            if text:
                self._json_delta(tool, text)

    def _json_delta(self, tool: _ToolState, text: str) -> None:
        self._out.append(content_delta(tool.index, "input_json_delta", "partial_json", text))  # type: ignore[arg-type]
