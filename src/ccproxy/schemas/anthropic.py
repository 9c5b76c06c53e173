"""Anthropic Messages API requests, as decoded from the client.

Only the envelope is typed: content blocks stay plain dicts so that block types this proxy
does not know yet are dropped by the translator instead of failing the decode. Tool input
schemas are kept as ``msgspec.Raw`` so they pass through to the upstream without being
decoded and re-encoded (they are most of a Claude Code request's bytes).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal, TypeVar

import msgspec

from ..errors import invalid_request
from .spans import SpanReuse

T = TypeVar("T")

Block = dict[str, Any]
# Integers are bounded by what an upstream can take (64-bit): a bigger one is the client's
# error (400), not an overflow somewhere on the way.
Int64 = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]


class Message(msgspec.Struct, kw_only=True):
    role: Literal["user", "assistant", "system"]
    content: str | list[Block]


class Tool(msgspec.Struct, kw_only=True):
    name: str
    description: str | None = None
    input_schema: msgspec.Raw = msgspec.Raw(b"")  # empty = absent (Raw cannot be in a union)
    type: str | None = None  # set on Anthropic server/client tools (web_search_…, bash_…)
    # web_search_… server tool options
    max_uses: Int64 | None = None
    allowed_domains: list[str] | None = None
    blocked_domains: list[str] | None = None


def web_search_tool(tools: list[Tool] | None) -> Tool | None:
    """Anthropic's web_search server tool (``web_search_20250305`` and later), when offered.
    Asked twice per request; a remembered tools span (Claude Code's 24 tools) is scanned once."""
    if not tools:
        return None
    return request_spans.derived(tools, "web_search", lambda: _find_web_search(tools))


def _find_web_search(tools: list[Tool]) -> Tool | None:
    return next((t for t in tools if (t.type or "").startswith("web_search")), None)


class MessagesRequest(msgspec.Struct, kw_only=True):
    model: str
    messages: list[Message]
    max_tokens: Int64
    system: str | list[Block] | None = None
    stream: bool = False
    temperature: float | None = None
    top_p: float | None = None
    top_k: Int64 | None = None
    stop_sequences: list[str] | None = None
    tools: list[Tool] | None = None
    tool_choice: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None
    thinking: dict[str, Any] | None = None
    output_config: dict[str, Any] | None = None
    prompt_cache_key: str | None = None  # not Anthropic's: lets a client pin OpenAI's cache key


class CountTokensRequest(msgspec.Struct, kw_only=True):
    model: str
    messages: list[Message]
    system: str | list[Block] | None = None
    tools: list[Tool] | None = None
    tool_choice: dict[str, Any] | None = None
    thinking: dict[str, Any] | None = None


_messages_decoder = msgspec.json.Decoder(MessagesRequest)
_count_decoder = msgspec.json.Decoder(CountTokensRequest)


# Claude Code's tools and system, byte-identical on every turn, are decoded once (spans.py).
request_spans = SpanReuse(_messages_decoder.decode)


def decode_messages_request(body: bytes) -> MessagesRequest:
    return request_spans.decode(body)  # type: ignore[no-any-return]


def decode_count_tokens_request(body: bytes) -> CountTokensRequest:
    return _count_decoder.decode(body)


def decode_request(decoder: Callable[[bytes], T], body: bytes) -> T:
    """A client's request body decoded, or a 400 invalid_request_error saying what is wrong."""
    try:
        return decoder(body)
    except msgspec.ValidationError as exc:
        raise invalid_request(_validation_message(str(exc))) from None
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError, ValueError, TypeError) as exc:
        # malformed JSON, invalid UTF-8 inside strings, nesting too deep …
        raise invalid_request(f"There was an error parsing the body of your request: {exc}") from None


def _validation_message(text: str) -> str:
    # msgspec: "Expected `int`, got `str` - at `$.max_tokens`" → "max_tokens: Expected `int`, got `str`"
    detail, sep, where = text.rpartition(" - at `$")
    if sep:
        return f"{where.rstrip('`').lstrip('.')}: {detail}"
    if text.startswith("Object missing required field `"):
        field = text.split("`")[1]
        return f"{field}: Field required"
    return text
