"""``ccproxy code``: the real Claude Code CLI against a proxy the command starts in the background;
then ``ccproxy status`` and ``ccproxy stop`` on that proxy."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import pytest

from tests.support.chat_answers import text_stream
from tests.support.proxies import free_port, proxy_env

pytestmark = [pytest.mark.integration, pytest.mark.e2e]


def ccproxy(env: dict, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ccproxy", *args],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_code_starts_the_proxy_runs_claude_and_stop_ends_it(node_modules, mock_upstream, tmp_path):
    port = free_port()
    data = tmp_path / "data"
    home = tmp_path / "home"
    home.mkdir()
    env = proxy_env(mock_upstream.base, data, port, CCPROXY_CLAUDE=str(node_modules / "node_modules/.bin/claude"))
    env.update(
        HOME=str(home),
        CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1",
        DISABLE_TELEMETRY="1",
        DISABLE_AUTOUPDATER="1",
        DISABLE_ERROR_REPORTING="1",
    )
    env.pop("ANTHROPIC_BASE_URL", None)
    key = mock_upstream.script({"sse": text_stream("hi from ", "ccproxy code")})
    try:
        done = ccproxy(env, "code", "-p", f"say hi ({key})", "--output-format", "json", "--max-turns", "2")
        assert done.returncode == 0, done.stdout + done.stderr
        assert json.loads(done.stdout.strip().splitlines()[-1])["result"] == "hi from ccproxy code"
        assert f"started the proxy in the background at http://127.0.0.1:{port}" in done.stderr
        assert str(data / "ccproxy.log") in done.stderr
        [seen] = [r for r in mock_upstream.requests(key) if r["path"].endswith("/chat/completions")]
        assert seen["body"]["model"] == "gpt-big"
        # the proxy stays up for the next session: a second run reuses it
        again = ccproxy(env, "code", "-p", f"say hi ({key})", "--output-format", "json", "--max-turns", "2")
        assert again.returncode == 0 and "started the proxy" not in again.stderr
        status = ccproxy(env, "status", timeout=30)
        assert status.returncode == 0, status.stdout + status.stderr
        assert f"serving at http://127.0.0.1:{port}" in status.stdout
        assert "upstream default: circuit closed" in status.stdout and "requests today:" in status.stdout
        # claude's own exit code passes through
        bad = ccproxy(env, "code", "--no-such-flag-for-claude", timeout=60)
        assert bad.returncode != 0
    finally:
        stopped = ccproxy(env, "stop", timeout=60)
    assert stopped.returncode == 0 and "stopped" in stopped.stdout, stopped.stdout + stopped.stderr
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{port}/", timeout=2)
    assert ccproxy(env, "status", timeout=30).returncode == 3
    assert not (data / "ccproxy.pid").exists()


def test_code_without_claude_says_how_to_install_it(mock_upstream, tmp_path):
    env = proxy_env(mock_upstream.base, tmp_path, free_port(), PATH="/nonexistent")
    env.pop("CCPROXY_CLAUDE", None)
    done = ccproxy(env, "code", "-p", "hi", timeout=30)
    assert done.returncode == 127
    assert "npm install -g @anthropic-ai/claude-code" in done.stderr
    assert ccproxy(env, "status", timeout=30).returncode == 3  # and nothing was started
