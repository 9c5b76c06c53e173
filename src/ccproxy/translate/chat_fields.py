"""How the fields of an OpenAI-style Chat answer read, whichever server sent it (PROTOCOL.md §3):
usage in its several shapes, content as a string or a list of parts, reasoning in its three
fields, ``<think>`` tags, finish reasons, tool arguments and url_citation annotations. Shared by
the whole-answer and the stream translation in ``chat_response.py``."""

from __future__ import annotations

import logging
from typing import Any

import orjson

from ..schemas.openai_chat import Usage
from .json_prefix import repair_object

log = logging.getLogger("ccproxy.translate")

TEXT, THINKING = 1, 2  # what a piece of content is (ThinkTags); chat_response's block kinds too

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
            return [(TEXT, text)] if text else []
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
                return [(TEXT, buf)]
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
                    out.append((THINKING, buf))
                return out
            if end:
                out.append((THINKING, buf[:end]))
            buf = buf[end + len(THINK_CLOSE) :]
            self._state, self._trim = 2, True
        if self._trim:
            buf = buf.lstrip()
            if not buf:
                return out
            self._trim = False
        out.append((TEXT, buf))
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
        return [(THINKING if self._state == 1 else TEXT, held)]


def split_think(text: str) -> tuple[str, str]:
    """(thinking, text) of a whole answer, by the ThinkTags rules."""
    tags = ThinkTags()
    parts = tags.feed(text) + tags.flush()
    return (
        "".join(piece for kind, piece in parts if kind == THINKING),
        "".join(piece for kind, piece in parts if kind == TEXT),
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
