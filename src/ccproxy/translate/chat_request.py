"""Anthropic Messages request → OpenAI Chat Completions request (PROTOCOL.md §2).

Pure: takes the decoded request and its route, returns the upstream body as a dict ready for
orjson. Tool input schemas travel as ``orjson.Fragment`` (the client's bytes, never decoded).
Shapes that cannot be translated raise ``invalid_request`` (400) naming the JSON path.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import re
from typing import Any

import msgspec
import orjson

from .._native import cache_key
from ..errors import invalid_request
from ..jsontext import json_text
from ..routing import Route
from ..schemas.anthropic import Block, Message, MessagesRequest, Tool, request_spans
from ..websearch import decode_encrypted_content

log = logging.getLogger("ccproxy.translate")

MAX_STOP_SEQUENCES = 4  # OpenAI rejects more
ORPHAN_RESULT_TEXT = "[no result: the tool call was interrupted before it returned]"
_EMPTY_SCHEMA = orjson.Fragment(b'{"type":"object","properties":{}}')

ChatMessage = dict[str, Any]


def build_chat_request(req: MessagesRequest, route: Route) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": route.upstream_model,
        "messages": convert_messages(req, replay_reasoning=route.options.reasoning_style == "deepseek"),
    }
    max_tokens = req.max_tokens
    if route.max_output_tokens is not None and max_tokens > route.max_output_tokens:
        max_tokens = route.max_output_tokens
    body["max_completion_tokens" if route.reasoning else "max_tokens"] = max_tokens
    if not route.reasoning:
        if req.temperature is not None:
            body["temperature"] = req.temperature
        if req.top_p is not None:
            body["top_p"] = req.top_p
    if req.stop_sequences:
        if len(req.stop_sequences) > MAX_STOP_SEQUENCES:
            log.debug("stop_sequences truncated to %d", MAX_STOP_SEQUENCES)
        body["stop"] = req.stop_sequences[:MAX_STOP_SEQUENCES]
    tools = request_tools(req, route.options.schema_drop_keys)
    if tools:
        body["tools"] = tools
        choice = req.tool_choice
        if choice:
            mapped = convert_tool_choice(choice)
            if mapped is not None:
                body["tool_choice"] = mapped
            if choice.get("disable_parallel_tool_use") is True:
                body["parallel_tool_calls"] = False
    effort = reasoning_effort(req, route.options.default_effort)
    style = route.options.reasoning_style
    if effort is not None and style == "openrouter":
        body["reasoning"] = {"effort": effort}
    elif effort is not None and style == "openai" and route.reasoning:
        body["reasoning_effort"] = effort
    elif style == "deepseek":
        _deepseek_thinking(body, req, effort)
    if route.options.prompt_cache_key:
        body["prompt_cache_key"] = prompt_cache_key(req)
    user = (req.metadata or {}).get("user_id")
    if isinstance(user, str) and user:
        # Never the raw id (it embeds device and account ids): a stable hash for abuse tracking.
        body["user"] = user_hash(user)
    if req.stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


@functools.lru_cache(maxsize=256)
def user_hash(user: str) -> str:
    """A stable stand-in for a user id (the same one comes with every turn: hashed once)."""
    return hashlib.sha256(user.encode()).hexdigest()[:32]


# --- reasoning and prompt caching --------------------------------------------------------------

# Anthropic's output_config.effort → OpenAI effort ("max" has no OpenAI twin: the highest).
_EFFORTS = {"minimal": "minimal", "low": "low", "medium": "medium", "high": "high", "max": "high"}


def reasoning_effort(req: MessagesRequest, default: str | None) -> str | None:
    """The effort the client asked for: output_config.effort, else a thinking budget mapped to
    low (< 4k tokens) / medium (< 16k) / high; adaptive thinking without an effort is medium.
    ``default`` (REASONING_EFFORT) applies when the client asks for nothing; disabled means none."""
    thinking = req.thinking if isinstance(req.thinking, dict) else {}
    kind = thinking.get("type")
    if kind == "disabled":
        return None
    asked = (req.output_config or {}).get("effort") if isinstance(req.output_config, dict) else None
    if isinstance(asked, str) and asked in _EFFORTS:
        return _EFFORTS[asked]
    if kind == "enabled":
        budget = thinking.get("budget_tokens")
        if isinstance(budget, int) and not isinstance(budget, bool):
            return "low" if budget < 4096 else "medium" if budget < 16384 else "high"
        return "medium"
    if kind == "adaptive":
        return default or "medium"
    return default


def _deepseek_thinking(body: dict[str, Any], req: MessagesRequest, effort: str | None) -> None:
    """DeepSeek-style upstreams: a ``thinking`` switch plus reasoning_effort, where "max" exists
    (the server folds medium into high itself). Without a client choice the server default holds."""
    thinking = req.thinking if isinstance(req.thinking, dict) else {}
    if thinking.get("type") == "disabled":
        body["thinking"] = {"type": "disabled"}
        return
    if effort is None:
        return
    body["thinking"] = {"type": "enabled"}
    asked = (req.output_config or {}).get("effort") if isinstance(req.output_config, dict) else None
    body["reasoning_effort"] = "max" if asked == "max" else effort


def prompt_cache_key(req: MessagesRequest) -> str:
    """The client's explicit key, else a stable hash of what Claude Code keeps cached across a
    session's turns: system, tools and the first user turn (cache_control markers and metadata
    excluded), so every turn of one conversation lands on the same OpenAI cache entry. Never the
    user id."""
    if req.prompt_cache_key:
        return req.prompt_cache_key[:256]
    first_user = next((m.content for m in req.messages if m.role == "user"), None)
    tools = [(tool.name, bytes(tool.input_schema)) for tool in req.tools or ()]
    return "ccp-" + cache_key({"system": req.system, "tools": tools, "first_user": first_user})


# --- messages ------------------------------------------------------------------------------


def system_text(system: str | list[Block] | None, path: str = "system") -> str:
    if system is None:
        return ""
    if isinstance(system, str):
        return system
    parts = []
    for i, block in enumerate(system):
        if block.get("type") == "text":
            parts.append(_str_field(block, "text", f"{path}.{i}"))
    return "\n\n".join(parts)


def request_system(req: MessagesRequest) -> str:
    """The system prompt as text, once per remembered system span (schemas/spans.py)."""
    system = req.system
    return request_spans.derived(system, "text", lambda: system_text(system)) if system else ""


def convert_messages(req: MessagesRequest, replay_reasoning: bool = False) -> list[ChatMessage]:
    """``replay_reasoning``: assistant thinking goes back as ``reasoning_content`` (DeepSeek-style
    upstreams require it on turns that called tools and ignore it elsewhere).

    A conversation's remembered start (schemas/spans.py) is translated once: its messages,
    and the tool calls still awaiting results after them, are kept and resumed from."""
    out: list[ChatMessage] = []
    system = request_system(req)
    if system:
        out.append({"role": "system", "content": system})
    messages = req.messages

    def advance(state: Any, start: int, stop: int) -> tuple[tuple[ChatMessage, ...], tuple[str, ...]]:
        done, waiting = (list(state[0]), list(state[1])) if state is not None else ([], [])
        waiting = _convert_range(messages, start, stop, done, waiting, replay_reasoning)
        return tuple(done), tuple(waiting)

    known, state = request_spans.prefix_derived(messages, ("chat", replay_reasoning), advance)
    pending: list[str] = []
    if state is not None:
        out += state[0]
        pending = list(state[1])
    pending = _convert_range(messages, known, len(messages), out, pending, replay_reasoning)
    _close_pending(out, pending)
    return out


def _convert_range(
    messages: list[Message], start: int, stop: int, out: list[ChatMessage], pending: list[str], replay: bool
) -> list[str]:
    """Messages ``start:stop`` appended to ``out``; returns the tool_call ids of the last
    assistant turn still awaiting results."""
    for i in range(start, stop):
        msg = messages[i]
        path = f"messages.{i}"
        content = msg.content
        if msg.role == "assistant":
            _close_pending(out, pending)
            message, pending = _assistant_message(content, path, replay)
            out.append(message)
        elif msg.role == "user":
            _user_messages(out, content, pending, path)
            pending = []
        else:  # "system" inside messages (Claude Code sends these): keep it in place
            _close_pending(out, pending)
            pending = []
            text = content if isinstance(content, str) else system_text(content, f"{path}.content")
            out.append({"role": "system", "content": text})
    return pending


def _close_pending(out: list[ChatMessage], pending: list[str]) -> None:
    """A tool call with no result would make the upstream reject the whole conversation."""
    for call_id in pending:
        out.append({"role": "tool", "tool_call_id": call_id, "content": ORPHAN_RESULT_TEXT})
    pending.clear()


def web_search_result_text(content: Any) -> str:
    """An earlier turn's search results, as text the model can read again (what our own results
    carry in ``encrypted_content``; Anthropic's are opaque, so their titles and URLs)."""
    if not isinstance(content, list):
        code = content.get("error_code") if isinstance(content, dict) else None
        return f"\n[web search failed: {code}]\n"
    lines = []
    for item in content:
        if not isinstance(item, dict) or item.get("type") != "web_search_result":
            continue
        kept = decode_encrypted_content(item.get("encrypted_content") or "") or {}
        lines.append(f"- {item.get('title') or kept.get('t', '')} <{item.get('url') or kept.get('u', '')}>")
        if kept.get("s"):
            lines.append(f"  {kept['s']}")
    return "\n[web search results:\n" + "\n".join(lines) + "]\n"


def _assistant_message(
    content: str | list[Block], path: str, replay_reasoning: bool = False
) -> tuple[ChatMessage, list[str]]:
    if isinstance(content, str):
        return {"role": "assistant", "content": content}, []
    texts: list[str] = []
    reasoning: list[str] = []
    calls: list[dict[str, Any]] = []
    for j, block in enumerate(content):
        kind = block.get("type")
        if kind == "text":
            texts.append(_str_field(block, "text", f"{path}.content.{j}"))
        elif kind == "tool_use":
            bpath = f"{path}.content.{j}"
            call_id = _str_field(block, "id", bpath)
            name = _str_field(block, "name", bpath)
            calls.append(
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": upstream_tool_name(name), "arguments": _arguments(block.get("input"))},
                }
            )
        elif kind == "server_tool_use" and block.get("name") == "web_search":
            query = (block.get("input") or {}).get("query") if isinstance(block.get("input"), dict) else None
            texts.append(f"\n[searched the web for: {query}]\n" if isinstance(query, str) else "")
        elif kind == "web_search_tool_result":
            texts.append(web_search_result_text(block.get("content")))
        elif kind == "thinking" and replay_reasoning:
            text = block.get("thinking")
            if isinstance(text, str) and text:
                reasoning.append(text)
        # Otherwise thinking / redacted_thinking are dropped: the upstream cannot verify Anthropic
        # signatures, and the text must never be replayed as something the assistant said.
        # Others: not translatable.
        elif kind not in ("thinking", "redacted_thinking"):
            log.debug("dropped assistant block of type %r at %s", kind, path)
    message: ChatMessage = {
        "role": "assistant",
        "content": "".join(texts) if texts or not calls else None,
    }
    if calls:
        message["tool_calls"] = calls
    if reasoning:
        message["reasoning_content"] = "".join(reasoning)
    return message, [c["id"] for c in calls]


def _arguments(value: Any) -> str:
    if value is None:
        return "{}"
    if isinstance(value, str):  # already serialized by a sloppy client; keep as given
        return value
    return json_text(value)


def split_user_turn(
    content: list[Block], pending: list[str], path: str
) -> tuple[list[tuple[str, str]], list[dict[str, Any]], list[str]]:
    """A user turn's blocks, dialect-neutral: (tool results answering the previous assistant turn,
    as (call id, text) in order; every other part, as Chat content parts; the calls left
    unanswered). A result whose call is not in the previous turn (history was cut) would be
    rejected as a tool message upstream, so it stays user-visible text; images returned by a tool
    follow as user parts."""
    results: list[tuple[str, str]] = []
    parts: list[dict[str, Any]] = []
    answered: set[str] = set()
    for j, block in enumerate(content):
        bpath = f"{path}.content.{j}"
        if block.get("type") == "tool_result":
            call_id = _str_field(block, "tool_use_id", bpath)
            text, images = _tool_result_content(block, bpath)
            if call_id in pending and call_id not in answered:
                answered.add(call_id)
                results.append((call_id, text))
            else:
                parts.append({"type": "text", "text": f"[tool result for {call_id}]\n{text}"})
            if images:
                parts.append({"type": "text", "text": f"[images returned by tool call {call_id}]"})
                parts.extend(images)
        else:
            part = _user_part(block, bpath)
            if part is not None:
                parts.append(part)
    return results, parts, [c for c in pending if c not in answered]


def _user_messages(out: list[ChatMessage], content: str | list[Block], pending: list[str], path: str) -> None:
    if isinstance(content, str):
        _close_pending(out, pending)
        out.append({"role": "user", "content": content})
        return
    results, parts, unanswered = split_user_turn(content, pending, path)
    out.extend({"role": "tool", "tool_call_id": call_id, "content": text} for call_id, text in results)
    _close_pending(out, unanswered)
    if parts:
        if all(p["type"] == "text" for p in parts) and len(parts) == 1:
            out.append({"role": "user", "content": parts[0]["text"]})
        else:
            out.append({"role": "user", "content": parts})


def _tool_result_content(block: Block, path: str) -> tuple[str, list[dict[str, Any]]]:
    content = block.get("content")
    images: list[dict[str, Any]] = []
    if content is None:
        text = ""
    elif isinstance(content, str):
        text = content
    elif isinstance(content, list):
        texts = []
        for k, item in enumerate(content):
            if not isinstance(item, dict):
                raise invalid_request(f"{path}.content.{k}: expected an object")
            kind = item.get("type")
            if kind == "text":
                texts.append(_str_field(item, "text", f"{path}.content.{k}"))
            elif kind == "image":
                image = _image_part(item, f"{path}.content.{k}")
                if image is not None:
                    images.append(image)
                    texts.append("[image]")
            else:
                part = _user_part(item, f"{path}.content.{k}")
                if part is not None and part["type"] == "text":
                    texts.append(part["text"])
        text = "\n".join(texts)
    else:
        raise invalid_request(f"{path}.content: expected a string or a list of blocks")
    if block.get("is_error") is True:
        text = f"Error: {text}" if text else "Error"
    return text, images


def _user_part(block: Block, path: str) -> dict[str, Any] | None:
    kind = block.get("type")
    if kind == "text":
        return {"type": "text", "text": _str_field(block, "text", path)}
    if kind == "image":
        return _image_part(block, path)
    if kind == "document":
        return _document_part(block, path)
    log.debug("dropped user block of type %r at %s", kind, path)
    return None


def _source(block: Block, path: str) -> dict[str, Any]:
    source = block.get("source")
    if not isinstance(source, dict):
        raise invalid_request(f"{path}.source: Field required")
    return source


def _image_part(block: Block, path: str) -> dict[str, Any] | None:
    source = _source(block, path)
    kind = source.get("type")
    if kind == "base64":
        media = _str_field(source, "media_type", f"{path}.source")
        data = _str_field(source, "data", f"{path}.source")
        return {"type": "image_url", "image_url": {"url": f"data:{media};base64,{data}"}}
    if kind == "url":
        return {
            "type": "image_url",
            "image_url": {"url": _str_field(source, "url", f"{path}.source")},
        }
    log.debug("dropped image with source type %r at %s", kind, path)
    return None


def _document_part(block: Block, path: str) -> dict[str, Any] | None:
    source = _source(block, path)
    kind = source.get("type")
    title = block.get("title") if isinstance(block.get("title"), str) else None
    if kind == "base64":
        media = _str_field(source, "media_type", f"{path}.source")
        data = _str_field(source, "data", f"{path}.source")
        return {
            "type": "file",
            "file": {
                "filename": title or "document.pdf",
                "file_data": f"data:{media};base64,{data}",
            },
        }
    if kind == "text":
        text = _str_field(source, "data", f"{path}.source")
        return {"type": "text", "text": f"{title}\n\n{text}" if title else text}
    if kind == "content":
        texts = [
            b.get("text", "") for b in source.get("content") or [] if isinstance(b, dict) and b.get("type") == "text"
        ]
        return {"type": "text", "text": "\n".join(t for t in texts if isinstance(t, str))}
    if kind == "url":
        url = _str_field(source, "url", f"{path}.source")
        return {"type": "text", "text": f"[document: {title + ' — ' if title else ''}{url}]"}
    log.debug("dropped document with source type %r at %s", kind, path)
    return None


def _str_field(block: dict[str, Any], field: str, path: str) -> str:
    value = block.get(field)
    if isinstance(value, str):
        return value
    if value is None:
        raise invalid_request(f"{path}.{field}: Field required")
    raise invalid_request(f"{path}.{field}: Input should be a valid string")


# --- tools ---------------------------------------------------------------------------------

_VALID_TOOL_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_INVALID_TOOL_CHARS = re.compile(r"[^A-Za-z0-9_-]")


def upstream_tool_name(name: str) -> str:
    """OpenAI-style upstreams accept function names of 1-64 characters from [A-Za-z0-9_-]; MCP tool
    names can be longer. Others become their cleaned first 55 characters plus a hash, so the same
    name maps the same way on every turn and two names never collide; responses map back."""
    if _VALID_TOOL_NAME.fullmatch(name):
        return name
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{_INVALID_TOOL_CHARS.sub('_', name)[:55]}_{digest}"


def tool_name_map(tools: list[Tool] | None) -> dict[str, str]:
    """Upstream name → the client's name, for the tools whose names had to change."""
    mapped = {}
    for tool in tools or ():
        short = upstream_tool_name(tool.name)
        if short != tool.name:
            mapped[short] = tool.name
    return mapped


# Keys under these hold names (of properties, definitions …), not schema keywords.
_NAME_MAPS = frozenset({"properties", "patternProperties", "$defs", "definitions", "dependentSchemas"})


def sanitize_schema(node: Any, drop: frozenset[str]) -> Any:
    """The schema without the keywords in ``drop``, at any depth; property names are kept even
    when they equal a dropped keyword (a parameter called "format" stays)."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key in drop:
                continue
            if key in _NAME_MAPS and isinstance(value, dict):
                out[key] = {name: sanitize_schema(sub, drop) for name, sub in value.items()}
            else:
                out[key] = sanitize_schema(value, drop)
        return out
    if isinstance(node, list):
        return [sanitize_schema(item, drop) for item in node]
    return node


def request_tools(req: MessagesRequest, drop_keys: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """``convert_tools`` of the request's tools, once per remembered tools span: the list is
    shared by every turn that sends the same tools, so callers copy before they change it."""
    tools = req.tools
    if not tools:
        return []
    return request_spans.derived(tools, ("chat", drop_keys), lambda: convert_tools(tools, drop_keys))


def encode_chat_request(body: dict[str, Any], req: MessagesRequest, drop_keys: tuple[str, ...] = ()) -> bytes:
    """``body`` as exact-size JSON (a request holds it while it waits on the upstream). Tools
    that are still the shared ``request_tools`` list (~70 % of a Claude Code turn's bytes) are
    encoded once per remembered span and joined in: one copy of them per request."""
    tools = body.get("tools")
    if tools is not None and req.tools and tools is request_tools(req, drop_keys):
        encoded = request_spans.derived(req.tools, ("chat-json", drop_keys), lambda: orjson.dumps(tools))
        rest = orjson.dumps({key: value for key, value in body.items() if key != "tools"})
        return b"".join((memoryview(rest)[:-1], b',"tools":', encoded, b"}"))
    return exact_size(orjson.dumps(body))


def exact_size(encoded: bytes) -> bytes:
    """orjson over-allocates large outputs (a 115 KB body occupies ~250 KB) and never shrinks
    them; an exact-size copy halves what a request holds while it waits on the upstream."""
    return bytes(memoryview(encoded)) if len(encoded) > 16384 else encoded


def request_tool_names(req: MessagesRequest) -> dict[str, str]:
    """``tool_name_map`` of the request's tools, once per remembered tools span (read-only)."""
    tools = req.tools
    return request_spans.derived(tools, "names", lambda: tool_name_map(tools)) if tools else {}


def convert_tools(tools: list[Tool], drop_keys: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    out = []
    for tool in tools:
        if not tool.input_schema:
            # Anthropic-defined tools (web_search_…, bash_…, text_editor_…) have no schema and
            # cannot be offered as functions.
            log.debug("dropped tool %r of type %r (no input_schema)", tool.name, tool.type)
            continue
        function: dict[str, Any] = {"name": upstream_tool_name(tool.name)}
        if tool.description:
            function["description"] = tool.description
        schema = bytes(tool.input_schema)
        if schema == b"null":
            function["parameters"] = _EMPTY_SCHEMA
        elif drop_keys:  # only now is the schema decoded: it otherwise passes through as bytes
            # (msgspec: a schema may hold integers beyond a double, which orjson refuses)
            function["parameters"] = sanitize_schema(msgspec.json.decode(schema), frozenset(drop_keys))
        else:
            function["parameters"] = orjson.Fragment(schema)
        out.append({"type": "function", "function": function})
    return out


def convert_tool_choice(choice: dict[str, Any]) -> str | dict[str, Any] | None:
    kind = choice.get("type")
    if kind == "auto":
        return "auto"
    if kind == "any":
        return "required"
    if kind == "none":
        return "none"
    if kind == "tool":
        name = choice.get("name")
        if not isinstance(name, str) or not name:
            raise invalid_request("tool_choice.name: Field required")
        return {"type": "function", "function": {"name": upstream_tool_name(name)}}
    raise invalid_request(f"tool_choice.type: unknown value {kind!r}")
