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

from .._native import content_delta, frame_event
from ..schemas.openai_chat import (
    ChatChunk,
    ChatCompletion,
    ToolCall,
    Usage,
    decode_chunk,
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
from .json_prefix import JsonObjectPrefix, repair_object

log = logging.getLogger("ccproxy.translate")

STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
    "end_turn": "end_turn",
    # spellings of other servers (TGI and vLLM's "eos", Gemini's upper case, Anthropic-style names)
    "eos": "end_turn",
    "eos_token": "end_turn",
    "max_tokens": "max_tokens",
    "model_length": "max_tokens",
    "tool_use": "tool_use",
    "safety": "refusal",
}


def map_usage(usage: Usage | None, input_estimate: int, output_estimate: int) -> dict[str, int]:
    """Chat usage → Anthropic usage; cached prompt tokens are reported apart from input, and
    reasoning tokens are counted in output when the provider leaves them out of
    ``completion_tokens`` (xAI does: its ``total_tokens`` then counts them on top)."""
    if usage is None:
        return {
            "input_tokens": input_estimate,
            "output_tokens": output_estimate,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        }
    prompt = _count(usage.prompt_tokens)
    details = usage.prompt_tokens_details
    cached = (
        _count(details.cached_tokens if details else None)
        or _count(usage.prompt_cache_hit_tokens)
        or _count(usage.cached_tokens)
    )
    cached = min(cached, prompt)
    output = _count(usage.completion_tokens) if usage.completion_tokens is not None else output_estimate
    reasoning = _count(usage.completion_tokens_details.reasoning_tokens) if usage.completion_tokens_details else 0
    if reasoning and usage.total_tokens is not None and _count(usage.total_tokens) >= prompt + output + reasoning:
        output += reasoning
    return {
        "input_tokens": prompt - cached,
        "output_tokens": output,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached,
    }


def _count(value: float | None) -> int:
    return int(value) if value else 0


def content_parts(content: Any) -> tuple[str, str]:
    """(thinking, text) of a message's or delta's ``content``: a string, or a list of parts
    (Mistral's reasoning models: ``{"type": "thinking", "thinking": [{"type": "text", …}]}``)."""
    if content is None:
        return "", ""
    if isinstance(content, str):
        return "", content
    thinking: list[str] = []
    text: list[str] = []
    for part in content:
        if isinstance(part, str):
            text.append(part)
        elif isinstance(part, dict):
            kind = part.get("type")
            if kind in ("thinking", "reasoning", "reasoning_text"):
                thinking.append(_flatten(part.get("thinking") or part.get("reasoning") or part.get("text")))
            elif kind in (None, "text", "output_text") and isinstance(part.get("text"), str):
                text.append(part["text"])
    return "".join(thinking), "".join(text)


def _flatten(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "".join(
            _flatten(item.get("text") or item.get("thinking")) if isinstance(item, dict) else _flatten(item)
            for item in value
        )
    return ""


def reasoning_of(reasoning_content: str | None, reasoning: str | None, details: list[Any] | None) -> str:
    """Reasoning text from ``reasoning_content`` (DeepSeek, vLLM), ``reasoning`` (OpenRouter,
    Ollama, Groq) or, when only they come, OpenRouter's ``reasoning_details`` items."""
    if reasoning_content or reasoning:
        return reasoning_content or reasoning or ""
    if not details:
        return ""
    out = []
    for item in details:
        if isinstance(item, dict) and item.get("type") != "reasoning.encrypted":
            value = item.get("text") or item.get("summary")
            if isinstance(value, str):
                out.append(value)
    return "".join(out)


def arguments_text(arguments: str | dict[str, Any] | None) -> str | None:
    if isinstance(arguments, dict):
        return orjson.dumps(arguments).decode()
    return arguments


THINK_OPEN, THINK_CLOSE = "<think>", "</think>"


class ThinkTags:
    """Splits ``<think>…</think>`` at the start of an answer's text into thinking and text, as
    DeepSeek-R1 distills and Qwen3 answer through servers that do not separate reasoning (Groq,
    Hugging Face, vLLM, Ollama). Fed the text as it streams: a tag split across chunks is held
    back until it can be told apart. Text that does not start with ``<think>`` (after
    whitespace) passes untouched."""

    __slots__ = ("_held", "_state", "_trim")

    def __init__(self) -> None:
        self._state = 0  # 0: not yet known, 1: inside <think>, 2: plain text from here on
        self._held = ""
        self._trim = False  # drop the blank lines between </think> and the answer

    def feed(self, text: str) -> list[tuple[int, str]]:
        if self._state == 2 and not self._trim:
            return [(_TEXT, text)] if text else []
        buf = self._held + text
        self._held = ""
        out: list[tuple[int, str]] = []
        if self._state == 0:
            stripped = buf.lstrip()
            if not stripped or THINK_OPEN.startswith(stripped):
                self._held = buf  # whitespace, or the start of "<think>": not known yet
                return out
            if not stripped.startswith(THINK_OPEN):
                self._state = 2
                return [(_TEXT, buf)]
            self._state = 1
            buf = stripped[len(THINK_OPEN) :]
        if self._state == 1:
            end = buf.find(THINK_CLOSE)
            if end < 0:
                keep = next(
                    (n for n in range(min(len(buf), len(THINK_CLOSE) - 1), 0, -1) if THINK_CLOSE.startswith(buf[-n:])),
                    0,
                )
                if keep:
                    self._held, buf = buf[-keep:], buf[:-keep]
                if buf:
                    out.append((_THINKING, buf))
                return out
            if end:
                out.append((_THINKING, buf[:end]))
            buf = buf[end + len(THINK_CLOSE) :]
            self._state, self._trim = 2, True
        if self._trim:
            buf = buf.lstrip()
            if not buf:
                return out
            self._trim = False
        out.append((_TEXT, buf))
        return out

    @property
    def settled(self) -> bool:
        """Everything from here on is plain text, and nothing is held back."""
        return self._state == 2 and not self._trim and not self._held

    def flush(self) -> list[tuple[int, str]]:
        """What is held back when the text ends (an unfinished <think> stays thinking)."""
        held, self._held = self._held, ""
        if not held:
            return []
        return [(_THINKING if self._state == 1 else _TEXT, held)]


def split_think(text: str) -> tuple[str, str]:
    """(thinking, text) of a whole answer, by the ThinkTags rules."""
    tags = ThinkTags()
    parts = tags.feed(text) + tags.flush()
    return (
        "".join(piece for kind, piece in parts if kind == _THINKING),
        "".join(piece for kind, piece in parts if kind == _TEXT),
    )


def stop_reason_for(finish_reason: str | None, has_tool_use: bool) -> str:
    reason = STOP_REASONS.get(finish_reason or "stop") or STOP_REASONS.get((finish_reason or "").lower(), "end_turn")
    # Some servers (Ollama, older vLLM) say "stop" after tool calls.
    if has_tool_use and reason == "end_turn":
        return "tool_use"
    return reason


def url_citation(annotation: Any, text: str) -> dict[str, Any] | None:
    """A Chat ``url_citation`` annotation (``{type, url_citation: {url, title, content,
    start_index, end_index}}``) as Anthropic's ``web_search_result_location`` citation."""
    if not isinstance(annotation, dict) or annotation.get("type") != "url_citation":
        return None
    cite = annotation.get("url_citation") or annotation
    url = cite.get("url") if isinstance(cite, dict) else None
    if not isinstance(url, str) or not url:
        return None
    start, end = cite.get("start_index"), cite.get("end_index")
    quoted = text[start:end] if isinstance(start, int) and isinstance(end, int) and end > start else ""
    title = cite.get("title")
    return {
        "type": "web_search_result_location",
        "url": url,
        "title": title if isinstance(title, str) and title else url,
        "encrypted_index": "",
        "cited_text": (quoted or (cite.get("content") if isinstance(cite.get("content"), str) else ""))[:150],
    }


def parse_arguments(arguments: str | None) -> dict[str, Any]:
    if not arguments or not arguments.strip():
        return {}
    try:
        value = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        log.warning("upstream sent malformed tool arguments (%d chars); repaired", len(arguments))
        value = orjson.loads(repair_object(arguments))
    return value if isinstance(value, dict) else {}


# --- non-streaming -------------------------------------------------------------------------


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


_TEXT, _THINKING, _TOOL = 1, 2, 3
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
