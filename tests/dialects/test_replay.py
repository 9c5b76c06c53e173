"""Real providers' recorded answers (recordings/, SOURCES.md) replayed byte for byte through the
real proxy: every case checks the Anthropic output a client gets (SSE grammar, text, thinking,
tool calls, usage, stop_reason), streaming and not (issue 17). Adding a recording: README.md."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tests.support.proxies import ask, post, start_proxy, stop_proxy
from tests.support.sse import assemble, parse_sse

from . import recordings

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Expect:
    text: str = ""
    thinking: str | tuple[str, str] = ""  # exact, or (starts with, ends with)
    tools: list[tuple[str, dict]] = field(default_factory=list)
    stop_reason: str = "end_turn"
    usage: tuple[int, int, int] | None = None  # input, output, cache read
    error: str | None = None  # the stream ends in an error event carrying this


MISTRAL_STREAM_THINKING = (
    "Okay, the user is asking for the product of 17 and 23. I need to calculate this multiplication. Let me break it "
    "down:\n\nFirst, I recall that 17 multiplied by 20 is 340 (since 17 * 20 = 340).\nThen, I need to add 17 "
    "multiplied by 3, which is 51 (since 17 * 3 = 51).\nNow, add these two results together: 340 + 51 = 391.\n\nSo, "
    "17 * 23 = 391."
)
WEATHER_SF = [("weather", {"location": "San Francisco"})]

EXPECTED: dict[str, Expect] = {
    # reasoning tokens outside completion_tokens (total = prompt + completion + reasoning), cached prompt
    "xai-grok-3-mini-text.chunks.txt": Expect("Hello", "First, the user said", usage=(1, 291, 11)),
    "xai-grok-3-mini-tool-call.chunks.txt": Expect(
        "", "First, the user is", WEATHER_SF, "tool_use", usage=(1, 222, 290)
    ),
    # a whole call in one chunk; usage both in usage and x_groq; no newline at the end
    "groq-llama-3.3-70b-tool-call.chunks.txt": Expect(
        tools=[("weather", {})], stop_reason="tool_use", usage=(210, 15, 0)
    ),
    "groq-llama-3.3-70b-tool-call.json": Expect(tools=[("weather", {})], stop_reason="tool_use", usage=(218, 15, 0)),
    # Azure: a first chunk with empty choices and prompt_filter_results, a content-filter chunk
    "azure-gpt-4-text.chunks.txt": Expect("Hello World", usage=(15, 5, 0)),
    # later fragments with id "", an empty fragment after the arguments
    "alibaba-qwen3-max-tool-call.chunks.txt": Expect(tools=WEATHER_SF, stop_reason="tool_use", usage=(295, 22, 0)),
    # reasoning_content, then a streamed call; cached tokens in both shapes; reasoning inside completion
    "deepseek-v4-flash-tool-call.chunks.txt": Expect(
        "",
        "The user asks about the weather in San Francisco. I should use the weather tool.",
        WEATHER_SF,
        "tool_use",
        usage=(118, 61, 256),
    ),
    # content as a list of parts: thinking parts, then text parts, then a plain string
    "mistral-small-thinking.chunks.txt": Expect("391", MISTRAL_STREAM_THINKING, usage=(28, 139, 0)),
    "mistral-small-thinking.json": Expect(
        "391",
        ("Okay, the user is asking for the product of 17 and 23.", "17 multiplied by 23 equals 391."),
        usage=(28, 94, 0),
    ),
    # usage inside the finishing choice and again at the top level; cached prompt
    "moonshot-kimi-k3-reasoning.chunks.txt": Expect(
        "OK",
        'The user is asking me to reply with exactly "OK". This is a simple request with no ambiguity. I should just '
        'respond with "OK" and nothing else.',
        usage=(0, 50, 90),
    ),
    # cumulative usage in every chunk (the last counts), a "chat.completion.done" final chunk
    "perplexity-sonar-text.chunks.txt": Expect("**EcoVista Day**[1][5]", usage=(11, 434, 0)),
    # ": OPENROUTER PROCESSING" comments, reasoning + reasoning_details, then an error object
    "openrouter-minimax-m2-stream-error.yaml": Expect(
        "", "We need to respond to a greeting. The user", error="Token limit reached"
    ),
    # DeepSeek-R1 through the Hugging Face router (Together): <think>…</think> in the content
    "huggingface-together-deepseek-r1.yaml": Expect(
        "Hello! \U0001f44b How can I help you today?",
        ('\nHmm, the user just said "hello".', "Keeping it simple but friendly feels right here.\n"),
        usage=(4, 197, 0),
    ),
    "cerebras-llama-3.3-70b-text.yaml": Expect("The capital of France is Paris.", usage=(42, 8, 0)),
    "openai-gpt-4o-text.yaml": Expect(
        "Hello! I'm just a computer program, so I don't have feelings, but I'm here and ready to help you. How can I "
        "assist you today?",
        usage=(14, 30, 0),
    ),
}


def test_every_recording_has_expectations_and_a_source():
    sources = (recordings.HERE.parent / "SOURCES.md").read_text()
    assert set(recordings.names()) == set(EXPECTED)
    for name in recordings.names():
        assert f"`{name}`" in sources, f"{name} is not in SOURCES.md"
    providers = {name.split("-")[0] for name in EXPECTED}
    assert len(providers) >= 12, providers


@pytest.fixture(scope="module")
def proxy(mock_upstream, tmp_path_factory):
    running = start_proxy(mock_upstream.base, tmp_path_factory.mktemp("dialects"))
    yield running
    stop_proxy(running)


def replay_spec(rec: recordings.Recording, split: int | None) -> dict:
    if rec.stream:
        body = rec.body
        if split is None:  # one network write per event, as the providers send them
            pieces = [piece + b"\n\n" for piece in body.split(b"\n\n") if piece]
        else:
            pieces = [body[i : i + split] for i in range(0, len(body), split)]
        return {
            "status": rec.status,
            "raw_hex": [p.hex() for p in pieces],
            "headers": {"content-type": rec.content_type},
        }
    return {"status": rec.status, "text": rec.body.decode(), "headers": {"content-type": rec.content_type}}


def replay(proxy, key: str, stream: bool) -> httpx.Response:
    return post(proxy, "/v1/messages", ask(key, max_tokens=1024, **({"stream": True} if stream else {})))


def check(message: dict[str, Any], expect: Expect) -> None:
    blocks = message["content"]
    text = "".join(b["text"] for b in blocks if b["type"] == "text")
    thinking = "".join(b["thinking"] for b in blocks if b["type"] == "thinking")
    tools = [(b["name"], b["input"]) for b in blocks if b["type"] == "tool_use"]
    assert text == expect.text
    if isinstance(expect.thinking, tuple):
        assert thinking.startswith(expect.thinking[0]) and thinking.endswith(expect.thinking[1]), thinking
    else:
        assert thinking == expect.thinking
    assert tools == expect.tools
    assert all(b["id"].startswith(("toolu_", "call_")) or b["id"] for b in blocks if b["type"] == "tool_use")
    if expect.error is None:
        assert message["stop_reason"] == expect.stop_reason
        if expect.usage is not None:
            usage = message["usage"]
            got = (usage["input_tokens"], usage["output_tokens"], usage.get("cache_read_input_tokens", 0))
            assert got == expect.usage


CASES = [
    pytest.param(name, split, id=f"{name}{'' if split is None else f'-split{split}'}")
    for name in sorted(EXPECTED)
    for split in (None, 7)
    if recordings.load(name).stream or split is None
]


@pytest.mark.parametrize(("name", "split"), CASES)
def test_recording_through_the_proxy(proxy, mock_upstream, name, split):
    rec = recordings.load(name)
    expect = EXPECTED[name]
    key = mock_upstream.script(replay_spec(rec, split))
    modes = [True] if rec.stream else [False, True]  # a JSON answer also to a streaming client
    for stream in modes:
        resp = replay(proxy, key, stream)
        if stream:
            assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
            events = parse_sse(resp.content)  # strict grammar (tests/support/sse.py)
            message = assemble(events)
            if expect.error is not None:
                assert events[-1][0] == "error" and expect.error in message["error"]["message"]
                assert "message_stop" not in [e[0] for e in events]
            else:
                assert events[-1][0] == "message_stop" and "error" not in message
            check(message, expect)
        else:
            assert resp.status_code == 200, resp.text
            message = resp.json()
            assert message["type"] == "message" and message["model"] == "claude-sonnet-5"
            check(message, expect)
            json.dumps(message)  # (plain JSON all the way)
