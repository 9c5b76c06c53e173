"""Real Redis and PostgreSQL servers on loopback for the shared-backend tests.

Both come from Debian packages (scripts/test installs ``redis-server`` and ``postgresql``).
Each server runs in a throwaway directory on a free port and is stopped at the end. PostgreSQL
refuses to run as root, so under root the cluster is created and run as the ``postgres`` user.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, proc: subprocess.Popen | None, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"{what} not listening on {port} after {timeout}s")


class RedisServer:
    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (Debian package redis-server)")
        self.binary = binary
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_port(self.port, self.proc, 10, "redis-server")

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if found:
        return found[-1]
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name} not found (Debian package postgresql)")
    return path


class PostgresServer:
    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="ccproxy-pg-"))
        self.port = free_port()
        self.as_root = os.geteuid() == 0
        os.chmod(self.dir, 0o777)
        self.data = self.dir / "data"
        self._run([_pg_bin("initdb"), "-D", str(self.data), "-U", "ccproxy", "-A", "trust", "-E", "UTF8", "--no-sync"])
        self.start()
        self.admin_url = f"postgresql://ccproxy@127.0.0.1:{self.port}/postgres"
        self._databases = 0

    def start(self) -> None:
        self.proc = subprocess.Popen(
            self._as_owner(
                [
                    _pg_bin("postgres"),
                    "-D",
                    str(self.data),
                    "-p",
                    str(self.port),
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    f"unix_socket_directories={self.dir}",
                    "-c",
                    "fsync=off",
                    "-c",
                    "full_page_writes=off",
                ]
            ),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_port(self.port, self.proc, 30, "postgres")

    def _as_owner(self, cmd: list[str]) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *cmd] if self.as_root else cmd

    def _run(self, cmd: list[str]) -> None:
        subprocess.run(self._as_owner(cmd), check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def new_database(self) -> str:
        """A fresh, empty database; its URL (with a password the server ignores: trust auth)."""
        import psycopg

        self._databases += 1
        name = f"ccproxy_{os.getpid()}_{self._databases}"
        deadline = time.monotonic() + 20
        while True:  # the server accepts connections a moment after it listens
            try:
                with psycopg.connect(self.admin_url, autocommit=True) as conn:
                    conn.execute(f'CREATE DATABASE "{name}"')
                break
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        return f"postgresql://ccproxy:pg-secret-password-123@127.0.0.1:{self.port}/{name}"

    def halt(self) -> None:
        """Stop the server (fast shutdown: open sessions are cut), keeping its data."""
        # SIGINT is PostgreSQL's fast shutdown; sent to the postmaster itself (under root the
        # child of runuser, which does not pass signals on)
        try:
            os.kill(int((self.data / "postmaster.pid").read_text().split()[0]), signal.SIGINT)
        except (OSError, ValueError, IndexError):
            self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        self.halt()
        shutil.rmtree(self.dir, ignore_errors=True)


class TinyProxy:
    """A real forward proxy (Debian's tinyproxy) on loopback: plain-HTTP forwarding and CONNECT
    tunnels, optionally with Basic credentials; ``requests()`` reads what it logged."""

    def __init__(self, user: str | None = None, password: str | None = None) -> None:
        binary = shutil.which("tinyproxy")
        if binary is None:
            raise RuntimeError("tinyproxy is not installed (Debian package tinyproxy)")
        self.dir = Path(tempfile.mkdtemp(prefix="ccproxy-tinyproxy-"))
        self.port = free_port()
        self.log = self.dir / "tinyproxy.log"
        lines = [
            f"Port {self.port}",
            "Listen 127.0.0.1",
            "Timeout 60",
            f'LogFile "{self.log}"',
            "LogLevel Info",
            f'PidFile "{self.dir / "tinyproxy.pid"}"',
            "MaxClients 50",
            "Allow 127.0.0.1",
            "DisableViaHeader Yes",
        ]
        if user is not None:
            lines.append(f"BasicAuth {user} {password}")
        (self.dir / "tinyproxy.conf").write_text("\n".join(lines) + "\n")
        self.proc = subprocess.Popen(
            [binary, "-d", "-c", str(self.dir / "tinyproxy.conf")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        _wait_port(self.port, self.proc, 10, "tinyproxy")
        auth = f"{user}:{password}@" if user is not None else ""
        self.url = f"http://{auth}127.0.0.1:{self.port}"

    def requests(self) -> list[str]:
        """The request lines it was asked to carry out ("CONNECT host:port HTTP/1.1", "POST http://…")."""
        if not self.log.exists():
            return []
        return [
            line.split("): ", 1)[1] for line in self.log.read_text().splitlines() if "Request (file descriptor" in line
        ]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)
