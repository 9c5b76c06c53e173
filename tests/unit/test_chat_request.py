"""Anthropic request → Chat Completions request: every mapping rule of PROTOCOL.md §2."""

from __future__ import annotations

import orjson
import pytest

from ccproxy import tokens
from ccproxy.errors import ProxyError
from ccproxy.routing import Router
from ccproxy.schemas.anthropic import decode_messages_request
from ccproxy.translate.chat_request import ORPHAN_RESULT_TEXT, build_chat_request
from tests.support.fixtures import CLAUDE_CODE_FIXTURES

ROUTER = Router("gpt-big", "gpt-small")


def translate(router: Router = ROUTER, **body) -> dict:
    body.setdefault("model", "claude-sonnet-5")
    body.setdefault("max_tokens", 100)
    body.setdefault("messages", [{"role": "user", "content": "hi"}])
    req = decode_messages_request(orjson.dumps(body))
    # Round-trip through JSON exactly as the upstream would receive it.
    return orjson.loads(orjson.dumps(build_chat_request(req, router.route(req.model))))


def test_string_system_and_user_text():
    out = translate(system="be brief")
    assert out["model"] == "gpt-big"
    assert out["messages"] == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    assert out["max_tokens"] == 100
    assert "stream" not in out


def test_system_blocks_join_with_blank_lines_and_drop_cache_control():
    out = translate(
        system=[
            {"type": "text", "text": "one", "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": "two"},
        ]
    )
    assert out["messages"][0] == {"role": "system", "content": "one\n\ntwo"}
    assert "cache_control" not in orjson.dumps(out).decode()


def test_system_message_inside_messages_is_kept_in_place():
    out = translate(
        messages=[
            {"role": "user", "content": "hi"},
            {"role": "system", "content": [{"type": "text", "text": "agents: a, b"}]},
        ]
    )
    assert out["messages"] == [
        {"role": "user", "content": "hi"},
        {"role": "system", "content": "agents: a, b"},
    ]


def test_multiple_text_blocks_become_text_parts():
    out = translate(
        messages=[{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]
    )
    assert out["messages"][0]["content"] == [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]


def test_images_base64_and_url():
    out = translate(
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0"}},
                    {"type": "image", "source": {"type": "url", "url": "https://example.com/a.jpg"}},
                    {"type": "text", "text": "what is this?"},
                ],
            }
        ]
    )
    assert out["messages"][0]["content"] == [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/a.jpg"}},
        {"type": "text", "text": "what is this?"},
    ]


def test_documents_pdf_and_text():
    out = translate(
        messages=[
            {
                "role": "user",
                "content": [
                    {
                        "type": "document",
                        "title": "spec.pdf",
                        "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0"},
                    },
                    {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "plain doc"}},
                ],
            }
        ]
    )
    pdf, text = out["messages"][0]["content"]
    assert pdf == {"type": "file", "file": {"filename": "spec.pdf", "file_data": "data:application/pdf;base64,JVBERi0"}}
    assert text == {"type": "text", "text": "plain doc"}


def test_unknown_blocks_are_dropped_not_rejected():
    out = translate(
        messages=[{"role": "user", "content": [{"type": "hologram", "x": 1}, {"type": "text", "text": "still here"}]}]
    )
    assert out["messages"] == [{"role": "user", "content": "still here"}]


def tool_turns(results: list[dict], calls: tuple[str, ...] = ("call_1",)) -> list[dict]:
    return [
        {"role": "user", "content": "run it"},
        {
            "role": "assistant",
            "content": [{"type": "text", "text": "Running."}]
            + [{"type": "tool_use", "id": c, "name": "Bash", "input": {"command": f"echo {c}"}} for c in calls],
        },
        {"role": "user", "content": results},
    ]


def test_tool_use_and_result_round_trip():
    out = translate(messages=tool_turns([{"type": "tool_result", "tool_use_id": "call_1", "content": "call_1\n"}]))
    assistant, tool = out["messages"][1], out["messages"][2]
    assert assistant == {
        "role": "assistant",
        "content": "Running.",
        "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "Bash", "arguments": '{"command":"echo call_1"}'}}
        ],
    }
    assert tool == {"role": "tool", "tool_call_id": "call_1", "content": "call_1\n"}
    assert len(out["messages"]) == 3


def test_consecutive_results_stay_consecutive_and_user_text_follows():
    out = translate(
        messages=tool_turns(
            [
                {"type": "text", "text": "here you go"},
                {"type": "tool_result", "tool_use_id": "call_2", "content": "two"},
                {"type": "tool_result", "tool_use_id": "call_1", "content": "one"},
            ],
            calls=("call_1", "call_2"),
        )
    )
    roles = [m["role"] for m in out["messages"]]
    assert roles == ["user", "assistant", "tool", "tool", "user"]
    assert [m["tool_call_id"] for m in out["messages"][2:4]] == ["call_2", "call_1"]
    assert out["messages"][4] == {"role": "user", "content": "here you go"}


def test_list_result_content_is_joined_text_never_a_repr():
    out = translate(
        messages=tool_turns(
            [
                {
                    "type": "tool_result",
                    "tool_use_id": "call_1",
                    "content": [{"type": "text", "text": "line one"}, {"type": "text", "text": "line two"}],
                }
            ]
        )
    )
    assert out["messages"][2]["content"] == "line one\nline two"


def test_error_result_stays_visible():
    out = translate(
        messages=tool_turns([{"type": "tool_result", "tool_use_id": "call_1", "content": "boom", "is_error": True}])
    )
    assert out["messages"][2]["content"] == "Error: boom"


def test_image_inside_tool_result_follows_as_user_image():
    img = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}
    out = translate(
        messages=tool_turns(
            [{"type": "tool_result", "tool_use_id": "call_1", "content": [{"type": "text", "text": "shot"}, img]}]
        )
    )
    assert out["messages"][2] == {"role": "tool", "tool_call_id": "call_1", "content": "shot\n[image]"}
    follow = out["messages"][3]
    assert follow["role"] == "user"
    assert {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}} in follow["content"]


def test_orphan_tool_use_gets_a_stub_result():
    out = translate(
        messages=[
            {"role": "user", "content": "go"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "call_9", "name": "Bash", "input": {}}]},
            {"role": "user", "content": "never mind, say hi"},
        ]
    )
    assert [m["role"] for m in out["messages"]] == ["user", "assistant", "tool", "user"]
    assert out["messages"][2] == {"role": "tool", "tool_call_id": "call_9", "content": ORPHAN_RESULT_TEXT}
    assert out["messages"][1]["content"] is None
    assert out["messages"][1]["tool_calls"][0]["function"]["arguments"] == "{}"


def test_partially_answered_parallel_calls_get_stubs_for_the_rest():
    out = translate(
        messages=tool_turns(
            [{"type": "tool_result", "tool_use_id": "call_1", "content": "ok"}],
            calls=("call_1", "call_2"),
        )
    )
    tools = [m for m in out["messages"] if m["role"] == "tool"]
    assert [(t["tool_call_id"], t["content"]) for t in tools] == [("call_1", "ok"), ("call_2", ORPHAN_RESULT_TEXT)]


def test_result_without_matching_call_becomes_user_text():
    out = translate(
        messages=[{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "lost", "content": "data"}]}]
    )
    assert out["messages"] == [{"role": "user", "content": "[tool result for lost]\ndata"}]


def test_thinking_is_never_sent_as_text():
    out = translate(
        messages=[
            {"role": "user", "content": "q"},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "SECRET CHAIN OF THOUGHT", "signature": "sig"},
                    {"type": "redacted_thinking", "data": "xyz"},
                    {"type": "text", "text": "answer"},
                ],
            },
            {"role": "user", "content": "more"},
        ]
    )
    assert out["messages"][1] == {"role": "assistant", "content": "answer"}
    assert "SECRET" not in orjson.dumps(out).decode()


def test_tools_and_server_tools():
    schema = {"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]}
    out = translate(
        tools=[
            {"name": "Bash", "description": "run", "input_schema": schema},
            {"type": "web_search_20250305", "name": "web_search", "max_uses": 3},
        ]
    )
    assert out["tools"] == [
        {"type": "function", "function": {"name": "Bash", "description": "run", "parameters": schema}}
    ]


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ({"type": "auto"}, "auto"),
        ({"type": "any"}, "required"),
        ({"type": "none"}, "none"),
        ({"type": "tool", "name": "Bash"}, {"type": "function", "function": {"name": "Bash"}}),
    ],
)
def test_tool_choice(choice, expected):
    out = translate(tools=[{"name": "Bash", "input_schema": {"type": "object"}}], tool_choice=choice)
    assert out["tool_choice"] == expected
    assert "parallel_tool_calls" not in out


def test_disable_parallel_tool_use():
    out = translate(
        tools=[{"name": "Bash", "input_schema": {"type": "object"}}],
        tool_choice={"type": "auto", "disable_parallel_tool_use": True},
    )
    assert out["parallel_tool_calls"] is False


def test_no_tools_means_no_tool_choice():
    out = translate(tool_choice={"type": "any"})
    assert "tools" not in out and "tool_choice" not in out


def test_sampling_and_stop_sequences():
    out = translate(temperature=0.2, top_p=0.9, top_k=5, stop_sequences=["a", "b", "c", "d", "e"])
    assert out["temperature"] == 0.2 and out["top_p"] == 0.9
    assert out["stop"] == ["a", "b", "c", "d"]
    assert "top_k" not in out


def test_reasoning_models_use_max_completion_tokens_and_no_sampling():
    router = Router("o3-mini", "gpt-5-mini")
    out = translate(router, max_tokens=2000, temperature=0.5, top_p=0.5)
    assert out["max_completion_tokens"] == 2000
    assert "max_tokens" not in out and "temperature" not in out and "top_p" not in out
    out = translate(Router("openai/gpt-5", "x"), max_tokens=10)
    assert out["max_completion_tokens"] == 10


def test_max_tokens_clamped_to_known_model_limit_and_setting():
    assert translate(Router("gpt-4o", "gpt-4o-mini"), max_tokens=32000)["max_tokens"] == 16384
    assert translate(Router("gpt-4o", "x", max_tokens_limit=1000), max_tokens=32000)["max_tokens"] == 1000
    assert translate(Router("some-local-model", "x"), max_tokens=32000)["max_tokens"] == 32000


def test_streaming_requests_ask_for_usage():
    out = translate(stream=True)
    assert out["stream"] is True
    assert out["stream_options"] == {"include_usage": True}


def test_anthropic_only_fields_are_not_forwarded_and_user_is_hashed():
    user_id = '{"device_id":"dev-1","account_uuid":"acc","session_id":"sess"}'
    out = translate(
        metadata={"user_id": user_id},
        thinking={"type": "enabled", "budget_tokens": 2000},
        output_config={"effort": "high"},
        context_management={"edits": []},
    )
    text = orjson.dumps(out).decode()
    for field in ("metadata", "thinking", "output_config", "context_management", "cache_control", "dev-1"):
        assert field not in text
    assert len(out["user"]) == 32 and out["user"] != user_id


@pytest.mark.parametrize(
    ("messages", "fragment"),
    [
        ([{"role": "user", "content": [{"type": "text"}]}], "messages.0.content.0.text"),
        ([{"role": "user", "content": [{"type": "image", "source": {"type": "base64"}}]}], "media_type"),
        (
            [
                {"role": "assistant", "content": [{"type": "tool_use", "name": "x", "input": {}}]},
            ],
            "messages.0.content.0.id",
        ),
    ],
)
def test_malformed_blocks_are_400_with_a_path(messages, fragment):
    with pytest.raises(ProxyError) as err:
        translate(messages=messages)
    assert err.value.status == 400 and err.value.error_type == "invalid_request_error"
    assert fragment in err.value.message


@pytest.mark.parametrize("name", CLAUDE_CODE_FIXTURES)
def test_claude_code_requests_translate_cleanly(claude_code_fixture, name):
    assert len(CLAUDE_CODE_FIXTURES) == 8
    body = claude_code_fixture(name)
    req = decode_messages_request(orjson.dumps(body))
    out = orjson.loads(orjson.dumps(build_chat_request(req, ROUTER.route(req.model))))
    assert out["model"] == ("gpt-small" if "haiku" in body["model"] else "gpt-big")
    assert set(out) <= {"model", "messages", "max_tokens", "tools", "user", "stream", "stream_options", "tool_choice"}
    text = orjson.dumps(out).decode()
    for anthropic_only in ('"cache_control"', '"context_management"', '"output_config"', '"thinking"', '"signature"'):
        assert anthropic_only not in text
    # (the WebSearch request's only tool is the server tool: the Chat adapter adds its function)
    assert len(out.get("tools", [])) == len([t for t in body["tools"] if "input_schema" in t])
    assert out["messages"][0]["role"] == "system"
    # tool calls are always answered by the message right after
    for i, msg in enumerate(out["messages"]):
        for call in msg.get("tool_calls", []):
            following = out["messages"][i + 1 : i + 1 + len(msg["tool_calls"])]
            assert call["id"] in {m.get("tool_call_id") for m in following}


# --- bad input never escapes as anything but a 400 -------------------------------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

scalars = st.none() | st.booleans() | st.integers() | st.text(max_size=5)
loose = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)
block_types = st.sampled_from(
    ["text", "image", "document", "tool_use", "tool_result", "thinking", "redacted_thinking", "search_result", "x"]
)
field_names = st.sampled_from(
    ["text", "source", "id", "name", "input", "tool_use_id", "content", "is_error", "type", "media_type", "data", "url"]
)
values = st.one_of(
    st.text(max_size=3), scalars, st.lists(loose, max_size=2), st.dictionaries(field_names, loose, max_size=4)
)
blocks = st.builds(
    lambda kind, fields: {**fields, "type": kind},
    block_types,
    st.dictionaries(
        st.sampled_from(["source", "content", "text", "input", "id", "name", "tool_use_id"]), values, max_size=3
    ),
)
messages = st.lists(
    st.fixed_dictionaries(
        {
            "role": st.sampled_from(["user", "assistant", "system"]),
            "content": st.text(max_size=5) | st.lists(blocks, max_size=4),
        }
    ),
    min_size=1,
    max_size=5,
)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    messages,
    st.one_of(st.none(), st.dictionaries(st.sampled_from(["type", "name", "disable_parallel_tool_use"]), loose)),
)
def test_random_requests_translate_or_fail_with_400(msgs, tool_choice):
    body = {
        "model": "claude-sonnet-5",
        "max_tokens": 10,
        "messages": msgs,
        "tools": [{"name": "T", "input_schema": {"type": "object"}}],
    }
    if tool_choice is not None:
        body["tool_choice"] = tool_choice
    try:
        req = decode_messages_request(orjson.dumps(body))
    except Exception:  # the schema rejected it: the app turns that into a 400 as well
        return
    assert tokens.count_request(req) > 0  # counting never fails on a decodable request
    try:
        orjson.dumps(build_chat_request(req, ROUTER.route(req.model)))
    except ProxyError as exc:
        assert exc.status == 400


# --- reasoning and prompt caching (issue 6) ------------------------------------------------------

from ccproxy.routing import UpstreamOptions  # noqa: E402


def reasoning_router(style: str = "openai", default: str | None = None, model: str = "o3-mini") -> Router:
    return Router(model, model, options=UpstreamOptions(reasoning_style=style, default_effort=default))


@pytest.mark.parametrize(
    ("extra", "effort"),
    [
        ({"thinking": {"type": "enabled", "budget_tokens": 1024}}, "low"),
        ({"thinking": {"type": "enabled", "budget_tokens": 8000}}, "medium"),
        ({"thinking": {"type": "enabled", "budget_tokens": 31999}}, "high"),
        ({"thinking": {"type": "adaptive"}, "output_config": {"effort": "low"}}, "low"),
        ({"thinking": {"type": "adaptive"}, "output_config": {"effort": "max"}}, "high"),
        ({"thinking": {"type": "adaptive"}}, "medium"),
        ({"output_config": {"effort": "medium"}}, "medium"),
        ({"thinking": {"type": "disabled"}}, None),
        ({}, None),
    ],
)
def test_reasoning_effort_for_openai_reasoning_models(extra, effort):
    out = translate(reasoning_router(), **extra)
    assert out.get("reasoning_effort") == effort
    assert "reasoning" not in out


def test_server_default_effort_applies_only_when_client_asks_for_none():
    assert translate(reasoning_router(default="low"))["reasoning_effort"] == "low"
    router = reasoning_router(default="low")
    assert translate(router, thinking={"type": "enabled", "budget_tokens": 20000})["reasoning_effort"] == "high"
    assert "reasoning_effort" not in translate(router, thinking={"type": "disabled"})


def test_reasoning_styles():
    thinking = {"thinking": {"type": "enabled", "budget_tokens": 2000}}
    # openai style: only reasoning models take reasoning_effort
    assert "reasoning_effort" not in translate(reasoning_router(model="gpt-4o"), **thinking)
    # openrouter: the reasoning object, for any model (OpenRouter ignores it where unsupported)
    out = translate(reasoning_router("openrouter", model="anthropic/claude-x"), **thinking)
    assert out["reasoning"] == {"effort": "low"} and "reasoning_effort" not in out
    out = translate(reasoning_router("none"), **thinking)
    assert "reasoning" not in out and "reasoning_effort" not in out


def test_deepseek_style_thinking_switch_and_reasoning_content_sent_back():
    router = reasoning_router("deepseek", model="deepseek-v4-pro")
    out = translate(router, thinking={"type": "adaptive"}, output_config={"effort": "max"})
    assert out["thinking"] == {"type": "enabled"} and out["reasoning_effort"] == "max"
    out = translate(router, thinking={"type": "enabled", "budget_tokens": 2000})
    assert out["thinking"] == {"type": "enabled"} and out["reasoning_effort"] == "low"
    assert translate(router, thinking={"type": "disabled"})["thinking"] == {"type": "disabled"}
    assert "thinking" not in translate(router) and "reasoning_effort" not in translate(router)
    # The tool turn's thinking goes back as reasoning_content (DeepSeek answers 400 without it).
    turns = [
        {"role": "user", "content": "list files"},
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "I should run ls.", "signature": ""},
                {"type": "tool_use", "id": "call_1", "name": "Bash", "input": {"command": "ls"}},
            ],
        },
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_1", "content": "a.txt"}]},
    ]
    sent = translate(router, messages=turns)["messages"]
    assert sent[1]["reasoning_content"] == "I should run ls." and sent[1]["tool_calls"][0]["id"] == "call_1"
    assert "I should run ls." not in orjson.dumps(sent[1]["content"]).decode()
    # Other styles never send thinking back.
    assert "reasoning_content" not in translate(reasoning_router(), messages=turns)["messages"][1]


@pytest.mark.parametrize(("name", "effort"), [("haiku-thinking-budget", "high"), ("sonnet-adaptive-thinking", "high")])
def test_claude_code_thinking_requests_map_to_effort(claude_code_fixture, name, effort):
    body = claude_code_fixture(name)
    req = decode_messages_request(orjson.dumps(body))
    out = build_chat_request(req, reasoning_router().route(req.model))
    assert out["reasoning_effort"] == effort and out["max_completion_tokens"] == body["max_tokens"]


def cache_router() -> Router:
    return Router("gpt-big", "gpt-small", options=UpstreamOptions(prompt_cache_key=True))


def test_prompt_cache_key_is_stable_across_turns_of_a_conversation(claude_code_fixture):
    keys = {}
    for name in ("opus-bash-turn1", "opus-bash-turn2-tool-result", "haiku-thinking-budget"):
        body = claude_code_fixture(name)
        req = decode_messages_request(orjson.dumps(body))
        keys[name] = build_chat_request(req, cache_router().route(req.model))["prompt_cache_key"]
        assert body["metadata"]["user_id"] not in keys[name]
    assert keys["opus-bash-turn1"] == keys["opus-bash-turn2-tool-result"]  # same conversation
    assert keys["opus-bash-turn1"] != keys["haiku-thinking-budget"]  # different system/tools
    assert keys["opus-bash-turn1"].startswith("ccp-") and len(keys["opus-bash-turn1"]) == 36


def test_prompt_cache_key_explicit_and_only_when_enabled():
    assert translate(cache_router(), prompt_cache_key="my-key")["prompt_cache_key"] == "my-key"
    assert "prompt_cache_key" not in translate(prompt_cache_key="my-key")  # default router: off
    assert "prompt_cache_key" not in translate()


# --- tool names the upstream would reject --------------------------------------------------------

from ccproxy.translate.chat_request import tool_name_map, upstream_tool_name  # noqa: E402

LONG_TOOL = "mcp__claude_ai_Google_Drive__google_drive_search_files_with_a_really_long_suffix"


def test_upstream_tool_names():
    assert (
        upstream_tool_name("Bash") == "Bash" and upstream_tool_name("mcp__gh__create_issue") == "mcp__gh__create_issue"
    )
    short = upstream_tool_name(LONG_TOOL)
    assert len(short) <= 64 and short == upstream_tool_name(LONG_TOOL)  # deterministic: same every turn
    assert short != upstream_tool_name(LONG_TOOL + "2")  # no collisions between near-identical names
    dotted = upstream_tool_name("files.read")
    assert dotted.startswith("files_read_") and len(dotted) == len("files_read_") + 8
    assert tool_name_map([]) == {}


def test_long_tool_names_are_shortened_everywhere_in_the_request():
    out = translate(
        tools=[
            {"name": LONG_TOOL, "input_schema": {"type": "object"}},
            {"name": "Bash", "input_schema": {"type": "object"}},
        ],
        tool_choice={"type": "tool", "name": LONG_TOOL},
        messages=[
            {"role": "user", "content": "search"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "c1", "name": LONG_TOOL, "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "c1", "content": "found"}]},
        ],
    )
    short = upstream_tool_name(LONG_TOOL)
    assert [t["function"]["name"] for t in out["tools"]] == [short, "Bash"]
    assert out["tool_choice"] == {"type": "function", "function": {"name": short}}
    assert out["messages"][1]["tool_calls"][0]["function"]["name"] == short
    assert LONG_TOOL not in orjson.dumps(out).decode()


def test_schema_keywords_dropped_for_strict_upstreams_but_property_names_kept():
    schema = {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "object",
        "properties": {
            "format": {"type": "string", "format": "date-time"},  # a parameter named like a keyword
            "items": {"type": "array", "items": {"type": "string", "format": "uri"}},
        },
        "$defs": {"format": {"type": "string", "format": "email"}},
        "additionalProperties": False,
    }
    strict = Router("gpt-big", "gpt-small", options=UpstreamOptions(schema_drop_keys=("$schema", "format")))
    out = translate(strict, tools=[{"name": "T", "input_schema": schema}])
    params = out["tools"][0]["function"]["parameters"]
    assert params == {
        "type": "object",
        "properties": {"format": {"type": "string"}, "items": {"type": "array", "items": {"type": "string"}}},
        "$defs": {"format": {"type": "string"}},
        "additionalProperties": False,
    }
    # without the option the schema passes through untouched
    assert translate(tools=[{"name": "T", "input_schema": schema}])["tools"][0]["function"]["parameters"] == schema
