"""The ``ccproxy`` command: validate settings, say what will be served, start Granian."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from . import __version__
from .config import DRAIN_DIR_ENV, STORE_SOCKET_ENV, ConfigError, Settings, help_text
from .files import private_dir

COMMANDS = ("code", "status", "stop")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] in COMMANDS:
        return command(args[0], args[1:])
    if "-h" in args or "--help" in args:
        print(help_text())
        return 0
    if "--version" in args:
        from . import _native

        print(f"ccproxy {__version__} (native: {_native.IMPLEMENTATION})")
        return 0
    unknown = [a for a in args if a != "--check"]
    if unknown:
        print(
            f"ccproxy: unknown argument {unknown[0]!r} (settings come from the environment; see --help)",
            file=sys.stderr,
        )
        return 2
    settings = _settings()
    if settings is None:
        return 2
    from . import _native

    print(
        f"ccproxy {__version__}: http://{settings.host}:{settings.port} → {settings.describe()}; "
        f"workers={settings.workers}, native={_native.IMPLEMENTATION}, data={settings.data_dir}",
        flush=True,
    )
    exposed = settings.exposure_warning()
    if exposed:
        print(exposed, file=sys.stderr, flush=True)
    if "--check" in args:
        return 0
    return serve(settings)


def command(name: str, args: list[str]) -> int:
    """``ccproxy code [claude args…]``, ``ccproxy status``, ``ccproxy stop`` (launcher.py)."""
    from . import launcher

    if name != "code" and args:
        print(f"ccproxy {name}: takes no arguments (settings come from the environment)", file=sys.stderr)
        return 2
    settings = _settings()
    if settings is None:
        return 2
    if name == "code":
        return launcher.code(settings, args)
    return launcher.status(settings) if name == "status" else launcher.stop(settings)


def _settings() -> Settings | None:
    """The settings, or None after saying in one line what is wrong with them."""
    try:
        return Settings.from_env()
    except ConfigError as exc:
        print(f"ccproxy: {exc}", file=sys.stderr)
        return None


def serve(settings: Settings) -> int:
    from granian.constants import Interfaces

    # Everything created from here on (the request log's database, WAL and JSON lines, in this
    # process, the writer and the workers) is for this user only (docs/security.md).
    os.umask(0o077)
    try:
        private_dir(settings.data_dir, ours=True)
    except OSError as exc:
        print(f"ccproxy: cannot create CCPROXY_DATA_DIR {settings.data_dir}: {exc}", file=sys.stderr)
        return 2
    drain_dir = Path(tempfile.mkdtemp(prefix="ccproxy-run-"))
    os.environ[DRAIN_DIR_ENV] = str(drain_dir)  # the workers inherit it
    writer = _start_store_writer(settings, drain_dir / "store.sock")
    server = _draining_server_class()(
        "ccproxy.app:create_app_from_env",
        factory=True,
        address=settings.host,
        port=settings.port,
        interface=Interfaces.RSGI if settings.interface == "rsgi" else Interfaces.ASGI,
        workers=settings.workers,
        runtime_threads=settings.runtime_threads,
        log_level=settings.log_level.lower(),  # type: ignore[arg-type]
    )
    server.drain_timeout = settings.drain_timeout
    server.drain_dir = drain_dir
    from .launcher import remove_pid, write_pid

    write_pid(settings)  # for ccproxy stop
    try:
        server.serve()
    finally:
        remove_pid(settings)
        if writer is not None:  # after the workers: it writes what they sent last
            writer.terminate()
            try:
                writer.wait(15)
            except subprocess.TimeoutExpired:
                writer.kill()
        shutil.rmtree(drain_dir, ignore_errors=True)
    return 0


def _start_store_writer(settings: Settings, socket_path: Path) -> subprocess.Popen | None:
    """The request log's writer process (``python -m ccproxy.store``), ready before any worker
    starts. A plain interpreter, not a multiprocessing child: that would re-import this command's
    modules in the writer and start a resource tracker beside it (~35 MB between them). Its
    settings go through a pipe, never the command line (a PostgreSQL URL may hold a password)."""
    if settings.db_path is None:
        return None
    from .pg import describe

    process = subprocess.Popen([sys.executable, "-m", "ccproxy.store"], stdin=subprocess.PIPE, start_new_session=False)
    assert process.stdin is not None
    process.stdin.write(
        json.dumps(
            {
                "db_path": str(settings.db_path),
                "socket_path": str(socket_path),
                "retention_days": settings.log_retention_days,
                "max_bytes": settings.log_max_db_bytes,
            }
        ).encode()
    )
    process.stdin.close()
    deadline = time.monotonic() + 15
    while not socket_path.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            print(f"ccproxy: the request log writer did not start ({describe(settings.db_path)})", file=sys.stderr)
            process.kill()
            return None
        time.sleep(0.02)
    os.environ[STORE_SOCKET_ENV] = str(socket_path)
    return process


def _draining_server_class() -> type:
    """Granian's server with a graceful drain in front of its shutdown.

    Granian stops its workers (and their listeners) as soon as it gets SIGTERM/SIGINT. We first
    send each worker SIGUSR1: it answers /health with 503 "draining", refuses new requests with
    503 and lets the in-flight ones finish, then drops a marker file. Once every worker has (or
    CCPROXY_DRAIN_TIMEOUT passed), Granian's own shutdown runs. A second signal stops at once.
    """
    from granian import Granian

    class DrainingGranian(Granian):  # type: ignore[misc, valid-type]
        drain_timeout = 30.0
        drain_dir: Path | None = None
        _draining = False

        def signal_handler_interrupt(self, *args: object, **kwargs: object) -> None:
            if self._draining or not self.drain_timeout or self.drain_dir is None:
                super().signal_handler_interrupt(*args, **kwargs)
                return
            self._draining = True
            pids = []
            for worker in list(self.wrks):
                pid = getattr(getattr(worker, "inner", None), "pid", None)
                if pid:
                    pids.append(pid)
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGUSR1)
            threading.Thread(target=self._stop_when_drained, args=(pids,), daemon=True).start()

        def _stop_when_drained(self, pids: list[int]) -> None:
            deadline = time.monotonic() + self.drain_timeout
            assert self.drain_dir is not None
            while time.monotonic() < deadline:
                if all((self.drain_dir / f"{pid}.drained").exists() for pid in pids):
                    break
                time.sleep(0.05)
            super().signal_handler_interrupt()

    return DrainingGranian
