"""Every native pair gives exactly the reference's results (the pure-Python module is the reference).

Each test runs every case against every implementation that is importable and compares with
the reference. CI sets CCPROXY_REQUIRE_NATIVE=1 so a build that silently fell back to Python
fails here instead of passing with only one side tested.
"""

from __future__ import annotations

import json
import os
import time

import msgspec
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ccproxy import _native

PAIRS = {name: _native.variants(name) for name in _native.PAIRS}
REFERENCE = {name: impls["python"] for name, impls in PAIRS.items()}
NATIVE = {name: impls["cython"] for name, impls in PAIRS.items() if "cython" in impls}

# Odd Unicode on purpose: controls, quotes, backslashes, astral characters, lone surrogates.
odd_text = st.text(
    alphabet=st.one_of(
        st.characters(codec="utf-8"),
        st.sampled_from(['"', "\\", "\n", "\r", "\t", "\x00", "\x1f", "\x7f", "\u2028", "é", "日", "🎉"]),
        st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF),
    ),
    max_size=40,
)
json_like = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | odd_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(odd_text, inner, max_size=4),
    max_leaves=20,
)


def outcome(fn, *args):
    """The result, or the exception type and message, so errors must match too."""
    try:
        return ("ok", fn(*args))
    except Exception as exc:
        return ("error", type(exc), str(exc))


def test_native_variants_built():
    missing = sorted(set(_native.PAIRS) - set(NATIVE))
    if os.environ.get("CCPROXY_REQUIRE_NATIVE") == "1":
        assert not missing, f"Cython variants not built: {missing}"
    elif missing:
        pytest.skip(f"Cython variants not built: {missing} (only the references were tested)")
    expected = "cython" if _native.ENABLED else "python"
    assert set(_native.IMPLEMENTATIONS.values()) == {expected}


# --- sse ---------------------------------------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(st.integers(0, 10**6), st.sampled_from(["text_delta", "thinking_delta", "input_json_delta"]), odd_text)
def test_content_delta(index, delta_type, value):
    field = {"text_delta": "text", "thinking_delta": "thinking", "input_json_delta": "partial_json"}[delta_type]
    expected = outcome(REFERENCE["sse"].content_delta, index, delta_type, field, value)
    for impl in NATIVE.get("sse", REFERENCE["sse"]), REFERENCE["sse"]:
        assert outcome(impl.content_delta, index, delta_type, field, value) == expected
    if expected[0] == "ok":  # and it is the event a client can parse
        event = json.loads(expected[1].split(b"data: ", 1)[1])
        assert event["delta"][field] == value and event["index"] == index


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=20), st.binary(max_size=60))
def test_frame_event(name, data):
    expected = outcome(REFERENCE["sse"].frame_event, name, data)
    for impl in PAIRS["sse"].values():
        assert outcome(impl.frame_event, name, data) == expected


sse_pieces = st.lists(
    st.sampled_from(
        [
            b"data: ",
            b"data:",
            b"event: ",
            b"event:x",
            b": c",
            b"\n",
            b"\r\n",
            b"\n\n",
            b"{}",
            b"a:b",
            b"[DONE]",
            "é🎉".encode(),
            b"\r",
            b"data",
            b" ",
            b"\xff",
        ]
    ),
    max_size=30,
)


@settings(max_examples=500, deadline=None)
@given(sse_pieces, st.lists(st.integers(0, 200), max_size=6))
def test_sse_decoder_any_stream_any_split(pieces, cuts):
    raw = b"".join(pieces)
    points = sorted({c % (len(raw) + 1) for c in cuts})
    results = []
    for impl in PAIRS["sse"].values():
        dec = impl.SSEDecoder()
        got, last = [], 0
        for cut in [*points, len(raw)]:
            got.append(dec.feed(raw[last:cut]))
            got.append(dec.pending)
            last = cut
        got.append(dec.flush())
        results.append(got)
    assert all(r == results[0] for r in results)


# --- jsonsize ----------------------------------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(json_like)
def test_json_size_parity_and_exactness(value):
    expected = outcome(REFERENCE["jsonsize"].json_size, value)
    for impl in PAIRS["jsonsize"].values():
        assert outcome(impl.json_size, value) == expected
    try:
        encoded = orjson.dumps(value)
    except TypeError:  # surrogates: orjson refuses, the estimate still answers
        return
    if "float" not in repr(type(value)) and not _has_float(value):
        assert expected == ("ok", len(encoded))


def _has_float(value) -> bool:
    if isinstance(value, float):
        return True
    if isinstance(value, dict):
        return any(_has_float(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_float(v) for v in value)
    return False


def test_json_size_of_raw_and_claude_code_request(claude_code_fixture):
    body = claude_code_fixture("sonnet-thinking-write-turn2")
    for impl in PAIRS["jsonsize"].values():
        assert impl.json_size(msgspec.Raw(b'{"a":1}')) == 7
        assert impl.json_size(body) == len(orjson.dumps(body))


# --- lru ---------------------------------------------------------------------------------------

lru_ops = st.lists(
    st.one_of(
        st.tuples(st.just("put"), st.integers(0, 12), st.integers(0, 40)),
        st.tuples(st.just("get"), st.integers(0, 12), st.just(0)),
        st.tuples(st.just("pop"), st.integers(0, 12), st.just(0)),
        st.tuples(st.just("clear"), st.just(0), st.just(0)),
        st.tuples(st.just("tick"), st.just(0), st.integers(0, 5)),  # the clock moves on
    ),
    max_size=80,
)


@settings(max_examples=400, deadline=None)
@given(st.integers(1, 6), st.integers(1, 100), st.sampled_from([0.0, 2.0, 7.5]), lru_ops)
def test_lru_parity(max_entries, max_bytes, ttl, ops):
    traces = []
    for impl in PAIRS["lru"].values():
        cache = impl.LRUCache(max_entries, max_bytes, ttl)
        now = 1000.0
        trace = []
        for op, key, size in ops:
            if op == "put":
                trace.append(cache.put(key, f"v{key}-{size}", size, now))
            elif op == "get":
                trace.append(cache.get(key, "missing", now))
            elif op == "pop":
                trace.append(cache.pop(key, "missing"))
            elif op == "tick":
                now += size
            else:
                cache.clear()
            counters = (cache.evictions, cache.expirations, cache.hits, cache.misses)
            trace.append((cache.keys(), len(cache), cache.total_bytes, counters))
            assert len(cache) <= max_entries and cache.total_bytes <= max_bytes
        traces.append(trace)
    assert all(t == traces[0] for t in traces)


def test_lru_semantics():
    for impl in PAIRS["lru"].values():
        cache = impl.LRUCache(2, 100)
        assert cache.put("a", 1, 10) and cache.put("b", 2, 10)
        assert cache.get("a") == 1  # a becomes most recent
        cache.put("c", 3, 10)  # evicts b, the least recently used
        assert cache.keys() == ["a", "c"] and "b" not in cache and cache.evictions == 1
        assert not cache.put("huge", 4, 101) and "huge" not in cache  # bigger than the whole cache
        cache.put("d", 5, 95)  # byte bound evicts until it fits
        assert cache.keys() == ["d"] and cache.total_bytes == 95
        with pytest.raises(ValueError):
            impl.LRUCache(0, 10)
        with pytest.raises(ValueError):
            impl.LRUCache(1, 10, -1.0)


def test_lru_expiry_uses_the_monotonic_clock():
    # The Cython twin reads the coarse monotonic clock (kernel-tick resolution, <= 10 ms behind),
    # so the margins here are wider than a tick.
    for impl in PAIRS["lru"].values():
        cache = impl.LRUCache(10, 100, ttl=0.2)
        cache.put("a", 1, 10)
        assert cache.get("a") == 1 and cache.hits == 1
        time.sleep(0.25)
        assert cache.get("a") is None and "a" not in cache
        assert (cache.expirations, cache.misses, cache.total_bytes) == (1, 1, 0)
        # An explicit clock agrees with time.monotonic().
        cache.put("b", 2, 10, time.monotonic())
        assert cache.get("b", None, time.monotonic() + 0.1) == 2
        assert cache.get("b", None, time.monotonic() + 0.3) is None
        cache.put("c", 3, 10)  # stored on the implementation's own clock, read with time.monotonic()
        assert cache.get("c", None, time.monotonic() + 0.15) == 3
        assert cache.get("c", None, time.monotonic() + 0.25) is None


# --- cachekey ----------------------------------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(json_like)
def test_cache_key_parity(value):
    expected = outcome(REFERENCE["cachekey"].cache_key, value)
    for impl in PAIRS["cachekey"].values():
        assert outcome(impl.cache_key, value) == expected


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(odd_text, json_like, min_size=2, max_size=6), st.randoms())
def test_cache_key_ignores_key_order_and_volatile_fields(value, rnd):
    shuffled_items = list(value.items())
    rnd.shuffle(shuffled_items)
    shuffled = dict(shuffled_items)
    for impl in PAIRS["cachekey"].values():
        key = impl.cache_key(value)
        assert impl.cache_key(shuffled) == key
        assert impl.cache_key({**value, "metadata": {"user_id": "someone"}, "stream": True}) == impl.cache_key(
            {k: v for k, v in value.items() if k not in ("metadata", "stream")}
        )


def test_cache_key_distinguishes_what_matters(claude_code_fixture):
    body = claude_code_fixture("opus-say-hi")
    for impl in PAIRS["cachekey"].values():
        base = impl.cache_key(body)
        assert impl.cache_key({**body, "max_tokens": body["max_tokens"] + 1}) != base
        assert impl.cache_key({**body, "model": "claude-haiku-4-5"}) != base
        assert impl.cache_key([1, "1"]) != impl.cache_key(["1", 1]) != impl.cache_key(["11"])
        no_cache_control = json.loads(json.dumps(body).replace('"cache_control"', '"cache_control_x"'))
        assert impl.cache_key(no_cache_control) != base  # renamed key is content, not the hint
        assert impl.cache_key(body) == base


# --- text_of_chunk: a text-only Chat chunk read without decoding it ----------------------------

TEXT_CHUNK_CASES = [
    b'{"id":"x","choices":[{"index":0,"delta":{"content":"tok "},"finish_reason":null}]}',
    b'{"id":"x","choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}',
    b'{"choices":[{"index":0,"delta":{"content":"a\\nb \\u00fc"},"finish_reason":null}]}',
    '{"choices":[{"index":0,"delta":{"content":"héllo"},"finish_reason":null}]}'.encode(),
    b'{"choices":[{"index":0,"delta":{"content":"q\\"x"},"finish_reason":null}]}',  # a quote: full path
    b'{"choices":[{"index":0,"delta":{"content":"bad\x01"},"finish_reason":null}]}',  # not JSON
    b'{"choices":[{"index":0,"delta":{"content":"\xff\xfe"},"finish_reason":null}]}',  # not UTF-8
    b'{"choices":[{"index":0,"delta":{"content":"\xed\xa0\x80"},"finish_reason":null}]}',  # a surrogate
    b'{"choices":[{"index":0,"delta":{"content":"x"},"finish_reason":"stop"}]}',
    b'{"choices":[{"index":0,"delta":{"content":"x"},"finish_reason":null}],"usage":{"prompt_tokens":1}}',
    b'{"choices":[{"index":0,"delta":{"content":"x"},"finish_reason":null}],"usage":null}',
    b'{"choices":[{"index":0,"delta":{"content":"\\ud83d\\ude00"},"finish_reason":null}]}',
    b'{"choices":[{"index":0,"delta":{"content":"\\ud83d"},"finish_reason":null}]}',  # lone surrogate
    b'{"choices":[{"index":0,"delta":{"content":"\\x"},"finish_reason":null}]}',  # a bad escape
    b'{"choices":[{"index":0,"delta":{"content":"x","tool_calls":[]},"finish_reason":null}]}',
    b'{"choices":[{"index":0,"delta":{"content":"x"},"finish_reason":null}],"error":{"message":"m"}}',
    b'{"choices": [{"index": 0, "delta": {"content": "spaced"}, "finish_reason": null}]}',
    b"",
    b'{"choices":[{"index":0,"delta":{"content":"abc',
]


def recorded_chunk_lines() -> list[bytes]:
    """Every chunk line of the dialect corpus (real providers' streams)."""
    from pathlib import Path

    folder = Path(__file__).resolve().parents[1] / "dialects" / "recordings"
    return [line for p in sorted(folder.glob("*.chunks.txt")) for line in p.read_bytes().split(b"\n") if line.strip()]


def test_text_of_chunk_parity_on_cases_and_recordings():
    lines = TEXT_CHUNK_CASES + recorded_chunk_lines()
    taken = 0
    for line in lines:
        expected = outcome(REFERENCE["sse"].text_of_chunk, line)
        for impl in PAIRS["sse"].values():
            assert outcome(impl.text_of_chunk, line) == expected, line
        if expected[1] is not None:  # what it took is exactly the chunk's text
            taken += 1
            assert expected[1] == orjson.loads(line)["choices"][0]["delta"]["content"]
    assert taken >= 8  # (real streams do use the compact text shape: OpenAI-style servers)


@settings(max_examples=400, deadline=None)
@given(odd_text, st.booleans(), st.booleans())
def test_text_of_chunk_parity_on_any_text(text, role, logprobs):
    delta = {"role": "assistant", "content": text} if role else {"content": text}
    choice = {"index": 0, "delta": delta, **({"logprobs": None} if logprobs else {}), "finish_reason": None}
    try:
        line = orjson.dumps({"id": "chatcmpl-1", "object": "chat.completion.chunk", "choices": [choice]})
    except orjson.JSONEncodeError:  # (a lone surrogate cannot be encoded)
        return
    expected = outcome(REFERENCE["sse"].text_of_chunk, line)
    for impl in PAIRS["sse"].values():
        assert outcome(impl.text_of_chunk, line) == expected
    assert expected[1] in (None, text)
    if '"' not in text:
        assert expected[1] == text


# --- text_run: the events of a run of text-only chunks, in one call ---------------------------


def test_text_run_parity_and_meaning():
    """Both twins agree on every prefix of the corpus and the cases, and a run's events are
    those of its chunks' texts, one content_delta each (empty texts send nothing)."""
    items = [(None, line) for line in TEXT_CHUNK_CASES + recorded_chunk_lines()]
    items += [("error", b'{"choices":[{"index":0,"delta":{"content":"x"},"finish_reason":null}]}'), (None, b"[DONE]")]
    reference = REFERENCE["sse"]
    for start in range(len(items)):
        expected = reference.text_run(items, start, 3)
        for impl in PAIRS["sse"].values():
            assert impl.text_run(items, start, 3) == expected
        events, used, chars = expected
        texts = [reference.text_of_chunk(data) for _, data in items[start : start + used]]
        assert None not in texts and chars == sum(len(t) for t in texts)
        assert events == b"".join(reference.content_delta(3, "text_delta", "text", t) for t in texts if t)
        if start + used < len(items):  # it stopped at a pair that is not a text-only chunk
            event, data = items[start + used]
            assert event is not None or reference.text_of_chunk(data) is None
