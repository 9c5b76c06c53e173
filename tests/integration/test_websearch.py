"""Claude Code's WebSearch on a Chat upstream: the proxy searches (a SearXNG: the mock upstream's
``/search``), answers in Anthropic's server-tool shape, and says so when it cannot search.

The request is the one Claude Code's WebSearch tool really sends (tests/fixtures/claude-code/
opus-web-search-server-tool.json): only the ``web_search_20250305`` server tool, forced."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from ccproxy import websearch
from ccproxy.upstream.registry import create_client
from ccproxy.websearch import BraveEngine, SearchError, SearxngEngine, TavilyEngine
from tests.support.chat_answers import completion
from tests.support.fixtures import load_fixture
from tests.support.proxies import (
    CLIENT_KEY,
    MockUpstream,
    Proxy,
    new_key,
    post,
    raw_stream,
    start_mock,
    start_proxy,
    stop_proxy,
)
from tests.support.sse import assemble


@pytest.fixture(scope="module")
def engine_mock() -> Iterator[MockUpstream]:
    """A second mock process playing SearXNG: its scripts are keyed by the searched query."""
    mock = start_mock()
    yield mock
    mock.stop()


@pytest.fixture(scope="module")
def searching(mock_upstream, engine_mock, tmp_path_factory) -> Iterator[Proxy]:
    """A proxy whose engine is SearXNG at the engine mock (SEARXNG_URL only: CCPROXY_WEB_SEARCH=auto)."""
    proxy = start_proxy(mock_upstream.base, tmp_path_factory.mktemp("search"), SEARXNG_URL=engine_mock.base)
    yield proxy
    stop_proxy(proxy)


def web_search_request(key: str, stream: bool = True) -> dict:
    body = load_fixture("opus-web-search-server-tool")
    body["messages"] = [
        {"role": "user", "content": [{"type": "text", "text": f"Perform a web search for the query: {key}"}]}
    ]
    body["stream"] = stream
    return body


def search_call(query: str, call_id: str = "call_s1") -> dict:
    call = {
        "id": call_id,
        "type": "function",
        "function": {"name": "web_search", "arguments": json.dumps({"query": query})},
    }
    return completion(None, [call], finish="tool_calls")


def searxng_answer(*urls: str) -> dict:
    """SearXNG's JSON API answer (format=json): its results list, as a real instance gives it."""
    return {
        "query": "q",
        "number_of_results": 0,
        "results": [
            {
                "url": url,
                "title": f"Title of {url}",
                "content": f"Snippet about {url}",
                "engine": "duckduckgo",
                "publishedDate": "2026-11-30T00:00:00",
            }
            for url in urls
        ],
        "answers": [],
        "suggestions": [],
    }


def test_websearch_stream_has_the_server_tool_shape(searching, mock_upstream, engine_mock):
    """Claude Code forces the tool: the proxy searches its query at once, as Anthropic would, and
    the model answers from the results."""
    key = new_key()
    mock_upstream.script({"json": completion("Rust 9 shipped [1].")}, key=key)
    engine_mock.script({"json": searxng_answer("https://blog.rust-lang.org/a", "https://example.org/b")}, key=key)
    events = raw_stream(searching, web_search_request(f"{key} rust release"))
    names = [name for name, _ in events]
    assert names[0] == "message_start" and names[-1] == "message_stop" and "error" not in names
    message = assemble(events)
    kinds = [b["type"] for b in message["content"]]
    assert kinds == ["server_tool_use", "web_search_tool_result", "text"]
    use, result, text = message["content"]
    assert use["id"].startswith("srvtoolu_") and use["name"] == "web_search"
    assert use["input"] == {"query": f"{key} rust release"}  # Claude Code's query, from its prompt
    assert result["tool_use_id"] == use["id"]
    assert [r["url"] for r in result["content"]] == ["https://blog.rust-lang.org/a", "https://example.org/b"]
    for item in result["content"]:
        assert item["type"] == "web_search_result" and item["title"].startswith("Title of")
        assert item["page_age"] == "2026-11-30T00:00:00" and item["encrypted_content"]
    assert text["text"] == "Rust 9 shipped [1]."
    delta = next(data for name, data in events if name == "message_delta")
    assert delta["usage"]["server_tool_use"] == {"web_search_requests": 1}
    assert delta["delta"]["stop_reason"] == "end_turn"
    # the engine saw the query; the model saw the call and its results, and answered
    [search] = engine_mock.requests(key)
    assert search["method"] == "GET" and search["path"] == "/search"
    assert "format=json" in search["query"] and key in search["query"]
    [answer] = mock_upstream.requests(key)
    assert answer["body"]["tool_choice"] == "auto" and "stream" not in answer["body"]
    assert [t["function"]["name"] for t in answer["body"]["tools"]] == ["web_search"]
    call, reply = answer["body"]["messages"][-2:]
    assert call["tool_calls"][0]["function"]["name"] == "web_search"
    assert reply["role"] == "tool" and reply["tool_call_id"] == call["tool_calls"][0]["id"]
    assert "https://blog.rust-lang.org/a" in reply["content"]


def test_websearch_whole_answer_through_the_sdk(searching, mock_upstream, engine_mock):
    """Not forced: the model decides to search (a web_search function call), then answers."""
    chat = new_key()
    mock_upstream.script({"json": search_call(f"{chat} weather")}, {"json": completion("Sunny.")}, key=chat)
    engine_mock.script({"json": searxng_answer("https://weather.example/today")}, key=chat)
    client = searching.client()
    msg = client.messages.create(
        model="claude-opus-4-8",
        max_tokens=1024,
        messages=[{"role": "user", "content": f"what is the weather {chat}"}],
        tools=[{"type": "web_search_20250305", "name": "web_search", "max_uses": 3}],
    )
    assert [b.type for b in msg.content] == ["server_tool_use", "web_search_tool_result", "text"]
    assert msg.content[1].content[0].url == "https://weather.example/today"
    assert msg.usage.server_tool_use.web_search_requests == 1
    assert msg.stop_reason == "end_turn" and msg.content[2].text == "Sunny."
    # encrypted_content is opaque to clients; ours carries the result for a later turn
    kept = json.loads(base64.urlsafe_b64decode(msg.content[1].content[0].encrypted_content))
    assert kept["u"] == "https://weather.example/today"


def test_an_engine_failure_is_that_searchs_error_and_the_turn_goes_on(searching, mock_upstream, engine_mock):
    key = new_key()
    mock_upstream.script({"json": completion("I could not search.")}, key=key)
    engine_mock.script({"status": 500, "text": "searx is down"}, key=key)
    message = assemble(raw_stream(searching, web_search_request(f"{key} broken")))
    _, result, text = message["content"]
    assert result["content"] == {"type": "web_search_tool_result_error", "error_code": "unavailable"}
    assert text["text"] == "I could not search."
    [answer] = mock_upstream.requests(key)
    assert "failed" in answer["body"]["messages"][-1]["content"]


def test_max_uses_bounds_the_searches(searching, mock_upstream, engine_mock):
    key = new_key()
    mock_upstream.script({"json": completion("done")}, key=key)
    engine_mock.script({"json": searxng_answer("https://one.example/")}, key=key)
    body = web_search_request(f"{key} one", stream=False)
    body["tools"][0]["max_uses"] = 1
    resp = post(searching, "/v1/messages", body)
    assert resp.status_code == 200, resp.text
    assert resp.json()["usage"]["server_tool_use"]["web_search_requests"] == 1
    [answer] = mock_upstream.requests(key)
    assert answer["body"]["tool_choice"] == "none"  # the function is withheld once max_uses is spent


def test_without_an_engine_the_answer_says_search_is_unavailable(proxy, mock_upstream):
    chat = mock_upstream.script({"json": completion("from memory")})
    message = assemble(raw_stream(proxy, web_search_request(chat)))
    kinds = [b["type"] for b in message["content"]]
    assert kinds == ["server_tool_use", "web_search_tool_result", "text"]
    assert message["content"][0]["input"]["query"] == chat  # Claude Code's query, from its prompt
    assert message["content"][1]["content"] == {"type": "web_search_tool_result_error", "error_code": "unavailable"}
    assert "not available" in message["content"][2]["text"]
    assert mock_upstream.requests(chat) == []  # no answer from the model's memory


def test_a_request_with_client_tools_and_search_keeps_both(searching, mock_upstream):
    chat = mock_upstream.script(
        {
            "json": completion(
                None,
                [{"id": "call_t", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}],
                finish="tool_calls",
            )
        }
    )
    body = web_search_request(chat, stream=False)
    body["tool_choice"] = {"type": "auto"}
    body["tools"].append(
        {"name": "get_time", "description": "now", "input_schema": {"type": "object", "properties": {}}}
    )
    resp = post(searching, "/v1/messages", body, **{"x-api-key": CLIENT_KEY})
    assert resp.status_code == 200, resp.text
    answer = resp.json()
    assert answer["stop_reason"] == "tool_use" and answer["content"][0]["name"] == "get_time"
    sent = mock_upstream.requests(chat)[0]["body"]
    assert sorted(t["function"]["name"] for t in sent["tools"]) == ["get_time", "web_search"]


# --- the engines, each against its documented answer shape (served by the mock on loopback) -----


def run_engine(engine_class, mock_upstream, path: str, query: str, *args, allowed=(), blocked=()):
    """One search with a real engine object and our HTTP client, aimed at the mock (``path``)."""

    async def go():
        client = create_client("builtin", 5.0, 5.0)
        try:
            engine = engine_class(client, *args)
            if path:
                engine.url = f"{mock_upstream.base}{path}"
            return await engine.search(query, list(allowed), list(blocked))
        finally:
            await client.close()

    return asyncio.run(go())


def test_brave_engine_reads_its_web_results(mock_upstream):
    key = new_key()
    query = f"{key} python"
    brave = {  # Brave Search API's web search answer (type "search"), trimmed to what is read
        "type": "search",
        "query": {"original": query},
        "web": {
            "type": "search",
            "results": [
                {
                    "title": "Python.org",
                    "url": "https://www.python.org/",
                    "description": "The official home",
                    "page_age": "2026-11-01T00:00:00",
                    "age": "1 month ago",
                },
                {"title": "Blocked", "url": "https://spam.example/x", "description": "no"},
            ],
        },
    }
    mock_upstream.script({"json": brave}, key=key)
    results = run_engine(
        BraveEngine, mock_upstream, "/res/v1/web/search", query, "brave-key-123", blocked=["spam.example"]
    )
    assert [(r.url, r.title, r.snippet, r.page_age) for r in results] == [
        ("https://www.python.org/", "Python.org", "The official home", "2026-11-01T00:00:00")
    ]
    [request] = mock_upstream.requests(key)
    assert request["method"] == "GET" and request["headers"]["x-subscription-token"] == "brave-key-123"


def test_tavily_engine_posts_its_query(mock_upstream):
    key = new_key()
    query = f"{key} rust"
    tavily = {  # Tavily's /search answer
        "query": query,
        "answer": None,
        "results": [
            {
                "title": "Rust",
                "url": "https://www.rust-lang.org/",
                "content": "A language",
                "score": 0.9,
                "published_date": "2026-10-10",
            },
        ],
        "response_time": 1.1,
    }
    mock_upstream.script({"json": tavily}, key=key)
    results = run_engine(TavilyEngine, mock_upstream, "/search", query, "tvly-key-456", allowed=["rust-lang.org"])
    assert [(r.url, r.page_age) for r in results] == [("https://www.rust-lang.org/", "2026-10-10")]
    [request] = mock_upstream.requests(key)
    assert request["method"] == "POST" and request["headers"]["authorization"] == "Bearer tvly-key-456"
    assert request["body"]["include_domains"] == ["rust-lang.org"] and request["body"]["query"] == query


@pytest.mark.parametrize(
    ("spec", "code"),
    [
        ({"status": 429, "json": {"error": "slow down"}}, "too_many_requests"),
        ({"status": 503, "text": "down"}, "unavailable"),
        ({"text": "<html>not json</html>"}, "unavailable"),
        ({"json": {"results": []}, "wait": 20}, "unavailable"),
    ],
)
def test_engine_failures_are_search_errors(mock_upstream, monkeypatch, spec, code):
    monkeypatch.setattr(websearch, "SEARCH_TIMEOUT", 1.0)
    key = new_key()
    mock_upstream.script(spec, key=key)
    with pytest.raises(SearchError) as failure:
        run_engine(SearxngEngine, mock_upstream, "", f"{key} q", mock_upstream.base)
    assert failure.value.error_code == code


# --- a Responses upstream searches itself: its recorded answer, translated back -------------------

RESPONSES_RECORDING = Path(__file__).resolve().parents[1] / "dialects" / "responses" / "openai-gpt-4o-web-search.json"


def one_upstream_proxy(mock_upstream, data: Path, kind: str, extra: str = "") -> Proxy:
    """A proxy whose claude-* models all go to one upstream of ``kind`` at the mock."""
    config = data / "routes.toml"
    config.write_text(
        f'[upstreams.up]\nkind = "{kind}"\nbase_url = "{mock_upstream.base}/v1"\napi_key_env = "TEST_KEY"\n{extra}\n'
        '[[routes]]\nmatch = "claude-*"\nupstream = "up"\nmodel = "gpt-4o"\n'
    )
    return start_proxy(mock_upstream.base, data, CCPROXY_CONFIG=str(config), TEST_KEY="sk-test-0123456789abcdef")


@pytest.fixture(scope="module")
def responses_proxy(mock_upstream, tmp_path_factory) -> Iterator[Proxy]:
    proxy = one_upstream_proxy(mock_upstream, tmp_path_factory.mktemp("responses-search"), "responses")
    yield proxy
    stop_proxy(proxy)


@pytest.mark.parametrize("stream", [False, True])
def test_responses_web_search_becomes_server_tool_blocks(responses_proxy, mock_upstream, stream):
    recorded = RESPONSES_RECORDING.read_text()
    key = mock_upstream.script({"text": recorded, "headers": {"content-type": "application/json"}})
    body = web_search_request(key, stream=stream)
    if stream:
        message = assemble(raw_stream(responses_proxy, body))
    else:
        resp = post(responses_proxy, "/v1/messages", body)
        assert resp.status_code == 200, resp.text
        message = resp.json()
    kinds = [b["type"] for b in message["content"]]
    assert kinds == ["server_tool_use", "web_search_tool_result"] * 2 + ["text"]
    first_use, first_result = message["content"][:2]
    assert first_use["input"] == {"query": "Vercel AI SDK next version features"}
    assert first_use["id"].startswith("srvtoolu_") and first_result["tool_use_id"] == first_use["id"]
    assert [r["url"] for r in first_result["content"]] == ["https://vercel.com/blog", "https://github.com/vercel/ai"]
    text = message["content"][-1]
    assert text["text"].startswith("Last week in San Francisco")
    citations = text["citations"]
    assert len(citations) == 5 and {c["type"] for c in citations} == {"web_search_result_location"}
    assert citations[0]["title"] == "Bruce Lee statue to be installed in SF Chinatown"
    assert citations[0]["cited_text"].startswith("([axios.com](https://www.axios.com/local/san-francisco/2025/03/07")
    assert message["usage"]["server_tool_use"] == {"web_search_requests": 2}
    assert message["usage"]["input_tokens"] == 327 and message["usage"]["output_tokens"] == 770
    sent = mock_upstream.requests(key)[0]["body"]
    assert sent["tools"] == [{"type": "web_search"}] and sent["tool_choice"] == "required"
    assert "web_search_call.action.sources" in sent["include"]


# --- an upstream with its own web plugin (OpenRouter's; `web_search = "plugin"` in the routing file) --


@pytest.fixture(scope="module")
def plugin_proxy(mock_upstream, tmp_path_factory) -> Iterator[Proxy]:
    data = tmp_path_factory.mktemp("plugin-search")
    proxy = one_upstream_proxy(mock_upstream, data, "chat", 'web_search = "plugin"\n')
    yield proxy
    stop_proxy(proxy)


def test_plugin_search_citations_become_the_results(plugin_proxy, mock_upstream):
    text = "Python 3.14 is out (python.org)."
    # OpenRouter's documented shape: url_citation annotations on the message
    annotations = [
        {
            "type": "url_citation",
            "url_citation": {
                "url": "https://www.python.org/downloads/",
                "title": "Download Python",
                "content": "The latest release",
                "start_index": 20,
                "end_index": 31,
            },
        }
    ]
    answer = completion(text)
    answer["choices"][0]["message"]["annotations"] = annotations
    key = mock_upstream.script({"json": answer})
    message = assemble(raw_stream(plugin_proxy, web_search_request(key)))
    use, result, block = message["content"]
    assert use["input"] == {"query": key} and result["tool_use_id"] == use["id"]
    assert result["content"] == [
        {
            "type": "web_search_result",
            "url": "https://www.python.org/downloads/",
            "title": "Download Python",
            "encrypted_content": "",
            "page_age": None,
        }
    ]
    assert block["text"] == text and block["citations"][0]["cited_text"] == "python.org)"
    assert message["usage"]["server_tool_use"] == {"web_search_requests": 1}
    [sent] = mock_upstream.requests(key)
    assert sent["body"]["plugins"] == [{"id": "web", "max_results": 5}] and "tools" not in sent["body"]
