"""The real server process (Granian) + scripted mock upstream process, driven by the anthropic SDK."""

from __future__ import annotations

import hashlib
import json
import socket
import time

import anthropic
import httpx
import orjson
import pytest

from tests.support.chat_answers import completion, text_stream
from tests.support.proxies import CLIENT_KEY, UPSTREAM_KEY, ask, raw_stream
from tests.support.sse import assemble, parse_sse

pytestmark = pytest.mark.integration

ANTHROPIC_ONLY = ("cache_control", "context_management", "output_config", "anthropic-beta", "signature", "thinking")


def test_create_translates_both_ways(client, mock_upstream):
    key = mock_upstream.script({"json": completion("Hi there")})
    msg = client.messages.create(
        model="claude-sonnet-5",
        max_tokens=16000,
        system=[{"type": "text", "text": "be nice", "cache_control": {"type": "ephemeral"}}],
        messages=[{"role": "user", "content": f"hello {key}"}],
        extra_body={"temperature": 0.3},
        extra_headers={"anthropic-beta": "fine-grained-tool-streaming-2025-05-14"},
    )
    assert msg.model == "claude-sonnet-5"
    assert msg.content[0].text == "Hi there"
    assert msg.stop_reason == "end_turn"
    assert (msg.usage.input_tokens, msg.usage.cache_read_input_tokens, msg.usage.output_tokens) == (20, 10, 5)
    [seen] = mock_upstream.requests(key)
    assert seen["path"] == "/v1/chat/completions"
    body = seen["body"]
    assert body["model"] == "gpt-big"
    assert body["messages"] == [{"role": "system", "content": "be nice"}, {"role": "user", "content": f"hello {key}"}]
    assert body["max_tokens"] == 16000 and body["temperature"] == 0.3
    # the client's credentials and Anthropic headers never reach the upstream
    headers = seen["headers"]
    assert headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert "x-api-key" not in headers and not any(h.startswith("anthropic") for h in headers)
    assert CLIENT_KEY not in json.dumps(seen)


def test_stream_with_sdk_helpers(client, mock_upstream):
    key = mock_upstream.script({"sse": text_stream("Hel", "lo ", "wörld 🎉")})
    with client.messages.stream(
        model="claude-haiku-4-5-20251001", max_tokens=100, messages=[{"role": "user", "content": key}]
    ) as stream:
        texts = list(stream.text_stream)
        final = stream.get_final_message()
    assert "".join(texts) == "Hello wörld 🎉"
    assert final.model == "claude-haiku-4-5-20251001"
    assert final.stop_reason == "end_turn" and final.usage.output_tokens == 3
    body = mock_upstream.requests(key)[0]["body"]
    assert body["model"] == "gpt-small"
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}


def test_stream_wire_format_grammar(proxy, mock_upstream):
    key = mock_upstream.script({"sse": text_stream("a", "b")})
    events = raw_stream(
        proxy, {"model": "claude-opus-4-8", "max_tokens": 10, "messages": [{"role": "user", "content": key}]}
    )
    msg = assemble(events)
    assert msg["content"] == [{"type": "text", "text": "ab"}]
    assert events[0][1]["message"]["model"] == "claude-opus-4-8"
    assert events[-2][1]["usage"]["input_tokens"] == 20


def tool_call_stream(call_id: str, name: str, args: str) -> list:
    pieces = [args[i : i + 5] for i in range(0, len(args), 5)]
    first = {"index": 0, "id": call_id, "type": "function", "function": {"name": name, "arguments": ""}}
    chunks = [
        {"choices": [{"index": 0, "delta": {"content": "Checking."}, "finish_reason": None}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [first]}, "finish_reason": None}]},
    ]
    chunks += [
        {
            "choices": [
                {
                    "index": 0,
                    "delta": {"tool_calls": [{"index": 0, "function": {"arguments": p}}]},
                    "finish_reason": None,
                }
            ]
        }
        for p in pieces
    ]
    chunks.append({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]})
    return chunks


def test_tool_round_trip(client, mock_upstream):
    tools = [
        {
            "name": "get_weather",
            "description": "Weather for a city",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        }
    ]
    key = mock_upstream.script(
        {"sse": tool_call_stream("call_w1", "get_weather", '{"city": "Zürich"}')},
        {"json": completion("It is sunny in Zürich.")},
    )
    messages = [{"role": "user", "content": f"weather? {key}"}]
    with client.messages.stream(model="claude-sonnet-5", max_tokens=500, tools=tools, messages=messages) as s:
        first = s.get_final_message()
    assert first.stop_reason == "tool_use"
    tool_use = first.content[1]
    assert (tool_use.type, tool_use.id, tool_use.name, tool_use.input) == (
        "tool_use",
        "call_w1",
        "get_weather",
        {"city": "Zürich"},
    )
    messages += [
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_w1", "content": "sunny, 21°C"}]},
    ]
    second = client.messages.create(model="claude-sonnet-5", max_tokens=500, tools=tools, messages=messages)
    assert second.content[0].text == "It is sunny in Zürich."
    sent = mock_upstream.requests(key)[1]["body"]
    assert sent["tools"][0]["function"]["name"] == "get_weather"
    assert sent["messages"][1]["tool_calls"][0]["id"] == "call_w1"
    assert json.loads(sent["messages"][1]["tool_calls"][0]["function"]["arguments"]) == {"city": "Zürich"}
    assert sent["messages"][2] == {"role": "tool", "tool_call_id": "call_w1", "content": "sunny, 21°C"}


def test_non_stream_tool_call(client, mock_upstream):
    key = mock_upstream.script(
        {
            "json": completion(
                None,
                [{"id": "call_9", "type": "function", "function": {"name": "Bash", "arguments": '{"command":"ls"}'}}],
                "tool_calls",
            )
        }
    )
    msg = client.messages.create(
        model="claude-opus-4-8",
        max_tokens=50,
        messages=[{"role": "user", "content": key}],
        tools=[{"name": "Bash", "input_schema": {"type": "object"}}],
    )
    assert msg.stop_reason == "tool_use"
    assert (msg.content[0].id, msg.content[0].input) == ("call_9", {"command": "ls"})


def test_malformed_tool_json_from_upstream_is_still_200(client, mock_upstream):
    key = mock_upstream.script({"sse": tool_call_stream("call_m", "Bash", '{"command": ls -la}')})
    with client.messages.stream(
        model="claude-sonnet-5",
        max_tokens=50,
        messages=[{"role": "user", "content": key}],
        tools=[{"name": "Bash", "input_schema": {"type": "object"}}],
    ) as s:
        final = s.get_final_message()
    assert final.content[1].type == "tool_use" and isinstance(final.content[1].input, dict)


def test_count_tokens_and_models(client):
    n = client.messages.count_tokens(model="claude-sonnet-5", messages=[{"role": "user", "content": "hello " * 100}])
    assert 100 <= n.input_tokens < 150
    models = client.models.list()
    ids = [m.id for m in models.data]
    assert ids and any("haiku" in i for i in ids) and any("sonnet" in i for i in ids)
    assert client.models.retrieve(ids[0]).id == ids[0]


@pytest.mark.parametrize("fixture_name", ["opus-say-hi", "opus-bash-turn2-tool-result", "sonnet-thinking-write-turn2"])
@pytest.mark.parametrize("stream", [True, False])
def test_claude_code_requests_go_through(proxy, mock_upstream, claude_code_fixture, fixture_name, stream):
    body = claude_code_fixture(fixture_name)
    key = mock_upstream.script({"sse": text_stream("done")} if stream else {"json": completion("done")})
    body["messages"][0]["content"][-1]["text"] += f" {key}" if isinstance(body["messages"][0]["content"], list) else ""
    body["stream"] = stream
    resp = httpx.post(
        f"{proxy.base}/v1/messages?beta=true",
        content=orjson.dumps(body),
        timeout=30,
        headers={
            "x-api-key": CLIENT_KEY,
            "anthropic-version": "2023-06-01",
            "content-type": "application/json",
            "anthropic-beta": "claude-code-20250219,interleaved-thinking-2025-05-14",
            "x-app": "cli",
        },
    )
    assert resp.status_code == 200, resp.text
    msg = assemble(parse_sse(resp.content)) if stream else resp.json()
    assert msg["content"][-1]["text"] == "done" and msg["model"] == body["model"]
    upstream_body = mock_upstream.requests(key)[0]["body"]
    text = json.dumps(upstream_body)
    for field in ANTHROPIC_ONLY:
        assert f'"{field}"' not in text
    assert upstream_body["tools"] and upstream_body["messages"][0]["role"] == "system"


def test_repeated_turns_send_the_translation_of_each_body(proxy, mock_upstream, claude_code_fixture):
    """Claude Code's turns resend the same tools and system (decoded once, schemas/spans.py):
    every upstream body is still that of its own request, down to a tool changed in one byte."""
    body = claude_code_fixture("sonnet-thinking-write-turn2")
    seen = []
    for turn in range(4):
        key = mock_upstream.script({"json": completion(f"answer {turn}")})
        body["messages"] = [*body["messages"], {"role": "user", "content": f"turn {turn} {key}"}]
        if turn == 2:
            body["tools"][5]["description"] += " (changed)"
        resp = httpx.post(
            f"{proxy.base}/v1/messages?beta=true",
            content=orjson.dumps({**body, "stream": False}),
            headers={"x-api-key": CLIENT_KEY, "anthropic-version": "2023-06-01", "content-type": "application/json"},
            timeout=30,
        )
        assert resp.status_code == 200 and resp.json()["content"][0]["text"] == f"answer {turn}", resp.text
        sent = mock_upstream.requests(key)[0]["body"]
        assert sent["messages"][-1] == {"role": "user", "content": f"turn {turn} {key}"}
        assert sent["messages"][0]["role"] == "system" and sent["messages"][0]["content"].startswith(
            body["system"][0]["text"][:200]
        )
        seen.append(sent["tools"])
        body["messages"][-1]["content"] = f"turn {turn}"  # (the mock answers the one key it finds)
    assert seen[0] == seen[1] and seen[2] == seen[3] and seen[1] != seen[2]
    changed = [t["function"]["description"] for t in seen[2] if t["function"]["name"] == body["tools"][5]["name"]]
    assert changed and changed[0].endswith(" (changed)")


@pytest.mark.parametrize(
    ("status", "exc_class", "error_type"),
    [
        (400, anthropic.BadRequestError, "invalid_request_error"),
        (401, anthropic.AuthenticationError, "authentication_error"),
        (403, anthropic.PermissionDeniedError, "permission_error"),
        (404, anthropic.NotFoundError, "not_found_error"),
        (429, anthropic.RateLimitError, "rate_limit_error"),
        (500, anthropic.InternalServerError, "api_error"),
        (503, anthropic.OverloadedError, "overloaded_error"),
        (529, anthropic.OverloadedError, "overloaded_error"),  # PROTOCOL.md §6
    ],
)
@pytest.mark.parametrize("stream", [False, True])
def test_upstream_errors_raise_the_right_sdk_error(client, mock_upstream, status, exc_class, error_type, stream):
    key = mock_upstream.script(
        {"status": status, "json": {"error": {"message": f"upstream says {status}"}}, "headers": {"retry-after": "3"}}
    )
    with pytest.raises(exc_class) as err:
        if stream:
            with client.messages.stream(
                model="claude-sonnet-5", max_tokens=5, messages=[{"role": "user", "content": key}]
            ) as s:
                s.get_final_message()
        else:
            client.messages.create(model="claude-sonnet-5", max_tokens=5, messages=[{"role": "user", "content": key}])
    body = err.value.body
    assert body["type"] == "error" and body["error"]["type"] == error_type
    assert f"upstream says {status}" in body["error"]["message"]
    assert err.value.response.headers.get("request-id", "").startswith("req_")
    if status == 429:
        assert err.value.response.headers["retry-after"] == "3"
    if status == 401:
        assert "OPENAI_API_KEY" in body["error"]["message"]


def test_context_length_becomes_prompt_too_long(client, mock_upstream):
    key = mock_upstream.script(
        {
            "status": 400,
            "json": {
                "error": {
                    "message": "This model's maximum context length is 8192 tokens.",
                    "code": "context_length_exceeded",
                }
            },
        }
    )
    with pytest.raises(anthropic.BadRequestError) as err:
        client.messages.create(model="claude-sonnet-5", max_tokens=5, messages=[{"role": "user", "content": key}])
    assert err.value.body["error"]["message"].startswith("prompt is too long")


@pytest.mark.parametrize(
    "spec",
    [
        {"sse": text_stream("partial", "answer"), "reset_after": 1},
        {"sse": text_stream("partial")[:1], "done": False},
        {"sse": [{"choices": [{"index": 0, "delta": {"content": "x"}}]}, "{not json"]},
    ],
    ids=["reset-mid-stream", "eof-without-finish-or-done", "invalid-json-chunk"],
)
def test_broken_upstream_stream_ends_in_error_event(proxy, mock_upstream, spec):
    key = mock_upstream.script(spec)
    events = raw_stream(
        proxy, {"model": "claude-sonnet-5", "max_tokens": 5, "messages": [{"role": "user", "content": key}]}
    )
    names = [e[0] for e in events]
    assert names[-1] == "error" and "message_stop" not in names
    assert events[-1][1]["error"]["type"] == "api_error"
    msg = assemble(events)
    assert "error" in msg


def test_done_without_finish_reason_ends_normally(client, mock_upstream):
    """[DONE] without a finish_reason (Snowflake Cortex): the answer is whole (issue 17)."""
    key = mock_upstream.script({"sse": text_stream("whole", " answer")[:2], "done": True})
    with client.messages.stream(
        model="claude-sonnet-5", max_tokens=5, messages=[{"role": "user", "content": key}]
    ) as s:
        final = s.get_final_message()
    assert final.content[0].text == "whole answer" and final.stop_reason == "end_turn"


def test_sdk_raises_on_broken_stream(client, mock_upstream):
    key = mock_upstream.script({"sse": text_stream("partial", "answer"), "reset_after": 1})
    with (
        pytest.raises(anthropic.APIStatusError),
        client.messages.stream(model="claude-sonnet-5", max_tokens=5, messages=[{"role": "user", "content": key}]) as s,
    ):
        s.get_final_message()


def test_bytes_split_inside_multibyte_characters(proxy, mock_upstream):
    wire = (
        b"".join(
            b"data: " + json.dumps(c, ensure_ascii=False).encode() + b"\n\n"
            for c in text_stream("日本語テキスト", "🎉🎉")
        )
        + b"data: [DONE]\n\n"
    )
    splits = [wire[i : i + 7] for i in range(0, len(wire), 7)]  # cuts through UTF-8 sequences
    key = mock_upstream.script({"raw_hex": [s.hex() for s in splits], "delay": 0.001})
    body = {"model": "claude-sonnet-5", "max_tokens": 5, "messages": [{"role": "user", "content": key}]}
    # the key must be in the request body; raw_hex responses carry it in the script only
    assert assemble(raw_stream(proxy, body))["content"][0]["text"] == "日本語テキスト🎉🎉"


def test_idle_stream_gets_pings(proxy, mock_upstream):
    key = mock_upstream.script({"sse": text_stream("slow", "answer"), "delay": 0.5})
    events = raw_stream(
        proxy, {"model": "claude-sonnet-5", "max_tokens": 5, "messages": [{"role": "user", "content": key}]}
    )
    assert any(name == "ping" for name, _ in events)
    assert assemble(events)["content"][0]["text"] == "slowanswer"


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"{not json", "error parsing the body"),
        (b'{"model": "claude-sonnet-5", "messages": []}', "max_tokens"),
        (b'{"model": 5, "max_tokens": 5, "messages": []}', "model"),
        (b'{"model": "claude-sonnet-5", "max_tokens": 5, "messages": [{"role": "robot", "content": "x"}]}', "role"),
        (b'{"model": "claude-sonnet-5", "max_tokens": 5, "messages": []}', "at least one message"),
        (
            b'{"model": "claude-sonnet-5", "max_tokens": 5, '
            b'"messages": [{"role": "user", "content": [{"type": "text"}]}]}',
            "messages.0.content.0.text",
        ),
        (b"[]", "Expected `object`"),
        (b"", "error parsing the body"),
    ],
)
def test_bad_requests_are_anthropic_400s(proxy, body, fragment):
    resp = httpx.post(f"{proxy.base}/v1/messages", content=body, headers={"content-type": "application/json"})
    assert resp.status_code == 400
    data = resp.json()
    assert data["type"] == "error" and data["error"]["type"] == "invalid_request_error"
    assert fragment in data["error"]["message"]


def test_other_endpoints(proxy):
    assert httpx.head(f"{proxy.base}/").status_code == 200
    assert httpx.get(f"{proxy.base}/").status_code == 200
    health = httpx.get(f"{proxy.base}/health").json()
    assert health["status"] == "healthy" and health["timestamp"].endswith("Z")
    resp = httpx.post(f"{proxy.base}/v1/chat/completions", json={"model": "x", "messages": []})
    assert resp.status_code == 400 and "/v1/messages" in resp.json()["error"]["message"]
    resp = httpx.get(f"{proxy.base}/v2/nothing")
    assert resp.status_code == 404 and resp.json()["error"]["type"] == "not_found_error"
    resp = httpx.get(f"{proxy.base}/v1/messages")
    assert resp.status_code == 405 and resp.json()["type"] == "error"
    for prefix in ("", "/anthropic"):  # the /anthropic/v1/... aliases
        resp = httpx.post(
            f"{proxy.base}{prefix}/v1/messages/count_tokens?beta=true",
            json={"model": "claude-sonnet-5", "messages": [{"role": "user", "content": "hi"}]},
        )
        assert resp.status_code == 200 and resp.json()["input_tokens"] > 0
    resp = httpx.post(
        f"{proxy.base}/anthropic/v1/messages",
        json={"model": "claude-sonnet-5", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]},
    )
    assert resp.status_code == 200 and resp.json()["type"] == "message"


def test_request_too_large(mock_upstream, tmp_path):
    from tests.support.proxies import start_proxy, stop_proxy

    small = start_proxy(mock_upstream.base, tmp_path, CCPROXY_MAX_REQUEST_BYTES="2048")
    try:
        with pytest.raises(anthropic.RequestTooLargeError):
            small.client().messages.create(
                model="claude-sonnet-5", max_tokens=5, messages=[{"role": "user", "content": "x" * 5000}]
            )
    finally:
        stop_proxy(small)


def test_one_connection_carries_split_chunked_and_whole_bodies(proxy, mock_upstream):
    """The body is read up to its content-length (no wait for Granian's closing message): a
    keep-alive connection goes on serving, whether a body came in pieces, chunked or whole."""
    key = mock_upstream.script(*({"json": completion(f"answer {i}")} for i in range(3)))

    def request(body: bytes, chunked: bool = False) -> list[bytes]:
        head = (
            f"POST /v1/messages HTTP/1.1\r\nhost: 127.0.0.1:{proxy.port}\r\n"
            f"content-type: application/json\r\nx-api-key: {CLIENT_KEY}\r\n"
        )
        if chunked:
            half = len(body) // 2
            parts = [body[:half], body[half:]]
            framed = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"
            return [head.encode() + b"transfer-encoding: chunked\r\n\r\n" + framed]
        whole = head.encode() + b"content-length: %d\r\n\r\n" % len(body) + body
        return [whole[: len(whole) - 1000], whole[len(whole) - 1000 :]]  # two writes, a pause between

    def receive(sock: socket.socket) -> bytes:
        data = sock.recv(65536)
        assert data, "the proxy closed the connection"
        return data

    def answer(sock: socket.socket) -> dict:
        data = b""
        while b"\r\n\r\n" not in data:
            data += receive(sock)
        head, _, rest = data.partition(b"\r\n\r\n")
        length = int(
            next(
                v
                for k, _, v in (line.partition(b": ") for line in head.split(b"\r\n"))
                if k.lower() == b"content-length"
            )
        )
        while len(rest) < length:
            rest += receive(sock)
        assert head.startswith(b"HTTP/1.1 200") and b"connection: close" not in head.lower(), head
        return json.loads(rest[:length])

    big = json.dumps(ask(key, "x" * 200_000)).encode()  # several of the server's read buffers
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=30) as sock:
        for i, writes in enumerate((request(big), request(big, chunked=True), request(json.dumps(ask(key)).encode()))):
            for piece in writes:
                sock.sendall(piece)
                time.sleep(0.05)
            assert answer(sock)["content"][0]["text"] == f"answer {i}"
    sent = mock_upstream.requests(key)
    assert len(sent) == 3 and len(sent[0]["body"]["messages"][0]["content"]) > 200_000


def test_unreachable_and_slow_upstreams(tmp_path, mock_upstream):
    from tests.support.proxies import free_port, start_proxy, stop_proxy

    dead = start_proxy(f"http://127.0.0.1:{free_port()}", tmp_path / "a")
    try:
        with pytest.raises(anthropic.APIStatusError) as err:
            dead.client().messages.create(
                model="claude-sonnet-5", max_tokens=5, messages=[{"role": "user", "content": "x"}]
            )
        assert err.value.status_code == 502 and "127.0.0.1" in err.value.body["error"]["message"]
    finally:
        stop_proxy(dead)
    slow = start_proxy(mock_upstream.base, tmp_path / "b", CCPROXY_READ_TIMEOUT="0.5")
    try:
        key = mock_upstream.script({"json": completion("late"), "wait": 3})
        with pytest.raises(anthropic.GatewayTimeoutError) as err:
            slow.client().messages.create(
                model="claude-sonnet-5", max_tokens=5, messages=[{"role": "user", "content": key}]
            )
        assert err.value.body["error"]["type"] == "timeout_error"
        key = mock_upstream.script({"sse": text_stream("a", "b"), "hang_after": 1})
        events = raw_stream(
            slow, {"model": "claude-sonnet-5", "max_tokens": 5, "messages": [{"role": "user", "content": key}]}
        )
        assert events[-1][0] == "error" and events[-1][1]["error"]["type"] == "timeout_error"
    finally:
        stop_proxy(slow)


def test_secrets_never_reach_logs(proxy, client, mock_upstream):
    key = mock_upstream.script({"status": 401, "json": {"error": {"message": f"bad key {UPSTREAM_KEY}"}}})
    with pytest.raises(anthropic.AuthenticationError) as err:
        client.messages.create(model="claude-sonnet-5", max_tokens=5, messages=[{"role": "user", "content": key}])
    assert UPSTREAM_KEY not in json.dumps(err.value.body)  # the client never sees the upstream key either
    session = "2f0c7a1e-5b7d-4e45-9f41-secret-session"
    client.messages.create(
        model="claude-sonnet-5",
        max_tokens=5,
        messages=[{"role": "user", "content": "plain"}],
        extra_headers={"X-Claude-Code-Session-Id": session},
    )
    import time

    time.sleep(0.3)  # log writer thread
    logs = (proxy.data_dir / "log.jsonl").read_text()
    errors = (proxy.data_dir / "error.jsonl").read_text()
    assert logs.strip() and errors.strip()
    for secret in (UPSTREAM_KEY, CLIENT_KEY, session):
        assert secret not in logs and secret not in errors
    record = json.loads(logs.strip().splitlines()[-1])
    assert record["model"] == "claude-sonnet-5" and record["upstream_model"] == "gpt-big" and record["status"] == 200
    assert record["session"] == hashlib.sha256(session.encode()).hexdigest()[:16]


def test_client_disconnect_cancels_the_upstream_stream(proxy, mock_upstream):
    import time

    key = mock_upstream.script({"sse": text_stream(*["tick"] * 100), "delay": 0.1})
    body = {"model": "claude-sonnet-5", "max_tokens": 5, "stream": True, "messages": [{"role": "user", "content": key}]}
    with httpx.stream("POST", f"{proxy.base}/v1/messages", json=body, timeout=30) as resp:
        for line in resp.iter_lines():
            if "text_delta" in line:
                break  # the client leaves after the first delta
    left = time.time()
    deadline = left + 5
    while time.time() < deadline:
        record = mock_upstream.requests(key)[0]
        if "disconnected_at" in record or "finished_at" in record:
            break
        time.sleep(0.05)
    assert "disconnected_at" in record, "upstream stream was not cancelled"
    assert record["disconnected_at"] - left < 1.0


def test_json_answer_to_a_streaming_request_is_streamed(client, mock_upstream):
    key = mock_upstream.script({"json": completion("not streamed upstream")})
    with client.messages.stream(
        model="claude-sonnet-5", max_tokens=5, messages=[{"role": "user", "content": key}]
    ) as s:
        final = s.get_final_message()
    assert final.content[0].text == "not streamed upstream" and final.stop_reason == "end_turn"


def test_wrong_base_url_symptoms_are_explained(client, mock_upstream):
    key = mock_upstream.script(
        {"status": 200, "text": "<html>welcome</html>", "headers": {"content-type": "text/html"}}
    )
    with (
        pytest.raises(anthropic.APIStatusError) as err,
        client.messages.stream(model="claude-sonnet-5", max_tokens=5, messages=[{"role": "user", "content": key}]) as s,
    ):
        s.get_final_message()
    assert err.value.status_code == 502 and "text/html" in err.value.body["error"]["message"]
    key = mock_upstream.script({"status": 404, "text": "Not Found", "headers": {"content-type": "text/plain"}})
    with pytest.raises(anthropic.NotFoundError) as err:
        client.messages.create(model="claude-sonnet-5", max_tokens=5, messages=[{"role": "user", "content": key}])
    assert "/v1/chat/completions" in err.value.body["error"]["message"]


def test_reasoning_and_prompt_cache_key_reach_the_upstream(mock_upstream, tmp_path, claude_code_fixture):
    from tests.support.proxies import start_proxy, stop_proxy

    proxy = start_proxy(
        mock_upstream.base, tmp_path, BIG_MODEL_NAME="gpt-5-test", REASONING_EFFORT="low", CCPROXY_PROMPT_CACHE_KEY="on"
    )
    try:
        key = mock_upstream.script({"sse": text_stream("ok")})
        body = claude_code_fixture("sonnet-adaptive-thinking")
        body["messages"].append({"role": "user", "content": key})
        known = ("model", "messages", "system", "tools", "metadata", "max_tokens", "thinking", "output_config")
        extra = {k: v for k, v in body.items() if k not in (*known, "stream")}
        with proxy.client().messages.stream(**{k: body[k] for k in known if k in body}, extra_body=extra) as s:
            assert s.get_final_message().content[-1].text == "ok"
        sent = mock_upstream.requests(key)[0]["body"]
        assert sent["model"] == "gpt-5-test" and sent["reasoning_effort"] == "high"  # the client's effort wins
        assert sent["prompt_cache_key"].startswith("ccp-") and "temperature" not in sent
        key2 = mock_upstream.script({"json": completion("plain")})
        proxy.client().messages.create(
            model="claude-opus-4-8", max_tokens=5, messages=[{"role": "user", "content": key2}]
        )
        assert mock_upstream.requests(key2)[0]["body"]["reasoning_effort"] == "low"  # server default
    finally:
        stop_proxy(proxy)


def test_tool_names_the_upstream_rejects_are_shortened_and_mapped_back(client, mock_upstream):
    from ccproxy.translate.chat_request import upstream_tool_name

    long_name = "mcp__claude_ai_Google_Drive__google_drive_search_files_with_a_really_long_suffix"
    short = upstream_tool_name(long_name)
    key = mock_upstream.script(
        {"sse": tool_call_stream("call_long", short, '{"q": "notes"}')},
        {
            "json": completion(
                None,
                [{"id": "call_2", "type": "function", "function": {"name": short, "arguments": '{"q": "more"}'}}],
                "tool_calls",
            )
        },
    )
    tools = [{"name": long_name, "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}}}]
    messages = [{"role": "user", "content": key}]
    with client.messages.stream(model="claude-sonnet-5", max_tokens=50, tools=tools, messages=messages) as s:
        first = s.get_final_message()
    assert first.content[1].name == long_name and first.content[1].input == {"q": "notes"}
    messages += [
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_long", "content": "n.txt"}]},
    ]
    second = client.messages.create(model="claude-sonnet-5", max_tokens=50, tools=tools, messages=messages)
    assert second.content[0].name == long_name
    sent1, sent2 = (r["body"] for r in mock_upstream.requests(key))
    assert sent1["tools"][0]["function"]["name"] == short and long_name not in json.dumps(sent1)
    assert sent2["messages"][1]["tool_calls"][0]["function"]["name"] == short
