"""The quirks real OpenAI-compatible providers show (issue 17), each against the translator:
content as parts, reasoning fields, <think> tags, streams without finish_reason, tool-call
numbering, usage shapes, provider errors. Recorded answers of the providers themselves are
replayed through the whole proxy in tests/dialects/; the quirks no public recording there shows
yet (Snowflake Cortex's missing finish_reason, Groq's event: error frames, index-less and all-zero
tool calls, a streamed <think>) are covered here only, as tests/dialects/SOURCES.md says."""

from __future__ import annotations

import orjson
import pytest

from ccproxy.schemas.openai_chat import decode_completion
from ccproxy.translate.chat_fields import ThinkTags
from ccproxy.translate.chat_response import ChatStreamTranslator, completion_to_message
from ccproxy.translate.events import StreamFailure
from tests.support.sse import assemble, parse_sse


def chunk(delta: dict | None = None, finish: str | None = None, **extra) -> dict:
    choices = [] if delta is None and finish is None else [{"index": 0, "delta": delta or {}, "finish_reason": finish}]
    return {"id": "c1", "object": "chat.completion.chunk", "choices": choices, **extra}


def run(
    chunks: list, done: bool = True, think_tags: bool = True, events_named: dict | None = None
) -> tuple[list, dict]:
    t = ChatStreamTranslator("claude-sonnet-5", input_estimate=42, think_tags=think_tags)
    out = [t.start()]
    try:
        for c in chunks:
            data = orjson.dumps(c) if isinstance(c, dict) else c
            out.append(t.feed(data))
        if done:
            out.append(t.feed(b"[DONE]"))
        out.append(t.finish())
    except StreamFailure as exc:
        out.append(t.fail(exc.error_type, exc.message))
    events = parse_sse(b"".join(out))
    return events, assemble(events)


def message(body: dict, think_tags: bool = True) -> dict:
    return completion_to_message(decode_completion(orjson.dumps(body)), "claude-sonnet-5", 42, None, think_tags)


def completion(msg: dict, finish: str = "stop", usage: dict | None = None) -> dict:
    return {"id": "x", "choices": [{"index": 0, "message": msg, "finish_reason": finish}], "usage": usage}


# --- content as a list of parts (Mistral magistral) ----------------------------------------------


def test_content_parts_in_deltas_become_thinking_and_text():
    thinking = {"type": "thinking", "thinking": [{"type": "text", "text": "Let me think."}]}
    _, msg = run(
        [
            chunk({"role": "assistant", "content": [thinking]}),
            chunk({"content": [{"type": "text", "text": "The answer"}]}),
            chunk({"content": " is 4."}, finish="stop"),
        ]
    )
    assert [b["type"] for b in msg["content"]] == ["thinking", "text"]
    assert msg["content"][0]["thinking"] == "Let me think." and msg["content"][1]["text"] == "The answer is 4."


def test_content_parts_in_a_message():
    body = completion(
        {"role": "assistant", "content": [{"type": "thinking", "thinking": "hmm"}, {"type": "text", "text": "4"}]}
    )
    assert message(body)["content"] == [
        {"type": "thinking", "thinking": "hmm", "signature": ""},
        {"type": "text", "text": "4"},
    ]


# --- reasoning fields -------------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
def test_reasoning_fields(field):
    _, msg = run([chunk({field: "why"}), chunk({"content": "so"}, finish="stop")])
    assert msg["content"][0] == {"type": "thinking", "thinking": "why", "signature": ""}


def test_reasoning_only_in_reasoning_details():
    details = [{"type": "reasoning.text", "text": "step one", "format": "unknown", "index": 0}]
    _, msg = run([chunk({"reasoning_details": details}), chunk({"content": "done"}, finish="stop")])
    assert msg["content"][0]["thinking"] == "step one"
    both = [chunk({"reasoning": "once", "reasoning_details": [{"type": "reasoning.text", "text": "once"}]})]
    _, msg = run([*both, chunk({"content": "x"}, finish="stop")])
    assert msg["content"][0]["thinking"] == "once"  # not twice
    encrypted = [{"type": "reasoning.encrypted", "data": "gAAAA"}]
    assert message(completion({"content": "x", "reasoning_details": encrypted}))["content"] == [
        {"type": "text", "text": "x"}
    ]


# --- <think> tags ---------------------------------------------------------------------------------


def test_think_tags_at_the_start_are_thinking_however_split():
    pieces = ["", "<th", "ink>\n", "Okay, the user", " wants 4.</th", "ink", ">\n\n", "The answer", " is 4."]
    _, msg = run([chunk({"content": p}) for p in pieces] + [chunk(finish="stop")])
    assert msg["content"] == [
        {"type": "thinking", "thinking": "\nOkay, the user wants 4.", "signature": ""},
        {"type": "text", "text": "The answer is 4."},
    ]


def test_think_tags_elsewhere_or_switched_off_are_text():
    _, msg = run([chunk({"content": "Use <think> tags"}), chunk({"content": " here"}, finish="stop")])
    assert msg["content"] == [{"type": "text", "text": "Use <think> tags here"}]
    _, msg = run([chunk({"content": "<think>x</think>y"}, finish="stop")], think_tags=False)
    assert msg["content"] == [{"type": "text", "text": "<think>x</think>y"}]
    assert message(completion({"content": "<think>a</think>b"}), think_tags=False)["content"][0]["type"] == "text"


def test_think_tags_in_a_whole_message_and_an_unclosed_think():
    assert message(completion({"content": "<think>\nplan\n</think>\n\nanswer"}))["content"] == [
        {"type": "thinking", "thinking": "\nplan\n", "signature": ""},
        {"type": "text", "text": "answer"},
    ]
    tags = ThinkTags()
    assert tags.feed("<think>never closed") == [(2, "never closed")] and tags.flush() == []


# --- streams without finish_reason ----------------------------------------------------------------


def test_done_without_finish_reason_ends_with_tool_use_when_tools_were_streamed():
    call = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}}
    _, msg = run([chunk({"tool_calls": [call]})], done=True)
    assert msg["stop_reason"] == "tool_use" and msg["content"][0]["input"] == {"a": 1}


def test_a_cut_stream_without_done_or_finish_reason_stays_an_error():
    events, _ = run([chunk({"content": "half"})], done=False)
    assert events[-1][0] == "error" and "message_stop" not in [e[0] for e in events]


# --- tool calls --------------------------------------------------------------------------------------


def call(index=None, call_id=None, name=None, args=None) -> dict:
    c: dict = {"function": {}}
    if index is not None:
        c["index"] = index
    if call_id is not None:
        c["id"] = call_id
        c["type"] = "function"
    if name is not None:
        c["function"]["name"] = name
    if args is not None:
        c["function"]["arguments"] = args
    return c


def tools_of(msg: dict) -> list:
    return [(b["name"], b["input"]) for b in msg["content"] if b["type"] == "tool_use"]


def test_whole_call_in_one_chunk_with_finish_reason():
    _, msg = run([chunk({"tool_calls": [call(0, "c1", "get", '{"q":"x"}')]}, finish="tool_calls")])
    assert tools_of(msg) == [("get", {"q": "x"})] and msg["stop_reason"] == "tool_use"


def test_later_fragments_with_empty_id_and_name():
    _, msg = run(
        [
            chunk({"tool_calls": [call(0, "c1", "get", "")]}),
            chunk({"tool_calls": [call(0, "", "", '{"q":')]}),
            chunk({"tool_calls": [call(0, "", "", '"x"}')]}),
            chunk(finish="tool_calls"),
        ]
    )
    assert tools_of(msg) == [("get", {"q": "x"})]


def test_calls_without_index_first_at_index_one_and_parallel():
    _, msg = run(
        [
            chunk({"tool_calls": [call(None, "a", "one", '{"n":1}')]}),
            chunk({"tool_calls": [call(None, "b", "two", '{"n":2}')]}),
            chunk(finish="tool_calls"),
        ]
    )
    assert tools_of(msg) == [("one", {"n": 1}), ("two", {"n": 2})]
    _, msg = run([chunk({"tool_calls": [call(1, "c", "late", '{"k":true}')]}, finish="tool_calls")])
    assert tools_of(msg) == [("late", {"k": True})]
    _, msg = run(
        [
            chunk({"tool_calls": [call(0, "a", "one", '{"n":'), call(1, "b", "two", '{"n":')]}),
            chunk({"tool_calls": [call(1, None, None, "2}"), call(0, None, None, "1}")]}),
            chunk(finish="tool_calls"),
        ]
    )
    assert tools_of(msg) == [("one", {"n": 1}), ("two", {"n": 2})]


def test_every_call_numbered_zero_with_its_own_id():
    _, msg = run(
        [
            chunk({"tool_calls": [call(0, "a", "one", '{"n":1}')]}),
            chunk({"tool_calls": [call(0, "b", "two", '{"n":2}')]}),
            chunk(finish="tool_calls"),
        ]
    )
    assert tools_of(msg) == [("one", {"n": 1}), ("two", {"n": 2})]


def test_arguments_sent_as_an_object():
    body = completion({"content": None, "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": {"a": 1}}}]})
    assert tools_of(message(body, True)) == [("f", {"a": 1})]


# --- usage ---------------------------------------------------------------------------------------------


def test_usage_in_a_final_chunk_with_no_choices_and_null_elsewhere():
    _, msg = run(
        [
            chunk({"content": "a"}, usage=None),
            chunk({}, finish="stop", usage=None),
            chunk(usage={"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12}),
        ]
    )
    assert msg["usage"]["input_tokens"] == 9 and msg["usage"]["output_tokens"] == 3


def test_cumulative_usage_counts_the_last_never_the_sum():
    _, msg = run(
        [
            chunk({"content": "a"}, usage={"prompt_tokens": 9, "completion_tokens": 1}),
            chunk({"content": "b"}, usage={"prompt_tokens": 9, "completion_tokens": 2}),
            chunk({}, finish="stop", usage={"prompt_tokens": 9, "completion_tokens": 3}),
        ]
    )
    assert msg["usage"]["output_tokens"] == 3 and msg["usage"]["input_tokens"] == 9


def test_groq_usage_in_x_groq():
    groq = {"id": "req_1", "usage": {"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16}}
    _, msg = run([chunk({"content": "hi"}), chunk({}, finish="stop", x_groq=groq)])
    assert (msg["usage"]["input_tokens"], msg["usage"]["output_tokens"]) == (11, 5)


@pytest.mark.parametrize(
    "usage",
    [
        {"prompt_tokens": 100, "completion_tokens": 5, "prompt_tokens_details": {"cached_tokens": 60}},
        {"prompt_tokens": 100, "completion_tokens": 5, "prompt_cache_hit_tokens": 60},
        {"prompt_tokens": 100, "completion_tokens": 5, "cached_tokens": 60},
    ],
)
def test_cached_tokens_in_either_shape(usage):
    u = message(completion({"content": "x"}, usage=usage))["usage"]
    assert (u["input_tokens"], u["cache_read_input_tokens"], u["output_tokens"]) == (40, 60, 5)


def test_reasoning_tokens_left_out_of_completion_tokens_are_counted():
    xai = {  # xAI: total = prompt + completion + reasoning
        "prompt_tokens": 10,
        "completion_tokens": 4,
        "total_tokens": 334,
        "completion_tokens_details": {"reasoning_tokens": 320},
    }
    assert message(completion({"content": "x"}, usage=xai))["usage"]["output_tokens"] == 324
    openai = {  # OpenAI: completion already includes reasoning
        "prompt_tokens": 10,
        "completion_tokens": 324,
        "total_tokens": 334,
        "completion_tokens_details": {"reasoning_tokens": 320},
    }
    assert message(completion({"content": "x"}, usage=openai))["usage"]["output_tokens"] == 324
    floats = {"prompt_tokens": 10.0, "completion_tokens": 2.0, "total_tokens": 12.0}
    assert message(completion({"content": "x"}, usage=floats))["usage"]["output_tokens"] == 2


# --- Azure, content filters, provider errors ----------------------------------------------------------


def test_azure_prompt_filter_chunk_and_content_filter_finish():
    azure_first = {
        "choices": [],
        "created": 0,
        "id": "",
        "model": "",
        "object": "",
        "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {"hate": {"filtered": False}}}],
    }
    _, msg = run([azure_first, chunk({"content": "blocked"}), chunk({}, finish="content_filter")])
    assert msg["stop_reason"] == "refusal"


def test_openrouter_error_object_mid_stream_carries_the_message():
    error = {
        "id": "gen-1",
        "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": "error"}],
        "error": {"code": 502, "message": "Provider returned error"},
    }
    events, msg = run([chunk({"content": "partial"}), error], done=False)
    assert events[-1][0] == "error" and "Provider returned error" in msg["error"]["message"]
    assert msg["error"]["type"] == "overloaded_error"


def test_groq_event_error_frame():
    frame = {"error": {"message": "tool call validation failed", "type": "invalid_request_error"}}
    events, _ = run([chunk({"content": "a"}), frame], done=False)  # (as a plain data frame, too)
    assert events[-1][0] == "error"
    t = ChatStreamTranslator("m", 1)
    t.start()
    with pytest.raises(StreamFailure) as err:
        t.feed(orjson.dumps(frame), "error")
    assert "tool call validation failed" in err.value.message
    with pytest.raises(StreamFailure) as err:
        t.feed(b"upstream exploded", "error")
    assert "upstream exploded" in err.value.message


@pytest.mark.parametrize(
    ("finish", "stop"),
    [
        ("eos", "end_turn"),
        ("STOP", "end_turn"),
        ("MAX_TOKENS", "max_tokens"),
        ("model_length", "max_tokens"),
        ("SAFETY", "refusal"),
        ("something_new", "end_turn"),
    ],
)
def test_finish_reason_spellings(finish, stop):
    _, msg = run([chunk({"content": "x"}, finish=finish)])
    assert msg["stop_reason"] == stop
