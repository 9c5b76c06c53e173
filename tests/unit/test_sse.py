"""The ``sse`` native pair: every available implementation gives identical results."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ccproxy import _native

IMPLS = _native.variants("sse")


@pytest.fixture(params=sorted(IMPLS))
def sse(request):
    return IMPLS[request.param]


def test_frame_event(sse):
    assert sse.frame_event("ping", b'{"type":"ping"}') == b'event: ping\ndata: {"type":"ping"}\n\n'


def test_decoder_handles_crlf_comments_named_events_and_multiline_data(sse):
    dec = sse.SSEDecoder()
    raw = b': keepalive\r\n\r\nevent: delta\r\ndata: {"a":1}\r\n\r\ndata: line1\ndata: line2\n\ndata: [DONE]\n\n'
    assert dec.feed(raw) == [("delta", b'{"a":1}'), (None, b"line1\nline2"), (None, b"[DONE]")]
    assert dec.pending == 0


def test_data_without_a_space(sse):
    """Some servers write ``data:{…}`` (the space is optional in the SSE grammar)."""
    dec = sse.SSEDecoder()
    assert dec.feed(b'data:{"a":1}\n\ndata:  two spaces\n\n') == [(None, b'{"a":1}'), (None, b" two spaces")]


@given(st.lists(st.text(min_size=1, max_size=30), min_size=1, max_size=8), st.lists(st.integers(0, 500), max_size=12))
def test_any_split_of_the_byte_stream_gives_the_same_events(payloads, cuts):
    raw = b"".join(b"data: " + p.replace("\n", " ").replace("\r", " ").encode() + b"\n\n" for p in payloads)
    expected = [(None, p.replace("\n", " ").replace("\r", " ").encode()) for p in payloads]
    for impl in IMPLS.values():
        dec = impl.SSEDecoder()
        got, last = [], 0
        for cut in [*sorted({c % (len(raw) + 1) for c in cuts}), len(raw)]:
            got += dec.feed(raw[last:cut])  # cuts land inside multi-byte characters too
            last = cut
        got += dec.flush()
        assert [(e, d) for e, d in got if d.strip()] == [(e, d) for e, d in expected if d.strip()]


def test_flush_returns_an_unterminated_last_event(sse):
    dec = sse.SSEDecoder()
    assert dec.feed(b'data: {"x":1}') == []
    assert dec.flush() == [(None, b'{"x":1}')]


def test_selector_reports_active_implementation():
    assert _native.IMPLEMENTATION in {"python", "cython"}
    if not _native.ENABLED:
        assert _native.IMPLEMENTATION == "python"
