"""A bounded LRU map with per-entry expiry: limited by entry count and by total size in bytes,
entries older than ``ttl`` seconds read as absent (reference implementation of the ``lru`` pair).

Sizes are given by the caller (``jsonsize`` estimates). The clock is ``time.monotonic`` (the
Cython twin reads the same CLOCK_MONOTONIC); ``now`` overrides it for tests. ``hits``,
``misses`` and ``expirations`` count lookups for the cache statistics.
"""

from __future__ import annotations

from collections import OrderedDict
from time import monotonic
from typing import Any

_FOREVER = float("inf")


class LRUCache:
    __slots__ = (
        "_items",
        "evictions",
        "expirations",
        "hits",
        "max_bytes",
        "max_entries",
        "misses",
        "total_bytes",
        "ttl",
    )

    def __init__(self, max_entries: int, max_bytes: int, ttl: float = 0.0) -> None:
        if max_entries < 1 or max_bytes < 1:
            raise ValueError("max_entries and max_bytes must be positive")
        if ttl < 0:
            raise ValueError("ttl must not be negative")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.ttl = float(ttl)  # 0: entries never expire
        self.total_bytes = 0
        self.evictions = 0
        self.expirations = 0
        self.hits = 0
        self.misses = 0
        # key -> (value, size, expires_at)
        self._items: OrderedDict[Any, tuple[Any, int, float]] = OrderedDict()

    def get(self, key: Any, default: Any = None, now: float | None = None) -> Any:
        item = self._items.get(key)
        if item is None:
            self.misses += 1
            return default
        if item[2] != _FOREVER and item[2] <= (monotonic() if now is None else now):
            del self._items[key]
            self.total_bytes -= item[1]
            self.expirations += 1
            self.misses += 1
            return default
        self._items.move_to_end(key)
        self.hits += 1
        return item[0]

    def put(self, key: Any, value: Any, size: int, now: float | None = None) -> bool:
        """Store ``value``; False (and nothing stored) if it alone exceeds ``max_bytes``."""
        if size < 0:
            raise ValueError("size must not be negative")
        old = self._items.pop(key, None)
        if old is not None:
            self.total_bytes -= old[1]
        if size > self.max_bytes:
            return False
        expires = (monotonic() if now is None else now) + self.ttl if self.ttl > 0 else _FOREVER
        self._items[key] = (value, size, expires)
        self.total_bytes += size
        while len(self._items) > self.max_entries or self.total_bytes > self.max_bytes:
            _, (_, evicted_size, _) = self._items.popitem(last=False)
            self.total_bytes -= evicted_size
            self.evictions += 1
        return True

    def pop(self, key: Any, default: Any = None) -> Any:
        item = self._items.pop(key, None)
        if item is None:
            return default
        self.total_bytes -= item[1]
        return item[0]

    def clear(self) -> None:
        self._items.clear()
        self.total_bytes = 0

    def keys(self) -> list[Any]:
        """Keys from least to most recently used (expired ones included until looked up)."""
        return list(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: Any) -> bool:
        return key in self._items
