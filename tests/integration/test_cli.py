"""The `ccproxy` command as a user runs it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from ccproxy.config import SETTINGS

pytestmark = pytest.mark.integration


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in {s.env for s in SETTINGS}}
    return subprocess.run(
        [sys.executable, "-m", "ccproxy", *args],
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_help_documents_every_setting():
    out = run("--help")
    assert out.returncode == 0
    for setting in SETTINGS:
        assert setting.env in out.stdout


def test_console_script_is_installed():
    exe = shutil.which("ccproxy", path=os.path.dirname(sys.executable)) or shutil.which("ccproxy")
    assert exe, "the ccproxy console script is not on PATH"
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.startswith("ccproxy ") and "native:" in out.stdout


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({}, "OPENAI_API_KEY"),
        ({"OPENAI_API_KEY": "sk-x"}, "BIG_MODEL_NAME"),
        ({"OPENAI_API_KEY": "sk-x", "BIG_MODEL_NAME": "a", "SMALL_MODEL_NAME": "b", "PORT": "eighty"}, "PORT"),
    ],
)
def test_missing_or_bad_settings_exit_with_one_line(env, fragment):
    out = run(env=env)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and fragment in out.stderr and "Traceback" not in out.stderr


def test_check_prints_what_would_be_served_without_the_key():
    env = {
        "OPENAI_API_KEY": "sk-topsecret-value",
        "BIG_MODEL_NAME": "gpt-big",
        "SMALL_MODEL_NAME": "gpt-small",
        "OPENAI_BASE_URL": "http://127.0.0.1:9999/v1",
        "PORT": "12345",
    }
    out = run("--check", env=env)
    assert out.returncode == 0
    assert "http://127.0.0.1:9999/v1" in out.stdout and "gpt-big" in out.stdout and "12345" in out.stdout
    assert "sk-topsecret-value" not in out.stdout + out.stderr


BASE = {"OPENAI_API_KEY": "sk-x-0123456789", "BIG_MODEL_NAME": "a", "SMALL_MODEL_NAME": "b"}


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "proxy.internal"])
@pytest.mark.parametrize("args", [("--check",), ()])
def test_serving_beyond_loopback_without_keys_and_password_is_refused(host, args):
    for extra in ({}, {"CCPROXY_CLIENT_API_KEYS": "k1"}, {"DASHBOARD_PASSWORD": "pw"}):
        out = run(*args, env={**BASE, "HOST": host, "PORT": "0", **extra})
        assert out.returncode == 2, out.stdout
        assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
        assert "CCPROXY_ALLOW_UNAUTHENTICATED" in out.stderr
        for needed in ("CCPROXY_CLIENT_API_KEYS", "DASHBOARD_PASSWORD"):
            assert (needed in out.stderr) == (needed not in extra)


def test_loopback_hosts_and_guarded_or_explicitly_opened_exposure_are_served():
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        assert run("--check", env={**BASE, "HOST": host}).returncode == 0, host
    guarded = run("--check", env={**BASE, "HOST": "0.0.0.0", "CCPROXY_CLIENT_API_KEYS": "k", "DASHBOARD_PASSWORD": "p"})
    assert guarded.returncode == 0 and "WARNING" not in guarded.stderr
    opened = run("--check", env={**BASE, "HOST": "0.0.0.0", "CCPROXY_ALLOW_UNAUTHENTICATED": "on"})
    assert opened.returncode == 0
    assert "WARNING" in opened.stderr and "open to anyone" in opened.stderr and "0.0.0.0" in opened.stderr
