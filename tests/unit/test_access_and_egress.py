"""Settings and pure decisions behind docs/security.md: which Host and Origin values pass, header
rule validation, proxy selection (NO_PROXY) and credentials in URLs."""

from __future__ import annotations

import base64

import pytest

from ccproxy.access import Access, host_name
from ccproxy.config import ConfigError, Settings
from ccproxy.headerrules import header_problem
from ccproxy.upstream.egress import Egress, parse_proxy, split_userinfo, without_userinfo

BASE = {"OPENAI_API_KEY": "sk-x", "BIG_MODEL_NAME": "gpt-big", "SMALL_MODEL_NAME": "gpt-small"}


def access(**env: str) -> Access:
    return Access(Settings.from_env({**BASE, **env}))


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("localhost", True),
        ("localhost:11434", True),
        ("LocalHost.", True),
        ("api.localhost:80", True),
        ("127.0.0.1:11434", True),
        ("127.8.9.1", True),
        ("[::1]:11434", True),
        ("evil.example", False),
        ("localhost.evil.example", False),
        ("127.0.0.1.nip.io", False),
        ("0.0.0.0:11434", False),
        ("192.168.1.5:11434", False),
        ("", False),
    ],
)
def test_host_check_by_default(host, allowed):
    assert access().host_allowed(host) is allowed


def test_configured_names_wildcards_and_the_bind_address():
    a = access(
        CCPROXY_ALLOWED_HOSTS="proxy.example.com,*.corp.example",
        HOST="10.0.0.5",
        CCPROXY_CLIENT_API_KEYS="k",
        DASHBOARD_PASSWORD="p",
    )
    assert a.host_allowed("proxy.example.com:443") and a.host_allowed("x.y.corp.example")
    assert a.host_allowed("10.0.0.5:11434")  # the address it listens on
    assert not a.host_allowed("corp.example") and not a.host_allowed("xcorp.example")
    assert access(CCPROXY_ALLOWED_HOSTS="*").host_allowed("anything.example")


@pytest.mark.parametrize("value", ["http://proxy.example.com", "proxy.example.com:8080", "a/b", "user@host"])
def test_allowed_hosts_are_names_only(value):
    with pytest.raises(ConfigError, match="CCPROXY_ALLOWED_HOSTS"):
        Settings.from_env({**BASE, "CCPROXY_ALLOWED_HOSTS": value})


def test_origins():
    a = access(CCPROXY_ALLOWED_HOSTS="proxy.example.com")
    assert a.origin_allowed("http://127.0.0.1:11434", "127.0.0.1:11434")  # same origin
    assert not a.origin_allowed("http://127.0.0.1:3000", "127.0.0.1:11434")  # another local app
    assert not a.origin_allowed("http://localhost:11434", "127.0.0.1:11434")  # another origin, same machine
    assert not a.origin_allowed("null", "127.0.0.1:11434")
    assert a.origin_allowed("https://proxy.example.com", "127.0.0.1:11434")  # behind a reverse proxy


def test_host_names():
    assert host_name("[::1]:80") == "::1" and host_name("Example.COM:8080") == "example.com"
    assert host_name("::1") == "::1" and host_name("example.com.") == "example.com"


@pytest.mark.parametrize(
    ("name", "value", "ok"),
    [
        ("x-title", "ccproxy", True),
        ("x-latin", "caf\u00e9", True),
        ("x-tab", "a\tb", True),
        ("x-title\n", "v", False),
        ("x title", "v", False),
        ("", "v", False),
        ("x-a", "\u20ac", False),
        ("x-a", "a\r\nb: c", False),
        ("x-a", "a\x00", False),
        ("Content-Length", "1", False),
        ("transfer-encoding", "chunked", False),
        ("Host", "h", False),
        ("connection", "close", False),
    ],
)
def test_header_problems(name, value, ok):
    assert (header_problem(name, value) is None) is ok


def test_routing_file_headers_are_validated(tmp_path):
    config = tmp_path / "routes.toml"
    config.write_text(
        '[upstreams.u]\nkind = "chat"\nbase_url = "http://h/v1"\napi_key_env = "K"\n'
        'headers = { "Content-Length" = "0" }\n[[routes]]\nmatch = "*"\nupstream = "u"\n'
    )
    with pytest.raises(ConfigError, match="content-length"):
        Settings.from_env({"CCPROXY_CONFIG": str(config), "K": "key"})


@pytest.mark.parametrize(
    ("no_proxy", "host", "port", "proxied"),
    [
        ("", "api.openai.com", 443, True),
        ("*", "api.openai.com", 443, False),
        ("openai.com", "api.openai.com", 443, False),
        (".openai.com", "api.openai.com", 443, False),
        ("openai.com", "notopenai.com", 443, True),
        ("api.openai.com:8443", "api.openai.com", 443, True),
        ("api.openai.com:443", "api.openai.com", 443, False),
        ("10.0.0.0/8", "10.1.2.3", 443, False),
        ("10.0.0.0/8", "11.1.2.3", 443, True),
        ("::1", "::1", 443, False),
        ("localhost", "127.0.0.1", 443, True),  # names and addresses are not resolved (like curl)
        (" a.example , b.example ", "b.example", 443, False),
    ],
)
def test_no_proxy_matching(no_proxy, host, port, proxied):
    egress = Egress(https_proxy=parse_proxy("http://p:3128", "HTTPS_PROXY"), no_proxy=no_proxy)
    assert (egress.proxy_for("https", host, port) is not None) is proxied


def test_proxy_settings_from_the_environment():
    s = Settings.from_env({**BASE, "https_proxy": "http://u:p%40ss@corp-proxy:3128", "NO_PROXY": "internal"})
    proxy = s.egress.https_proxy
    assert proxy is not None and proxy.address == "corp-proxy:3128"
    assert proxy.authorization == "Basic " + base64.b64encode(b"u:p@ss").decode()
    assert s.egress.http_proxy is None and s.egress.no_proxy == "internal"
    everything = Settings.from_env({**BASE, "ALL_PROXY": "corp:8080"})
    assert everything.egress.https_proxy == everything.egress.http_proxy
    assert "corp:8080" in everything.describe() and "p%40ss" not in s.describe()
    with pytest.raises(ConfigError, match="HTTPS_PROXY"):
        Settings.from_env({**BASE, "HTTPS_PROXY": "socks5://corp:1080"})
    with pytest.raises(ConfigError, match="CCPROXY_CA_BUNDLE"):
        Settings.from_env({**BASE, "CCPROXY_CA_BUNDLE": "/no/such/ca.pem"})


def test_credentials_in_base_urls_become_basic_auth():
    s = Settings.from_env({**BASE, "OPENAI_BASE_URL": "https://gw-user:gw%3Apw@gateway.example/v1"})
    assert s.base_url == "https://gateway.example/v1"
    assert s.base_url_auth == "Basic " + base64.b64encode(b"gw-user:gw:pw").decode()
    assert "gw%3Apw" not in s.describe() and "gw-user" not in s.describe()
    assert split_userinfo("http://h:1/v1") == ("http://h:1/v1", None)
    assert without_userinfo("https://u:p@h/x?y=1") == "https://h/x?y=1"


def test_exposure_rules():
    with pytest.raises(ConfigError, match="DASHBOARD_PASSWORD"):
        Settings.from_env({**BASE, "HOST": "0.0.0.0", "CCPROXY_CLIENT_API_KEYS": "k"})
    opened = Settings.from_env({**BASE, "HOST": "0.0.0.0", "CCPROXY_ALLOW_UNAUTHENTICATED": "on"})
    assert opened.exposure_warning() and "0.0.0.0" in opened.exposure_warning()
    assert Settings.from_env({**BASE, "HOST": "::1"}).exposure_warning() is None
    with pytest.raises(ConfigError, match="CCPROXY_PROTECT_METRICS"):
        Settings.from_env({**BASE, "CCPROXY_PROTECT_METRICS": "on"})
