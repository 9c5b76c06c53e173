"""Upstream answers (Chat Completions, and Anthropic's for the pass-through) for the scripted
mock upstream (tests/support/mock_upstream.py)."""

from __future__ import annotations

import json


def text_stream(*pieces: str, finish: str = "stop", usage: dict | None = None) -> list:
    chunks = [{"choices": [{"index": 0, "delta": {"content": p}, "finish_reason": None}]} for p in pieces]
    chunks.append({"choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
    chunks.append({"choices": [], "usage": usage or {"prompt_tokens": 20, "completion_tokens": len(pieces)}})
    return chunks


def completion(content: str | None = "ok", tool_calls: list | None = None, finish: str = "stop") -> dict:
    message: dict = {"role": "assistant", "content": content}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {
        "id": "chatcmpl-1",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {"prompt_tokens": 30, "completion_tokens": 5, "prompt_tokens_details": {"cached_tokens": 10}},
    }


def tool_call_stream(call_id: str, name: str, arguments: dict) -> list:
    args = json.dumps(arguments)
    return [
        {
            "choices": [
                {
                    "index": 0,
                    "delta": {
                        "role": "assistant",
                        "tool_calls": [
                            {"index": 0, "id": call_id, "type": "function", "function": {"name": name, "arguments": ""}}
                        ],
                    },
                    "finish_reason": None,
                }
            ]
        },
        {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": args[:10]}}]}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": args[10:]}}]}}]},
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
        {"choices": [], "usage": {"prompt_tokens": 900, "completion_tokens": 20}},
    ]


def anthropic_message(text: str) -> dict:
    """A whole answer of an Anthropic upstream (for the pass-through)."""
    return {
        "id": "msg_upstream_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-opus-4-8",
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 12, "output_tokens": 3, "cache_read_input_tokens": 5},
    }
