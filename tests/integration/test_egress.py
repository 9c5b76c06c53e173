"""Corporate networks (issue 16, item 15): upstreams reached through a real forward proxy
(Debian's tinyproxy: CONNECT tunnels and plain forwarding, with Basic credentials) and served
with a certificate of a private CA (made by trustme), for both HTTP clients."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from tests.support.chat_answers import completion
from tests.support.proxies import MockUpstream, ask, post, start_mock, start_proxy, stop_proxy
from tests.support.servers import TinyProxy

pytestmark = pytest.mark.integration

CLIENTS = ("builtin", "httpx")


@pytest.fixture(scope="module")
def private_ca(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("private-ca")
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    cert.private_key_and_cert_chain_pem.write_to_path(str(folder / "server.pem"))
    return folder


@pytest.fixture(scope="module")
def tls_upstream(private_ca) -> Iterator[MockUpstream]:
    pem = str(private_ca / "server.pem")
    mock = start_mock((pem, pem, str(private_ca / "ca.pem")))
    yield mock
    mock.stop()


@pytest.fixture(scope="module")
def forward_proxy() -> Iterator[TinyProxy]:
    proxy = TinyProxy("corp-user", "corp-pass-42")
    yield proxy
    proxy.stop()


@pytest.mark.parametrize("client", CLIENTS)
def test_https_upstream_through_a_connect_proxy_with_a_private_ca(
    client, tls_upstream, forward_proxy, private_ca, tmp_path
):
    proxy = start_proxy(
        tls_upstream.base,
        tmp_path,
        CCPROXY_HTTP_CLIENT=client,
        HTTPS_PROXY=forward_proxy.url,
        CCPROXY_CA_BUNDLE=str(private_ca / "ca.pem"),
    )
    try:
        key = tls_upstream.script({"json": completion("through the tunnel")})
        resp = post(proxy, "/v1/messages", ask(key))
        assert resp.status_code == 200 and resp.json()["content"][0]["text"] == "through the tunnel"
        assert f"CONNECT localhost:{tls_upstream.port} HTTP/1.1" in forward_proxy.requests()
        assert len(tls_upstream.requests(key)) == 1
    finally:
        out = stop_proxy(proxy)
    assert "corp-pass-42" not in out  # the proxy's credentials are never printed


@pytest.mark.parametrize("client", CLIENTS)
def test_without_the_private_ca_the_upstream_is_not_trusted(client, tls_upstream, forward_proxy, tmp_path):
    proxy = start_proxy(tls_upstream.base, tmp_path, CCPROXY_HTTP_CLIENT=client, HTTPS_PROXY=forward_proxy.url)
    try:
        key = tls_upstream.script({"json": completion("should not arrive")})
        resp = post(proxy, "/v1/messages", ask(key))
        assert resp.status_code == 502 and resp.json()["error"]["type"] == "api_error"
        assert "certificate" in resp.json()["error"]["message"].lower()
        assert tls_upstream.requests(key) == []
    finally:
        stop_proxy(proxy)


@pytest.mark.parametrize("client", CLIENTS)
def test_no_proxy_goes_direct(client, tls_upstream, forward_proxy, private_ca, tmp_path):
    proxy = start_proxy(
        tls_upstream.base,
        tmp_path,
        CCPROXY_HTTP_CLIENT=client,
        HTTPS_PROXY=forward_proxy.url,
        NO_PROXY="example.com,localhost",
        CCPROXY_CA_BUNDLE=str(private_ca / "ca.pem"),
    )
    try:
        before = len(forward_proxy.requests())
        key = tls_upstream.script({"json": completion("direct")})
        assert post(proxy, "/v1/messages", ask(key)).status_code == 200
        assert len(forward_proxy.requests()) == before  # the proxy never saw it
    finally:
        stop_proxy(proxy)


@pytest.mark.parametrize("client", CLIENTS)
def test_plain_http_upstream_through_http_proxy(client, mock_upstream, forward_proxy, tmp_path):
    base = f"http://localhost:{mock_upstream.port}"
    proxy = start_proxy(base, tmp_path, CCPROXY_HTTP_CLIENT=client, http_proxy=forward_proxy.url)
    try:
        key = mock_upstream.script({"json": completion("forwarded")})
        assert post(proxy, "/v1/messages", ask(key)).status_code == 200
        assert f"POST {base}/v1/chat/completions HTTP/1.1" in forward_proxy.requests()
        assert "proxy-authorization" not in mock_upstream.requests(key)[0]["headers"]  # used by the proxy only
    finally:
        stop_proxy(proxy)


@pytest.mark.parametrize("client", CLIENTS)
def test_a_proxy_that_refuses_is_a_clear_502(client, tls_upstream, forward_proxy, private_ca, tmp_path):
    wrong = forward_proxy.url.replace("corp-pass-42", "wrong-password")
    proxy = start_proxy(
        tls_upstream.base,
        tmp_path,
        CCPROXY_HTTP_CLIENT=client,
        HTTPS_PROXY=wrong,
        CCPROXY_CA_BUNDLE=str(private_ca / "ca.pem"),
    )
    try:
        resp = post(proxy, "/v1/messages", ask("refused"))
        assert resp.status_code == 502 and "wrong-password" not in resp.text
        assert str(forward_proxy.port) in resp.json()["error"]["message"] or "407" in resp.text
    finally:
        stop_proxy(proxy)
