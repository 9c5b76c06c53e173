"""OpenAI Responses API response → Anthropic message or event stream (PROTOCOL.md §4).

Output items map to content blocks in order: ``reasoning`` → a thinking block (summary text;
the encrypted content rides in the signature, see responses_request.encode_signature),
``message`` → text blocks (refusals too), ``function_call`` → tool_use. Usage reports cached
input apart. ``incomplete`` for max_output_tokens → ``max_tokens``; ``failed`` → an error.
``ResponsesStreamTranslator`` is the streaming state machine for ``response.*`` events.
"""

from __future__ import annotations

from typing import Any

import orjson

from .._native import content_delta, frame_event
from .chat_fields import parse_arguments, url_citation
from .events import (
    StreamFailure,
    assistant_message,
    block_events,
    client_tool_name,
    error_event,
    message_start_event,
    new_message_id,
    new_tool_id,
    search_blocks,
    with_searches,
)
from .json_prefix import JsonObjectPrefix
from .responses_request import encode_signature


def response_usage(usage: Any, input_estimate: int, output_estimate: int) -> dict[str, int]:
    if not isinstance(usage, dict):
        return {
            "input_tokens": input_estimate,
            "output_tokens": output_estimate,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        }
    total_in = usage.get("input_tokens") or 0
    details = usage.get("input_tokens_details") or {}
    cached = min(details.get("cached_tokens") or 0, total_in) if isinstance(details, dict) else 0
    output = usage.get("output_tokens")
    return {
        "input_tokens": total_in - cached,
        "output_tokens": output if isinstance(output, int) else output_estimate,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached,
    }


def response_to_message(
    resp: dict[str, Any], requested_model: str, input_estimate: int, tool_names: dict[str, str] | None = None
) -> dict[str, Any]:
    status = resp.get("status")
    if status == "failed" or (resp.get("error") and not resp.get("output")):
        error = resp.get("error") or {}
        message = error.get("message") if isinstance(error, dict) else str(error)
        raise StreamFailure("api_error", f"upstream response failed: {message or 'no reason given'}")
    content: list[dict[str, Any]] = []
    chars = 0
    output = [item for item in resp.get("output") or [] if isinstance(item, dict)]
    titles = {  # url → title, from the answer's citations (a search's sources carry URLs only)
        a.get("url"): a.get("title")
        for item in output
        if item.get("type") == "message"
        for part in item.get("content") or []
        if isinstance(part, dict)
        for a in part.get("annotations") or []
        if isinstance(a, dict) and a.get("type") == "url_citation"
    }
    searches = 0
    for item in output:
        kind = item.get("type")
        if kind == "web_search_call":
            searches += 1
            content += web_search_call_blocks(item, titles)
        elif kind == "reasoning":
            summary = "".join(part.get("text", "") for part in item.get("summary") or [] if isinstance(part, dict))
            encrypted = item.get("encrypted_content")
            if summary or encrypted:
                signature = encode_signature(str(item.get("id", "")), encrypted) if encrypted else ""
                content.append({"type": "thinking", "thinking": summary, "signature": signature})
                chars += len(summary)
        elif kind == "message":
            for part in item.get("content") or []:
                if isinstance(part, dict) and part.get("type") in ("output_text", "refusal"):
                    text = part.get("text") if part.get("type") == "output_text" else part.get("refusal")
                    if isinstance(text, str) and text:
                        block: dict[str, Any] = {"type": "text", "text": text}
                        citations = [c for a in part.get("annotations") or () if (c := url_citation(a, text))]
                        if citations:
                            block["citations"] = citations
                        content.append(block)
                        chars += len(text)
        elif kind == "function_call":
            arguments = item.get("arguments")
            chars += len(arguments or "")
            content.append(
                {
                    "type": "tool_use",
                    "id": item.get("call_id") or new_tool_id(),
                    "name": client_tool_name(item.get("name") or "", tool_names),
                    "input": parse_arguments(arguments if isinstance(arguments, str) else None),
                }
            )
    has_tools = any(block["type"] == "tool_use" for block in content)
    reason = (resp.get("incomplete_details") or {}).get("reason") if status == "incomplete" else None
    if reason == "max_output_tokens":
        stop_reason = "max_tokens"
    elif reason == "content_filter":
        stop_reason = "refusal"
    else:
        stop_reason = "tool_use" if has_tools else "end_turn"
    usage: dict[str, Any] = response_usage(resp.get("usage"), input_estimate, max(1, chars // 4))
    if searches:
        usage = with_searches(usage, searches)
    return assistant_message(requested_model, content, stop_reason, usage)


def web_search_call_blocks(item: dict[str, Any], titles: dict[Any, Any]) -> list[dict[str, Any]]:
    """A ``web_search_call`` output item as Anthropic's server_tool_use and its result block."""
    action = item.get("action") if isinstance(item.get("action"), dict) else {}
    query = action.get("query") if isinstance(action.get("query"), str) else ""
    srv_id = "srvtoolu_" + str(item.get("id") or new_tool_id()).removeprefix("ws_")
    results = []
    for source in action.get("sources") or ():
        url = source.get("url") if isinstance(source, dict) else None
        if isinstance(url, str) and url:
            title = titles.get(url)
            results.append(
                {
                    "type": "web_search_result",
                    "url": url,
                    "title": title if isinstance(title, str) and title else url,
                    "encrypted_content": "",
                    "page_age": None,
                }
            )
    content: Any = results
    if item.get("status") == "failed":
        content = {"type": "web_search_tool_result_error", "error_code": "unavailable"}
    return search_blocks(srv_id, query, content)


# --- streaming -----------------------------------------------------------------------------


class ResponsesStreamTranslator:
    """One per streamed request: ``response.*`` events in, Anthropic SSE event bytes out.

    Output items arrive one after another, so each becomes one block: ``reasoning`` → thinking
    (summary deltas; the encrypted content arrives with ``output_item.done`` and goes out as a
    ``signature_delta``), ``message`` → text, ``function_call`` → tool_use (arguments through
    ``JsonObjectPrefix``, so they always parse). ``response.completed`` / ``incomplete`` end the
    message; ``failed``, ``error`` or an early end raise StreamFailure (never a fake message_stop).
    """

    def __init__(self, requested_model: str, input_estimate: int, tool_names: dict[str, str] | None = None) -> None:
        self.model = requested_model
        self.tool_names = tool_names
        self.input_estimate = input_estimate
        self.message_id = new_message_id()
        self.finished = False
        self.stop_reason: str | None = None
        self.usage: dict[str, int] = {}
        self._index = -1  # index of the open block (-1: none)
        self._next = 0
        self._open_item: str | None = None  # output item id of the open block
        self._kind = ""  # "thinking" | "text" | "tool"
        self._checker: JsonObjectPrefix | None = None
        self._tools = 0
        self._chars = 0
        self._out: list[bytes] = []
        self._text = ""  # the open text block's text so far (citations quote it)
        self._searches = 0

    def start(self) -> bytes:
        return message_start_event(self.message_id, self.model, self.input_estimate)

    def feed_all(self, items: list[tuple[str | None, bytes]], out: list[bytes]) -> None:
        for event, data in items:
            piece = self.feed(data, event)
            if piece:
                out.append(piece)

    def feed(self, data: bytes, event: str | None = None) -> bytes:  # (the data names its type)
        try:
            event = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise StreamFailure("api_error", "upstream sent an invalid stream event") from None
        if not isinstance(event, dict):
            raise StreamFailure("api_error", "upstream sent an unexpected stream event")
        handler = _HANDLERS.get(event.get("type", ""))
        if handler is not None:
            handler(self, event)
        if not self._out:
            return b""
        out = b"".join(self._out)
        self._out.clear()
        return out

    def finish(self) -> bytes:
        if not self.finished:
            raise StreamFailure("api_error", "upstream stream ended before the response was complete")
        return b""

    @property
    def upstream_done(self) -> bool:
        return self.finished

    def fail(self, error_type: str, message: str) -> bytes:
        self._out.clear()
        return error_event(error_type, message)

    def final_usage(self) -> dict[str, int]:
        return self.usage or response_usage(None, self.input_estimate, max(1, self._chars // 4))

    # -- blocks --

    def _start(self, item_id: str, kind: str, block: dict[str, Any]) -> None:
        self._close()
        self._text = ""
        self._index, self._next = self._next, self._next + 1
        self._open_item, self._kind = item_id, kind
        self._out.append(
            frame_event(
                "content_block_start",
                orjson.dumps({"type": "content_block_start", "index": self._index, "content_block": block}),
            )
        )

    def _close(self) -> None:
        if self._index < 0:
            return
        if self._kind == "tool" and self._checker is not None:
            suffix = self._checker.complete()
            if suffix:
                self._out.append(content_delta(self._index, "input_json_delta", "partial_json", suffix))
            self._checker = None
        self._out.append(
            frame_event("content_block_stop", orjson.dumps({"type": "content_block_stop", "index": self._index}))
        )
        self._index, self._open_item, self._kind = -1, None, ""

    def _ensure(self, item_id: str, kind: str) -> bool:
        """The block for ``item_id`` is open (opening a text/thinking block if needed)."""
        if self._open_item == item_id and self._kind == kind:
            return True
        if kind == "text":
            self._start(item_id, "text", {"type": "text", "text": ""})
            return True
        if kind == "thinking":
            self._start(item_id, "thinking", {"type": "thinking", "thinking": "", "signature": ""})
            return True
        return False  # tool arguments for a call whose block is gone: nothing sensible to do

    # -- events --

    def _item_added(self, event: dict[str, Any]) -> None:
        item = event.get("item") or {}
        kind, item_id = item.get("type"), str(item.get("id") or event.get("output_index"))
        if kind == "reasoning":
            self._ensure(item_id, "thinking")
        elif kind == "message":
            self._ensure(item_id, "text")
        elif kind == "function_call":
            self._tools += 1
            self._start(
                item_id,
                "tool",
                {
                    "type": "tool_use",
                    "id": item.get("call_id") or new_tool_id(),
                    "name": client_tool_name(item.get("name") or "", self.tool_names),
                    "input": {},
                },
            )
            self._checker = JsonObjectPrefix()
            if item.get("arguments"):
                self._arguments(item_id, item["arguments"])

    def _text_delta(self, event: dict[str, Any]) -> None:
        delta = event.get("delta")
        if isinstance(delta, str) and delta and self._ensure(str(event.get("item_id")), "text"):
            self._chars += len(delta)
            self._text += delta
            self._out.append(content_delta(self._index, "text_delta", "text", delta))

    def _annotation(self, event: dict[str, Any]) -> None:
        found = url_citation(event.get("annotation"), self._text)
        if found is not None and self._open_item == str(event.get("item_id")) and self._kind == "text":
            delta = {
                "type": "content_block_delta",
                "index": self._index,
                "delta": {"type": "citations_delta", "citation": found},
            }
            self._out.append(frame_event("content_block_delta", orjson.dumps(delta)))

    def _summary_delta(self, event: dict[str, Any]) -> None:
        delta = event.get("delta")
        if isinstance(delta, str) and delta and self._ensure(str(event.get("item_id")), "thinking"):
            self._chars += len(delta)
            self._out.append(content_delta(self._index, "thinking_delta", "thinking", delta))

    def _args_delta(self, event: dict[str, Any]) -> None:
        delta = event.get("delta")
        if isinstance(delta, str) and delta:
            self._arguments(str(event.get("item_id")), delta)

    def _arguments(self, item_id: str, text: str) -> None:
        if self._open_item != item_id or self._kind != "tool" or self._checker is None:
            return
        self._chars += len(text)
        valid = self._checker.feed(text)
        if valid:
            self._out.append(content_delta(self._index, "input_json_delta", "partial_json", valid))

    def _item_done(self, event: dict[str, Any]) -> None:
        item = event.get("item") or {}
        item_id = str(item.get("id") or event.get("output_index"))
        if item.get("type") == "web_search_call":  # whole once done: the query and its sources
            self._close()
            self._searches += 1
            for block in web_search_call_blocks(item, {}):
                self._out.append(block_events(self._next, block))
                self._next += 1
            return
        if item.get("type") == "reasoning" and item.get("encrypted_content") and self._ensure(item_id, "thinking"):
            signature = encode_signature(str(item.get("id", "")), item["encrypted_content"])
            self._out.append(content_delta(self._index, "signature_delta", "signature", signature))
        if self._open_item == item_id:
            self._close()

    def _completed(self, event: dict[str, Any]) -> None:
        response = event.get("response") or {}
        self._close()
        reason = (response.get("incomplete_details") or {}).get("reason")
        if event.get("type") == "response.incomplete" and reason == "max_output_tokens":
            self.stop_reason = "max_tokens"
        elif event.get("type") == "response.incomplete" and reason == "content_filter":
            self.stop_reason = "refusal"
        else:
            self.stop_reason = "tool_use" if self._tools else "end_turn"
        if self._next == 0:  # no block at all: one empty text block, like the non-streaming answer
            self._start("empty", "text", {"type": "text", "text": ""})
            self._close()
        self.usage = response_usage(response.get("usage"), self.input_estimate, max(1, self._chars // 4))
        usage: dict[str, Any] = self.usage
        if self._searches:
            usage = with_searches(usage, self._searches)
        delta = {
            "type": "message_delta",
            "delta": {"stop_reason": self.stop_reason, "stop_sequence": None},
            "usage": usage,
        }
        self._out.append(frame_event("message_delta", orjson.dumps(delta)))
        self._out.append(frame_event("message_stop", b'{"type":"message_stop"}'))
        self.finished = True

    def _failed(self, event: dict[str, Any]) -> None:
        error = (event.get("response") or {}).get("error") or event
        message = error.get("message") if isinstance(error, dict) else None
        raise StreamFailure("api_error", f"upstream response failed: {message or 'no reason given'}")


_HANDLERS = {
    "response.output_item.added": ResponsesStreamTranslator._item_added,
    "response.output_text.delta": ResponsesStreamTranslator._text_delta,
    "response.output_text.annotation.added": ResponsesStreamTranslator._annotation,
    "response.refusal.delta": ResponsesStreamTranslator._text_delta,
    "response.reasoning_summary_text.delta": ResponsesStreamTranslator._summary_delta,
    "response.function_call_arguments.delta": ResponsesStreamTranslator._args_delta,
    "response.output_item.done": ResponsesStreamTranslator._item_done,
    "response.completed": ResponsesStreamTranslator._completed,
    "response.incomplete": ResponsesStreamTranslator._completed,
    "response.failed": ResponsesStreamTranslator._failed,
    "error": ResponsesStreamTranslator._failed,
}
