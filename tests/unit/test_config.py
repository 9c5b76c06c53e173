from __future__ import annotations

from pathlib import Path

import pytest

from ccproxy.config import SETTINGS, ConfigError, Settings, help_text

BASE = {"OPENAI_API_KEY": "sk-x", "BIG_MODEL_NAME": "gpt-big", "SMALL_MODEL_NAME": "gpt-small"}


def test_defaults():
    s = Settings.from_env({**BASE, "CCPROXY_DATA_DIR": "/tmp/ccp"})
    assert s.base_url == "https://api.openai.com/v1"
    assert (s.host, s.port, s.workers, s.log_level) == ("127.0.0.1", 11434, 1, "INFO")
    assert s.db_path == Path("/tmp/ccp/ccproxy.db") and s.error_log_file == Path("/tmp/ccp/error.jsonl")
    assert s.log_file is None  # the SQLite store is the request log; JSON lines when asked for
    assert s.runtime_threads == 2  # Granian I/O threads per worker (docs/benchmarks.md)
    without_store = Settings.from_env({**BASE, "CCPROXY_DATA_DIR": "/tmp/ccp", "CCPROXY_DB_PATH": "off"})
    assert without_store.db_path is None and without_store.log_file == Path("/tmp/ccp/log.jsonl")


def test_openrouter_key_defaults_to_openrouter_url():
    env = {**BASE, "OPENROUTER_API_KEY": "or-key"}
    del env["OPENAI_API_KEY"]
    s = Settings.from_env(env)
    assert s.api_key == "or-key" and s.api_key_env == "OPENROUTER_API_KEY"
    assert s.base_url == "https://openrouter.ai/api/v1"


def test_explicit_paths_and_trailing_slash():
    s = Settings.from_env({**BASE, "OPENAI_BASE_URL": "http://127.0.0.1:9/v1/", "LOG_FILE_PATH": "/x/a.jsonl"})
    assert s.base_url == "http://127.0.0.1:9/v1" and s.log_file == Path("/x/a.jsonl")


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"OPENAI_API_KEY": ""}, "OPENAI_API_KEY"),
        ({"BIG_MODEL_NAME": ""}, "BIG_MODEL_NAME"),
        ({"SMALL_MODEL_NAME": " "}, "SMALL_MODEL_NAME"),
        ({"PORT": "http"}, "PORT"),
        ({"PORT": "70000"}, "PORT"),
        ({"WEB_CONCURRENCY": "0"}, "WEB_CONCURRENCY"),
        ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL"),
        ({"OPENAI_BASE_URL": "api.openai.com"}, "OPENAI_BASE_URL"),
        ({"REASONING_MODEL_PATTERN": "("}, "REASONING_MODEL_PATTERN"),
    ],
)
def test_invalid_settings_give_one_line_errors(change, fragment):
    with pytest.raises(ConfigError) as err:
        Settings.from_env({**BASE, **change})
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_help_documents_every_setting():
    text = help_text()
    for setting in SETTINGS:
        assert setting.env in text


def test_describe_never_shows_the_key():
    s = Settings.from_env({**BASE, "OPENAI_API_KEY": "sk-supersecret"})
    assert "sk-supersecret" not in s.describe() and "gpt-big" in s.describe()


def test_reasoning_and_cache_key_settings():
    s = Settings.from_env(BASE)
    assert (s.reasoning_style, s.reasoning_effort, s.prompt_cache_key) == ("openai", None, True)  # api.openai.com
    s = Settings.from_env({**BASE, "OPENAI_BASE_URL": "https://openrouter.ai/api/v1", "REASONING_EFFORT": "High"})
    assert (s.reasoning_style, s.reasoning_effort, s.prompt_cache_key) == ("openrouter", "high", False)
    s = Settings.from_env(
        {
            **BASE,
            "OPENAI_BASE_URL": "http://127.0.0.1:8000/v1",
            "CCPROXY_PROMPT_CACHE_KEY": "on",
            "CCPROXY_REASONING_STYLE": "none",
        }
    )
    assert (s.reasoning_style, s.prompt_cache_key) == ("none", True)
    for bad in ({"REASONING_EFFORT": "extreme"}, {"CCPROXY_REASONING_STYLE": "x"}, {"CCPROXY_PROMPT_CACHE_KEY": "yes"}):
        with pytest.raises(ConfigError):
            Settings.from_env({**BASE, **bad})


def test_schema_drop_keys_setting():
    assert Settings.from_env(BASE).schema_drop_keys == ()
    assert Settings.from_env({**BASE, "CCPROXY_SCHEMA_DROP_KEYS": "$schema, format"}).schema_drop_keys == (
        "$schema",
        "format",
    )


def test_shared_backend_urls():
    s = Settings.from_env(
        {**BASE, "REDIS_URL": "redis://:pw@cache:6379/0", "DATABASE_URL": "postgresql://u:pw@db/ccproxy"}
    )
    assert s.redis_url == "redis://:pw@cache:6379/0" and s.db_path == "postgresql://u:pw@db/ccproxy"
    off = Settings.from_env({**BASE, "DATABASE_URL": "postgresql://u@db/x", "CCPROXY_DB_PATH": "off"})
    assert off.db_path is None  # the store off stays off
    for env, fragment in (
        ({"REDIS_URL": "http://cache:6379"}, "REDIS_URL must start with"),
        ({"DATABASE_URL": "mysql://db/x"}, "DATABASE_URL must be a postgresql:// URL"),
    ):
        with pytest.raises(ConfigError, match=fragment):
            Settings.from_env({**BASE, **env})


def test_web_search_settings_and_their_secrets():
    base = {"OPENAI_API_KEY": "sk-x", "BIG_MODEL_NAME": "a", "SMALL_MODEL_NAME": "b"}
    s = Settings.from_env({**base, "SEARXNG_URL": "https://me:searx-pass-123@searx.example", "BRAVE_API_KEY": "bk-9"})
    assert s.web_search.engine_name() == "searxng"  # auto: the first configured, in order
    assert "searx-pass-123" in s.secrets() and "bk-9" in s.secrets()
    assert "searx-pass-123" not in s.describe() and "WebSearch through SearXNG at https://searx.example" in s.describe()
    assert (
        Settings.from_env({**base, "CCPROXY_WEB_SEARCH": "off", "TAVILY_API_KEY": "t"}).web_search.engine_name() is None
    )
    assert "WebSearch: no engine" in Settings.from_env(base).describe()
    for bad, message in (
        ({"CCPROXY_WEB_SEARCH": "google"}, "CCPROXY_WEB_SEARCH must be one of"),
        ({"CCPROXY_WEB_SEARCH": "tavily"}, "needs TAVILY_API_KEY"),
        ({"SEARXNG_URL": "searx.local"}, "SEARXNG_URL must be an http"),
    ):
        with pytest.raises(ConfigError, match=message):
            Settings.from_env({**base, **bad})


@pytest.mark.parametrize(("raw", "ok"), [("1", True), ("4", True), ("0", False), ("two", False)])
def test_runtime_threads_are_checked(raw, ok):
    env = {**BASE, "CCPROXY_RUNTIME_THREADS": raw}
    if ok:
        assert Settings.from_env(env).runtime_threads == int(raw)
    else:
        with pytest.raises(ConfigError, match="CCPROXY_RUNTIME_THREADS"):
            Settings.from_env(env)
