"""``ccproxy code``, ``ccproxy status`` and ``ccproxy stop``: Claude Code against this proxy in one
command, and the proxy it leaves serving in the background.

``ccproxy code [claude args…]`` uses the proxy already serving on the configured address, or
starts one in the background (its output in ``CCPROXY_DATA_DIR/ccproxy.log``), then runs the
``claude`` CLI with ``ANTHROPIC_BASE_URL`` pointing at it and a key it accepts; the arguments and
the exit code pass through. The proxy stays up for the next session; ``ccproxy stop`` ends it
(the pid is in ``CCPROXY_DATA_DIR/ccproxy.pid``, written by every ``ccproxy`` that serves).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from . import __version__
from .config import Settings
from .files import private_dir

START_TIMEOUT = 30.0
LOCAL_KEY = "sk-ant-ccproxy-local"  # what claude sends when the proxy checks no client keys
CLAUDE_MISSING = (
    "ccproxy: the Claude Code CLI (claude) is not installed or not on PATH.\n"
    "Install it with: npm install -g @anthropic-ai/claude-code   (or set CCPROXY_CLAUDE to its path)"
)


def pid_file(settings: Settings) -> Path:
    return settings.data_dir / "ccproxy.pid"


def log_file(settings: Settings) -> Path:
    return settings.data_dir / "ccproxy.log"


def base_url(settings: Settings) -> str:
    """Where a client on this machine reaches the proxy (a wildcard address via loopback)."""
    host = settings.host
    if host in ("0.0.0.0", "", "*"):
        host = "127.0.0.1"
    elif host in ("::", "[::]"):
        host = "[::1]"
    elif ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{settings.port}"


def client_key(settings: Settings) -> str:
    """A key the proxy accepts: the first of CCPROXY_CLIENT_API_KEYS, else a placeholder (the
    proxy checks none; upstream keys are its own)."""
    return settings.client_api_keys[0] if settings.client_api_keys else LOCAL_KEY


def serving(settings: Settings, timeout: float = 2.0) -> dict[str, Any] | None:
    """The proxy's ``GET /`` answer when a ccproxy serves at the configured address, else None."""
    try:
        resp = httpx.get(base_url(settings) + "/", timeout=timeout, trust_env=False)
        data = resp.json()
    except (httpx.HTTPError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("service") == "ccproxy" else None


def write_pid(settings: Settings) -> None:
    """Called by a serving ccproxy: who to signal for ``ccproxy stop``."""
    with contextlib.suppress(OSError):
        pid_file(settings).write_text(f"{os.getpid()} {settings.port}\n")


def remove_pid(settings: Settings) -> None:
    with contextlib.suppress(OSError, ValueError):
        path = pid_file(settings)
        if int(path.read_text().split()[0]) == os.getpid():
            path.unlink()


def start_background(settings: Settings) -> int:
    """Start ``ccproxy`` detached (its own session: it outlives this command and the terminal)."""
    private_dir(settings.data_dir, ours=True)
    log = log_file(settings)
    with open(log, "ab") as out:
        os.chmod(log, 0o600)
        proc = subprocess.Popen(
            [sys.executable, "-m", "ccproxy"],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace").splitlines()[-15:]
            print(f"ccproxy: the proxy exited at start ({proc.returncode}); its log, {log}:", file=sys.stderr)
            print("\n".join(tail), file=sys.stderr)
            return 1
        if serving(settings, timeout=0.5) is not None:
            print(f"ccproxy: started the proxy in the background at {base_url(settings)} (log: {log})", file=sys.stderr)
            return 0
        time.sleep(0.1)
    print(f"ccproxy: the proxy did not answer within {START_TIMEOUT:g} s; see {log}", file=sys.stderr)
    return 1


def code(settings: Settings, args: list[str]) -> int:
    claude = settings.claude_command or shutil.which("claude")
    if not claude or not os.access(claude, os.X_OK):
        print(CLAUDE_MISSING, file=sys.stderr)
        return 127
    if serving(settings) is None:
        started = start_background(settings)
        if started:
            return started
    # claude inherits this environment, pointed at the proxy (an auth token would win over the key)
    os.environ["ANTHROPIC_BASE_URL"] = base_url(settings)
    os.environ["ANTHROPIC_API_KEY"] = client_key(settings)
    os.unsetenv("ANTHROPIC_AUTH_TOKEN")
    # Ctrl-C belongs to claude (it asks before quitting); this process just waits for it.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        return subprocess.call([claude, *args])
    finally:
        signal.signal(signal.SIGINT, previous)


def status(settings: Settings) -> int:
    root = serving(settings)
    if root is None:
        print(f"ccproxy: not serving at {base_url(settings)}")
        return 3
    print(f"ccproxy {root.get('version', '?')}: serving at {base_url(settings)} (this command: {__version__})")
    pid = _pid(settings)
    if pid is not None:
        print(f"  pid {pid} (log: {log_file(settings)})")
    headers = {"x-api-key": client_key(settings)}
    try:
        metrics = httpx.get(base_url(settings) + "/v1/metrics", headers=headers, timeout=5, trust_env=False).json()
    except (httpx.HTTPError, ValueError):
        metrics = {}
    for name, state in (metrics.get("upstreams") or {}).items():
        circuit = state.get("circuit", {})
        print(f"  upstream {name}: circuit {circuit.get('state', '?')}")
    print(f"  in flight: {metrics.get('in_flight', '?')}")
    today = _requests_today(settings)
    if today is not None:
        print(f"  requests today: {today}")
    return 0


def _requests_today(settings: Settings) -> int | None:
    """From the request log itself (read-only), when it is on and readable here."""
    if settings.db_path is None:
        return None
    from .dashboard import Dashboard

    midnight = datetime.now().replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
    try:
        stats = Dashboard(settings.db_path).stats(midnight, None, None, None)
    except Exception:  # a log another user owns, a database that is down: just say less
        return None
    total = stats.get("total_requests")
    return total if isinstance(total, int) else None


def _pid(settings: Settings) -> int | None:
    try:
        pid = int(pid_file(settings).read_text().split()[0])
        os.kill(pid, 0)
    except (OSError, ValueError, IndexError):
        return None
    return pid


def stop(settings: Settings) -> int:
    pid = _pid(settings)
    if pid is None:
        if serving(settings) is not None:
            print(
                f"ccproxy: a proxy serves at {base_url(settings)}, but not with this data directory "
                f"({settings.data_dir}); stop it where it was started",
                file=sys.stderr,
            )
            return 1
        print(f"ccproxy: not serving at {base_url(settings)}")
        return 0
    os.kill(pid, signal.SIGTERM)  # a graceful drain: in-flight requests finish (cli.py)
    deadline = time.monotonic() + settings.drain_timeout + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except OSError:
            print(f"ccproxy: stopped (pid {pid})")
            return 0
        time.sleep(0.1)
    print(f"ccproxy: pid {pid} did not stop within {settings.drain_timeout + 10:g} s", file=sys.stderr)
    return 1
