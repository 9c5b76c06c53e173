"""OpenAI Responses API response → Anthropic message (PROTOCOL.md §4), non-streaming.

Output items map to content blocks in order: ``reasoning`` → a thinking block (summary text;
the encrypted content rides in the signature, see responses_request.encode_signature),
``message`` → text blocks (refusals too), ``function_call`` → tool_use. Usage reports cached
input apart. ``incomplete`` for max_output_tokens → ``max_tokens``; ``failed`` → an error.
The streaming state machine for ``response.*`` events is still to come (issue 6).
"""

from __future__ import annotations

from typing import Any

from .chat_response import StreamFailure, new_message_id, new_tool_id, parse_arguments
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


def response_to_message(resp: dict[str, Any], requested_model: str, input_estimate: int) -> dict[str, Any]:
    status = resp.get("status")
    if status == "failed" or (resp.get("error") and not resp.get("output")):
        error = resp.get("error") or {}
        message = error.get("message") if isinstance(error, dict) else str(error)
        raise StreamFailure("api_error", f"upstream response failed: {message or 'no reason given'}")
    content: list[dict[str, Any]] = []
    chars = 0
    for item in resp.get("output") or []:
        if not isinstance(item, dict):
            continue
        kind = item.get("type")
        if kind == "reasoning":
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
                        content.append({"type": "text", "text": text})
                        chars += len(text)
        elif kind == "function_call":
            arguments = item.get("arguments")
            chars += len(arguments or "")
            content.append(
                {
                    "type": "tool_use",
                    "id": item.get("call_id") or new_tool_id(),
                    "name": item.get("name") or "",
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
    if not content:
        content.append({"type": "text", "text": ""})
    return {
        "id": new_message_id(),
        "type": "message",
        "role": "assistant",
        "model": requested_model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": response_usage(resp.get("usage"), input_estimate, max(1, chars // 4)),
    }
