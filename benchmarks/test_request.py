"""Request-side ratios for the gate, same run: what a Claude Code turn costs to translate.

* ``request.repeated_turn``: the 115 KB recorded turn decoded, translated to Chat and encoded,
  as a first turn (nothing remembered) against a repeated turn (its tools and system reused,
  schemas/spans.py);
* ``request.translate_turn``: the repeated turn's translation against a JSON round trip of the
  same body (orjson loads + dumps), the least any hop that reads a body could do.
"""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest

from ccproxy.routing import Route
from ccproxy.schemas import anthropic
from ccproxy.schemas.spans import SpanReuse
from ccproxy.translate import chat_request

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests/fixtures/claude-code/sonnet-thinking-write-turn2.json"
TURN = orjson.dumps({**json.loads(FIXTURE.read_text())["body"], "stream": True})
ROUTE = Route("claude-sonnet-5", "gpt-bench", False, None)


def translate(spans: SpanReuse, body: bytes) -> bytes:
    req = spans.decode(body)
    chat_request.request_spans = spans  # (the translator's memo is the decoder's)
    return chat_request.encode_chat_request(chat_request.build_chat_request(req, ROUTE), req)


def first_turn() -> bytes:
    return translate(SpanReuse(anthropic._messages_decoder.decode), TURN)


_warm = SpanReuse(anthropic._messages_decoder.decode)


def repeated_turn() -> bytes:
    return translate(_warm, TURN)


def json_roundtrip() -> bytes:
    return orjson.dumps(orjson.loads(TURN))


@pytest.fixture(autouse=True)
def _restore_memo():
    yield
    chat_request.request_spans = anthropic.request_spans


@pytest.mark.parametrize("kind", ["repeated", "first"])
def test_repeated_turn(gated, kind):
    fn = repeated_turn if kind == "repeated" else first_turn
    assert gated("request.repeated_turn", fn) == first_turn()


@pytest.mark.parametrize("kind", ["translate", "json_roundtrip"])
def test_translate_turn(gated, kind):
    fn = repeated_turn if kind == "translate" else json_roundtrip
    assert len(gated("request.translate_turn", fn)) > 100_000
