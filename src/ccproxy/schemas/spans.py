"""Byte-identical spans of a request body, decoded and translated once.

Claude Code resends the same ``tools`` (~80 KB: 24 tools) and ``system`` (~27 KB) on every turn
of a session: most of a turn's bytes. ``SpanReuse`` remembers the raw bytes of large top-level
``tools`` / ``system`` values it has seen, with the value decoded from them. When a body holds a
remembered span, the span is cut out and replaced by a sentinel before decoding; the decoded
request then gets the remembered value, and translations of that value are kept with it
(``derived``), so a repeated turn decodes and translates only what changed.

Finding a span does not scan the body. A remembered span's last bytes are searched backwards
from the end, which is short: Claude Code sends ``system`` and ``tools`` after the messages, with
only small fields behind them. The whole span is then compared in place (memcmp).

The decode proves each cut. The sentinel holds a per-process random token, and it must come back
as the top-level value of its own key. Otherwise the body is decoded whole, as without reuse.
The substitution changes nothing a client could see: a span that is a complete JSON value is
swapped for another complete value at a value position, so the spliced body decodes exactly when
the original would, and to the same request.

Shared values are read-only by convention: nothing on the request path mutates a decoded
request's ``tools`` or ``system`` (they are shared between concurrent requests).
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Callable
from typing import Any, TypeVar

import msgspec

T = TypeVar("T")

TAIL = 48  # bytes of a span's end searched for; long enough to be rare elsewhere in a body
MIN_BODY = 16 * 1024  # smaller bodies decode whole (a search would cost more than it saves)
MIN_SPAN = 2048
PER_KEY = 4  # remembered spans per key: a session's main agent, subagents, other clients
LEARN_BACKOFF = 8  # after this many misses without a hit, learn only every 16th miss


class _Raw(msgspec.Struct):
    """The top-level spans of a body, as slices of it (for learning them)."""

    tools: msgspec.Raw = msgspec.Raw(b"")
    system: msgspec.Raw = msgspec.Raw(b"")


_raw_decoder = msgspec.json.Decoder(_Raw)


class Span:
    __slots__ = ("derived", "raw", "tail", "value")

    def __init__(self, raw: bytes, value: Any) -> None:
        self.raw = raw
        self.tail = raw[-TAIL:]
        self.value = value
        self.derived: dict[Any, Any] = {}


class SpanReuse:
    """Decodes request bodies with ``decode``, reusing remembered ``tools`` / ``system`` spans."""

    KEYS = ("tools", "system")  # searched in this order, each before the previous one's start

    def __init__(self, decode: Callable[[bytes], Any]) -> None:
        self._decode = decode
        token = f"ccproxy-span-{secrets.token_hex(16)}"
        self.token = token
        self._sentinels = {
            "tools": f'[{{"name":"{token}"}}]'.encode(),
            "system": f'"{token}"'.encode(),
        }
        self._spans: dict[str, list[Span]] = {key: [] for key in self.KEYS}
        self._by_value: dict[int, Span] = {}
        self._misses = 0
        self.hits = 0  # spans reused (for tests and the benchmark)

    def decode(self, body: bytes) -> Any:
        if len(body) < MIN_BODY:
            return self._decode(body)
        cuts = self._find(body)
        req = None
        if cuts:
            spliced = self._splice(body, cuts)
            # (a failure here is reported by the whole body's decode, at its own offsets)
            with contextlib.suppress(msgspec.MsgspecError, ValueError, TypeError, RecursionError, UnicodeDecodeError):
                req = self._decode(spliced)
            if req is not None and all(self._is_sentinel(key, getattr(req, key)) for key, _, _ in cuts):
                for key, _, span in cuts:
                    setattr(req, key, span.value)
                self.hits += len(cuts)
            else:
                req, cuts, spliced = None, [], body
        if req is None:
            spliced = body
            req = self._decode(body)  # (raises for a malformed body, before anything is learnt)
        cut = {key for key, _, _ in cuts}
        new = [key for key in self.KEYS if key not in cut and _large(getattr(req, key, None))]
        if new:
            self._misses += 1
            if self._misses <= LEARN_BACKOFF or self._misses % 16 == 0:
                self._learn(spliced, req, new)
        elif cuts:
            self._misses = 0
        return req

    def derived(self, value: Any, name: Any, make: Callable[[], T]) -> T:
        """``make()``, computed once per remembered ``value`` (a translation of it); ``name``
        says which translation, with every option it depends on."""
        span = self._by_value.get(id(value))
        if span is None or span.value is not value:
            return make()
        try:
            return span.derived[name]  # type: ignore[no-any-return]
        except KeyError:
            made = span.derived[name] = make()
            return made

    # --- finding, learning ---

    def _find(self, body: bytes) -> list[tuple[str, int, Span]]:
        cuts: list[tuple[str, int, Span]] = []
        end = len(body)
        for key in self.KEYS:
            spans = self._spans[key]
            for i, span in enumerate(spans):
                stop = body.rfind(span.tail, 0, end)
                if stop < 0:
                    continue
                start = stop + len(span.tail) - len(span.raw)
                if start > 0 and body.startswith(span.raw, start):
                    cuts.append((key, start, span))
                    end = start
                    if i:  # most recently used first
                        spans.insert(0, spans.pop(i))
                    break
        return cuts

    def _splice(self, body: bytes, cuts: list[tuple[str, int, Span]]) -> bytes:
        parts: list[bytes] = []
        at = len(body)
        for key, start, span in cuts:  # (in descending positions)
            parts.append(body[start + len(span.raw) : at])
            parts.append(self._sentinels[key])
            at = start
        parts.append(body[:at])
        parts.reverse()
        return b"".join(parts)

    def _is_sentinel(self, key: str, value: Any) -> bool:
        if key == "system":
            return value == self.token
        return isinstance(value, list) and len(value) == 1 and getattr(value[0], "name", None) == self.token

    def _learn(self, body: bytes, req: Any, keys: list[str]) -> None:
        """Remember ``keys``' spans of ``body`` (the body as decoded: spliced spans are sentinels
        there, the others the client's own bytes)."""
        try:
            raws = _raw_decoder.decode(body)
        except (msgspec.MsgspecError, ValueError):
            return
        for key in keys:
            raw = getattr(raws, key)
            if len(raw) < MIN_SPAN:
                continue
            value = getattr(req, key)
            spans = self._spans[key]
            span = Span(bytes(raw), value)
            spans.insert(0, span)
            self._by_value[id(value)] = span
            for old in spans[PER_KEY:]:
                self._by_value.pop(id(old.value), None)
            del spans[PER_KEY:]


def _large(value: Any) -> bool:
    """A value worth remembering: a list (tools, system blocks) or a long string."""
    return isinstance(value, list) or (isinstance(value, str) and len(value) >= MIN_SPAN)
