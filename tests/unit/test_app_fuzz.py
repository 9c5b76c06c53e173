"""Bad input never yields a 500: the ASGI app, in process, fed arbitrary bodies.

The upstream is a real httpx client aimed at a closed loopback port, so requests that pass
validation end in a real connection failure (502), not in a stand-in.
"""

from __future__ import annotations

import asyncio
import json
import socket

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ccproxy.app import ProxyApp
from tests.support.apps import make_app


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


APP = make_app(
    base_url=f"http://127.0.0.1:{closed_port()}/v1",
    connect_timeout=1.0,
    max_retries=0,  # every request fails to connect: no retries, and no open circuit hiding it
    circuit_threshold=10**9,
)
LOOP = asyncio.new_event_loop()


def call(path: str, body: bytes, app: ProxyApp | None = None) -> tuple[int, bytes]:
    sent: list[dict] = []
    chunks = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict:
        if chunks:
            return chunks.pop(0)
        await asyncio.Event().wait()  # like a server: nothing more until the client leaves
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    headers = [(b"content-type", b"application/json")]
    scope = {"type": "http", "method": "POST", "path": path, "query_string": b"", "headers": headers}
    LOOP.run_until_complete((app or APP)(scope, receive, send))
    status = sent[0]["status"]
    return status, b"".join(m.get("body", b"") for m in sent[1:])


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)
near_valid = st.fixed_dictionaries(
    {
        "model": st.sampled_from(["claude-sonnet-5", "claude-haiku-4-5", "gpt-x"]) | json_values,
        "max_tokens": st.integers(-5, 2**70) | json_values,
        "messages": st.lists(
            st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "system"]), "content": json_values}),
            max_size=3,
        )
        | json_values,
    },
    optional={
        "system": json_values,
        "tools": json_values,
        "tool_choice": json_values,
        "stream": st.booleans(),
        "stop_sequences": json_values,
        "temperature": json_values,
    },
)


def encode(value: object) -> bytes:
    return json.dumps(value).encode()  # the stdlib: integers beyond 64 bits included


def check(status: int, body: bytes) -> None:
    assert status != 500, body
    if status != 200:
        data = orjson.loads(body)
        assert data["type"] == "error" and data["error"]["type"] and data["error"]["message"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200) | json_values.map(encode) | near_valid.map(encode))
def test_messages_never_500(body):
    check(*call("/v1/messages", body))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200) | json_values.map(encode) | near_valid.map(encode))
def test_count_tokens_never_500(body):
    check(*call("/v1/messages/count_tokens", body))


def test_hostile_bodies():
    deep = b'{"model":"claude-x","max_tokens":5,"messages":[{"role":"user","content":[{"type":"text","text":"a","x":'
    for body in (
        deep + b"[" * 100000 + b"]" * 100000 + b"}]}]}",
        b'{"model":"claude-x","max_tokens":5,"messages":[{"role":"user","content":"\xff\xfe"}]}',
        b'{"model":"claude-x","max_tokens":1000000000000000000000000,"messages":[{"role":"user","content":"a"}]}',
        b'{"model":"claude-x","max_tokens":5,"messages":[{"role":"assistant","content":[{"type":"tool_use","id":"t",'
        b'"name":"n","input":{"big":100000000000000000000000000}}]}]}',
    ):
        for path in ("/v1/messages", "/v1/messages/count_tokens"):
            status, out = call(path, body)
            check(status, out)
            assert status in ((400, 502) if path == "/v1/messages" else (200, 400))


# Integers beyond 64 bits (and beyond a double) anywhere in a request: a 400, or the request goes
# on unchanged; never a 500. Also with the response cache on (it decodes the body again).
HUGE = st.integers(min_value=2**63, max_value=10**400) | st.integers(min_value=-(10**400), max_value=-(2**63) - 1)
huge_values = st.recursive(
    st.none() | st.integers() | HUGE | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)
huge_requests = st.fixed_dictionaries(
    {
        "model": st.just("claude-sonnet-5"),
        "max_tokens": st.integers(1, 100) | HUGE,
        "messages": st.just([{"role": "user", "content": "hi"}]),
    },
    optional={
        "temperature": huge_values,
        "top_k": huge_values,
        "metadata": huge_values,
        "thinking": huge_values,
        "tool_choice": huge_values,
        "tools": st.lists(st.fixed_dictionaries({"name": st.just("t"), "input_schema": huge_values}), max_size=2),
        "stream": st.booleans(),
    },
)
CACHED = make_app(
    base_url=f"http://127.0.0.1:{closed_port()}/v1",
    connect_timeout=1.0,
    max_retries=0,
    circuit_threshold=10**9,
    cache=True,
    schema_drop_keys=("format",),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(huge_requests.map(encode))
def test_integers_beyond_64_bits_are_never_500(body):
    for app in (APP, CACHED):
        for path in ("/v1/messages", "/v1/messages/count_tokens"):
            check(*call(path, body, app))


def test_max_tokens_beyond_64_bits_is_a_400():
    body = b'{"model":"claude-x","max_tokens":1' + b"0" * 400 + b',"messages":[{"role":"user","content":"a"}]}'
    status, out = call("/v1/messages", body)
    assert status == 400 and b"max_tokens" in out
