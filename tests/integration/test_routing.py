"""One process, several upstreams from a routing file: a Chat upstream, the Anthropic pass-through,
and the environment's default upstream, each serving different models."""

from __future__ import annotations

import json
import time

import anthropic
import httpx
import pytest

from tests.support.chat_answers import anthropic_message, completion, text_stream
from tests.support.proxies import CLIENT_KEY, start_proxy, stop_proxy

pytestmark = pytest.mark.integration

ANTHROPIC_KEY = "sk-ant-upstream-key-0123456789"
CHAT2_KEY = "sk-chat2-upstream-key-0123456789"


@pytest.fixture(scope="module")
def routed(mock_upstream, tmp_path_factory):
    data = tmp_path_factory.mktemp("routed")
    config = data / "routes.toml"
    config.write_text(
        f"""
[upstreams.anth]
kind = "anthropic"
base_url = "{mock_upstream.base}"
api_key_env = "TEST_ANTHROPIC_KEY"

[upstreams.chat2]
kind = "chat"
base_url = "{mock_upstream.base}/v1"
api_key_env = "TEST_CHAT2_KEY"
headers = {{ "X-Title" = "ccproxy-test" }}

[upstreams.resp]
kind = "responses"
base_url = "{mock_upstream.base}/v1"
api_key_env = "TEST_CHAT2_KEY"

[[routes]]
match = "claude-opus-*"
upstream = "anth"

[[routes]]
match = "gpt-5-via-responses"
upstream = "resp"
model = "gpt-5-test"

[[routes]]
match = "*haiku*"
upstream = "chat2"
model = "gpt-haiku-sub"
"""
    )
    proxy = start_proxy(
        mock_upstream.base, data, CCPROXY_CONFIG=str(config), TEST_ANTHROPIC_KEY=ANTHROPIC_KEY, TEST_CHAT2_KEY=CHAT2_KEY
    )
    yield proxy
    stop_proxy(proxy)


def test_pass_through_non_stream(routed, mock_upstream):
    key = mock_upstream.script(
        {"json": anthropic_message("from anthropic"), "headers": {"anthropic-ratelimit-requests-remaining": "49"}}
    )
    client = routed.client()
    raw = client.messages.with_raw_response.create(
        model="claude-opus-4-8",
        max_tokens=20,
        messages=[{"role": "user", "content": key}],
        extra_headers={"anthropic-beta": "interleaved-thinking-2025-05-14"},
    )
    msg = raw.parse()
    assert msg.id == "msg_upstream_1" and msg.content[0].text == "from anthropic"  # the upstream's own message
    assert raw.headers["anthropic-ratelimit-requests-remaining"] == "49"
    time.sleep(0.3)
    logged = [json.loads(line) for line in (routed.data_dir / "log.jsonl").read_text().splitlines()]
    assert any(r.get("ratelimit") == {"anthropic-ratelimit-requests-remaining": "49"} for r in logged)
    [seen] = mock_upstream.requests(key)
    assert seen["path"] == "/v1/messages"  # the SDK sent no query string
    assert seen["headers"]["x-api-key"] == ANTHROPIC_KEY  # the configured key, never the client's
    assert seen["headers"]["anthropic-version"] == raw.http_request.headers["anthropic-version"]  # forwarded
    assert seen["headers"]["anthropic-beta"] == "interleaved-thinking-2025-05-14"
    assert "authorization" not in seen["headers"] and CLIENT_KEY not in json.dumps(seen)
    assert seen["body"] == {
        "model": "claude-opus-4-8",
        "max_tokens": 20,
        "messages": [{"role": "user", "content": key}],
    }


def test_pass_through_stream_is_byte_for_byte(routed, mock_upstream):
    events = [
        (
            "message_start",
            {
                "type": "message_start",
                "message": {
                    **anthropic_message(""),
                    "content": [],
                    "stop_reason": None,
                    "usage": {"input_tokens": 12, "output_tokens": 1},
                },
            },
        ),
        (
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        ),
        ("ping", {"type": "ping"}),
        (
            "content_block_delta",
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "héllo"}},
        ),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": 7},
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    ]
    wire = b"".join(f"event: {n}\ndata: {json.dumps(d, ensure_ascii=False)}\n\n".encode() for n, d in events)
    pieces = [wire[i : i + 37] for i in range(0, len(wire), 37)]
    key = mock_upstream.script({"raw_hex": [p.hex() for p in pieces], "delay": 0.001})
    body = {
        "model": "claude-opus-4-8",
        "max_tokens": 20,
        "stream": True,
        "messages": [{"role": "user", "content": key}],
    }
    with httpx.stream(
        "POST",
        f"{routed.base}/v1/messages?beta=true",
        json=body,
        timeout=30,
        headers={"x-api-key": CLIENT_KEY, "anthropic-version": "2023-06-01"},
    ) as resp:
        assert resp.status_code == 200
        received = resp.read()
    assert received == wire
    assert mock_upstream.requests(key)[0]["query"] == "beta=true"  # forwarded verbatim
    time.sleep(0.3)
    records = [json.loads(line) for line in (routed.data_dir / "log.jsonl").read_text().splitlines()]
    mine = [r for r in records if r["model"] == "claude-opus-4-8" and r["stream"]][-1]
    assert mine["usage"]["output_tokens"] == 7 and mine["usage"]["input_tokens"] == 12
    assert mine["stop_reason"] == "end_turn"


def test_pass_through_errors_are_relayed(routed, mock_upstream):
    error = {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down, upstream"}}
    key = mock_upstream.script({"status": 429, "json": error, "headers": {"retry-after": "11"}})
    with pytest.raises(anthropic.RateLimitError) as err:
        routed.client().messages.create(
            model="claude-opus-4-8", max_tokens=5, messages=[{"role": "user", "content": key}]
        )
    assert err.value.body == error and err.value.response.headers["retry-after"] == "11"


def test_other_models_go_to_their_upstreams(routed, mock_upstream):
    key = mock_upstream.script({"sse": text_stream("chat2 says hi")})
    with routed.client().messages.stream(
        model="claude-haiku-4-5", max_tokens=5, messages=[{"role": "user", "content": key}]
    ) as s:
        final = s.get_final_message()
    assert final.content[0].text == "chat2 says hi" and final.model == "claude-haiku-4-5"
    [seen] = mock_upstream.requests(key)
    assert seen["path"] == "/v1/chat/completions" and seen["body"]["model"] == "gpt-haiku-sub"
    assert seen["headers"]["authorization"] == f"Bearer {CHAT2_KEY}" and seen["headers"]["x-title"] == "ccproxy-test"
    key = mock_upstream.script({"json": completion("default upstream")})
    msg = routed.client().messages.create(
        model="claude-sonnet-5", max_tokens=5, messages=[{"role": "user", "content": key}]
    )
    assert msg.content[0].text == "default upstream"
    assert mock_upstream.requests(key)[0]["body"]["model"] == "gpt-big"


def responses_sse(events: list[dict]) -> list[str]:
    wire = b"".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in events)
    return [wire[i : i + 53].hex() for i in range(0, len(wire), 53)]


def test_responses_upstream_multi_turn_with_encrypted_reasoning(routed, mock_upstream):
    args = '{"command": "ls -la"}'
    turn1 = [
        {"type": "response.created", "response": {"id": "resp_1", "status": "in_progress"}},
        {"type": "response.output_item.added", "output_index": 0, "item": {"type": "reasoning", "id": "rs_1"}},
        {"type": "response.reasoning_summary_text.delta", "item_id": "rs_1", "delta": "List the "},
        {"type": "response.reasoning_summary_text.delta", "item_id": "rs_1", "delta": "files."},
        {
            "type": "response.output_item.done",
            "output_index": 0,
            "item": {"type": "reasoning", "id": "rs_1", "encrypted_content": "gAAAAB-secret-blob=="},
        },
        {
            "type": "response.output_item.added",
            "output_index": 1,
            "item": {"type": "function_call", "id": "fc_1", "call_id": "call_ls", "name": "Bash", "arguments": ""},
        },
        *(
            {"type": "response.function_call_arguments.delta", "item_id": "fc_1", "delta": args[i : i + 4]}
            for i in range(0, len(args), 4)
        ),
        {
            "type": "response.output_item.done",
            "output_index": 1,
            "item": {"type": "function_call", "id": "fc_1", "call_id": "call_ls", "name": "Bash", "arguments": args},
        },
        {
            "type": "response.completed",
            "response": {
                "id": "resp_1",
                "status": "completed",
                "usage": {"input_tokens": 500, "output_tokens": 30, "input_tokens_details": {"cached_tokens": 400}},
            },
        },
    ]
    turn2 = {
        "id": "resp_2",
        "status": "completed",
        "output": [
            {
                "type": "message",
                "id": "m_2",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "Two files."}],
            }
        ],
        "usage": {"input_tokens": 600, "output_tokens": 4},
    }
    key = mock_upstream.script({"raw_hex": responses_sse(turn1)}, {"json": turn2})
    tools = [{"name": "Bash", "input_schema": {"type": "object", "properties": {"command": {"type": "string"}}}}]
    messages = [{"role": "user", "content": f"list files {key}"}]
    client = routed.client()
    with client.messages.stream(
        model="gpt-5-via-responses",
        max_tokens=1000,
        tools=tools,
        messages=messages,
        thinking={"type": "enabled", "budget_tokens": 2048},
    ) as s:
        first = s.get_final_message()
    thinking, tool = first.content
    assert thinking.type == "thinking" and thinking.thinking == "List the files."
    assert tool.type == "tool_use" and tool.id == "call_ls" and tool.input == {"command": "ls -la"}
    assert first.stop_reason == "tool_use" and first.model == "gpt-5-via-responses"
    assert (first.usage.input_tokens, first.usage.cache_read_input_tokens, first.usage.output_tokens) == (100, 400, 30)
    messages += [
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_ls", "content": "a.txt b.txt"}]},
    ]
    second = client.messages.create(model="gpt-5-via-responses", max_tokens=1000, tools=tools, messages=messages)
    assert second.content[0].text == "Two files."
    recorded = mock_upstream.requests(key)
    sent1, sent2 = (r["body"] for r in recorded)
    assert recorded[0]["path"] == "/v1/responses"
    assert sent1["model"] == "gpt-5-test" and sent1["store"] is False
    assert sent1["include"] == ["reasoning.encrypted_content"] and sent1["reasoning"]["effort"] == "low"
    items = sent2["input"]
    reasoning = next(i for i in items if i["type"] == "reasoning")
    assert reasoning["id"] == "rs_1" and reasoning["encrypted_content"] == "gAAAAB-secret-blob=="
    assert items.index(reasoning) < next(n for n, i in enumerate(items) if i["type"] == "function_call")
    assert {"type": "function_call_output", "call_id": "call_ls", "output": "a.txt b.txt"} in items


def test_responses_failed_stream_ends_in_error(routed, mock_upstream):
    from tests.support.sse import parse_sse

    events = [
        {"type": "response.created", "response": {"id": "r", "status": "in_progress"}},
        {"type": "response.output_item.added", "output_index": 0, "item": {"type": "message", "id": "m"}},
        {"type": "response.output_text.delta", "item_id": "m", "delta": "partial"},
        {"type": "response.failed", "response": {"status": "failed", "error": {"message": "model crashed"}}},
    ]
    key = mock_upstream.script({"raw_hex": responses_sse(events)})
    body = {
        "model": "gpt-5-via-responses",
        "max_tokens": 5,
        "stream": True,
        "messages": [{"role": "user", "content": key}],
    }
    raw = httpx.post(f"{routed.base}/v1/messages", json=body, timeout=30).content
    names = [name for name, _ in parse_sse(raw)]
    assert names[-1] == "error" and "message_stop" not in names and b"model crashed" in raw


def test_count_tokens_for_anthropic_routes_is_anthropics_own(routed, mock_upstream):
    key = mock_upstream.script({"json": {"input_tokens": 4321}})
    client = routed.client()
    counted = client.messages.count_tokens(model="claude-opus-4-8", messages=[{"role": "user", "content": key}])
    assert counted.input_tokens == 4321  # the upstream's figure, not a local estimate
    [seen] = mock_upstream.requests(key)
    assert seen["path"] == "/v1/messages/count_tokens" and seen["headers"]["x-api-key"] == ANTHROPIC_KEY
    # Chat-routed models are counted locally: the upstream sees nothing.
    local = client.messages.count_tokens(model="claude-haiku-4-5", messages=[{"role": "user", "content": key + "x"}])
    assert 0 < local.input_tokens < 100 and len(mock_upstream.requests(key)) == 1
    # An upstream error is relayed as Anthropic said it.
    bad = mock_upstream.script(
        {"status": 400, "json": {"type": "error", "error": {"type": "invalid_request_error", "message": "nope"}}}
    )
    with pytest.raises(anthropic.BadRequestError) as err:
        client.messages.count_tokens(model="claude-opus-4-8", messages=[{"role": "user", "content": bad}])
    assert err.value.body["error"]["message"] == "nope"
