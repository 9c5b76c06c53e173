"""The anthropic SDKs end to end: TypeScript (from npm) for stream parsing, Python for the same
scenarios as the CLI, and the OpenAI-shaped direction (which this proxy answers with guidance)."""

from __future__ import annotations

import json
import shutil
import subprocess

import anthropic
import httpx
import pytest

from tests.support.chat_answers import completion, text_stream, tool_call_stream
from tests.support.proxies import CLIENT_KEY

pytestmark = [pytest.mark.integration, pytest.mark.e2e]


def test_typescript_sdk_parses_the_stream(node_modules, e2e_proxy, mock_upstream, tmp_path):
    key = mock_upstream.script(
        {
            "sse": [
                *text_stream("Checking ", "the weather.")[:2],
                *tool_call_stream("call_ts_1", "get_weather", {"city": "Paris"}),
            ]
        }
    )
    script = tmp_path / "stream.mjs"
    shutil.copy(__file__.replace("test_sdks.py", "stream.mjs"), script)
    (tmp_path / "node_modules").symlink_to(node_modules / "node_modules")  # ESM resolves from the script
    out = subprocess.run(
        ["node", str(script), e2e_proxy.base, f"weather in Paris? {key}", "claude-sonnet-5"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout.strip().splitlines()[-1])
    assert data["events"][0] == "message_start" and data["events"][-1] == "message_stop"
    assert data["text"] == "Checking the weather."
    message = data["message"]
    assert message["model"] == "claude-sonnet-5" and message["stop_reason"] == "tool_use"
    assert [b["type"] for b in message["content"]] == ["text", "tool_use"]
    assert message["content"][1]["input"] == {"city": "Paris"} and message["content"][1]["id"] == "call_ts_1"
    assert data["counted"]["input_tokens"] > 0
    assert data["error"] == {"status": 400, "type": "invalid_request_error", "name": "BadRequestError"}


def test_python_sdk_scenarios(e2e_proxy, mock_upstream):
    client = e2e_proxy.client()
    # plain answer
    key = mock_upstream.script({"json": completion("plain answer")})
    msg = client.messages.create(model="claude-sonnet-5", max_tokens=50, messages=[{"role": "user", "content": key}])
    assert msg.content[0].text == "plain answer" and mock_upstream.requests(key)[0]["body"]["model"] == "gpt-big"
    # haiku → the small model
    key = mock_upstream.script({"json": completion("small")})
    client.messages.create(model="claude-haiku-4-5", max_tokens=50, messages=[{"role": "user", "content": key}])
    assert mock_upstream.requests(key)[0]["body"]["model"] == "gpt-small"
    # tool round trip, the SDK user running the tool, streamed
    key = mock_upstream.script(
        {"sse": tool_call_stream("call_py_1", "Write", {"file_path": "/tmp/x", "content": "hi"})},
        {"sse": text_stream("done")},
    )
    tools = [{"name": "Write", "description": "write a file", "input_schema": {"type": "object"}}]
    turn = [{"role": "user", "content": f"write it {key}"}]
    with client.messages.stream(model="claude-sonnet-5", max_tokens=100, messages=turn, tools=tools) as stream:
        first = stream.get_final_message()
    call = first.content[0]
    assert first.stop_reason == "tool_use" and call.input == {"file_path": "/tmp/x", "content": "hi"}
    turn += [
        {"role": "assistant", "content": [c.model_dump() for c in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "written"}]},
    ]
    with client.messages.stream(model="claude-sonnet-5", max_tokens=100, messages=turn, tools=tools) as stream:
        assert stream.get_final_message().content[0].text == "done"
    sent = mock_upstream.requests(key)[1]["body"]["messages"]
    assert sent[-1] == {"role": "tool", "tool_call_id": "call_py_1", "content": "written"}
    # count_tokens
    assert client.messages.count_tokens(model="claude-sonnet-5", messages=turn).input_tokens > 10
    # an upstream error, cleanly
    key = mock_upstream.script({"status": 400, "json": {"error": {"message": "no such model"}}})
    with pytest.raises(anthropic.BadRequestError) as err:
        client.messages.create(model="claude-sonnet-5", max_tokens=5, messages=[{"role": "user", "content": key}])
    assert "no such model" in err.value.body["error"]["message"]


def test_openai_shaped_requests_get_guidance(e2e_proxy):
    resp = httpx.post(
        f"{e2e_proxy.base}/v1/chat/completions",
        json={"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]},
        headers={"authorization": f"Bearer {CLIENT_KEY}"},
    )
    assert resp.status_code == 400
    body = resp.json()
    assert body["type"] == "error" and "/v1/messages" in body["error"]["message"]
