"""Anthropic Messages request → OpenAI Responses API request (PROTOCOL.md §4).

Pure, like chat_request.py, whose block helpers it reuses (system text, images, documents, tool
result flattening) and converts to Responses parts. Differences from Chat:

* ``system`` → ``instructions``; messages → ``input`` items (``message`` with input_text /
  input_image / input_file or output_text parts, ``function_call``, ``function_call_output``);
* tools are flat ``{type:"function", name, description, parameters}``;
* reasoning is stateless: ``store: false`` and ``include: ["reasoning.encrypted_content"]``; the
  encrypted reasoning of a turn comes back to the client inside a thinking block's ``signature``
  (see ``encode_signature``) and is sent upstream again as a ``reasoning`` item on the next turn.
  Thinking blocks whose signature is not ours (Anthropic's) are dropped;
* there is no ``stop`` parameter: ``stop_sequences`` are dropped.

Not wired to an adapter yet (the routing file rejects ``kind = "responses"``).
"""

from __future__ import annotations

import logging
from typing import Any

import orjson

from ..routing import Route
from ..schemas.anthropic import Block, MessagesRequest, web_search_tool
from .chat_request import (
    ORPHAN_RESULT_TEXT,
    _str_field,
    convert_tool_choice,
    prompt_cache_key,
    reasoning_effort,
    request_system,
    request_tools,
    split_user_turn,
    system_text,
    upstream_tool_name,
)

log = logging.getLogger("ccproxy.translate")

SIGNATURE_PREFIX = "ccproxy.openai-reasoning.v1:"

Item = dict[str, Any]


def encode_signature(item_id: str, encrypted_content: str) -> str:
    """A thinking-block signature that carries an OpenAI reasoning item to the next turn."""
    return f"{SIGNATURE_PREFIX}{item_id}:{encrypted_content}"


def decode_signature(signature: Any) -> tuple[str, str] | None:
    """(item id, encrypted content) if the signature is one of ours, else None."""
    if not isinstance(signature, str) or not signature.startswith(SIGNATURE_PREFIX):
        return None
    item_id, sep, encrypted = signature[len(SIGNATURE_PREFIX) :].partition(":")
    return (item_id, encrypted) if sep and item_id and encrypted else None


def build_responses_request(req: MessagesRequest, route: Route) -> dict[str, Any]:
    body: dict[str, Any] = {"model": route.upstream_model, "input": convert_input(req), "store": False}
    instructions = request_system(req)
    if instructions:
        body["instructions"] = instructions
    max_tokens = req.max_tokens
    if route.max_output_tokens is not None and max_tokens > route.max_output_tokens:
        max_tokens = route.max_output_tokens
    body["max_output_tokens"] = max_tokens
    if route.reasoning:
        body["include"] = ["reasoning.encrypted_content"]
        effort = reasoning_effort(req, route.options.default_effort)
        if effort is not None:
            body["reasoning"] = {"effort": effort, "summary": "auto"}
    else:
        if req.temperature is not None:
            body["temperature"] = req.temperature
        if req.top_p is not None:
            body["top_p"] = req.top_p
    if req.stop_sequences:
        log.debug("stop_sequences dropped: the Responses API has no stop parameter")
    tools = [{"type": "function", **t["function"]} for t in request_tools(req, route.options.schema_drop_keys)]
    search = web_search_tool(req.tools)
    if search is not None:  # Anthropic's server tool → the Responses API's own web search
        hosted: dict[str, Any] = {"type": "web_search"}
        if search.allowed_domains:
            hosted["filters"] = {"allowed_domains": list(search.allowed_domains)}
        tools.append(hosted)
        body.setdefault("include", []).append("web_search_call.action.sources")
    if tools:
        body["tools"] = tools
        choice = req.tool_choice
        if choice:
            mapped = convert_tool_choice(choice)
            if isinstance(mapped, dict) and search is not None and mapped["function"]["name"] == search.name:
                mapped = "required" if len(tools) == 1 else "auto"  # (a hosted tool is chosen by type)
            elif isinstance(mapped, dict):
                mapped = {"type": "function", "name": mapped["function"]["name"]}
            if mapped is not None:
                body["tool_choice"] = mapped
            if choice.get("disable_parallel_tool_use") is True:
                body["parallel_tool_calls"] = False
    if route.options.prompt_cache_key:
        body["prompt_cache_key"] = prompt_cache_key(req)
    if req.stream:
        body["stream"] = True
    return body


def _input_part(part: dict[str, Any]) -> dict[str, Any]:
    """A Chat content part (from chat_request's helpers) as a Responses input part."""
    kind = part["type"]
    if kind == "text":
        return {"type": "input_text", "text": part["text"]}
    if kind == "image_url":
        return {"type": "input_image", "image_url": part["image_url"]["url"]}
    return {"type": "input_file", **part["file"]}  # "file": filename + file_data


def _message(role: str, parts: list[dict[str, Any]]) -> Item:
    return {"type": "message", "role": role, "content": parts}


def convert_input(req: MessagesRequest) -> list[Item]:
    items: list[Item] = []
    pending: list[str] = []  # call ids of the last assistant turn awaiting output
    for i, msg in enumerate(req.messages):
        path = f"messages.{i}"
        content = msg.content
        if msg.role == "assistant":
            _close_pending(items, pending)
            pending = _assistant_items(items, content, path)
        elif msg.role == "user":
            _user_items(items, content, pending, path)
            pending = []
        else:
            _close_pending(items, pending)
            pending = []
            text = content if isinstance(content, str) else system_text(content, f"{path}.content")
            items.append(_message("system", [{"type": "input_text", "text": text}]))
    _close_pending(items, pending)
    return items


def _close_pending(items: list[Item], pending: list[str]) -> None:
    for call_id in pending:
        items.append({"type": "function_call_output", "call_id": call_id, "output": ORPHAN_RESULT_TEXT})
    pending.clear()


def _assistant_items(items: list[Item], content: str | list[Block], path: str) -> list[str]:
    if isinstance(content, str):
        items.append(_message("assistant", [{"type": "output_text", "text": content}]))
        return []
    calls: list[str] = []
    texts: list[dict[str, Any]] = []

    def flush_text() -> None:
        if texts:
            items.append(_message("assistant", list(texts)))
            texts.clear()

    for j, block in enumerate(content):
        kind = block.get("type")
        bpath = f"{path}.content.{j}"
        if kind == "text":
            texts.append({"type": "output_text", "text": _str_field(block, "text", bpath)})
        elif kind == "tool_use":
            flush_text()
            call_id = _str_field(block, "id", bpath)
            arguments = block.get("input")
            items.append(
                {
                    "type": "function_call",
                    "call_id": call_id,
                    "name": upstream_tool_name(_str_field(block, "name", bpath)),
                    "arguments": arguments if isinstance(arguments, str) else orjson.dumps(arguments or {}).decode(),
                }
            )
            calls.append(call_id)
        elif kind == "thinking":
            carried = decode_signature(block.get("signature"))
            if carried is not None:  # OpenAI reasoning from an earlier turn: send it back as it was
                flush_text()
                summary = block.get("thinking")
                items.append(
                    {
                        "type": "reasoning",
                        "id": carried[0],
                        "encrypted_content": carried[1],
                        "summary": [{"type": "summary_text", "text": summary}] if summary else [],
                    }
                )
        elif kind != "redacted_thinking":
            log.debug("dropped assistant block of type %r at %s", kind, path)
    flush_text()
    return calls


def _user_items(items: list[Item], content: str | list[Block], pending: list[str], path: str) -> None:
    if isinstance(content, str):
        _close_pending(items, pending)
        items.append(_message("user", [{"type": "input_text", "text": content}]))
        return
    results, parts, unanswered = split_user_turn(content, pending, path)
    items.extend({"type": "function_call_output", "call_id": call_id, "output": text} for call_id, text in results)
    _close_pending(items, unanswered)
    if parts:
        items.append(_message("user", [_input_part(part) for part in parts]))
