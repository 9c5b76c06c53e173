"""Span reuse (schemas/spans.py): a repeated Claude Code turn decodes and translates only what
changed, and every body decodes to exactly what a whole decode gives, however it is built."""

from __future__ import annotations

import copy
import json
import re

import msgspec
import orjson
import pytest

from ccproxy.routing import Route, UpstreamOptions
from ccproxy.schemas.anthropic import _messages_decoder
from ccproxy.schemas.spans import MIN_BODY, PER_KEY, SpanReuse
from ccproxy.translate import chat_request
from ccproxy.translate.chat_request import build_chat_request, encode_chat_request
from tests.support.fixtures import CLAUDE_CODE_FIXTURES, load_fixture

whole = _messages_decoder.decode
BIG = "sonnet-thinking-write-turn2"  # 115 KB: 24 tools, a long system


def fresh() -> SpanReuse:
    return SpanReuse(whole)


def next_turn(body: dict, text: str) -> dict:
    """The same conversation one turn later: the history grows, tools and system stay."""
    out = copy.deepcopy(body)
    out["messages"] += [
        {"role": "assistant", "content": [{"type": "text", "text": "ok"}]},
        {"role": "user", "content": [{"type": "text", "text": text}]},
    ]
    return out


@pytest.mark.parametrize("name", CLAUDE_CODE_FIXTURES)
@pytest.mark.parametrize("dumps", [orjson.dumps, lambda b: json.dumps(b).encode()], ids=["compact", "spaced"])
def test_every_recorded_request_decodes_as_whole(name, dumps):
    spans = fresh()
    body = load_fixture(name)
    for turn in range(3):
        raw = dumps(next_turn(body, f"turn {turn}") if turn else body)
        assert spans.decode(raw) == whole(raw)
    if len(dumps(body)) >= MIN_BODY and body.get("tools"):
        assert spans.hits >= 2  # turns 2 and 3 reused the tools (and the system where long)


def test_a_repeated_turn_reuses_the_decoded_values():
    spans = fresh()
    body = load_fixture(BIG)
    first = spans.decode(orjson.dumps(body))
    second = spans.decode(orjson.dumps(next_turn(body, "again")))
    assert second.tools is first.tools and second.system is first.system
    assert spans.hits == 2
    assert len(second.messages) == len(first.messages) + 2


def test_one_changed_byte_is_a_miss_then_learnt():
    spans = fresh()
    body = load_fixture(BIG)
    first = spans.decode(orjson.dumps(body))
    changed = copy.deepcopy(body)
    changed["tools"][3]["description"] += "!"
    raw = orjson.dumps(changed)
    req = spans.decode(raw)
    assert req == whole(raw) and req.tools is not first.tools and req.tools[3].description.endswith("!")
    assert req.system is first.system  # the system span was still the same
    again = spans.decode(orjson.dumps(next_turn(changed, "x")))
    assert again.tools is req.tools


def test_a_copy_of_the_span_elsewhere_is_not_taken_for_it():
    """The tools' bytes again inside metadata, after the real ones: the backwards search finds
    the copy first, the sentinel comes back in the wrong place, and the body decodes whole."""
    spans = fresh()
    body = load_fixture(BIG)
    spans.decode(orjson.dumps(body))
    tricky = {**body, "metadata": {"tools": body["tools"]}}
    raw = orjson.dumps(tricky)
    req = spans.decode(raw)
    assert req == whole(raw)
    assert req.metadata == {"tools": body["tools"]}
    only_nested = {k: v for k, v in tricky.items() if k != "tools"}
    raw = orjson.dumps(only_nested)
    req = spans.decode(raw)
    assert req == whole(raw) and req.tools is None and req.metadata["tools"] == body["tools"]


def test_a_span_inside_a_string_is_not_cut():
    spans = fresh()
    body = load_fixture(BIG)
    spans.decode(orjson.dumps(body))
    raw = orjson.dumps(body["tools"])
    # the span's bytes, unescaped, cannot sit inside a JSON string; a body that pretends they do
    # is malformed and must fail exactly as a whole decode fails
    bad = orjson.dumps({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": "x"}]})[:-1]
    bad += b',"note":"' + raw + b'"}'
    with pytest.raises(msgspec.DecodeError) as reused:
        spans.decode(bad)
    with pytest.raises(msgspec.DecodeError) as plain:
        whole(bad)
    assert str(reused.value) == str(plain.value)


def test_malformed_and_invalid_bodies_fail_as_a_whole_decode_does():
    spans = fresh()
    body = load_fixture(BIG)
    spans.decode(orjson.dumps(body))
    good = orjson.dumps(next_turn(body, "x"))
    cases = [
        good[:100] + b"\x00" + good[101:],  # a control byte early in the body
        re.sub(rb'"max_tokens":\d+', b'"max_tokens":"many"', good),
        good[:-1],  # truncated
        good.replace(b'"role":"user"', b'"role":"robot"', 1),
    ]
    for raw in cases:
        with pytest.raises((msgspec.DecodeError, msgspec.ValidationError)) as reused:
            spans.decode(raw)
        with pytest.raises((msgspec.DecodeError, msgspec.ValidationError)) as plain:
            whole(raw)
        assert type(reused.value) is type(plain.value) and str(reused.value) == str(plain.value)


def test_small_bodies_are_decoded_whole():
    spans = fresh()
    raw = orjson.dumps(load_fixture("opus-say-hi"))
    if len(raw) < MIN_BODY:
        spans.decode(raw)
        spans.decode(raw)
        assert spans.hits == 0


def test_remembered_spans_are_bounded():
    spans = fresh()
    body = load_fixture(BIG)
    for i in range(PER_KEY + 3):
        variant = copy.deepcopy(body)
        variant["tools"][0]["description"] += f" v{i}"
        spans.decode(orjson.dumps(variant))
    assert len(spans._spans["tools"]) == PER_KEY
    assert len(spans._by_value) <= 2 * PER_KEY


def test_translations_are_made_once_per_span(monkeypatch):
    """A repeated turn's tools are converted and encoded once; the upstream bytes are those of a
    translation without reuse, with and without schema keywords to drop."""
    calls = []
    convert = chat_request.convert_tools
    monkeypatch.setattr(chat_request, "convert_tools", lambda *a: calls.append(1) or convert(*a))
    spans = fresh()
    monkeypatch.setattr(chat_request, "request_spans", spans)
    body = load_fixture(BIG)
    for drop in ((), ("format", "$schema")):
        route = Route("claude-sonnet-4-5", "gpt-x", False, None, UpstreamOptions(schema_drop_keys=drop))
        for turn in range(3):
            raw = orjson.dumps(next_turn(body, f"t{turn}"))
            req = spans.decode(raw)
            before = len(calls)
            out = encode_chat_request(build_chat_request(req, route), req, drop)
            reused = len(calls) - before
            assert orjson.loads(out) == orjson.loads(orjson.dumps(build_chat_request(whole(raw), route)))
            assert reused == (1 if turn == 0 else 0)  # the first turn's decoded tools are remembered


# --- the stable start of a conversation's messages -------------------------------------------


def session(turns: int, spaced: bool = False):
    """A long Claude Code session, turn by turn: the history grows by an answer and a question,
    and the cache_control marker moves to the newest question (as Claude Code moves it)."""
    body = copy.deepcopy(load_fixture(BIG))
    for message in body["messages"]:
        if isinstance(message["content"], list):
            for block in message["content"]:
                block.pop("cache_control", None)
    dumps = (lambda b: json.dumps(b).encode()) if spaced else orjson.dumps
    for turn in range(turns):
        if turn:
            body["messages"][-1]["content"][0].pop("cache_control")  # (moves to the newest question)
        answer = [{"type": "text", "text": f"answer {turn} " + "lorem ipsum " * 100}]
        if turn % 3 == 1:
            answer.append({"type": "tool_use", "id": f"toolu_{turn}", "name": "Bash", "input": {"command": "ls"}})
        body["messages"].append({"role": "assistant", "content": answer})
        question = {"type": "text", "text": f"question {turn}", "cache_control": {"type": "ephemeral"}}
        if turn % 3 == 1:
            question = {"type": "tool_result", "tool_use_id": f"toolu_{turn}", "content": "a\nb"}
            question["cache_control"] = {"type": "ephemeral"}
        body["messages"].append({"role": "user", "content": [question]})
        yield dumps(body)


def all_but_the_last(turns) -> tuple[SpanReuse, bytes]:
    """A decoder that has seen every turn of a session but the last, and that last turn."""
    spans = fresh()
    *seen, last = turns
    for raw in seen:
        spans.decode(raw)
    return spans, last


def test_a_long_session_decodes_only_its_new_messages():
    spans = fresh()
    previous = None
    for raw in session(30):
        req = spans.decode(raw)
        assert req == whole(raw)
        if previous is not None:  # the start of the history is the previous turn's own objects
            assert req.messages[0] is previous.messages[0]
            assert req.messages[len(previous.messages) - 2] is previous.messages[-2]
        previous = req
    # every turn after the first reused all but the newest messages
    assert spans.history_hits >= sum(range(2, 60, 2)) - 2


def test_spaced_json_history_is_not_remembered_but_decodes():
    spans = fresh()
    for raw in session(4, spaced=True):
        assert spans.decode(raw) == whole(raw)
    assert spans.history_hits == 0


def test_an_edited_history_is_a_miss():
    """A rewind or a compaction changes an early message: nothing stale is reused."""
    spans, last = all_but_the_last(session(6))
    edited = orjson.loads(last)
    edited["messages"][-6]["content"][0]["text"] += " (edited)"
    raw = orjson.dumps(edited)
    req = spans.decode(raw)
    assert req == whole(raw) and req.messages[-6].content[0]["text"].endswith(" (edited)")
    shorter = {**edited, "messages": edited["messages"][:-4]}
    raw = orjson.dumps(shorter)
    assert spans.decode(raw) == whole(raw)


def test_a_history_is_taken_only_at_the_top_level_messages():
    spans, last = all_but_the_last(session(3))
    body = orjson.loads(last)
    # the same messages again, as a value inside metadata, and the real ones different
    tricky = {"model": body["model"], "metadata": {"messages": body["messages"]}, **body}
    tricky["messages"] = [{"role": "user", "content": "something else"}]
    raw = orjson.dumps(tricky)
    req = spans.decode(raw)
    assert req == whole(raw) and len(req.messages) == 1


@pytest.mark.parametrize("style", ["openai", "deepseek"])
def test_a_long_sessions_translation_is_that_of_each_whole_body(monkeypatch, style):
    """Each turn resumes the translation of the remembered start, including the tool calls
    still awaiting results at its end: the Chat body is the one a fresh translation gives."""
    spans = fresh()
    monkeypatch.setattr(chat_request, "request_spans", spans)
    route = Route("claude-sonnet-4-5", "gpt-x", False, None, UpstreamOptions(reasoning_style=style))
    calls = []
    convert_range = chat_request._convert_range

    def counted(messages, start, stop, *rest):
        calls.append(stop - start)
        return convert_range(messages, start, stop, *rest)

    monkeypatch.setattr(chat_request, "_convert_range", counted)
    resumed_with_pending = 0
    for raw in session(12):
        req = spans.decode(raw)
        calls.clear()
        out = encode_chat_request(build_chat_request(req, route), req)
        translated = sum(calls)
        assert orjson.loads(out) == orjson.loads(orjson.dumps(build_chat_request(whole(raw), route)))
        assert translated <= 4 or translated == len(req.messages)  # a turn translates what is new
        states = [state for h in spans._histories for state in h.derived.values()]
        resumed_with_pending += any(state[1] for state in states)
    assert resumed_with_pending  # (a remembered start that ends on a tool call awaiting its result)


def test_huge_bodies_are_not_kept_as_history(monkeypatch):
    from ccproxy.schemas import spans as module

    monkeypatch.setattr(module, "MAX_HISTORY_BODY", 64 * 1024)
    spans = fresh()
    for raw in session(8):
        assert spans.decode(raw) == whole(raw)
    assert not spans._histories and spans.history_hits == 0  # (every turn is over 64 KB)
    assert spans.hits  # the tools and system spans are still reused
