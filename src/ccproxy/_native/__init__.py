"""Accelerated hot paths, each a pair: ``<name>.pyx`` (Cython) and ``<name>_py.py`` (reference).

The choice is made once, at import: the compiled module when it was built and
CCPROXY_ENABLE_CYTHON is not false, else the pure-Python twin. Code outside this package
imports names from here, never a specific variant. ``IMPLEMENTATION`` says which is active.
This module reads the environment itself (like aiohttp's AIOHTTP_NO_EXTENSIONS) because the
choice must be made before any Settings object exists.
"""

from __future__ import annotations

import contextlib
import importlib
import os
from types import ModuleType

ENABLED = os.environ.get("CCPROXY_ENABLE_CYTHON", "true").strip().lower() not in {
    "0",
    "false",
    "no",
    "off",
}
PAIRS = ("sse", "jsonsize", "lru", "cachekey")


def variants(name: str) -> dict[str, ModuleType]:
    """Both implementations of one pair that can be imported here (for tests and benchmarks)."""
    found = {"python": importlib.import_module(f"{__name__}.{name}_py")}
    with contextlib.suppress(ImportError):
        found["cython"] = importlib.import_module(f"{__name__}.{name}")
    return found


def _select(name: str) -> ModuleType:
    options = variants(name)
    chosen = "cython" if ENABLED and "cython" in options else "python"
    IMPLEMENTATIONS[name] = chosen
    return options[chosen]


IMPLEMENTATIONS: dict[str, str] = {}

_sse = _select("sse")
SSEDecoder = _sse.SSEDecoder
frame_event = _sse.frame_event
content_delta = _sse.content_delta
text_of_chunk = _sse.text_of_chunk
text_run = _sse.text_run

_jsonsize = _select("jsonsize")
json_size = _jsonsize.json_size

_lru = _select("lru")
LRUCache = _lru.LRUCache

_cachekey = _select("cachekey")
cache_key = _cachekey.cache_key
VOLATILE_FIELDS = _cachekey.VOLATILE_FIELDS

_chosen = set(IMPLEMENTATIONS.values())
IMPLEMENTATION = _chosen.pop() if len(_chosen) == 1 else "mixed"
