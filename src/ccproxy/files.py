"""Files the proxy writes hold prompts, transcripts and error details: only the user may read
them. The data directory is 0700 and every file 0600, whatever the umask; a directory or files
left readable by an older version are tightened when opened (docs/security.md)."""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: Path, ours: bool = False) -> None:
    """Create ``path`` (and missing parents) for this user only. ``ours``: the directory belongs
    to ccproxy (CCPROXY_DATA_DIR), so an existing one that others may read is tightened too;
    other directories (a LOG_FILE_PATH's folder) are left as they are."""
    created = not path.exists()
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    with contextlib.suppress(OSError):
        info = os.stat(path)
        if (created or (ours and info.st_uid == os.getuid())) and stat.S_IMODE(info.st_mode) & 0o077:
            os.chmod(path, DIR_MODE)  # (mkdir's mode is filtered by the umask)


def tighten(path: Path | str) -> None:
    """Remove group and other permissions from an existing file of ours."""
    with contextlib.suppress(OSError):
        mode = os.stat(path).st_mode
        if stat.S_IMODE(mode) & 0o077:
            os.chmod(path, stat.S_IMODE(mode) & ~0o077)


def private_file(path: Path) -> None:
    """Make sure ``path`` exists and is 0600 before a library opens it by name (SQLite creates
    its -wal and -shm files with the database file's mode)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, FILE_MODE)
    os.close(fd)
    tighten(path)
    for suffix in ("-wal", "-shm", "-journal"):
        sibling = Path(f"{path}{suffix}")
        if sibling.exists():
            tighten(sibling)


def open_append(path: Path) -> int:
    """A file descriptor appending to ``path``, created 0600."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, FILE_MODE)
    tighten(path)
    return fd
