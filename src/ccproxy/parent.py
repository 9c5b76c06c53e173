"""Children end with the ``ccproxy`` process that started them.

Granian's workers and the request log's writer are separate processes. When the main process
dies without running its shutdown (SIGKILL, the OOM killer, a crash), they would go on: a worker
keeps serving on the port (with SO_REUSEPORT a new instance binds the same port beside it and
requests are split between old and new), and the writer keeps the database open. So each child
watches its parent: with a pidfd (Linux ≥ 5.3: readable when the process exits), else by
polling ``getppid()`` (a child is re-parented when its parent dies).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Callable

log = logging.getLogger("ccproxy.parent")

POLL_SECONDS = 1.0
GRACE_SECONDS = 5.0  # after asking ourselves to stop, the time before a hard exit


def parent_alive(parent: int) -> bool:
    return os.getppid() == parent


def watch_parent(loop: asyncio.AbstractEventLoop, on_exit: Callable[[], None] | None = None) -> Callable[[], None]:
    """Call ``on_exit`` (default: stop this process) once the current parent process is gone.
    Returns a function that stops watching."""
    parent = os.getppid()
    on_exit = on_exit or stop_this_process
    fired = False

    def gone() -> None:
        nonlocal fired
        if not fired:
            fired = True
            log.error("the ccproxy process that started this one (pid %d) is gone: stopping", parent)
            on_exit()

    if parent == 1:  # already orphaned (re-parented to init) before we looked
        loop.call_soon(gone)
        return lambda: None
    try:
        fd = os.pidfd_open(parent)
    except (AttributeError, OSError):  # no pidfd: poll
        handle: asyncio.TimerHandle | None = None

        def poll() -> None:
            nonlocal handle
            if parent_alive(parent):
                handle = loop.call_later(POLL_SECONDS, poll)
            else:
                gone()

        handle = loop.call_later(POLL_SECONDS, poll)
        return lambda: handle.cancel() if handle is not None else None

    def readable() -> None:
        loop.remove_reader(fd)
        os.close(fd)
        gone()

    loop.add_reader(fd, readable)
    if not parent_alive(parent):  # it died between getppid() and pidfd_open()
        loop.call_soon(readable)

    def stop() -> None:
        with contextlib.suppress(OSError, ValueError):
            loop.remove_reader(fd)
            os.close(fd)

    return stop


def stop_this_process() -> None:
    """SIGTERM to ourselves (the server's own graceful stop), then a hard exit if that hangs."""
    os.kill(os.getpid(), signal.SIGTERM)
    with contextlib.suppress(RuntimeError):
        asyncio.get_running_loop().call_later(GRACE_SECONDS, os._exit, 1)
