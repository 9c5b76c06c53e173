"""JSON text of decoded values that orjson cannot always encode.

Clients may send integers beyond 64 bits (valid JSON); orjson refuses them, the stdlib does not.
"""

from __future__ import annotations

import json
from typing import Any

import orjson


def json_text(value: Any) -> str:
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # orjson.JSONEncodeError: integer beyond 64 bits
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
