"""A bounded LRU map, limited by entry count and by total size in bytes (reference
implementation of the ``lru`` pair). Sizes are given by the caller (``jsonsize`` estimates)."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any


class LRUCache:
    __slots__ = ("_items", "evictions", "max_bytes", "max_entries", "total_bytes")

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        if max_entries < 1 or max_bytes < 1:
            raise ValueError("max_entries and max_bytes must be positive")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.total_bytes = 0
        self.evictions = 0
        self._items: OrderedDict[Any, tuple[Any, int]] = OrderedDict()

    def get(self, key: Any, default: Any = None) -> Any:
        item = self._items.get(key)
        if item is None:
            return default
        self._items.move_to_end(key)
        return item[0]

    def put(self, key: Any, value: Any, size: int) -> bool:
        """Store ``value``; False (and nothing stored) if it alone exceeds ``max_bytes``."""
        if size < 0:
            raise ValueError("size must not be negative")
        old = self._items.pop(key, None)
        if old is not None:
            self.total_bytes -= old[1]
        if size > self.max_bytes:
            return False
        self._items[key] = (value, size)
        self.total_bytes += size
        while len(self._items) > self.max_entries or self.total_bytes > self.max_bytes:
            _, (_, evicted_size) = self._items.popitem(last=False)
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
        """Keys from least to most recently used."""
        return list(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: Any) -> bool:
        return key in self._items
