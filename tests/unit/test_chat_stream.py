"""ChatStreamTranslator: Chat chunks in, the exact Anthropic event grammar out."""

from __future__ import annotations

import json

import orjson
import pytest

from ccproxy.translate.chat_response import ChatStreamTranslator
from ccproxy.translate.events import StreamFailure
from tests.support.sse import assemble, parse_sse


def chunk(delta: dict | None = None, finish: str | None = None, **extra) -> dict:
    choices = [] if delta is None and finish is None else [{"index": 0, "delta": delta or {}, "finish_reason": finish}]
    return {"id": "c1", "object": "chat.completion.chunk", "choices": choices, **extra}


def usage(prompt=100, completion=20, cached=None) -> dict:
    u = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    if cached is not None:
        u["prompt_tokens_details"] = {"cached_tokens": cached}
    return chunk(usage=u)


def tool_delta(index: int, args: str | None = None, call_id: str | None = None, name: str | None = None) -> dict:
    fn: dict = {}
    if name is not None:
        fn["name"] = name
    if args is not None:
        fn["arguments"] = args
    call: dict = {"index": index, "function": fn}
    if call_id is not None:
        call.update(id=call_id, type="function")
    return {"tool_calls": [call]}


def run(chunks: list, model: str = "claude-sonnet-5", done: bool = True) -> tuple[list, dict]:
    t = ChatStreamTranslator(model, input_estimate=42)
    out = [t.start()]
    for c in chunks:
        out.append(t.feed(orjson.dumps(c) if isinstance(c, dict) else c))
    if done:
        out.append(t.feed(b"[DONE]"))
    try:
        out.append(t.finish())
    except StreamFailure as exc:
        out.append(t.fail(exc.error_type, exc.message))
    events = parse_sse(b"".join(out))
    return events, assemble(events)


def test_text_stream_grammar_model_echo_and_usage():
    events, msg = run(
        [
            chunk({"role": "assistant", "content": ""}),
            chunk({"content": "Hel"}),
            chunk({"content": "lo"}),
            chunk(finish="stop"),
            usage(100, 7, cached=60),
        ]
    )
    names = [e[0] for e in events]
    assert names == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert msg["model"] == "claude-sonnet-5"
    assert msg["content"] == [{"type": "text", "text": "Hello"}]
    assert msg["stop_reason"] == "end_turn"
    delta_usage = events[-2][1]["usage"]
    assert delta_usage == {
        "input_tokens": 40,
        "output_tokens": 7,
        "cache_read_input_tokens": 60,
        "cache_creation_input_tokens": 0,
    }


@pytest.mark.parametrize(
    ("finish", "reason"),
    [("stop", "end_turn"), ("length", "max_tokens"), ("tool_calls", "tool_use"), ("content_filter", "refusal")],
)
def test_finish_reasons(finish, reason):
    _, msg = run([chunk({"content": "x"}), chunk(finish=finish)])
    assert msg["stop_reason"] == reason


def test_reasoning_becomes_a_thinking_block_not_text():
    _, msg = run(
        [
            chunk({"reasoning_content": "let me think"}),
            chunk({"reasoning_content": " more"}),
            chunk({"content": "answer"}),
            chunk(finish="stop"),
        ]
    )
    assert msg["content"][0] == {"type": "thinking", "thinking": "let me think more", "signature": ""}
    assert msg["content"][1] == {"type": "text", "text": "answer"}
    _, msg = run([chunk({"reasoning": "openrouter style"}), chunk({"content": "ok"}), chunk(finish="stop")])
    assert msg["content"][0]["type"] == "thinking"


def test_tool_call_ids_only_on_first_fragment_and_args_split_inside_strings():
    args = '{"command": "echo \\"hi there\\" && ls -la", "timeout": 120}'
    pieces = [args[i : i + 3] for i in range(0, len(args), 3)]
    chunks = [chunk({"content": "Let me run it."}), chunk(tool_delta(0, "", "call_abc", "Bash"))]
    chunks += [chunk(tool_delta(0, p)) for p in pieces]
    chunks += [chunk(finish="tool_calls"), usage()]
    events, msg = run(chunks)
    assert msg["content"][1] == {"type": "tool_use", "id": "call_abc", "name": "Bash", "input": json.loads(args)}
    assert msg["stop_reason"] == "tool_use"
    # arguments streamed live, not in one lump at the end
    json_deltas = [e for e in events if e[0] == "content_block_delta" and e[1]["delta"]["type"] == "input_json_delta"]
    assert len(json_deltas) == len(pieces)


def test_two_interleaved_tool_calls():
    chunks = [
        chunk(tool_delta(0, '{"pa', "call_a", "Read")),
        chunk(tool_delta(1, '{"com', "call_b", "Bash")),
        chunk(tool_delta(0, 'th": "/a.txt"')),
        chunk(tool_delta(1, 'mand": "ls"}')),
        chunk(tool_delta(0, "}")),
        chunk(finish="tool_calls"),
    ]
    _, msg = run(chunks)
    assert [(b["id"], b["name"], b["input"]) for b in msg["content"]] == [
        ("call_a", "Read", {"path": "/a.txt"}),
        ("call_b", "Bash", {"command": "ls"}),
    ]


def test_sequential_parallel_calls_stream_each_live():
    chunks = [
        chunk(tool_delta(0, "", "call_1", "Read")),
        chunk(tool_delta(0, '{"path": "a"}')),
        chunk(tool_delta(1, "", "call_2", "Read")),
        chunk(tool_delta(1, '{"path": "b"}')),
        chunk(finish="tool_calls"),
    ]
    t = ChatStreamTranslator("m", 1)
    t.start()
    for c in chunks[:3]:
        t.feed(orjson.dumps(c))
    second = parse_sse(t.feed(orjson.dumps(chunks[3])))
    # call_2's arguments went out as soon as they arrived
    assert any(e[1].get("delta", {}).get("partial_json") == '{"path": "b"}' for e in second)


def test_missing_index_uses_ids():
    chunks = [
        chunk({"tool_calls": [{"id": "g1", "function": {"name": "A", "arguments": '{"x": 1}'}}]}),
        chunk({"tool_calls": [{"id": "g2", "function": {"name": "B", "arguments": '{"y": 2}'}}]}),
        chunk(finish="stop"),
    ]
    _, msg = run(chunks)
    assert [(b["id"], b["input"]) for b in msg["content"]] == [("g1", {"x": 1}), ("g2", {"y": 2})]
    assert msg["stop_reason"] == "tool_use"


def test_tool_without_arguments_gets_empty_object_and_generated_id():
    _, msg = run([chunk({"tool_calls": [{"index": 0, "function": {"name": "Now"}}]}), chunk(finish="tool_calls")])
    block = msg["content"][0]
    assert block["input"] == {} and block["id"].startswith("toolu_")


@pytest.mark.parametrize(
    "bad",
    ['{"command": ls}', "not json at all", '{"a": 1}}} trailing', '{"a": "unterminated', '{"a": tru'],
)
def test_malformed_tool_json_still_yields_parseable_input(bad):
    chunks = [chunk(tool_delta(0, "", "call_x", "Bash"))]
    chunks += [chunk(tool_delta(0, bad[i : i + 4])) for i in range(0, len(bad), 4)]
    chunks += [chunk(finish="tool_calls")]
    _, msg = run(chunks)  # assemble() json-parses the concatenated partial_json
    assert isinstance(msg["content"][0]["input"], dict)
    assert msg["stop_reason"] == "tool_use"


def test_raw_newline_inside_argument_string_is_escaped():
    _, msg = run([chunk(tool_delta(0, '{"content": "a\nb"}', "c", "Write")), chunk(finish="tool_calls")])
    assert msg["content"][0]["input"] == {"content": "a\nb"}


def test_text_after_tool_call_is_kept():
    _, msg = run(
        [
            chunk(tool_delta(0, '{"a":', "c1", "T")),
            chunk({"content": "note"}),
            chunk(tool_delta(0, "1}")),
            chunk(finish="tool_calls"),
        ]
    )
    assert msg["content"] == [
        {"type": "tool_use", "id": "c1", "name": "T", "input": {"a": 1}},
        {"type": "text", "text": "note"},
    ]


def test_utf8_text_and_400_chunk_stream():
    text = "héllo wörld 你好 🎉 "
    chunks = [chunk({"content": text}) for _ in range(400)] + [chunk(finish="stop"), usage(10, 400)]
    events, msg = run(chunks)
    assert msg["content"][0]["text"] == text * 400
    assert len([e for e in events if e[0] == "content_block_delta"]) == 400


def test_missing_usage_is_estimated():
    events, _msg = run([chunk({"content": "x" * 400}), chunk(finish="stop")])
    usage_out = events[-2][1]["usage"]
    assert usage_out["input_tokens"] == 42
    assert usage_out["output_tokens"] >= 100


def test_no_finish_reason_ends_in_error_not_message_stop():
    events, msg = run([chunk({"content": "partial"})], done=False)
    assert events[-1][0] == "error"
    assert msg["error"]["type"] == "api_error"
    assert "message_stop" not in [e[0] for e in events]


def test_done_without_finish_reason_is_a_normal_end():
    """Snowflake Cortex and others never send a finish_reason but end with [DONE] (issue 17)."""
    events, msg = run([chunk({"content": "whole"})], done=True)
    assert events[-1][0] == "message_stop" and msg["stop_reason"] == "end_turn"
    assert msg["content"] == [{"type": "text", "text": "whole"}]


def test_invalid_chunk_raises_stream_failure():
    t = ChatStreamTranslator("m", 1)
    t.start()
    with pytest.raises(StreamFailure):
        t.feed(b'{"choices": [ {"delta": ')


def test_error_chunk_from_upstream_raises():
    t = ChatStreamTranslator("m", 1)
    t.start()
    with pytest.raises(StreamFailure) as err:
        t.feed(orjson.dumps({"error": {"message": "provider overloaded", "code": 502}, "choices": []}))
    assert "provider overloaded" in err.value.message


def test_empty_response_still_has_one_block():
    _, msg = run([chunk(finish="stop")])
    assert msg["content"] == [{"type": "text", "text": ""}]


def test_wire_bytes_cut_inside_multibyte_characters_of_tool_arguments():
    from ccproxy._native import variants

    args = '{"city": "Zürich", "note": "🎉 naïve café 日本"}'
    chunks = [chunk(tool_delta(0, "", "call_u", "Weather"))]
    chunks += [chunk(tool_delta(0, args[i : i + 2])) for i in range(0, len(args), 2)]
    chunks += [chunk(finish="tool_calls"), usage()]
    wire = (
        b"".join(b"data: " + json.dumps(c, ensure_ascii=False).encode() + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"
    )
    for impl in variants("sse").values():
        for step in (1, 3, 5):
            decoder, t = impl.SSEDecoder(), ChatStreamTranslator("m", 1)
            out = [t.start()]
            for i in range(0, len(wire), step):
                out += [t.feed(data) for _, data in decoder.feed(wire[i : i + step])]
            out.append(t.finish())
            assert assemble(parse_sse(b"".join(out)))["content"][0]["input"] == json.loads(args)


def test_shortened_tool_names_map_back():
    t = ChatStreamTranslator("m", 1, tool_names={"short_abc12345": "the.original.name"})
    out = [
        t.start(),
        t.feed(orjson.dumps(chunk(tool_delta(0, '{"a": 1}', "call_1", "short_abc12345")))),
        t.feed(orjson.dumps(chunk(finish="tool_calls"))),
        t.finish(),
    ]
    assert assemble(parse_sse(b"".join(out)))["content"][0]["name"] == "the.original.name"


def test_the_text_fast_path_gives_the_same_bytes(monkeypatch):
    """Every stream of the dialect corpus, through the translator with the text fast path (the
    native reader and its pure twin) and without: byte for byte the same events."""
    from pathlib import Path

    from ccproxy import _native
    from ccproxy.translate import chat_response

    folder = Path(__file__).resolve().parents[1] / "dialects" / "recordings"
    streams = [
        [line for line in p.read_bytes().split(b"\n") if line.strip()] + [b"[DONE]"]
        for p in sorted(folder.glob("*.chunks.txt"))
    ]

    def run(lines: list[bytes]) -> bytes:
        t = chat_response.ChatStreamTranslator("claude-sonnet-5", 100, message_id="msg_same", think_tags=False)
        out = [t.start()]
        try:
            out += [t.feed(line) for line in lines]
            out.append(t.finish())
        except Exception as exc:  # (a recorded error: it must fail the same way)
            out.append(repr(exc).encode())
        return b"".join(out)

    def run_reads(lines: list[bytes], size: int) -> bytes:
        """The same stream as the adapter feeds it: upstream reads of ``size`` lines, each
        through ``feed_all`` (where runs of text chunks go to the native ``text_run``)."""
        t = chat_response.ChatStreamTranslator("claude-sonnet-5", 100, message_id="msg_same", think_tags=False)
        out = [t.start()]
        try:
            for at in range(0, len(lines), size):
                t.feed_all([(None, line) for line in lines[at : at + size]], out)
            out.append(t.finish())
        except Exception as exc:
            out.append(repr(exc).encode())
        return b"".join(out)

    for lines in streams:
        monkeypatch.setattr(chat_response, "FAST_TEXT", False)
        expected = run(lines)
        assert run_reads(lines, 7) == expected
        for reader in _native.variants("sse").values():
            monkeypatch.setattr(chat_response, "FAST_TEXT", True)
            monkeypatch.setattr(chat_response, "text_of_chunk", reader.text_of_chunk)
            monkeypatch.setattr(chat_response, "text_run", reader.text_run)
            assert run(lines) == expected
            for size in (1, 3, 1000):
                assert run_reads(lines, size) == expected
