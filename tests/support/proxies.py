"""Real processes on loopback for the integration, dialect, browser and end-to-end tests: the
scripted mock upstream (mock_upstream.py) and ccproxy served by Granian, plus the small request
helpers the tests share. The fixtures over them are in tests/conftest.py."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import time
import uuid
from pathlib import Path

import anthropic
import httpx

from tests.support.servers import free_port
from tests.support.sse import parse_sse

ROOT = Path(__file__).resolve().parents[2]
MOCK = ROOT / "tests" / "support" / "mock_upstream.py"
UPSTREAM_KEY = "sk-upstream-secret-0123456789abcdef"
CLIENT_KEY = "sk-ant-client-secret-abcdef0123456789"


def wait_http(url: str, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            raise RuntimeError(f"process exited with {proc.returncode}: {out}")
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{url} not ready after {timeout}s")


def new_key() -> str:
    return f"script-{uuid.uuid4().hex[:12]}"


class MockUpstream:
    def __init__(
        self, port: int, proc: subprocess.Popen | None = None, tls: tuple[str, str, str] | None = None
    ) -> None:
        """``tls``: (certificate, key, CA file): the mock speaks HTTPS as ``localhost``."""
        self.port = port
        self.proc = proc
        self.verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=tls[2]) if tls else True
        self.base = f"https://localhost:{port}" if tls else f"http://127.0.0.1:{port}"

    def script(self, *responses: dict, key: str | None = None) -> str:
        """Register responses under a fresh key (or ``key``); put the key in the request to
        select them. A request holding several keys gets the script registered first."""
        key = key or new_key()
        body = {"key": key, "responses": list(responses)}
        httpx.post(f"{self.base}/_scripts", json=body, verify=self.verify).raise_for_status()
        return key

    def requests(self, key: str) -> list[dict]:
        return httpx.get(f"{self.base}/_requests", params={"key": key}, verify=self.verify).json()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)


def start_mock(tls: tuple[str, str, str] | None = None) -> MockUpstream:
    port = free_port()
    args = [sys.executable, str(MOCK), str(port), *(tls[:2] if tls else ())]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    mock = MockUpstream(port, proc, tls)
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(f"{mock.base}/_requests", verify=mock.verify, timeout=1.0)
            return mock
        except httpx.HTTPError:
            if proc.poll() is not None or time.monotonic() > deadline:
                mock.stop()
                output = proc.stdout.read() if proc.stdout else ""
                raise RuntimeError(f"the mock upstream did not start: {output}") from None
            time.sleep(0.05)


class Proxy:
    def __init__(self, port: int, data_dir: Path, proc: subprocess.Popen) -> None:
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        self.data_dir = data_dir
        self.proc = proc

    def client(self, **kwargs) -> anthropic.Anthropic:
        kwargs.setdefault("max_retries", 0)
        return anthropic.Anthropic(base_url=self.base, api_key=CLIENT_KEY, **kwargs)


# Proxy variables of the machine running the tests would send the proxy's upstream traffic
# elsewhere; tests that want a proxy pass them explicitly (test_egress.py).
PROXY_VARIABLES = {n for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy") for n in (name, name.upper())}


def start_proxy(upstream_base: str, data_dir: Path, **env: str) -> Proxy:
    port = free_port()
    full_env = proxy_env(upstream_base, data_dir, port, **env)
    data_dir.mkdir(parents=True, exist_ok=True)
    # Output goes to a file: a pipe nobody reads until the end would block a chatty server.
    with (data_dir / "stdout.log").open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "ccproxy"], env=full_env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_http(f"http://127.0.0.1:{port}/health", proc)
    except (RuntimeError, TimeoutError) as exc:
        proc.kill()
        raise RuntimeError(f"{exc}\n{(data_dir / 'stdout.log').read_text()}") from None
    return Proxy(port, data_dir, proc)


def proxy_env(upstream_base: str, data_dir: Path, port: int, **env: str) -> dict[str, str]:
    """The environment a test proxy serves with (the mock as its upstream, files in data_dir)."""
    return {
        **{k: v for k, v in os.environ.items() if k not in PROXY_VARIABLES},
        "OPENAI_API_KEY": UPSTREAM_KEY,
        "OPENAI_BASE_URL": f"{upstream_base}/v1",
        "BIG_MODEL_NAME": "gpt-big",
        "SMALL_MODEL_NAME": "gpt-small",
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "CCPROXY_DATA_DIR": str(data_dir),
        "LOG_FILE_PATH": str(data_dir / "log.jsonl"),
        "ERROR_LOG_FILE_PATH": str(data_dir / "error.jsonl"),
        "LOG_LEVEL": "INFO",
        # One attempt per request and a circuit that never opens, unless a test asks otherwise:
        # most tests check how one upstream answer is translated (test_resilience.py covers these).
        "CCPROXY_MAX_RETRIES": "0",
        "CCPROXY_CIRCUIT_THRESHOLD": "100000",
        **env,
    }


def stop_proxy(proxy: Proxy) -> str:
    proxy.proc.terminate()
    try:
        proxy.proc.wait(timeout=40)
    except subprocess.TimeoutExpired:
        proxy.proc.kill()
        proxy.proc.wait()
    return (proxy.data_dir / "stdout.log").read_text()


# --- requests ---------------------------------------------------------------------------------


def ask(key: str, text: str = "", **extra) -> dict:
    """A small Messages request whose text carries a mock script's ``key`` (and ``text``)."""
    content = f"{key} {text}" if text else key
    return {"model": "claude-sonnet-5", "max_tokens": 5, "messages": [{"role": "user", "content": content}], **extra}


def post(proxy: Proxy, path: str, body: bytes | dict, timeout: float = 30, **headers: str) -> httpx.Response:
    """POST as an Anthropic client would (the client key, JSON), headers overridable."""
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers.setdefault("content-type", "application/json")
    headers.setdefault("x-api-key", CLIENT_KEY)
    return httpx.post(f"{proxy.base}{path}", content=content, headers=headers, timeout=timeout)


def metrics(proxy: Proxy) -> dict:
    return httpx.get(f"{proxy.base}/v1/metrics").json()


def raw_stream(proxy: Proxy, body: dict) -> list[tuple[str, dict]]:
    """A streamed request's events, parsed from the wire (not through an SDK)."""
    with httpx.stream(
        "POST",
        f"{proxy.base}/v1/messages?beta=true",
        json={**body, "stream": True},
        headers={"x-api-key": CLIENT_KEY, "anthropic-version": "2023-06-01"},
        timeout=30,
    ) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        return parse_sse(resp.read())
