"""JSON size estimation without serializing (reference implementation of the ``jsonsize`` pair).

``json_size(value)`` is the length of ``orjson.dumps(value)`` (compact JSON, UTF-8) for the JSON
types: str, int, bool, None, list, tuple, dict with str keys, and ``bytes``/``msgspec.Raw``
counted as already-encoded JSON. Floats count as ``len(repr(f))``, which can differ from
orjson's spelling by a character or two; anything else counts as the JSON string of ``str(v)``.
Used to account cache entries in bytes without paying for an encode.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

_ESCAPED = re.compile(r'[\x00-\x1f"\\]')
_SHORT_ESCAPES = frozenset('"\\\n\r\t\b\f')


def str_size(text: str) -> int:
    size = len(text.encode("utf-8", "surrogatepass")) + 2
    for match in _ESCAPED.findall(text):
        size += 1 if match in _SHORT_ESCAPES else 5
    return size


def json_size(value: Any) -> int:
    if isinstance(value, str):
        return str_size(value)
    if value is None:
        return 4
    if value is True:
        return 4
    if value is False:
        return 5
    if isinstance(value, int):
        return len(str(value))
    if isinstance(value, float):
        return len(repr(value))
    if isinstance(value, dict):
        if not value:
            return 2
        size = 1 + len(value)  # braces and separators: "{" + n-1 commas + "}"
        for key, item in value.items():
            size += (str_size(key) if isinstance(key, str) else str_size(str(key))) + 1 + json_size(item)
        return size
    if isinstance(value, (list, tuple)):
        if not value:
            return 2
        return 1 + len(value) + sum(json_size(item) for item in value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return len(value)
    if isinstance(value, msgspec.Raw):  # encoded JSON already
        return len(value)
    return str_size(str(value))
