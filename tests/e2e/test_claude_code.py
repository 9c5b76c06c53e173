"""The real Claude Code CLI (from npm), headless, through the proxy to a scripted upstream."""

from __future__ import annotations

import json

import pytest

from tests.support.chat_answers import completion, text_stream, tool_call_stream
from tests.support.claude_cli import Claude
from tests.support.proxies import new_key, start_proxy, stop_proxy

pytestmark = [pytest.mark.integration, pytest.mark.e2e]


def main_requests(mock_upstream, key: str) -> list[dict]:
    """What the upstream received for this scenario (Claude Code's own side requests excluded)."""
    return [r for r in mock_upstream.requests(key) if r["path"].endswith("/chat/completions")]


def test_plain_answer(claude, mock_upstream):
    key = mock_upstream.script({"sse": text_stream("Hello ", "from ", "the ", "mock upstream.")})
    code, result, output = claude.run(f"say hi ({key})")
    assert code == 0, output
    assert result["type"] == "result" and result["is_error"] is False
    assert result["result"] == "Hello from the mock upstream."
    [seen] = main_requests(mock_upstream, key)
    assert seen["body"]["model"] == "gpt-big" and seen["body"]["stream"] is True
    assert "sk-ant-e2e-client-key" not in json.dumps(seen)  # the client's key never goes upstream


def test_tool_round_trip_writes_a_file(claude, mock_upstream):
    key = mock_upstream.script(
        {
            "sse": tool_call_stream(
                "call_write_1",
                "Write",
                {"file_path": str(claude.workdir / "hello.txt"), "content": "hello from the proxy\n"},
            )
        },
        {"sse": text_stream("I created hello.txt.")},
    )
    code, result, output = claude.run(f"create hello.txt containing a greeting ({key})", "--allowedTools", "Write")
    assert code == 0, output
    assert (claude.workdir / "hello.txt").read_text() == "hello from the proxy\n"  # the CLI really ran the tool
    assert result["result"] == "I created hello.txt." and result["num_turns"] >= 2
    first, second = main_requests(mock_upstream, key)[:2]
    assert any(t["function"]["name"] == "Write" for t in first["body"]["tools"])
    messages = second["body"]["messages"]
    calls = [m for m in messages if m.get("role") == "assistant" and m.get("tool_calls")]
    results = [m for m in messages if m.get("role") == "tool"]
    assert calls[-1]["tool_calls"][0]["id"] == "call_write_1"
    assert results[-1]["tool_call_id"] == "call_write_1"


def test_haiku_goes_to_the_small_model(claude, mock_upstream):
    key = mock_upstream.script({"sse": text_stream("small model here")})
    code, result, output = claude.run(f"quick one ({key})", "--model", "haiku")
    assert code == 0, output
    assert result["result"] == "small model here"
    assert main_requests(mock_upstream, key)[0]["body"]["model"] == "gpt-small"


def test_upstream_error_surfaces_as_a_clean_message(claude, mock_upstream):
    # A 400 (Claude Code does not retry it): the upstream's own words reach the user, in the
    # Anthropic error shape the CLI understands, never a traceback.
    key = mock_upstream.script(
        {"status": 400, "json": {"error": {"message": "The model gpt-big does not exist", "type": "invalid_request"}}}
    )
    code, result, output = claude.run(f"this will fail ({key})", timeout=90)
    assert code != 0 or result.get("is_error") is True, output
    text = json.dumps(result) + output
    assert "The model gpt-big does not exist" in text
    assert "Traceback" not in text and "Internal Server Error" not in text


def test_multi_turn_session(claude, mock_upstream):
    key = mock_upstream.script(
        {"sse": text_stream("The secret word is PLUM.")},
        {"sse": text_stream("You told me: PLUM.")},
    )
    code, first, output = claude.run(f"remember the word ({key})")
    assert code == 0, output
    code, second, output = claude.run("what was the word?", "--resume", first["session_id"])
    assert code == 0, output
    assert second["result"] == "You told me: PLUM."
    requests = main_requests(mock_upstream, key)
    history = json.dumps(requests[-1]["body"]["messages"])
    assert "The secret word is PLUM." in history and "what was the word?" in history  # turn one went back up


def test_websearch_results_reach_the_next_turn(claude, mock_upstream, search_engine):
    """Claude Code's WebSearch tool sends its own request with Anthropic's web_search server tool,
    forced; the proxy searches (a mock SearXNG) and answers in the server-tool shape, so the
    CLI's tool result for the main loop lists the results' links."""
    main, side = new_key(), new_key()
    mock_upstream.script(
        {"sse": tool_call_stream("call_ws_1", "WebSearch", {"query": f"{side} proxy news"})},
        {"sse": text_stream("Found it.")},
        key=main,
    )
    mock_upstream.script({"json": completion("The proxy shipped web search.")}, key=side)
    results = [
        {"url": "https://news.example.com/proxy", "title": "Proxy ships search", "content": "It searches now."},
        {"url": "https://blog.example.org/post", "title": "A blog post", "content": "More words."},
    ]
    search_engine.script({"json": {"query": "q", "results": results}}, key=side)
    code, result, output = claude.run(f"Use the WebSearch tool to find news ({main})", "--allowedTools", "WebSearch")
    assert code == 0, output
    assert result["result"] == "Found it."
    [searched] = search_engine.requests(side)
    assert searched["method"] == "GET" and side in searched["query"]
    [answered] = mock_upstream.requests(side)  # one model round: the search came first
    assert answered["body"]["messages"][-1]["role"] == "tool"
    turn2 = main_requests(mock_upstream, main)[1]
    [tool_result] = [m for m in turn2["body"]["messages"] if m.get("role") == "tool"]
    text = tool_result["content"] if isinstance(tool_result["content"], str) else json.dumps(tool_result["content"])
    assert "Links:" in text
    assert "https://news.example.com/proxy" in text and "https://blog.example.org/post" in text
    assert "The proxy shipped web search." in text


@pytest.fixture
def claude_without_search(node_modules, claude_version, mock_upstream, tmp_path):
    """The real CLI against a proxy with no search engine configured."""
    proxy = start_proxy(mock_upstream.base, tmp_path / "proxy")
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    try:
        yield Claude(node_modules / "node_modules/.bin/claude", proxy.base, home, work)
    finally:
        stop_proxy(proxy)


def test_websearch_without_an_engine_says_it_is_unavailable(claude_without_search, mock_upstream):
    main, side = new_key(), new_key()
    mock_upstream.script(
        {"sse": tool_call_stream("call_ws_2", "WebSearch", {"query": f"{side} anything"})},
        {"sse": text_stream("Search is not available here.")},
        key=main,
    )
    mock_upstream.script({"json": completion("from memory")}, key=side)
    code, _, output = claude_without_search.run(
        f"Use the WebSearch tool to find news ({main})", "--allowedTools", "WebSearch"
    )
    assert code == 0, output
    assert mock_upstream.requests(side) == []  # the model was never asked to answer from memory
    turn2 = main_requests(mock_upstream, main)[1]
    [tool_result] = [m for m in turn2["body"]["messages"] if m.get("role") == "tool"]
    text = tool_result["content"] if isinstance(tool_result["content"], str) else json.dumps(tool_result["content"])
    assert "unavailable" in text and "not available on this proxy" in text
    assert "from memory" not in text
