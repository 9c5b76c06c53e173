"""The one Settings object, read from the environment once at start-up.

Nothing else in the package reads ``os.environ`` (the native selector in ``_native`` is the
one exception, as it decides at import time). Every setting is declared once in ``SETTINGS``;
that table drives parsing, validation and ``ccproxy --help``.
"""

from __future__ import annotations

import base64
import contextlib
import importlib.util
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .routing import DEFAULT_UPSTREAM, RouteRule, UpstreamConfig
from .routing_file import EFFORTS, REASONING_STYLES, default_reasoning_style, load_routing_file
from .upstream.client import CLIENTS, DEFAULT_CLIENT
from .upstream.egress import NO_EGRESS, Egress, EgressError, parse_proxy, split_userinfo, without_userinfo
from .websearch import ENGINES, MODES, SEARCH_DEFAULTS, EngineConfig

DEFAULT_OPENAI_BASE_URL = "https://api.openai.com/v1"
DEFAULT_OPENROUTER_BASE_URL = "https://openrouter.ai/api/v1"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


@dataclass(frozen=True, slots=True)
class Setting:
    env: str
    default: str | None
    help: str


# Order here is the order of `ccproxy --help`.
SETTINGS: tuple[Setting, ...] = (
    Setting("OPENAI_API_KEY", None, "API key of the upstream (required unless OPENROUTER_API_KEY)"),
    Setting(
        "OPENROUTER_API_KEY",
        None,
        "used when OPENAI_API_KEY is unset; base URL defaults to OpenRouter",
    ),
    Setting("OPENAI_BASE_URL", DEFAULT_OPENAI_BASE_URL, "Chat Completions upstream base URL (…/v1)"),
    Setting("BIG_MODEL_NAME", None, "upstream model for opus/sonnet and other claude-* ids (required)"),
    Setting("SMALL_MODEL_NAME", None, "upstream model for haiku ids (required)"),
    Setting("HOST", "127.0.0.1", "address to listen on (beyond loopback: needs client keys and a dashboard password)"),
    Setting("PORT", "11434", "port to listen on"),
    Setting("WEB_CONCURRENCY", "1", "number of worker processes"),
    Setting(
        "CCPROXY_RUNTIME_THREADS",
        "2",
        "Granian I/O threads per worker (2: one can serve sockets while the other waits for Python)",
    ),
    Setting("LOG_LEVEL", "INFO", "DEBUG, INFO, WARNING, ERROR or CRITICAL"),
    Setting("CCPROXY_DATA_DIR", "~/.local/share/ccproxy", "directory for every file ccproxy writes"),
    Setting(
        "LOG_FILE_PATH",
        "off (<CCPROXY_DATA_DIR>/log.jsonl when CCPROXY_DB_PATH=off)",
        "also log each request as a JSON line here (the SQLite store is the request log)",
    ),
    Setting("ERROR_LOG_FILE_PATH", "<CCPROXY_DATA_DIR>/error.jsonl", "error log, JSON lines ('off': none)"),
    Setting("LOG_FILE_MAX_BYTES", "52428800", "size at which a log file is rotated (keeps 3 old files)"),
    Setting(
        "CCPROXY_DB_PATH",
        "<CCPROXY_DATA_DIR>/ccproxy.db",
        "SQLite request log and dashboard settings ('off': no request store, no dashboard data)",
    ),
    Setting(
        "DATABASE_URL",
        None,
        "PostgreSQL for the request log instead of SQLite (postgresql://user:pass@host/db; needs ccproxy[postgres])",
    ),
    Setting(
        "REDIS_URL",
        None,
        "Redis shared by proxies for the cache, in-flight de-duplication, rate limits and circuits (ccproxy[redis])",
    ),
    Setting("CCPROXY_LOG_BODIES", "off", "store request and response bodies in the request log (secrets redacted)"),
    Setting("CCPROXY_LOG_BODY_MAX_BYTES", "65536", "longest body stored per request and direction (cut beyond)"),
    Setting("CCPROXY_LOG_RETENTION_DAYS", "30", "logged requests older than this are deleted (0: keep)"),
    Setting("CCPROXY_LOG_MAX_DB_BYTES", "1073741824", "the oldest logged requests are deleted beyond this size"),
    Setting("DASHBOARD_PASSWORD", None, "HTTP Basic password for /dashboard and /api/* (username ignored)"),
    Setting(
        "CCPROXY_CLIENT_API_KEYS",
        None,
        "comma list of keys clients must send (x-api-key or Bearer) to use the proxy; unset: any",
    ),
    Setting(
        "CCPROXY_ALLOWED_HOSTS",
        None,
        "comma list of host names clients use to reach ccproxy besides loopback (*.example.com: subdomains;"
        " *: any); other Host headers get 403",
    ),
    Setting(
        "CCPROXY_ALLOW_UNAUTHENTICATED",
        "off",
        "on: serve a non-loopback HOST without client keys and dashboard password (anyone who can connect"
        " spends your key and reads your logs)",
    ),
    Setting(
        "CCPROXY_PROTECT_METRICS",
        "off",
        "on: /metrics, /v1/metrics and /v1/cache/stats need a client key or the dashboard password",
    ),
    Setting("CLAUDE_PROJECTS_DIR", "~/.claude/projects", "Claude Code's project logs, read by /api/conversations"),
    Setting(
        "MAX_TOKENS_LIMIT",
        None,
        "clamp max_tokens sent upstream to this (default: known model limits)",
    ),
    Setting(
        "REASONING_MODEL_PATTERN",
        r"^(o\d|gpt-5)",
        "regex of upstream models that take max_completion_tokens and no temperature",
    ),
    Setting(
        "REASONING_EFFORT",
        None,
        "effort for reasoning models when the client asks for none: minimal, low, medium, high",
    ),
    Setting(
        "CCPROXY_REASONING_STYLE",
        "auto",
        "reasoning request: openai (reasoning_effort), openrouter (reasoning object), deepseek (thinking"
        " switch, reasoning_content sent back), none; auto: by OPENAI_BASE_URL",
    ),
    Setting("CCPROXY_PROMPT_CACHE_KEY", "auto", "send prompt_cache_key: on, off, or auto (on for api.openai.com)"),
    Setting(
        "CCPROXY_SCHEMA_DROP_KEYS",
        None,
        "JSON-schema keywords to strip from tool schemas (comma list, e.g. $schema,format)",
    ),
    Setting(
        "CCPROXY_THINK_TAGS",
        "on",
        "read <think>…</think> at the start of an answer as a thinking block (DeepSeek-R1 distills, Qwen3)",
    ),
    Setting(
        "CCPROXY_WEB_SEARCH",
        "auto",
        "web search for Claude Code's WebSearch on upstreams without one: auto (the configured engine), "
        "searxng, brave, tavily or off; see docs/websearch.md",
    ),
    Setting("SEARXNG_URL", None, "a SearXNG server to search with (its JSON API: /search?format=json)"),
    Setting("BRAVE_API_KEY", None, "Brave Search API key to search with"),
    Setting("TAVILY_API_KEY", None, "Tavily API key to search with"),
    Setting("CCPROXY_CLAUDE", None, "the claude CLI `ccproxy code` runs (default: claude on PATH)"),
    Setting("CCPROXY_CONFIG", None, "routing file (TOML): named upstreams and model rules; see docs/routing.md"),
    Setting(
        "CCPROXY_CONTEXT_WINDOW",
        None,
        "input tokens BIG/SMALL_MODEL_NAME take (default: known model families); longer prompts get 400 at once",
    ),
    Setting("CCPROXY_CONNECT_TIMEOUT", "10", "seconds to connect to the upstream"),
    Setting(
        "CCPROXY_READ_TIMEOUT",
        "600",
        "seconds the upstream may stay silent (first byte and between chunks)",
    ),
    Setting(
        "CCPROXY_FIRST_BYTE_TIMEOUT",
        "<CCPROXY_READ_TIMEOUT>",
        "seconds to wait for a streaming upstream's answer (status and headers)",
    ),
    Setting("CCPROXY_TOTAL_TIMEOUT", "0", "seconds a whole request may take, stream included (0: no limit)"),
    Setting("CCPROXY_PING_INTERVAL", "15", "seconds of stream silence after which a ping event is sent"),
    Setting("CCPROXY_MAX_RETRIES", "2", "retries of a failed upstream attempt before anything reached the client"),
    Setting("CCPROXY_RETRY_BASE_DELAY", "0.5", "first retry backoff in seconds (doubles, full jitter)"),
    Setting("CCPROXY_RETRY_MAX_DELAY", "8", "largest retry backoff in seconds"),
    Setting("CCPROXY_RETRY_MAX_AFTER", "30", "largest upstream Retry-After waited for before retrying"),
    Setting("CCPROXY_RETRY_BUDGET", "0.2", "retries allowed per first attempt, over time (plus a burst of 10)"),
    Setting("CCPROXY_CIRCUIT_THRESHOLD", "5", "consecutive upstream faults (5xx, timeouts, resets) opening a circuit"),
    Setting("CCPROXY_CIRCUIT_COOLDOWN", "60", "seconds an open circuit refuses before letting a probe through"),
    Setting("CCPROXY_RPM", "0", "requests per minute allowed to each upstream (0: no limit)"),
    Setting("CCPROXY_TPM", "0", "tokens per minute allowed to each upstream (0: no limit)"),
    Setting("CCPROXY_RATE_QUEUE", "100", "requests that may wait for a rate limit; more are refused with 429"),
    Setting("CCPROXY_RATE_MAX_WAIT", "30", "longest wait for a rate limit in seconds; longer waits get 429"),
    Setting("CCPROXY_CACHE", "off", "response cache for identical non-streaming requests: on or off"),
    Setting("CCPROXY_CACHE_TTL", "300", "seconds a cached response stays valid"),
    Setting("CCPROXY_CACHE_MAX_ENTRIES", "1000", "most responses cached"),
    Setting("CCPROXY_CACHE_MAX_BYTES", "67108864", "most bytes of responses cached"),
    Setting("CCPROXY_DRAIN_TIMEOUT", "30", "seconds in-flight requests may take to finish after SIGTERM"),
    Setting("CCPROXY_INTERFACE", "asgi", "Granian interface: asgi (bounded memory for slow clients) or rsgi (faster)"),
    Setting(
        "CCPROXY_HTTP_CLIENT", DEFAULT_CLIENT, "upstream HTTP client: builtin (ours, fastest) or httpx (the fallback)"
    ),
    Setting("CCPROXY_MAX_REQUEST_BYTES", "33554432", "largest accepted request body (413 above)"),
    Setting(
        "CCPROXY_MAX_RESPONSE_BYTES",
        "33554432",
        "largest upstream response body (decompressed); one streamed event may be at most 16 MiB",
    ),
    Setting("HTTPS_PROXY", None, "http:// proxy for https upstreams (CONNECT); also https_proxy, ALL_PROXY"),
    Setting("HTTP_PROXY", None, "http:// proxy for plain-http upstreams; also http_proxy, ALL_PROXY"),
    Setting("NO_PROXY", None, "comma list of hosts, domains (.example.com), IPs and CIDRs reached directly; *: all"),
    Setting("CCPROXY_CA_BUNDLE", None, "PEM file of extra CA certificates to trust for upstreams (a private CA)"),
    Setting("CCPROXY_ENABLE_CYTHON", "true", "use the compiled native modules when built"),
)


# Set by the ccproxy command for the worker processes it starts (cli.py), never by users.
DRAIN_DIR_ENV = "CCPROXY_DRAIN_DIR"  # where workers report "drained"
STORE_SOCKET_ENV = "CCPROXY_STORE_SOCKET"  # the request log writer process's socket (store.py)


@dataclass(frozen=True, slots=True)
class Settings:
    api_key: str | None  # None: no upstream from the environment (a routing file provides them)
    api_key_env: str  # which variable held the key, named in "upstream rejected …" errors
    base_url: str
    big_model: str | None
    small_model: str | None
    host: str = "127.0.0.1"
    port: int = 11434
    workers: int = 1
    log_level: str = "INFO"
    data_dir: Path = Path("~/.local/share/ccproxy")
    log_file: Path | None = None
    error_log_file: Path | None = None
    log_file_max_bytes: int = 50 * 1024 * 1024
    max_tokens_limit: int | None = None
    reasoning_model_pattern: str = r"^(o\d|gpt-5)"
    connect_timeout: float = 10.0
    read_timeout: float = 600.0
    ping_interval: float = 15.0
    first_byte_timeout: float = 600.0
    total_timeout: float = 0.0  # 0: none
    max_retries: int = 2
    retry_base_delay: float = 0.5
    retry_max_delay: float = 8.0
    retry_max_after: float = 30.0
    retry_budget: float = 0.2
    circuit_threshold: int = 5
    circuit_cooldown: float = 60.0
    rpm: int = 0
    tpm: int = 0
    rate_queue: int = 100
    rate_max_wait: float = 30.0
    cache: bool = False
    cache_ttl: float = 300.0
    cache_max_entries: int = 1000
    cache_max_bytes: int = 64 * 1024 * 1024
    drain_timeout: float = 30.0
    db_path: Path | str | None = None  # None: no request store; a str: a PostgreSQL URL
    redis_url: str | None = None  # shared cache, rate windows and circuits (shared.py)
    log_bodies: bool = False
    log_body_max_bytes: int = 65536
    log_retention_days: float = 30.0
    log_max_db_bytes: int = 1 << 30
    dashboard_password: str | None = None
    client_api_keys: tuple[str, ...] = ()
    projects_dir: Path = Path("~/.claude/projects")
    max_request_bytes: int = 32 * 1024 * 1024
    http_client: str = DEFAULT_CLIENT
    interface: str = "asgi"
    runtime_threads: int = 2
    reasoning_effort: str | None = None
    reasoning_style: str = "openai"
    prompt_cache_key: bool = False
    schema_drop_keys: tuple[str, ...] = ()
    think_tags: bool = True
    config_file: Path | None = None
    upstreams: tuple[UpstreamConfig, ...] = ()  # from the routing file
    rules: tuple[RouteRule, ...] = ()
    base_url_auth: str | None = None  # "Basic …" from user:password@ in OPENAI_BASE_URL
    max_response_bytes: int = 32 * 1024 * 1024
    egress: Egress = NO_EGRESS  # forward proxies and extra CAs for upstream connections
    allowed_hosts: tuple[str, ...] = ()  # Host names accepted besides loopback (access.py)
    allow_unauthenticated: bool = False
    protect_metrics: bool = False
    context_window: int | None = None  # the environment upstream's models' window (tokens)
    claude_command: str | None = None  # the claude CLI for ``ccproxy code`` (default: from PATH)
    web_search: EngineConfig = SEARCH_DEFAULTS  # the engine the proxy searches with (websearch.py)
    drain_dir: Path | None = None  # started by the ccproxy command: report drains here, end with it
    store_socket: str | None = None  # the writer process's socket; None: write the store in-process

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env

        def get(name: str) -> str | None:
            value = env.get(name, "").strip()
            return value or None

        config_file = Path(get("CCPROXY_CONFIG")).expanduser() if get("CCPROXY_CONFIG") else None
        file_upstreams: tuple[UpstreamConfig, ...] = ()
        rules: tuple[RouteRule, ...] = ()
        if config_file is not None:
            file_upstreams, rules = load_routing_file(config_file, get)
        api_key, api_key_env = get("OPENAI_API_KEY"), "OPENAI_API_KEY"
        if api_key is None and get("OPENROUTER_API_KEY"):
            api_key, api_key_env = get("OPENROUTER_API_KEY"), "OPENROUTER_API_KEY"
        if api_key is None and not file_upstreams:
            raise ConfigError("OPENAI_API_KEY (or OPENROUTER_API_KEY) is not set: the upstream API key")
        default_base = DEFAULT_OPENROUTER_BASE_URL if api_key_env == "OPENROUTER_API_KEY" else DEFAULT_OPENAI_BASE_URL
        base_url = (get("OPENAI_BASE_URL") or default_base).rstrip("/")
        if not base_url.startswith(("http://", "https://")):
            raise ConfigError(
                f"OPENAI_BASE_URL must start with http:// or https://, got {split_userinfo(base_url)[0]!r}"
            )
        base_url, base_url_auth = split_userinfo(base_url)
        big, small = get("BIG_MODEL_NAME"), get("SMALL_MODEL_NAME")
        if api_key is None:  # routing file only: no environment upstream to map models to
            big = small = None
        for name, value in (("BIG_MODEL_NAME", big), ("SMALL_MODEL_NAME", small)):
            if value is None and not file_upstreams:
                raise ConfigError(f"{name} is not set: the upstream model for {_ROLE[name]}")
        for rule in rules:
            if rule.upstream == DEFAULT_UPSTREAM and api_key is None:
                raise ConfigError(f"{config_file}: a route uses upstream 'default' but OPENAI_API_KEY is not set")
        read_timeout = _number(get, "CCPROXY_READ_TIMEOUT", "600", float, 0.1)
        # One request log by default, the SQLite store; JSON lines when asked for, or when the
        # store is off (the JSON writer is a thread in each worker: ~3 % req/s on small requests).
        json_log_default = "off" if (get("CCPROXY_DB_PATH") or "").lower() != "off" else None
        log_level = (get("LOG_LEVEL") or "INFO").upper()
        if log_level not in LOG_LEVELS:
            raise ConfigError(f"LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, got {log_level!r}")
        data_dir = Path(get("CCPROXY_DATA_DIR") or "~/.local/share/ccproxy").expanduser()
        pattern = get("REASONING_MODEL_PATTERN") or r"^(o\d|gpt-5)"
        try:
            import re

            re.compile(pattern)
        except re.error as exc:
            raise ConfigError(f"REASONING_MODEL_PATTERN is not a valid regex: {exc}") from None
        limit = _number(get, "MAX_TOKENS_LIMIT", None, int, 1)
        effort = (get("REASONING_EFFORT") or "").lower() or None
        if effort is not None and effort not in EFFORTS:
            raise ConfigError(f"REASONING_EFFORT must be one of {', '.join(EFFORTS)}, got {effort!r}")
        style = (get("CCPROXY_REASONING_STYLE") or "auto").lower()
        if style == "auto":
            style = default_reasoning_style(base_url)
        if style not in REASONING_STYLES:
            raise ConfigError(f"CCPROXY_REASONING_STYLE must be auto, {', '.join(REASONING_STYLES)}, got {style!r}")
        cache_key_mode = (get("CCPROXY_PROMPT_CACHE_KEY") or "auto").lower()
        if cache_key_mode not in ("auto", "on", "off"):
            raise ConfigError(f"CCPROXY_PROMPT_CACHE_KEY must be auto, on or off, got {cache_key_mode!r}")
        send_cache_key = cache_key_mode == "on" or (cache_key_mode == "auto" and "://api.openai.com" in base_url)
        interface = (get("CCPROXY_INTERFACE") or "asgi").lower()
        if interface not in ("rsgi", "asgi"):
            raise ConfigError(f"CCPROXY_INTERFACE must be rsgi or asgi, got {interface!r}")
        http_client = (get("CCPROXY_HTTP_CLIENT") or DEFAULT_CLIENT).lower()
        if http_client not in CLIENTS:
            raise ConfigError(f"CCPROXY_HTTP_CLIENT must be one of {', '.join(CLIENTS)}, got {http_client!r}")
        host = get("HOST") or "127.0.0.1"
        client_api_keys = tuple(k.strip() for k in (get("CCPROXY_CLIENT_API_KEYS") or "").split(",") if k.strip())
        dashboard_password = get("DASHBOARD_PASSWORD")
        allow_unauthenticated = _switch(get, "CCPROXY_ALLOW_UNAUTHENTICATED", "off")
        if not is_loopback(host) and not (client_api_keys and dashboard_password) and not allow_unauthenticated:
            needed = (("CCPROXY_CLIENT_API_KEYS", client_api_keys), ("DASHBOARD_PASSWORD", dashboard_password))
            missing = " and ".join(name for name, value in needed if not value)
            raise ConfigError(
                f"HOST={host} serves beyond this machine, so {missing} must be set (anyone who can connect would "
                "spend your upstream key and read your request log); or publish on 127.0.0.1, or set "
                "CCPROXY_ALLOW_UNAUTHENTICATED=on if something else in front guards it"
            )
        protect_metrics = _switch(get, "CCPROXY_PROTECT_METRICS", "off")
        if protect_metrics and not (client_api_keys or dashboard_password):
            raise ConfigError("CCPROXY_PROTECT_METRICS=on needs CCPROXY_CLIENT_API_KEYS or DASHBOARD_PASSWORD to check")
        return cls(
            api_key=api_key,
            api_key_env=api_key_env,
            base_url=base_url,
            big_model=big,  # type: ignore[arg-type]  # checked above
            small_model=small,  # type: ignore[arg-type]
            host=host,
            port=_number(get, "PORT", "11434", int, 0, 65535),
            workers=_number(get, "WEB_CONCURRENCY", "1", int, 1, 256),
            runtime_threads=_number(get, "CCPROXY_RUNTIME_THREADS", "2", int, 1, 64),
            log_level=log_level,
            data_dir=data_dir,
            # One request log by default: the SQLite store; JSON lines when asked for, or when
            # the store is off (a Python thread per worker writing them cost ~3 % req/s).
            log_file=_path(get("LOG_FILE_PATH") or json_log_default, data_dir / "log.jsonl"),
            error_log_file=_path(get("ERROR_LOG_FILE_PATH"), data_dir / "error.jsonl"),
            log_file_max_bytes=_number(get, "LOG_FILE_MAX_BYTES", "52428800", int, 1024),
            max_tokens_limit=limit,
            reasoning_model_pattern=pattern,
            connect_timeout=_number(get, "CCPROXY_CONNECT_TIMEOUT", "10", float, 0.1),
            read_timeout=read_timeout,
            ping_interval=_number(get, "CCPROXY_PING_INTERVAL", "15", float, 0.05),
            first_byte_timeout=_number(get, "CCPROXY_FIRST_BYTE_TIMEOUT", str(read_timeout), float, 0.1),
            total_timeout=_number(get, "CCPROXY_TOTAL_TIMEOUT", "0", float, 0),
            max_retries=_number(get, "CCPROXY_MAX_RETRIES", "2", int, 0, 10),
            retry_base_delay=_number(get, "CCPROXY_RETRY_BASE_DELAY", "0.5", float, 0),
            retry_max_delay=_number(get, "CCPROXY_RETRY_MAX_DELAY", "8", float, 0),
            retry_max_after=_number(get, "CCPROXY_RETRY_MAX_AFTER", "30", float, 0),
            retry_budget=_number(get, "CCPROXY_RETRY_BUDGET", "0.2", float, 0),
            circuit_threshold=_number(get, "CCPROXY_CIRCUIT_THRESHOLD", "5", int, 1),
            circuit_cooldown=_number(get, "CCPROXY_CIRCUIT_COOLDOWN", "60", float, 0.01),
            rpm=_number(get, "CCPROXY_RPM", "0", int, 0),
            tpm=_number(get, "CCPROXY_TPM", "0", int, 0),
            rate_queue=_number(get, "CCPROXY_RATE_QUEUE", "100", int, 0),
            rate_max_wait=_number(get, "CCPROXY_RATE_MAX_WAIT", "30", float, 0),
            cache=_switch(get, "CCPROXY_CACHE", "off"),
            cache_ttl=_number(get, "CCPROXY_CACHE_TTL", "300", float, 0),
            cache_max_entries=_number(get, "CCPROXY_CACHE_MAX_ENTRIES", "1000", int, 1),
            cache_max_bytes=_number(get, "CCPROXY_CACHE_MAX_BYTES", "67108864", int, 1024),
            drain_timeout=_number(get, "CCPROXY_DRAIN_TIMEOUT", "30", float, 0),
            db_path=_database(get("DATABASE_URL"), _path(get("CCPROXY_DB_PATH"), data_dir / "ccproxy.db")),
            redis_url=_redis_url(get("REDIS_URL")),
            log_bodies=_switch(get, "CCPROXY_LOG_BODIES", "off"),
            log_body_max_bytes=_number(get, "CCPROXY_LOG_BODY_MAX_BYTES", "65536", int, 0),
            log_retention_days=_number(get, "CCPROXY_LOG_RETENTION_DAYS", "30", float, 0),
            log_max_db_bytes=_number(get, "CCPROXY_LOG_MAX_DB_BYTES", "1073741824", int, 1 << 20),
            dashboard_password=dashboard_password,
            client_api_keys=client_api_keys,
            projects_dir=Path(get("CLAUDE_PROJECTS_DIR") or "~/.claude/projects").expanduser(),
            max_request_bytes=_number(get, "CCPROXY_MAX_REQUEST_BYTES", "33554432", int, 1024),
            http_client=http_client,
            interface=interface,
            reasoning_effort=effort,
            reasoning_style=style,
            prompt_cache_key=send_cache_key,
            config_file=config_file,
            schema_drop_keys=tuple(k.strip() for k in (get("CCPROXY_SCHEMA_DROP_KEYS") or "").split(",") if k.strip()),
            think_tags=_switch(get, "CCPROXY_THINK_TAGS", "on"),
            web_search=_web_search(get),
            context_window=_number(get, "CCPROXY_CONTEXT_WINDOW", "0", int, 0) or None,
            claude_command=get("CCPROXY_CLAUDE"),
            upstreams=file_upstreams,
            rules=rules,
            base_url_auth=base_url_auth,
            max_response_bytes=_number(get, "CCPROXY_MAX_RESPONSE_BYTES", "33554432", int, 65536),
            egress=_egress(env, get),
            allowed_hosts=_allowed_hosts(get("CCPROXY_ALLOWED_HOSTS")),
            allow_unauthenticated=allow_unauthenticated,
            protect_metrics=protect_metrics,
            drain_dir=Path(drain_dir) if (drain_dir := get(DRAIN_DIR_ENV)) else None,
            store_socket=get(STORE_SOCKET_ENV),
        )

    def secrets(self) -> list[str]:
        """Configured credentials that go upstream and must never be shown (redact.py): upstream
        keys, Basic credentials from base URLs (the header value and the password itself),
        forward-proxy credentials."""
        found = [self.api_key, *(u.api_key for u in self.upstreams)]
        found += [self.web_search.brave_api_key, self.web_search.tavily_api_key]
        searxng_auth = split_userinfo(self.web_search.searxng_url)[1] if self.web_search.searxng_url else None
        for basic in (self.base_url_auth, *(u.basic_auth for u in self.upstreams), searxng_auth):
            if basic:
                encoded = basic.removeprefix("Basic ")
                found.append(encoded)
                with contextlib.suppress(ValueError, UnicodeDecodeError):
                    found.append(base64.b64decode(encoded).decode().partition(":")[2])
        for proxy in (self.egress.https_proxy, self.egress.http_proxy):
            if proxy is not None and proxy.authorization:
                found.append(proxy.authorization.removeprefix("Basic "))
        return [s for s in found if s]

    def exposure_warning(self) -> str | None:
        """The loud line when CCPROXY_ALLOW_UNAUTHENTICATED serves beyond loopback without
        credentials: what is open to whom. None when nothing is."""
        if is_loopback(self.host) or (self.client_api_keys and self.dashboard_password):
            return None
        guarded = (
            ("the proxy routes (your upstream key)", self.client_api_keys),
            ("the dashboard and /api (your prompts and transcripts)", self.dashboard_password),
        )
        open_parts = " and ".join(part for part, guard in guarded if not guard)
        return (
            f"WARNING: CCPROXY_ALLOW_UNAUTHENTICATED=on: {open_parts} are open to anyone who can reach "
            f"{self.host}:{self.port}"
        )

    def describe(self) -> str:
        """The start-up line: where requests go and which models serve them. Never a key."""
        parts = []
        if self.api_key is not None:
            parts.append(f"OpenAI Chat Completions upstream {self.base_url} (key from {self.api_key_env})")
            if self.big_model and self.small_model:
                parts.append(f"opus/sonnet → {self.big_model}, haiku → {self.small_model}")
        if self.config_file is not None:
            names = ", ".join(f"{u.name} ({u.kind} {u.base_url})" for u in self.upstreams)
            parts.append(f"routing file {self.config_file}: {len(self.rules)} rules; upstreams {names}")
        egress = self.egress
        for scheme, proxy in (("https", egress.https_proxy), ("http", egress.http_proxy)):
            if proxy is not None:
                parts.append(f"{scheme} upstreams through the proxy {proxy.address}")
        if egress.ca_bundle:
            parts.append(f"extra CAs from {egress.ca_bundle}")
        engine = self.web_search.engine_name()
        if engine == "searxng" and self.web_search.searxng_url:
            parts.append(f"WebSearch through SearXNG at {without_userinfo(self.web_search.searxng_url)}")
        elif engine is not None:
            parts.append(f"WebSearch through {engine.capitalize()}")
        else:  # (Responses and OpenRouter upstreams still search by themselves)
            parts.append("WebSearch: no engine (SEARXNG_URL, BRAVE_API_KEY or TAVILY_API_KEY)")
        return "; ".join(parts)


_KIND_NAMES: dict[Any, str] = {int: "a whole number", float: "a number"}
_ROLE = {"BIG_MODEL_NAME": "opus/sonnet requests", "SMALL_MODEL_NAME": "haiku requests"}


def _switch(get: Callable[[str], str | None], name: str, default: str) -> bool:
    raw = (get(name) or default).lower()
    if raw in ("on", "true", "1", "yes"):
        return True
    if raw in ("off", "false", "0", "no"):
        return False
    raise ConfigError(f"{name} must be on or off, got {raw!r}")


def _number(
    get: Callable[[str], str | None],
    name: str,
    default: str | None,
    kind: Callable[[str], Any],
    low: float,
    high: float | None = None,
) -> Any:
    raw = get(name) or default
    if raw is None:
        return None
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigError(f"{name} must be {_KIND_NAMES[kind]}, got {raw!r}") from None
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise ConfigError(f"{name} must be {bound}, got {raw!r}")
    return value


def _database(url: str | None, path: Path | None) -> Path | str | None:
    """DATABASE_URL (PostgreSQL) replaces the SQLite file, unless the store is off."""
    if not url or path is None:
        return path
    if not url.startswith(("postgres://", "postgresql://")):
        raise ConfigError("DATABASE_URL must be a postgresql:// URL (the SQLite store needs no URL)")
    if importlib.util.find_spec("psycopg") is None:
        raise ConfigError("DATABASE_URL needs psycopg 3: pip install 'ccproxy[postgres]'")
    return url


def _web_search(get: Callable[[str], str | None]) -> EngineConfig:
    mode = (get("CCPROXY_WEB_SEARCH") or "auto").lower()
    if mode not in MODES:
        raise ConfigError(f"CCPROXY_WEB_SEARCH must be one of {', '.join(MODES)}, got {mode!r}")
    searxng = get("SEARXNG_URL")
    if searxng is not None and not searxng.startswith(("http://", "https://")):
        raise ConfigError(f"SEARXNG_URL must be an http:// or https:// URL, got {searxng!r}")
    config = EngineConfig(mode, searxng, get("BRAVE_API_KEY"), get("TAVILY_API_KEY"))
    if (
        mode in ENGINES
        and config.engine_name() == mode
        and not ({"searxng": searxng, "brave": config.brave_api_key, "tavily": config.tavily_api_key}[mode])
    ):
        needs = {"searxng": "SEARXNG_URL", "brave": "BRAVE_API_KEY", "tavily": "TAVILY_API_KEY"}[mode]
        raise ConfigError(f"CCPROXY_WEB_SEARCH={mode} needs {needs}")
    return config


def _redis_url(url: str | None) -> str | None:
    if url and not url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError("REDIS_URL must start with redis://, rediss:// or unix://")
    if url and importlib.util.find_spec("redis") is None:
        raise ConfigError("REDIS_URL needs redis-py: pip install 'ccproxy[redis]'")
    return url or None


def is_loopback(host: str) -> bool:
    """Whether a listen address (HOST) or a host name stays on this machine."""
    import ipaddress

    name = host.strip("[]").lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _allowed_hosts(value: str | None) -> tuple[str, ...]:
    hosts = []
    for raw in (value or "").split(","):
        name = raw.strip().lower().rstrip(".")
        if not name:
            continue
        bare = name[2:] if name.startswith("*.") else name
        ipv6 = bare.startswith("[") and bare.endswith("]")
        if name != "*" and (not bare or any(c in bare for c in "/@ *\\") or (":" in bare and not ipv6)):
            raise ConfigError(
                f"CCPROXY_ALLOWED_HOSTS: {raw.strip()!r} is not a host name (give names such as proxy.example.com "
                "or *.example.com, without scheme or port)"
            )
        hosts.append(name)
    return tuple(hosts)


def _egress(env: Mapping[str, str], get: Callable[[str], str | None]) -> Egress:
    """Proxy variables as curl reads them: the lower-case name first, then the upper-case one."""

    def either(name: str) -> tuple[str, str] | None:
        for key in (name.lower(), name):
            value = (env.get(key) or "").strip()
            if value:
                return key, value
        return None

    ca_bundle = get("CCPROXY_CA_BUNDLE")
    if ca_bundle is not None and not Path(ca_bundle).expanduser().is_file():
        raise ConfigError(f"CCPROXY_CA_BUNDLE: no such file {ca_bundle!r}")
    proxies = {}
    fallback = either("ALL_PROXY")
    for name in ("HTTPS_PROXY", "HTTP_PROXY"):
        found = either(name) or fallback
        if found is not None:
            try:
                proxies[name] = parse_proxy(found[1], found[0])
            except EgressError as exc:
                raise ConfigError(str(exc)) from None
    no_proxy = either("NO_PROXY")
    egress = Egress(
        https_proxy=proxies.get("HTTPS_PROXY"),
        http_proxy=proxies.get("HTTP_PROXY"),
        no_proxy=no_proxy[1] if no_proxy else "",
        ca_bundle=str(Path(ca_bundle).expanduser()) if ca_bundle else None,
    )
    if egress == NO_EGRESS:
        return NO_EGRESS
    try:
        egress.ssl_context()  # a CA file that is not PEM fails here, at start
    except EgressError as exc:
        raise ConfigError(str(exc)) from None
    return egress


def _path(value: str | None, default: Path) -> Path | None:
    if value is not None and value.lower() == "off":
        return None
    return Path(value).expanduser() if value else default


def help_text() -> str:
    width = max(len(s.env) for s in SETTINGS)
    lines = [
        "usage: ccproxy [--help] [--version] [--check]",
        "       ccproxy code [claude arguments…] | status | stop",
        "",
        "Serves the Anthropic Messages API (for Claude Code and the anthropic SDKs) and",
        "translates it to an OpenAI Chat Completions upstream.",
        "",
        "options:",
        "  --help      show this help and exit",
        "  --version   print the version and the active native implementation",
        "  --check     validate the settings, print what would be served, and exit",
        "",
        "commands:",
        "  code        run Claude Code (the claude CLI) against this proxy, starting it in the background",
        "              when it is not serving yet; arguments and exit code pass through",
        "  status      is it serving? its upstreams, circuits and today's requests (exit 3: not serving)",
        "  stop        stop the proxy serving with this data directory (a graceful drain)",
        "",
        "settings (environment variables):",
    ]
    for s in SETTINGS:
        default = f" [default: {s.default}]" if s.default is not None else ""
        lines.append(f"  {s.env.ljust(width)}  {s.help}{default}")
    return "\n".join(lines)
