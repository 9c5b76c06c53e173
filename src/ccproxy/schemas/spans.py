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

A conversation's history is reused the same way (``History``). Every turn resends it, and it
is byte-identical up to the message that carried the last ``cache_control`` marker (Claude Code
moves it to the newest message). That stable start of ``messages`` is cut out and replaced by
one sentinel message. Its translation (``prefix_derived``) is kept and resumed from.

Shared values are read-only by convention. Nothing on the request path mutates a decoded
request's ``tools``, ``system`` or messages: they are shared between concurrent requests.
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
    messages: list[msgspec.Raw] = []


_raw_decoder = msgspec.json.Decoder(_Raw)
MESSAGES_KEY = b'"messages":'
HISTORIES = 4  # conversations whose history is remembered
MAX_HISTORY_BODY = 4 << 20  # a history keeps its body: bigger ones (screenshots) are not kept


class History:
    """The stable start of one conversation's ``messages``: ``body[start:start + length]`` is
    ``[`` and the first ``len(messages)`` messages, each followed by a comma, exactly as sent."""

    __slots__ = ("body", "derived", "length", "messages", "previous", "start")

    def __init__(self, body: bytes, start: int, length: int, messages: list[Any], extends: History | None) -> None:
        self.body = body
        self.start = start
        self.length = length
        self.messages = messages
        # translations of the first len(messages) messages (``prefix_derived``), and those of
        # the history this one extends, to resume from (one level: a chain would grow forever)
        self.derived: dict[Any, Any] = {}
        self.previous = (len(extends.messages), extends.derived) if extends is not None else None

    def found_at(self, body: bytes, at: int) -> bool:
        return body.startswith(memoryview(self.body)[self.start : self.start + self.length], at)


def messages_at(body: bytes) -> int:
    """Where the top-level ``messages`` array opens, when its key comes first or second (Claude
    Code sends ``model`` then ``messages``); -1 otherwise. (A guess the decode proves.)"""
    at = body.find(MESSAGES_KEY, 0, 512)
    if at < 0:
        return -1
    at += len(MESSAGES_KEY)
    while body[at : at + 1] in (b" ", b"\n", b"\t", b"\r"):
        at += 1
    return at if body[at : at + 1] == b"[" else -1


class Span:
    __slots__ = ("derived", "raw", "tail", "value")

    def __init__(self, raw: bytes, value: Any) -> None:
        self.raw = raw
        self.tail = raw[-TAIL:]
        self.value = value
        self.derived: dict[Any, Any] = {}


Cut = tuple[int, int, bytes, str, Any]  # start, end, sentinel, key, Span or History


class SpanReuse:
    """Decodes request bodies with ``decode``, reusing remembered ``tools`` / ``system`` spans
    and the stable start of a conversation's ``messages``."""

    KEYS = ("tools", "system")  # searched in this order, each before the previous one's start

    def __init__(self, decode: Callable[[bytes], Any]) -> None:
        self._decode = decode
        token = f"ccproxy-span-{secrets.token_hex(16)}"
        self.token = token
        self._sentinels = {
            "tools": f'[{{"name":"{token}"}}]'.encode(),
            "system": f'"{token}"'.encode(),
            "messages": f'[{{"role":"user","content":"{token}"}},'.encode(),
        }
        self._spans: dict[str, list[Span]] = {key: [] for key in self.KEYS}
        self._by_value: dict[int, Span] = {}
        self._histories: list[History] = []
        self._misses = 0
        self.hits = 0  # spans reused (for tests and the benchmark)
        self.history_hits = 0  # messages reused

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
            if req is not None and all(self._is_sentinel(key, req) for _, _, _, key, _ in cuts):
                for _, _, _, key, found in cuts:
                    if key == "messages":
                        req.messages = found.messages + req.messages[1:]
                        self.history_hits += len(found.messages)
                    else:
                        setattr(req, key, found.value)
                        self.hits += 1
            else:
                req, cuts = None, []
        if req is None:
            spliced = body
            req = self._decode(body)  # (raises for a malformed body, before anything is learnt)
        self._learn(body, spliced, req, cuts)
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

    def prefix_derived(
        self, messages: list[Any], name: Any, advance: Callable[[Any, int, int], Any]
    ) -> tuple[int, Any]:
        """For ``messages`` that start with a remembered history: ``(k, state)``, ``state`` being
        a translation of the first ``k`` messages, made once per history. ``advance(state, a, b)``
        carries a translation of ``messages[:a]`` (None for a = 0) over ``messages[a:b]``; a
        history resumes from the one it extends. ``(0, None)`` when no history applies."""
        for history in self._histories:
            known = history.messages
            k = len(known)
            if len(messages) < k or messages[0] is not known[0] or messages[k - 1] is not known[-1]:
                continue
            state = history.derived.get(name)
            if state is None:
                start, before = 0, None
                if history.previous is not None and name in history.previous[1]:
                    start, before = history.previous[0], history.previous[1][name]
                state = history.derived[name] = advance(before, start, k)
                history.previous = None  # (resumed once; let the older history go)
            return k, state
        return 0, None

    # --- finding ---

    def _find(self, body: bytes) -> list[Cut]:
        cuts: list[Cut] = []
        end = len(body)
        for key in self.KEYS:
            spans = self._spans[key]
            for i, span in enumerate(spans):
                stop = body.rfind(span.tail, 0, end)
                if stop < 0:
                    continue
                start = stop + len(span.tail) - len(span.raw)
                if start > 0 and body.startswith(span.raw, start):
                    cuts.append((start, start + len(span.raw), self._sentinels[key], key, span))
                    end = start
                    if i:  # most recently used first
                        spans.insert(0, spans.pop(i))
                    break
        at = messages_at(body) if self._histories else -1
        if at >= 0:
            for i, history in enumerate(self._histories):
                # (the history ends before any other cut: offsets after it are then the same
                # in the body and in the spliced body, which learning relies on)
                if at + history.length < end and history.found_at(body, at):
                    cuts.append((at, at + history.length, self._sentinels["messages"], "messages", history))
                    if i:
                        self._histories.insert(0, self._histories.pop(i))
                    break
        cuts.sort(key=lambda cut: cut[0])
        return cuts

    def _splice(self, body: bytes, cuts: list[Cut]) -> bytes:
        parts: list[bytes | memoryview] = []
        view = memoryview(body)
        at = 0
        for start, end, sentinel, _, _ in cuts:  # (in ascending positions)
            parts.append(view[at:start])
            parts.append(sentinel)
            at = end
        parts.append(view[at:])
        return b"".join(parts)

    def _is_sentinel(self, key: str, req: Any) -> bool:
        value = getattr(req, key)
        if key == "system":
            return value == self.token  # type: ignore[no-any-return]
        if key == "messages":
            first = value[0] if value else None
            return first is not None and first.role == "user" and first.content == self.token
        return isinstance(value, list) and len(value) == 1 and getattr(value[0], "name", None) == self.token

    # --- learning ---

    def _learn(self, body: bytes, decoded: bytes, req: Any, cuts: list[Cut]) -> None:
        """Remember what this body may share with later ones: ``tools`` and ``system`` spans not
        reused now, and the conversation's stable start (its messages before the first one
        marked with ``cache_control``, which Claude Code moves every turn)."""
        cut = {key for _, _, _, key, _ in cuts}
        new = [key for key in self.KEYS if key not in cut and _large(getattr(req, key, None))]
        history = next((found for _, _, _, key, found in cuts if key == "messages"), None)
        known = len(history.messages) if history is not None else 0
        stable = _stable_messages(req.messages, known)
        if not new and (stable <= known or len(body) > MAX_HISTORY_BODY):
            return
        if cuts:  # a conversation going on: keep up with it
            self._misses = 0
        else:  # nothing in common with what was seen: learn less often once that repeats
            self._misses += 1
            if self._misses > LEARN_BACKOFF and self._misses % 16:
                return
        try:
            raws = _raw_decoder.decode(decoded)  # (the spliced body: only what was not reused)
        except (msgspec.MsgspecError, ValueError):
            return
        for key in new:
            raw = getattr(raws, key)
            if len(raw) >= MIN_SPAN:
                self._remember_span(key, bytes(raw), getattr(req, key))
        if stable > known and len(body) <= MAX_HISTORY_BODY:
            self._remember_history(body, decoded, req.messages, raws.messages, history, stable)

    def _remember_span(self, key: str, raw: bytes, value: Any) -> None:
        spans = self._spans[key]
        span = Span(raw, value)
        spans.insert(0, span)
        self._by_value[id(value)] = span
        for old in spans[PER_KEY:]:
            self._by_value.pop(id(old.value), None)
        del spans[PER_KEY:]

    def _remember_history(
        self,
        body: bytes,
        decoded: bytes,
        messages: list[Any],
        raws: list[msgspec.Raw],
        history: History | None,
        stable: int,
    ) -> None:
        """Extend (or start) the history with messages ``known:stable``. Their bytes are found
        in ``decoded`` one by one, each followed by a comma: compact JSON, as Claude Code sends.
        Anything else is not remembered (a guess here would be a wrong reuse later)."""
        at = messages_at(decoded)
        if at < 0:
            return
        if history is None:  # "[" then the messages
            known, length, first, pos = 0, 1, 0, at + 1
        else:  # the reused start, then the messages after it (raws[0] is the sentinel)
            known, length, first, pos = len(history.messages), history.length, 1, at + len(self._sentinels["messages"])
        fresh = raws[first : first + stable - known]
        if len(fresh) != stable - known:
            return
        fresh_at, in_body = pos, at + length
        for raw in fresh:
            size = len(raw)
            if not decoded.startswith(raw, pos) or decoded[pos + size : pos + size + 1] != b",":
                return
            pos += size + 1
            length += size + 1
        # The body holds the same bytes right after the reused start (nothing else was cut
        # before them): the history keeps the body and offsets, not a copy.
        if not body.startswith(memoryview(decoded)[fresh_at:pos], in_body):
            return
        remembered = History(body, at, length, messages[:stable], history)
        if history is not None:
            self._histories.remove(history)
        self._histories.insert(0, remembered)
        del self._histories[HISTORIES:]


def _stable_messages(messages: list[Any], known: int) -> int:
    """How many messages lead the conversation before the first that carries a
    ``cache_control`` marker (all of them if none does); the first ``known`` have none."""
    for i in range(known, len(messages)):
        content = messages[i].content
        if isinstance(content, list) and any(isinstance(b, dict) and "cache_control" in b for b in content):
            return i
    return len(messages)


def _large(value: Any) -> bool:
    """A value worth remembering: a list (tools, system blocks) or a long string."""
    return isinstance(value, list) or (isinstance(value, str) and len(value) >= MIN_SPAN)
