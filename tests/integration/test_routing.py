"""One process, several upstreams from a routing file: a Chat upstream, the Anthropic pass-through,
and the environment's default upstream, each serving different models."""

from __future__ import annotations

import json
import time

import anthropic
import httpx
import pytest

from .conftest import CLIENT_KEY, start_proxy, stop_proxy
from .test_messages import completion, text_stream

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

[[routes]]
match = "claude-opus-*"
upstream = "anth"

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


def anthropic_message(text: str) -> dict:
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
    assert seen["path"] == "/v1/messages"
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
