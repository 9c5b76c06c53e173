"""Incremental validation of a streamed JSON object (tool-call arguments).

Anthropic clients parse ``input_json_delta`` fragments as they arrive (the SDKs run a partial
JSON parser on every delta), so a fragment that makes the text invalid breaks the client
mid-stream. Upstream models do emit malformed arguments. ``JsonObjectPrefix`` lets the
stream translator forward arguments live while guaranteeing the forwarded text is always a
valid prefix of a JSON object, and ``complete()`` gives the suffix that closes it, so the
concatenation of all deltas always parses.

Raw control characters inside strings (a common model mistake) are escaped on the way through
instead of ending the value.
"""

from __future__ import annotations

import re

# States outside strings/numbers/literals.
(
    _START,
    _OBJ_FIRST,
    _OBJ_KEY,
    _COLON,
    _VALUE,
    _ARR_FIRST,
    _AFTER,
    _STRING,
    _NUMBER,
    _LITERAL,
    _DONE,
) = range(11)
# Number sub-states; the complete ones may end the number.
_N_SIGN, _N_ZERO, _N_INT, _N_DOT, _N_FRAC, _N_EXP, _N_EXP_SIGN, _N_EXP_DIGITS = range(8)
_N_COMPLETE = frozenset((_N_ZERO, _N_INT, _N_FRAC, _N_EXP_DIGITS))

_STRING_STOP = re.compile(r'["\\\x00-\x1f]')
_WS = frozenset(" \t\n\r")
_DIGITS = frozenset("0123456789")
_HEX = frozenset("0123456789abcdefABCDEF")
_ESCAPES = frozenset('"\\/bfnrt')
_LITERALS = {"t": "true", "f": "false", "n": "null"}
_CONTROL_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f"}


class JsonObjectPrefix:
    __slots__ = ("_esc", "_is_key", "_lit", "_lit_pos", "_num", "_stack", "_state", "broken")

    def __init__(self) -> None:
        self._stack: list[str] = []  # expected closers
        self._state = _START
        self._is_key = False
        self._esc = 0  # -1: after a backslash; n > 0: hex digits still due in \uXXXX
        self._num = _N_SIGN
        self._lit = ""
        self._lit_pos = 0
        self.broken = False

    @property
    def done(self) -> bool:
        """The top-level object is complete."""
        return self._state == _DONE

    @property
    def started(self) -> bool:
        return self._state != _START

    def feed(self, text: str) -> str:
        """The part of ``text`` to forward: everything up to the first character that would
        make the accumulated text invalid (then ``broken`` is set and later input is dropped)."""
        if self.broken or not text:
            return ""
        out: list[str] = []
        seg = 0  # start of the verbatim segment not yet copied to out
        i, n = 0, len(text)
        while i < n:
            state = self._state
            if state == _STRING:
                if self._esc == 0:
                    m = _STRING_STOP.search(text, i)
                    if m is None:
                        break
                    j = m.start()
                    c = text[j]
                    if c == '"':
                        self._state = _COLON if self._is_key else _AFTER
                    elif c == "\\":
                        self._esc = -1
                    else:  # raw control character: forward it escaped
                        out.append(text[seg:j])
                        out.append(_CONTROL_ESCAPES.get(c) or f"\\u{ord(c):04x}")
                        seg = j + 1
                    i = j + 1
                    continue
                c = text[i]
                if self._esc == -1:
                    if c == "u":
                        self._esc = 4
                    elif c in _ESCAPES:
                        self._esc = 0
                    else:
                        return self._break(out, text, seg, i)
                elif c in _HEX:
                    self._esc -= 1
                else:
                    return self._break(out, text, seg, i)
                i += 1
                continue
            c = text[i]
            if c in _WS and state not in (_NUMBER, _LITERAL):
                i += 1
                continue
            if state == _NUMBER:
                if self._number_char(c):
                    i += 1
                    continue
                if self._num not in _N_COMPLETE:
                    return self._break(out, text, seg, i)
                self._state = _AFTER
                continue  # re-read c as what follows the number
            if state == _LITERAL:
                if c != self._lit[self._lit_pos]:
                    return self._break(out, text, seg, i)
                self._lit_pos += 1
                if self._lit_pos == len(self._lit):
                    self._state = _AFTER
                i += 1
                continue
            if state == _START:
                if c != "{":
                    return self._break(out, text, seg, i)
                self._stack.append("}")
                self._state = _OBJ_FIRST
            elif state in (_OBJ_FIRST, _OBJ_KEY):
                if c == '"':
                    self._state, self._is_key = _STRING, True
                elif c == "}" and state == _OBJ_FIRST:
                    self._close()
                else:
                    return self._break(out, text, seg, i)
            elif state == _COLON:
                if c != ":":
                    return self._break(out, text, seg, i)
                self._state = _VALUE
            elif state in (_VALUE, _ARR_FIRST):
                if c == "]" and state == _ARR_FIRST:
                    self._close()
                elif not self._value_start(c):
                    return self._break(out, text, seg, i)
            elif state == _AFTER:
                if c == ",":
                    self._state = _OBJ_KEY if self._stack[-1] == "}" else _VALUE
                elif c == self._stack[-1]:
                    self._close()
                else:
                    return self._break(out, text, seg, i)
            else:  # _DONE: only whitespace may follow
                return self._break(out, text, seg, i)
            i += 1
        out.append(text[seg:])
        return "".join(out)

    def complete(self) -> str:
        """The suffix that turns everything forwarded so far into one valid JSON object."""
        state = self._state
        if state == _START:
            return "{}"
        if state == _DONE:
            return ""
        parts: list[str] = []
        if state == _STRING:
            if self._esc == -1:
                parts.append("\\")
            elif self._esc > 0:
                parts.append("0" * self._esc)
            parts.append('"')
            if self._is_key:
                parts.append(":null")
        elif state == _NUMBER:
            if self._num not in _N_COMPLETE:
                parts.append("0")
        elif state == _LITERAL:
            parts.append(self._lit[self._lit_pos :])
        elif state == _COLON:
            parts.append(":null")
        elif state == _VALUE:
            parts.append("null")
        elif state == _OBJ_KEY:
            parts.append('"":null')
        parts.extend(reversed(self._stack))
        return "".join(parts)

    # --- helpers ---------------------------------------------------------------------------

    def _break(self, out: list[str], text: str, seg: int, i: int) -> str:
        self.broken = True
        out.append(text[seg:i])
        return "".join(out)

    def _close(self) -> None:
        self._stack.pop()
        self._state = _AFTER if self._stack else _DONE

    def _value_start(self, c: str) -> bool:
        if c == "{":
            self._stack.append("}")
            self._state = _OBJ_FIRST
        elif c == "[":
            self._stack.append("]")
            self._state = _ARR_FIRST
        elif c == '"':
            self._state, self._is_key = _STRING, False
        elif c == "-" or c in _DIGITS:
            self._state = _NUMBER
            self._num = _N_SIGN if c == "-" else (_N_ZERO if c == "0" else _N_INT)
        elif c in _LITERALS:
            self._state, self._lit, self._lit_pos = _LITERAL, _LITERALS[c], 1
        else:
            return False
        return True

    def _number_char(self, c: str) -> bool:
        num = self._num
        digit = c in _DIGITS
        if num == _N_SIGN:
            nxt = (_N_ZERO if c == "0" else _N_INT) if digit else -1
        elif num in (_N_ZERO, _N_INT):
            nxt = (_N_INT if num == _N_INT else -1) if digit else _N_DOT if c == "." else _N_EXP if c in "eE" else -1
        elif num in (_N_DOT, _N_FRAC):
            nxt = _N_FRAC if digit else (_N_EXP if c in "eE" and num == _N_FRAC else -1)
        elif num == _N_EXP:
            nxt = _N_EXP_DIGITS if digit else (_N_EXP_SIGN if c in "+-" else -1)
        else:  # _N_EXP_SIGN, _N_EXP_DIGITS
            nxt = _N_EXP_DIGITS if digit else -1
        if nxt < 0:
            return False
        self._num = nxt
        return True


def repair_object(text: str) -> str:
    """Best valid JSON object text for possibly malformed arguments (non-streaming use)."""
    checker = JsonObjectPrefix()
    return checker.feed(text) + checker.complete()
