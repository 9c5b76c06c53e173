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
PAIRS = ("sse",)


def variants(name: str) -> dict[str, ModuleType]:
    """Both implementations of one pair that can be imported here (for tests and benchmarks)."""
    found = {"python": importlib.import_module(f"{__name__}.{name}_py")}
    with contextlib.suppress(ImportError):
        found["cython"] = importlib.import_module(f"{__name__}.{name}")
    return found


def _select(name: str) -> tuple[ModuleType, str]:
    options = variants(name)
    if ENABLED and "cython" in options:
        return options["cython"], "cython"
    return options["python"], "python"


_sse, _sse_impl = _select("sse")
SSEDecoder = _sse.SSEDecoder
frame_event = _sse.frame_event

IMPLEMENTATION = "cython" if _sse_impl == "cython" else "python"
