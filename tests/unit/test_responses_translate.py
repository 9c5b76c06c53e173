"""Anthropic ↔ OpenAI Responses translation (pure functions; the adapter comes with issue 6)."""

from __future__ import annotations

import orjson
import pytest

from ccproxy.routing import Router
from ccproxy.schemas.anthropic import decode_messages_request
from ccproxy.translate.chat_request import ORPHAN_RESULT_TEXT
from ccproxy.translate.events import StreamFailure
from ccproxy.translate.responses_request import build_responses_request, decode_signature, encode_signature
from ccproxy.translate.responses_response import response_to_message
from tests.support.fixtures import CLAUDE_CODE_FIXTURES


def translate(model: str = "gpt-4.1", **body) -> dict:
    body.setdefault("model", "claude-sonnet-5")
    body.setdefault("max_tokens", 100)
    body.setdefault("messages", [{"role": "user", "content": "hi"}])
    req = decode_messages_request(orjson.dumps(body))
    return orjson.loads(orjson.dumps(build_responses_request(req, Router(model, model).route(req.model))))


def test_basic_shape():
    out = translate(system="be brief", temperature=0.5, stop_sequences=["x"], stream=True)
    assert out["instructions"] == "be brief" and out["store"] is False and out["stream"] is True
    assert out["input"] == [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}]
    assert out["max_output_tokens"] == 100 and out["temperature"] == 0.5
    assert "stop" not in out and "include" not in out and "reasoning" not in out


def test_reasoning_models_ask_for_encrypted_reasoning():
    out = translate("o4-mini", thinking={"type": "enabled", "budget_tokens": 20000}, temperature=0.3)
    assert out["include"] == ["reasoning.encrypted_content"]
    assert out["reasoning"] == {"effort": "high", "summary": "auto"}
    assert "temperature" not in out


def test_tools_and_choice_are_flat():
    schema = {"type": "object", "properties": {"q": {"type": "string"}}}
    out = translate(
        tools=[{"name": "search", "description": "find", "input_schema": schema}],
        tool_choice={"type": "tool", "name": "search", "disable_parallel_tool_use": True},
    )
    assert out["tools"] == [{"type": "function", "name": "search", "description": "find", "parameters": schema}]
    assert out["tool_choice"] == {"type": "function", "name": "search"} and out["parallel_tool_calls"] is False


def test_tool_round_trip_items_and_orphans():
    out = translate(
        messages=[
            {"role": "user", "content": "go"},
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "Running both."},
                    {"type": "tool_use", "id": "call_1", "name": "Bash", "input": {"command": "ls"}},
                    {"type": "tool_use", "id": "call_2", "name": "Bash", "input": {"command": "pwd"}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "call_1", "content": "a.txt", "is_error": False},
                    {"type": "tool_result", "tool_use_id": "lost", "content": "x"},
                    {"type": "text", "text": "thanks"},
                ],
            },
        ]
    )
    kinds = [(i["type"], i.get("role") or i.get("call_id")) for i in out["input"]]
    assert kinds == [
        ("message", "user"),
        ("message", "assistant"),
        ("function_call", "call_1"),
        ("function_call", "call_2"),
        ("function_call_output", "call_1"),
        ("function_call_output", "call_2"),
        ("message", "user"),
    ]
    assert out["input"][2]["arguments"] == '{"command":"ls"}'
    assert out["input"][5]["output"] == ORPHAN_RESULT_TEXT
    assert out["input"][6]["content"] == [
        {"type": "input_text", "text": "[tool result for lost]\nx"},
        {"type": "input_text", "text": "thanks"},
    ]


def test_images_and_documents():
    out = translate(
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAA"}},
                    {
                        "type": "document",
                        "title": "a.pdf",
                        "source": {"type": "base64", "media_type": "application/pdf", "data": "JV"},
                    },
                ],
            }
        ]
    )
    assert out["input"][0]["content"] == [
        {"type": "input_image", "image_url": "data:image/png;base64,AAA"},
        {"type": "input_file", "filename": "a.pdf", "file_data": "data:application/pdf;base64,JV"},
    ]


def test_encrypted_reasoning_round_trip_across_turns():
    first = {
        "id": "resp_1",
        "status": "completed",
        "output": [
            {
                "type": "reasoning",
                "id": "rs_1",
                "encrypted_content": "ENCRYPTED==",
                "summary": [{"type": "summary_text", "text": "Need the file list."}],
            },
            {"type": "function_call", "call_id": "call_9", "name": "Bash", "arguments": '{"command":"ls"}'},
        ],
        "usage": {"input_tokens": 100, "output_tokens": 20, "input_tokens_details": {"cached_tokens": 60}},
    }
    message = response_to_message(first, "claude-sonnet-5", 10)
    thinking, tool = message["content"]
    assert thinking == {
        "type": "thinking",
        "thinking": "Need the file list.",
        "signature": encode_signature("rs_1", "ENCRYPTED=="),
    }
    assert tool == {"type": "tool_use", "id": "call_9", "name": "Bash", "input": {"command": "ls"}}
    assert message["stop_reason"] == "tool_use"
    assert message["usage"] == {
        "input_tokens": 40,
        "output_tokens": 20,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 60,
    }
    # the client sends the turn back; the next upstream request carries the reasoning item again
    out = translate(
        "o4-mini",
        messages=[
            {"role": "user", "content": "list files"},
            {"role": "assistant", "content": message["content"]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_9", "content": "a.txt"}]},
        ],
    )
    reasoning, call, output = out["input"][1:4]
    assert reasoning == {
        "type": "reasoning",
        "id": "rs_1",
        "encrypted_content": "ENCRYPTED==",
        "summary": [{"type": "summary_text", "text": "Need the file list."}],
    }
    assert call["type"] == "function_call" and output == {
        "type": "function_call_output",
        "call_id": "call_9",
        "output": "a.txt",
    }


def test_anthropic_signatures_are_not_sent_to_openai():
    out = translate(
        messages=[
            {"role": "user", "content": "q"},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "secret", "signature": "EqQBCkYIARgC..."},
                    {"type": "text", "text": "a"},
                ],
            },
            {"role": "user", "content": "more"},
        ]
    )
    assert "secret" not in orjson.dumps(out).decode() and decode_signature("EqQBCkYIARgC...") is None
    assert out["input"][1] == {
        "type": "message",
        "role": "assistant",
        "content": [{"type": "output_text", "text": "a"}],
    }


@pytest.mark.parametrize(
    ("resp", "reason"),
    [
        (
            {
                "status": "incomplete",
                "incomplete_details": {"reason": "max_output_tokens"},
                "output": [{"type": "message", "content": [{"type": "output_text", "text": "cut"}]}],
            },
            "max_tokens",
        ),
        (
            {
                "status": "completed",
                "output": [{"type": "message", "content": [{"type": "output_text", "text": "ok"}]}],
            },
            "end_turn",
        ),
        ({"status": "incomplete", "incomplete_details": {"reason": "content_filter"}, "output": []}, "refusal"),
    ],
)
def test_stop_reasons(resp, reason):
    assert response_to_message(resp, "m", 1)["stop_reason"] == reason


def test_failed_response_is_an_error():
    with pytest.raises(StreamFailure):
        response_to_message({"status": "failed", "error": {"message": "server had an error"}}, "m", 1)


@pytest.mark.parametrize("name", CLAUDE_CODE_FIXTURES)
def test_claude_code_requests(claude_code_fixture, name):
    body = claude_code_fixture(name)
    req = decode_messages_request(orjson.dumps(body))
    out = orjson.loads(orjson.dumps(build_responses_request(req, Router("gpt-5", "gpt-5-mini").route(req.model))))
    text = orjson.dumps(out).decode()
    for field in ('"cache_control"', '"context_management"', '"output_config"'):
        assert field not in text
    assert set(out) <= {
        "model",
        "input",
        "store",
        "instructions",
        "max_output_tokens",
        "include",
        "reasoning",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "prompt_cache_key",
        "stream",
    }
    calls = [i["call_id"] for i in out["input"] if i["type"] == "function_call"]
    outputs = [i["call_id"] for i in out["input"] if i["type"] == "function_call_output"]
    assert calls == outputs  # every call answered, in order
    assert out["instructions"]
    if name == "opus-web-search-server-tool":  # Claude Code's WebSearch: the Responses API searches
        assert out["tools"] == [{"type": "web_search"}] and out["tool_choice"] == "required"
        assert "web_search_call.action.sources" in out["include"]
    else:
        assert out["tools"][0]["type"] == "function" and "parameters" in out["tools"][0]


def test_long_tool_names_round_trip_through_responses():
    from ccproxy.translate.chat_request import upstream_tool_name

    long_name = "mcp__server__" + "x" * 70
    short = upstream_tool_name(long_name)
    out = translate(
        tools=[{"name": long_name, "input_schema": {"type": "object"}}],
        messages=[
            {"role": "user", "content": "go"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "c", "name": long_name, "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "c", "content": "ok"}]},
        ],
    )
    assert out["tools"][0]["name"] == short and out["input"][1]["name"] == short
    message = response_to_message(
        {
            "status": "completed",
            "output": [{"type": "function_call", "call_id": "c2", "name": short, "arguments": "{}"}],
        },
        "m",
        1,
        {short: long_name},
    )
    assert message["content"][0]["name"] == long_name


# Events of a recorded Responses stream with web search (vercel/ai packages/openai/src/responses/
# __fixtures__/openai-web-search-tool.1.chunks.txt @ 1050332, sequence numbers 4, 8 and 32-35):
# JSON-equal to the recording's lines, except that event 8's list of 12 sources is cut to its first
# two and the closing response.completed to the fields the translator reads.
WEB_SEARCH_EVENTS = [
    r'{"type":"response.output_item.added","sequence_number":4,"output_index":1,"item":{"id":"ws_68c187d0973881928c78c79e50ae028805ca09a4773fcd25","type":"web_search_call","status":"in_progress"}}',
    r'{"type":"response.output_item.done","sequence_number":8,"output_index":1,"item":{"id":"ws_68c187d0973881928c78c79e50ae028805ca09a4773fcd25","type":"web_search_call","status":"completed","action":{"type":"search","query":"Berlin news today","sources":[{"type":"url","url":"https://www.reuters.com/world/europe/berlin-postpones-decision-military-engagement-regarding-ukraine-2025-09-04/"},{"type":"url","url":"https://www.wallpaper.com/art/exhibitions-shows/berlin-art-week-2025"}]}}}',  # noqa: E501
    r'{"type":"response.output_item.added","sequence_number":32,"output_index":9,"item":{"id":"msg_68c187e279048192be3775da689aa25105ca09a4773fcd25","type":"message","status":"in_progress","content":[],"role":"assistant"}}',
    r'{"type":"response.content_part.added","sequence_number":33,"item_id":"msg_68c187e279048192be3775da689aa25105ca09a4773fcd25","output_index":9,"content_index":0,"part":{"type":"output_text","annotations":[],"logprobs":[],"text":""}}',
    r'{"type":"response.output_text.delta","sequence_number":34,"item_id":"msg_68c187e279048192be3775da689aa25105ca09a4773fcd25","output_index":9,"content_index":0,"delta":"Here\u2019s what\u2019s notable in Berlin today (September 10, 2025), based on three quick web searches:\n\n- Berlin Art Week 2025 kicks off today and runs through September 14. The city\u2019s autumn art season opens with more than 100 venues, featuring exhibitions from Patti Smith, Mark Leckey, Katharina Grosse, Carrie Mae Weems, and more. ([wallpaper.com](https://www.wallpaper.com/art/exhibitions-shows/berlin-art-week-2025))","logprobs":[],"obfuscation":"Y"}',  # noqa: E501
    r'{"type":"response.output_text.annotation.added","sequence_number":35,"item_id":"msg_68c187e279048192be3775da689aa25105ca09a4773fcd25","output_index":9,"content_index":0,"annotation_index":0,"annotation":{"type":"url_citation","end_index":414,"start_index":327,"title":"What to see at Berlin Art Week 2025 | Wallpaper*","url":"https://www.wallpaper.com/art/exhibitions-shows/berlin-art-week-2025"}}',  # noqa: E501
    r'{"type":"response.completed","sequence_number":55,"response":{"status":"completed","usage":{"input_tokens":10,"output_tokens":20}}}',
]


def test_responses_stream_web_search_and_citations():
    from ccproxy.translate.responses_response import ResponsesStreamTranslator
    from tests.support.sse import assemble, parse_sse

    translator = ResponsesStreamTranslator("claude-opus-4-8", 100)
    raw = translator.start() + b"".join(translator.feed(line.encode()) for line in WEB_SEARCH_EVENTS)
    raw += translator.finish()
    message = assemble(parse_sse(raw))
    use, result, text = message["content"]
    assert use["type"] == "server_tool_use" and use["input"] == {"query": "Berlin news today"}
    assert result["type"] == "web_search_tool_result" and result["tool_use_id"] == use["id"]
    assert [r["url"] for r in result["content"]][
        1
    ] == "https://www.wallpaper.com/art/exhibitions-shows/berlin-art-week-2025"
    [cite] = text["citations"]
    assert cite["type"] == "web_search_result_location" and cite["title"].startswith("What to see at Berlin")
    assert (
        cite["cited_text"] == "([wallpaper.com](https://www.wallpaper.com/art/exhibitions-shows/berlin-art-week-2025))"
    )
    assert message["usage"]["server_tool_use"] == {"web_search_requests": 1}
    assert message["stop_reason"] == "end_turn"
