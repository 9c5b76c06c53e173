"""End to end with real clients: the Claude Code CLI and the anthropic TypeScript SDK from npm,
against the real proxy process and the scripted mock upstream.

The npm packages are installed once into a cache directory (CCPROXY_E2E_CACHE, default
~/.cache/ccproxy-e2e) and reused by later runs. If they cannot be installed the run fails
loudly: these tests never skip.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.claude_cli import Claude
from tests.support.proxies import MockUpstream, start_mock, start_proxy, stop_proxy

NPM_PACKAGES = ("@anthropic-ai/claude-code", "@anthropic-ai/sdk")
CACHE = Path(os.environ.get("CCPROXY_E2E_CACHE", Path.home() / ".cache" / "ccproxy-e2e"))


def _npm_install() -> Path:
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail("npm is not installed; the e2e suite needs Node.js and npm (Debian: nodejs, npm)", pytrace=False)
    claude = CACHE / "node_modules" / ".bin" / "claude"
    sdk = CACHE / "node_modules" / "@anthropic-ai" / "sdk" / "package.json"
    if not (claude.exists() and sdk.exists()):
        CACHE.mkdir(parents=True, exist_ok=True)
        if not (CACHE / "package.json").exists():
            (CACHE / "package.json").write_text('{"private": true}\n')
        result = subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", "--loglevel=error", *NPM_PACKAGES],
            cwd=CACHE,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if result.returncode != 0 or not claude.exists():
            pytest.fail(f"cannot install {NPM_PACKAGES} from npm:\n{result.stdout}\n{result.stderr}", pytrace=False)
    return CACHE


@pytest.fixture(scope="session")
def node_modules() -> Path:
    return _npm_install()


@pytest.fixture(scope="session")
def claude_version(node_modules: Path) -> str:
    out = subprocess.run([str(node_modules / "node_modules/.bin/claude"), "--version"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    print(f"\nClaude Code CLI {out.stdout.strip()}")
    return out.stdout.strip()


@pytest.fixture(scope="session")
def search_engine() -> Iterator[MockUpstream]:
    """A second mock process playing SearXNG (scripts keyed by the searched query)."""
    mock = start_mock()
    yield mock
    mock.stop()


@pytest.fixture(scope="module")
def e2e_proxy(mock_upstream, search_engine, tmp_path_factory):
    proxy = start_proxy(mock_upstream.base, tmp_path_factory.mktemp("e2e-proxy"), SEARXNG_URL=search_engine.base)
    yield proxy
    stop_proxy(proxy)


@pytest.fixture
def claude(node_modules, claude_version, e2e_proxy, tmp_path) -> Iterator[Claude]:
    home = tmp_path / "home"
    work = tmp_path / "work"
    home.mkdir()
    work.mkdir()
    yield Claude(node_modules / "node_modules/.bin/claude", e2e_proxy.base, home, work)
