"""Non-streaming Chat completion → Anthropic message (PROTOCOL.md §3)."""

from __future__ import annotations

import orjson
import pytest

from ccproxy.schemas.openai_chat import decode_completion
from ccproxy.translate.chat_response import completion_to_message
from ccproxy.translate.events import StreamFailure


def convert(message: dict, finish: str = "stop", usage: dict | None = None, model="claude-opus-4-8") -> dict:
    body = {"id": "x", "choices": [{"index": 0, "message": message, "finish_reason": finish}]}
    if usage is not None:
        body["usage"] = usage
    return completion_to_message(decode_completion(orjson.dumps(body)), model, input_estimate=11)


def test_text_message_shape():
    msg = convert({"role": "assistant", "content": "hi"}, usage={"prompt_tokens": 9, "completion_tokens": 2})
    assert msg["type"] == "message" and msg["role"] == "assistant" and msg["id"].startswith("msg_")
    assert msg["model"] == "claude-opus-4-8"
    assert msg["content"] == [{"type": "text", "text": "hi"}]
    assert msg["stop_reason"] == "end_turn" and msg["stop_sequence"] is None
    assert msg["usage"] == {
        "input_tokens": 9,
        "output_tokens": 2,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }


def test_cached_tokens_are_split_from_input():
    for usage in (
        {"prompt_tokens": 1000, "completion_tokens": 5, "prompt_tokens_details": {"cached_tokens": 800}},
        {"prompt_tokens": 1000, "completion_tokens": 5, "prompt_cache_hit_tokens": 800},
    ):
        msg = convert({"content": "x"}, usage=usage)
        assert msg["usage"]["input_tokens"] == 200
        assert msg["usage"]["cache_read_input_tokens"] == 800


def test_tool_calls_and_stop_reason():
    msg = convert(
        {
            "content": None,
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "Bash", "arguments": '{"command":"ls"}'}},
                {"type": "function", "function": {"name": "Read", "arguments": "{bad json"}},
            ],
        },
        finish="tool_calls",
    )
    assert msg["content"][0] == {"type": "tool_use", "id": "call_1", "name": "Bash", "input": {"command": "ls"}}
    assert msg["content"][1]["id"].startswith("toolu_") and isinstance(msg["content"][1]["input"], dict)
    assert msg["stop_reason"] == "tool_use"


def test_stop_after_tool_calls_is_tool_use():
    msg = convert({"tool_calls": [{"id": "c", "function": {"name": "A", "arguments": "{}"}}]}, finish="stop")
    assert msg["stop_reason"] == "tool_use"


@pytest.mark.parametrize(
    ("finish", "reason"), [("length", "max_tokens"), ("content_filter", "refusal"), (None, "end_turn")]
)
def test_finish_reason_mapping(finish, reason):
    assert convert({"content": "x"}, finish=finish)["stop_reason"] == reason


def test_reasoning_content_becomes_thinking():
    msg = convert({"content": "answer", "reasoning_content": "hmm"})
    assert msg["content"] == [
        {"type": "thinking", "thinking": "hmm", "signature": ""},
        {"type": "text", "text": "answer"},
    ]


def test_missing_usage_is_estimated_not_a_crash():
    msg = convert({"content": "x" * 40})
    assert msg["usage"]["input_tokens"] == 11 and msg["usage"]["output_tokens"] >= 10


def test_no_choices_is_an_error():
    with pytest.raises(StreamFailure):
        completion_to_message(decode_completion(b'{"choices": []}'), "m", 1)


def test_message_events_replay_to_the_same_message():
    from ccproxy.translate.events import message_events
    from tests.support.sse import assemble, parse_sse

    msg = convert(
        {
            "reasoning_content": "hmm",
            "content": "Let me look.",
            "tool_calls": [{"id": "call_1", "function": {"name": "Read", "arguments": '{"path": "ü.txt"}'}}],
        },
        finish="tool_calls",
        usage={"prompt_tokens": 9, "completion_tokens": 2},
    )
    assert assemble(parse_sse(message_events(msg))) == msg
