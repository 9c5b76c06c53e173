"""Process logging and the JSON-lines request and error logs.

The request path never touches a file: records go into a bounded in-memory queue drained by
one background thread. When the queue is full the record is dropped and counted, so logging can
never slow down or block a request. Files rotate by size (``LOG_FILE_MAX_BYTES``, three old
files kept). Records are built from known fields only; request headers are never logged,
and free text (error messages) passes through ``Redactor`` first.
"""

from __future__ import annotations

import collections
import logging
import os
import sys
import threading
from pathlib import Path
from typing import Any

import orjson

from .files import open_append, private_dir

BACKUPS = 3
QUEUE_SIZE = 10_000
FLUSH_INTERVAL = 0.1  # seconds


def setup_logging(level: str) -> None:
    root = logging.getLogger("ccproxy")
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False


class JsonLinesWriter:
    """Appends one JSON object per line to ``path`` from a background thread.

    ``write`` is a bounded ``deque.append`` (atomic under the GIL, no lock, no wake-up call);
    the thread polls every ``FLUSH_INTERVAL`` seconds and writes what piled up in one go.
    """

    def __init__(self, path: Path, max_bytes: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.dropped = 0
        self._pending: collections.deque[dict[str, Any]] = collections.deque()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"log-{path.name}", daemon=True)
        self._thread.start()

    def write(self, record: dict[str, Any]) -> None:
        if len(self._pending) < QUEUE_SIZE:
            self._pending.append(record)
        else:
            self.dropped += 1

    def close(self, timeout: float = 2.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        log = logging.getLogger("ccproxy.logs")
        try:
            private_dir(self.path.parent)
            fh = os.fdopen(open_append(self.path), "ab")
        except OSError as exc:
            log.error("cannot open %s (%s); its records are discarded", self.path, exc)
            return
        size = fh.tell()
        pending = self._pending
        while True:
            stopping = self._stop.wait(FLUSH_INTERVAL)
            batch = []
            while pending:
                batch.append(orjson.dumps(pending.popleft(), option=orjson.OPT_APPEND_NEWLINE))
            if batch:
                data = b"".join(batch)
                try:
                    if size + len(data) > self.max_bytes and size > 0:
                        fh.close()
                        _rotate(self.path)
                        fh = os.fdopen(open_append(self.path), "ab")
                        size = 0
                    fh.write(data)
                    fh.flush()
                    size += len(data)
                except OSError as exc:
                    self.dropped += len(batch)
                    log.error("cannot write %s: %s", self.path, exc)
            if stopping:
                break
        fh.close()


def _rotate(path: Path) -> None:
    """log.jsonl → log.jsonl.1 → … → log.jsonl.BACKUPS (the oldest is overwritten)."""
    for i in range(BACKUPS, 0, -1):
        src = path if i == 1 else path.with_name(f"{path.name}.{i - 1}")
        if src.exists():
            src.replace(path.with_name(f"{path.name}.{i}"))
