"""Every upstream HTTP client (CCPROXY_HTTP_CLIENT) and both server interfaces (CCPROXY_INTERFACE)
honour the same contract."""

from __future__ import annotations

import json
import time

import anthropic
import httpx
import pytest

from ccproxy.upstream.client import CLIENTS
from tests.support.chat_answers import completion, text_stream
from tests.support.proxies import ask, free_port, raw_stream, start_proxy, stop_proxy

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", params=[*(f"{c}+rsgi" for c in CLIENTS), "httpx+asgi"])
def client_proxy(request, mock_upstream, tmp_path_factory):
    client, interface = request.param.split("+")
    proxy = start_proxy(
        mock_upstream.base,
        tmp_path_factory.mktemp(f"client-{client}-{interface}"),
        CCPROXY_HTTP_CLIENT=client,
        CCPROXY_INTERFACE=interface,
        CCPROXY_READ_TIMEOUT="1",
    )
    yield proxy
    stop_proxy(proxy)


def test_create_and_stream(client_proxy, mock_upstream):
    sdk = client_proxy.client()
    key = mock_upstream.script({"json": completion("plain")}, {"sse": text_stream("str", "eam")})
    assert sdk.messages.create(**ask(key)).content[0].text == "plain"
    with sdk.messages.stream(**ask(key)) as s:
        assert s.get_final_message().content[0].text == "stream"
    assert len(mock_upstream.requests(key)) == 2


def test_error_status_and_headers(client_proxy, mock_upstream):
    key = mock_upstream.script({"status": 429, "json": {"error": {"message": "slow"}}, "headers": {"retry-after": "9"}})
    with pytest.raises(anthropic.RateLimitError) as err:
        client_proxy.client().messages.create(**ask(key))
    assert err.value.response.headers["retry-after"] == "9"


def test_stream_faults(client_proxy, mock_upstream):
    key = mock_upstream.script({"sse": text_stream("a", "b"), "reset_after": 1})
    assert raw_stream(client_proxy, ask(key))[-1][1]["error"]["type"] == "api_error"
    key = mock_upstream.script({"sse": text_stream("a", "b"), "hang_after": 1})
    assert raw_stream(client_proxy, ask(key))[-1][1]["error"]["type"] == "timeout_error"


def test_slow_headers_time_out(client_proxy, mock_upstream):
    key = mock_upstream.script({"json": completion("late"), "wait": 3})
    with pytest.raises(anthropic.GatewayTimeoutError):
        client_proxy.client().messages.create(**ask(key))


def test_disconnect_closes_upstream(client_proxy, mock_upstream):
    key = mock_upstream.script({"sse": text_stream(*["tick"] * 100), "delay": 0.1})
    with httpx.stream("POST", f"{client_proxy.base}/v1/messages", json={**ask(key), "stream": True}, timeout=30) as r:
        for line in r.iter_lines():
            if "text_delta" in line:
                break
    left = time.time()
    for _ in range(100):
        record = mock_upstream.requests(key)[0]
        if "disconnected_at" in record:
            break
        time.sleep(0.05)
    assert record.get("disconnected_at", left + 99) - left < 1.0


@pytest.mark.parametrize("variant", [f"{c}+rsgi" for c in CLIENTS] + [f"{c}+asgi" for c in CLIENTS])
def test_disconnect_while_waiting_for_the_upstream_cancels_it(variant, mock_upstream, tmp_path):
    """The client leaves before the upstream answered (non-streaming, or a stream's first byte):
    the upstream call is cancelled and the request logged as 499 (no timeout does it here)."""
    client, interface = variant.split("+")
    proxy = start_proxy(mock_upstream.base, tmp_path, CCPROXY_HTTP_CLIENT=client, CCPROXY_INTERFACE=interface)
    try:
        for stream in (False, True):
            key = mock_upstream.script({"json": completion("late"), "wait": 4})
            with pytest.raises(httpx.ReadTimeout):
                httpx.post(f"{proxy.base}/v1/messages", json={**ask(key), "stream": stream}, timeout=0.4)
            left = time.time()
            for _ in range(80):
                record = mock_upstream.requests(key)[0]
                if "disconnected_at" in record or "finished_at" in record:
                    break
                time.sleep(0.05)
            assert record.get("disconnected_at", left + 99) - left < 1.5, stream
        time.sleep(0.3)
        statuses = [json.loads(line)["status"] for line in (tmp_path / "log.jsonl").read_text().splitlines()]
        assert statuses == [499, 499]
    finally:
        stop_proxy(proxy)


@pytest.mark.parametrize("kind", CLIENTS)
def test_unreachable_upstream(kind, tmp_path):
    proxy = start_proxy(f"http://127.0.0.1:{free_port()}", tmp_path, CCPROXY_HTTP_CLIENT=kind)
    try:
        with pytest.raises(anthropic.APIStatusError) as err:
            proxy.client().messages.create(**ask("x"))
        assert err.value.status_code == 502 and "cannot reach" in err.value.body["error"]["message"]
    finally:
        stop_proxy(proxy)
