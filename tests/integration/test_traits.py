"""Routing by what a request needs (claude-code-router's classes), switching upstreams by naming
them in the model id, and context windows: a prompt too long for its model is refused before
any upstream call, or goes to a long-context rule."""

from __future__ import annotations

import copy
from collections.abc import Iterator

import anthropic
import httpx
import orjson
import pytest

from ccproxy.schemas.anthropic import decode_messages_request
from ccproxy.tokens import count_request
from tests.support.chat_answers import completion
from tests.support.fixtures import load_fixture
from tests.support.proxies import Proxy, ask, post, start_proxy, stop_proxy

pytestmark = pytest.mark.integration

# A real Claude Code turn (116 KB: 24 tools, long system prompt): the "long" prompt of these tests.
FIXTURE = "sonnet-thinking-write-turn2"


WINDOW_FIXTURES = ("opus-say-hi", "opus-bash-turn2-tool-result", "sonnet-adaptive-thinking")


def fixture_tokens(name: str = FIXTURE) -> int:
    return count_request(decode_messages_request(orjson.dumps(load_fixture(name))))


@pytest.fixture(scope="module")
def traits_proxy(mock_upstream, tmp_path_factory) -> Iterator[Proxy]:
    data = tmp_path_factory.mktemp("traits")
    tokens = fixture_tokens()
    # a model per recorded request whose window is exactly that request's count
    windows = ", ".join(f'"window-{name}" = {fixture_tokens(name)}' for name in WINDOW_FIXTURES)
    config = data / "routes.toml"
    config.write_text(
        f"""
[upstreams.cheap]
kind = "chat"
base_url = "{mock_upstream.base}/v1"
api_key_env = "TEST_KEY"
context_windows = {{ "small-window-model" = {tokens // 2}, {windows} }}

[upstreams.smart]
kind = "chat"
base_url = "{mock_upstream.base}/v1"
api_key_env = "TEST_KEY"

[upstreams.searcher]
kind = "chat"
base_url = "{mock_upstream.base}/v1"
api_key_env = "TEST_KEY"

[[routes]]
web_search = true
upstream = "searcher"
model = "search-model"

[[routes]]
match = "claude-*"
images = true
upstream = "smart"
model = "vision-model"

[[routes]]
match = "claude-opus-*"
min_input_tokens = {tokens // 2}
upstream = "smart"
model = "long-context-model"
context_window = 1000000

[[routes]]
background = true
upstream = "cheap"
model = "local-small"

[[routes]]
match = "claude-*"
thinking = true
upstream = "smart"
model = "reasoner"

[[routes]]
match = "tight-*"
upstream = "cheap"
model = "small-window-model"

[[routes]]
match = "window-*"
upstream = "cheap"

[[routes]]
match = "claude-*"
upstream = "cheap"
model = "everyday-model"
"""
    )
    proxy = start_proxy(
        mock_upstream.base,
        data,
        CCPROXY_CONFIG=str(config),
        TEST_KEY="sk-test-traits-0123456789",
        SEARXNG_URL=mock_upstream.base,
    )
    yield proxy
    stop_proxy(proxy)


def sent_model(mock_upstream, key: str) -> str:
    [request] = mock_upstream.requests(key)
    return request["body"]["model"]


def test_each_trait_picks_its_rule(traits_proxy, mock_upstream):
    cases = [
        ({}, "everyday-model"),
        ({"thinking": {"type": "enabled", "budget_tokens": 2000}, "max_tokens": 4000}, "reasoner"),
        ({"model": "claude-haiku-4-5"}, "local-small"),
        ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "search-model"),
    ]
    for extra, expected in cases:
        key = mock_upstream.script({"json": completion("ok")})
        body = ask(key, **{"model": "claude-sonnet-5", **extra})
        resp = post(traits_proxy, "/v1/messages", body)
        assert resp.status_code == 200, resp.text
        assert sent_model(mock_upstream, key) == expected, extra
        assert resp.json()["model"] == body["model"]  # the client sees its own id


def test_images_go_to_the_vision_rule(traits_proxy, mock_upstream):
    key = mock_upstream.script({"json": completion("a cat")})
    pixel = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": pixel}}
    body = ask(key, messages=[{"role": "user", "content": [image, {"type": "text", "text": f"what is it {key}"}]}])
    assert post(traits_proxy, "/v1/messages", body).status_code == 200
    assert sent_model(mock_upstream, key) == "vision-model"


def test_a_long_prompt_goes_to_the_long_context_rule(traits_proxy, mock_upstream):
    key = mock_upstream.script({"json": completion("read it all")})
    body = copy.deepcopy(load_fixture(FIXTURE))
    body.update(model="claude-opus-4-8", stream=False, thinking={"type": "disabled"})
    body["messages"][0]["content"][0]["text"] += f" {key}"
    resp = post(traits_proxy, "/v1/messages", body)
    assert resp.status_code == 200, resp.text
    assert sent_model(mock_upstream, key) == "long-context-model"


def test_too_long_for_the_window_is_refused_without_an_upstream_call(traits_proxy, mock_upstream):
    key = mock_upstream.script({"json": completion("never")})
    body = copy.deepcopy(load_fixture(FIXTURE))
    body.update(model="tight-model", stream=True)
    body["messages"][0]["content"][0]["text"] += f" {key}"
    extra = {k: body.pop(k) for k in ("context_management", "output_config") if k in body}
    client = traits_proxy.client()
    with pytest.raises(anthropic.BadRequestError) as refused:
        client.messages.create(**body, extra_body=extra)
    assert refused.value.body["error"]["type"] == "invalid_request_error"
    message = refused.value.body["error"]["message"]
    assert message.startswith("prompt is too long: ") and message.endswith(f" > {fixture_tokens() // 2} maximum")
    assert mock_upstream.requests(key) == []


def test_a_prompt_that_fits_is_never_refused(traits_proxy, mock_upstream):
    """The margin: every recorded Claude Code request goes through a model whose window is just its
    own count (the upstream's tokenizer may count a little differently; we never refuse early)."""
    for name in WINDOW_FIXTURES:
        key = mock_upstream.script({"json": completion("fits")})
        body = copy.deepcopy(load_fixture(name))
        body.update(model=f"window-{name}", stream=False)
        body["messages"][0]["content"][0]["text"] += f" {key}"  # (a few tokens over the window)
        resp = post(traits_proxy, "/v1/messages", body)
        assert resp.status_code == 200, (name, resp.text)
        assert sent_model(mock_upstream, key) == f"window-{name}"


def test_naming_an_upstream_switches_to_it(traits_proxy, mock_upstream):
    for requested, model in (("smart,gpt-4.1-mini", "gpt-4.1-mini"), ("cheap/qwen/qwen3-coder", "qwen/qwen3-coder")):
        key = mock_upstream.script({"json": completion("switched")})
        resp = post(traits_proxy, "/v1/messages", ask(key, model=requested))
        assert resp.status_code == 200, resp.text
        assert sent_model(mock_upstream, key) == model and resp.json()["model"] == requested
    listed = {m["id"] for m in httpx.get(f"{traits_proxy.base}/v1/models").json()["data"]}
    assert {"smart,reasoner", "cheap,everyday-model", "searcher,search-model"} <= listed
