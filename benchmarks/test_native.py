"""Micro-benchmarks of each native op, Cython and fallback in the same run (inputs as in real use).

Run: ``pytest benchmarks/ --benchmark-only`` (the gate in conftest.py checks the ratios).
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import pytest

from ccproxy import _native

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import mock_openai  # noqa: E402

IMPLS = {name: _native.variants(name) for name in _native.PAIRS}
CLAUDE_CODE = json.loads((ROOT / "tests/fixtures/claude-code/sonnet-thinking-write-turn2.json").read_text())["body"]
# One network read of a real upstream answer: 200 Chat chunks as the bench mock sends them.
UPSTREAM_READ = b"".join(mock_openai.sse_events(200, "tok "))
TEXT_DELTAS = ["Hello", " world", ", this is", " a streamed", " answer with ünïcode", ' and "quotes"\n', "tok "]


def impls(pair: str) -> list:
    return [
        pytest.param(
            IMPLS[pair].get(kind), id=kind, marks=pytest.mark.skipif(kind not in IMPLS[pair], reason="not built")
        )
        for kind in ("cython", "python")
    ]


@pytest.mark.parametrize("impl", impls("sse"))
def test_sse_decode_stream(gated, impl):
    def run():
        return impl.SSEDecoder().feed(UPSTREAM_READ)

    assert len(gated("sse.decode_stream", run)) == 204


@pytest.mark.parametrize("impl", impls("sse"))
def test_sse_content_delta(gated, impl):
    fn = impl.content_delta

    def run():
        for i, text in enumerate(TEXT_DELTAS):
            fn(i, "text_delta", "text", text)

    gated("sse.content_delta", run)


@pytest.mark.parametrize("impl", impls("sse"))
def test_sse_frame_event(gated, impl):
    data = (
        b'{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":12}}'
    )
    fn = impl.frame_event
    rounds = range(100)

    def run():  # a tight loop of direct calls, as at a call site; per-round overhead amortized
        for _ in rounds:
            fn("message_delta", data)

    gated("sse.frame_event", run)


# A text-only chunk as OpenAI sends them (most chunks of a stream): read without decoding it.
TEXT_CHUNK = (
    b'{"id":"chatcmpl-AbC123","object":"chat.completion.chunk","created":1733000000,"model":"gpt-4o-2024-08-06",'
    b'"system_fingerprint":"fp_0705bf87c0","choices":[{"index":0,"delta":{"content":" the"},"logprobs":null,'
    b'"finish_reason":null}]}'
)


@pytest.mark.parametrize("impl", impls("sse"))
def test_sse_text_of_chunk(gated, impl):
    fn = impl.text_of_chunk
    rounds = range(100)

    def run():
        for _ in rounds:
            fn(TEXT_CHUNK)

    gated("sse.text_of_chunk", run)


@pytest.mark.parametrize("impl", impls("sse"))
def test_sse_text_run(gated, impl):
    items = impl.SSEDecoder().feed(UPSTREAM_READ)  # one read: role chunk, 200 text chunks, the end

    def run():
        return impl.text_run(items, 0, 0)

    assert gated("sse.text_run", run)[1] == 201


@pytest.mark.parametrize("impl", impls("jsonsize"))
def test_jsonsize_claude_code_request(gated, impl):
    assert gated("jsonsize.claude_code_request", impl.json_size, CLAUDE_CODE) > 100_000


@pytest.mark.parametrize("impl", impls("cachekey"))
def test_cachekey_claude_code_request(gated, impl):
    assert len(gated("cachekey.claude_code_request", impl.cache_key, CLAUDE_CODE)) == 32


# A cache's real traffic is skewed: 80 % of 2 000 lookups go to 200 hot keys, the rest spread over
# 3 000 cold ones (a miss stores the value, evicting from the 1 000-entry cache). Deterministic.
# Entries expire as in the response cache (CCPROXY_CACHE_TTL), so each lookup reads the clock.
CACHE_TTL = 300.0
_rng = random.Random(7)
LRU_TRAFFIC = [f"key-{_rng.randrange(200) if _rng.random() < 0.8 else 200 + _rng.randrange(3000)}" for _ in range(2000)]


@pytest.mark.parametrize("impl", impls("lru"))
def test_lru_evict_heavy(gated, impl):
    cache = impl.LRUCache(1000, 10**9, CACHE_TTL)
    keys = [f"key-{i}" for i in range(1500)]  # more keys than entries: every lookup misses and evicts

    def run():
        get, put = cache.get, cache.put
        for k in keys:
            if get(k) is None:
                put(k, k, 100)

    gated("lru.evict_heavy", run)


@pytest.mark.parametrize("impl", impls("lru"))
def test_lru_hit_heavy(gated, impl):
    cache = impl.LRUCache(1000, 10**9, CACHE_TTL)

    def run():
        get, put = cache.get, cache.put
        for k in LRU_TRAFFIC:
            if get(k) is None:
                put(k, k, 100)

    gated("lru.hit_heavy", run)
