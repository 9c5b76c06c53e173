"""Process logging and the JSON-lines request and error logs.

The request path never touches a file: records go into a bounded queue drained by one
background thread. When the queue is full the record is dropped and counted, so logging can
never slow down or block a request. Files rotate by size (``LOG_FILE_MAX_BYTES``, three old
files kept). Records are built from known fields only; request headers are never logged,
and free text (error messages) passes through ``Redactor`` first.
"""

from __future__ import annotations

import logging
import queue
import sys
import threading
from pathlib import Path
from typing import Any

import orjson

BACKUPS = 3
QUEUE_SIZE = 10_000


def setup_logging(level: str) -> None:
    root = logging.getLogger("ccproxy")
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False


class JsonLinesWriter:
    """Appends one JSON object per line to ``path`` from a background thread."""

    def __init__(self, path: Path, max_bytes: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.dropped = 0
        self._queue: queue.Queue[bytes | None] = queue.Queue(QUEUE_SIZE)
        self._thread = threading.Thread(target=self._run, name=f"log-{path.name}", daemon=True)
        self._thread.start()

    def write(self, record: dict[str, Any]) -> None:
        try:
            self._queue.put_nowait(orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE))
        except queue.Full:
            self.dropped += 1

    def close(self, timeout: float = 2.0) -> None:
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            return
        self._thread.join(timeout)

    def _run(self) -> None:
        log = logging.getLogger("ccproxy.logs")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fh = open(self.path, "ab")  # noqa: SIM115 - lives as long as the thread
        except OSError as exc:
            log.error("cannot open %s (%s); its records are discarded", self.path, exc)
            while self._queue.get() is not None:
                self.dropped += 1
            return
        size = fh.tell()
        while True:
            line = self._queue.get()
            if line is None:
                break
            batch = [line]
            while len(batch) < 256:  # write what piled up in one go
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._queue.put_nowait(None)
                    break
                batch.append(more)
            data = b"".join(batch)
            try:
                if size + len(data) > self.max_bytes and size > 0:
                    fh.close()
                    _rotate(self.path)
                    fh = open(self.path, "ab")  # noqa: SIM115
                    size = 0
                fh.write(data)
                fh.flush()
                size += len(data)
            except OSError as exc:
                self.dropped += len(batch)
                log.error("cannot write %s: %s", self.path, exc)
        fh.close()


def _rotate(path: Path) -> None:
    """log.jsonl → log.jsonl.1 → … → log.jsonl.BACKUPS (the oldest is overwritten)."""
    for i in range(BACKUPS, 0, -1):
        src = path if i == 1 else path.with_name(f"{path.name}.{i - 1}")
        if src.exists():
            src.replace(path.with_name(f"{path.name}.{i}"))
