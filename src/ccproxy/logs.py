"""Process logging and the JSON-lines request and error logs.

The request path never touches a file: records go into a bounded in-memory queue drained by
one background thread (``BatchWriter``, which the in-process request store shares). When the
queue is full the record is dropped and counted, so logging can never slow down or block a
request. Files rotate by size (``LOG_FILE_MAX_BYTES``, three old files kept). Records are built
from known fields only; request headers are never logged, and free text (error messages)
passes through ``Redactor`` first.
"""

from __future__ import annotations

import collections
import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any, Generic, TypeVar

import orjson

from .files import open_append, private_dir

BACKUPS = 3
QUEUE_SIZE = 10_000
FLUSH_INTERVAL = 0.1  # seconds
T = TypeVar("T")


def setup_logging(level: str) -> None:
    root = logging.getLogger("ccproxy")
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False


class BatchWriter(Generic[T]):
    """A bounded queue of records drained by one background thread, in batches.

    ``put`` is a bounded ``deque.append`` (atomic under the GIL, no lock, no wake-up call): when
    the queue is full the record is dropped and counted, so writing can never slow down or block
    a request. The thread wakes every ``FLUSH_INTERVAL`` seconds and hands what piled up to
    ``write_batch`` in batches of at most ``max_batch``. Subclasses say where it goes: ``open`` (in
    the thread, once; raising OSError or ``open_errors`` disables the writer, logged),
    ``write_batch``, ``tick`` (after each wake-up) and ``shut``. The JSON-lines logs and the in-process
    request store are the two."""

    max_batch = 5000
    queue_size = QUEUE_SIZE
    open_errors: tuple[type[BaseException], ...] = (OSError,)

    def __init__(self, name: str) -> None:
        self.dropped = 0
        self._pending: collections.deque[T] = collections.deque()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def put(self, record: T) -> None:
        if len(self._pending) < self.queue_size:
            self._pending.append(record)
        else:
            self.dropped += 1

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued, then stop (waits at most ``timeout`` seconds)."""
        self._stop.set()
        self._thread.join(timeout)

    def flush(self, timeout: float = 5.0) -> None:
        """Wait until what was put so far is written (tests and shutdown)."""
        deadline = time.monotonic() + timeout
        while self._pending and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(FLUSH_INTERVAL * 1.5)

    def open(self) -> None: ...

    def write_batch(self, batch: list[T]) -> None: ...

    def tick(self) -> None: ...

    def shut(self) -> None: ...

    def _run(self) -> None:
        try:
            self.open()
        except self.open_errors as exc:
            log = logging.getLogger("ccproxy.logs")
            log.error("%s: cannot open (%s); its records are discarded", self._thread.name, exc)
            return
        pending = self._pending
        try:
            while True:
                stopping = self._stop.wait(FLUSH_INTERVAL)
                while pending:
                    batch = [pending.popleft() for _ in range(min(len(pending), self.max_batch))]
                    self.write_batch(batch)
                    if not stopping:
                        break  # (the rest next time: a wake-up writes one batch)
                self.tick()
                if stopping:
                    break
        finally:
            self.shut()


class JsonLinesWriter(BatchWriter[dict[str, Any]]):
    """Appends one JSON object per line to ``path``, rotating by size (BACKUPS old files)."""

    def __init__(self, path: Path, max_bytes: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self._fh: Any = None
        self._size = 0
        super().__init__(f"log-{path.name}")

    def write(self, record: dict[str, Any]) -> None:
        self.put(record)

    def open(self) -> None:
        private_dir(self.path.parent)
        self._fh = os.fdopen(open_append(self.path), "ab")
        self._size = self._fh.tell()

    def write_batch(self, batch: list[dict[str, Any]]) -> None:
        data = b"".join(orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE) for record in batch)
        try:
            if self._size + len(data) > self.max_bytes and self._size > 0:
                self._fh.close()
                _rotate(self.path)
                self._fh = os.fdopen(open_append(self.path), "ab")
                self._size = 0
            self._fh.write(data)
            self._fh.flush()
            self._size += len(data)
        except OSError as exc:
            self.dropped += len(batch)
            logging.getLogger("ccproxy.logs").error("cannot write %s: %s", self.path, exc)

    def shut(self) -> None:
        if self._fh is not None:
            self._fh.close()


def _rotate(path: Path) -> None:
    """log.jsonl → log.jsonl.1 → … → log.jsonl.BACKUPS (the oldest is overwritten)."""
    for i in range(BACKUPS, 0, -1):
        src = path if i == 1 else path.with_name(f"{path.name}.{i - 1}")
        if src.exists():
            src.replace(path.with_name(f"{path.name}.{i}"))
