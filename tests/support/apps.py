"""Settings and the app in process, for unit tests that drive ProxyApp without a server."""

from __future__ import annotations

from typing import Any

from ccproxy.app import ProxyApp
from ccproxy.config import Settings

UPSTREAM_KEY = "sk-test-key-123456"


def make_settings(**overrides: Any) -> Settings:
    """Settings as the environment would give them, with no files written unless asked: the
    default upstream at a closed loopback port (requests end in a real connection failure)."""
    values: dict[str, Any] = {
        "api_key": UPSTREAM_KEY,
        "api_key_env": "OPENAI_API_KEY",
        "base_url": "http://127.0.0.1:9/v1",
        "big_model": "gpt-big",
        "small_model": "gpt-small",
        "log_file": None,
        "error_log_file": None,
    }
    values.update(overrides)
    return Settings(**values)


def make_app(**overrides: Any) -> ProxyApp:
    return ProxyApp(make_settings(**overrides))
