"""The routing file (``CCPROXY_CONFIG``, TOML): named upstreams and the rules that route models
to them (docs/routing.md). Every problem is a one-line ConfigError naming the entry."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .headerrules import header_problem
from .routing import DEFAULT_UPSTREAM, RouteRule, UpstreamConfig, UpstreamOptions
from .upstream.egress import split_userinfo

EFFORTS = ("minimal", "low", "medium", "high")
UPSTREAM_KINDS = ("chat", "responses", "anthropic")
REASONING_STYLES = ("openai", "openrouter", "deepseek", "none")


def default_reasoning_style(base_url: str) -> str:
    if "openrouter.ai" in base_url:
        return "openrouter"
    if "deepseek.com" in base_url:
        return "deepseek"
    return "openai"


_UPSTREAM_KEYS = {
    "model_limits",
    "kind",
    "base_url",
    "api_key_env",
    "headers",
    "reasoning_style",
    "default_effort",
    "prompt_cache_key",
    "max_output_tokens",
    "pass_client_key",
    "schema_drop_keys",
    "think_tags",
    "context_window",
    "context_windows",
    "web_search",
}
WEB_SEARCH_MODES = ("auto", "plugin", "engine", "off")
# Rule conditions on what a request needs (routing.Traits), besides min_input_tokens
_TRAIT_SWITCHES = ("thinking", "web_search", "images", "background")
_RULE_KEYS = {
    "match",
    "upstream",
    "model",
    "max_output_tokens",
    "fallback",
    "min_input_tokens",
    "context_window",
    *_TRAIT_SWITCHES,
}
_DEFAULT_KEY_ENV = {"chat": "OPENAI_API_KEY", "responses": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY"}


def load_routing_file(
    path: Path, get: Callable[[str], str | None]
) -> tuple[tuple[UpstreamConfig, ...], tuple[RouteRule, ...]]:
    """Parse and validate a routing file; every problem is a one-line ConfigError naming the entry."""
    import tomllib

    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"CCPROXY_CONFIG: cannot read {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    unknown = set(data) - {"upstreams", "routes"}
    if unknown:
        raise ConfigError(f"{path}: unknown top-level key(s) {sorted(unknown)} (expected upstreams, routes)")
    tables = data.get("upstreams", {})
    if not isinstance(tables, dict) or not tables:
        raise ConfigError(f"{path}: needs at least one [upstreams.NAME] table")
    upstreams = tuple(_upstream(path, name, table, get) for name, table in tables.items())
    names = {u.name for u in upstreams}
    routes = data.get("routes", [])
    if not isinstance(routes, list) or not routes:
        raise ConfigError(f"{path}: needs at least one [[routes]] entry")
    rules = []
    for i, entry in enumerate(routes):
        where = f"{path}: routes[{i}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where} must be a table")
        extra = set(entry) - _RULE_KEYS
        if extra:
            raise ConfigError(f"{where}: unknown key(s) {sorted(extra)} (expected {', '.join(sorted(_RULE_KEYS))})")
        traits = {key: entry.get(key) for key in _TRAIT_SWITCHES}
        for key, value in traits.items():
            if value is not None and not isinstance(value, bool):
                raise ConfigError(f"{where}.{key} must be true or false")
        min_tokens = _token_limit(entry.get("min_input_tokens"), f"{where}.min_input_tokens")
        has_traits = min_tokens is not None or any(v is not None for v in traits.values())
        match, upstream, model = (
            entry.get("match", "*" if has_traits else None),
            entry.get("upstream"),
            entry.get("model"),
        )
        if not isinstance(match, str) or not match:
            raise ConfigError(f"{where}.match must be a model id or glob such as 'claude-*haiku*'")
        if upstream not in names and upstream != DEFAULT_UPSTREAM:
            raise ConfigError(f"{where}.upstream {upstream!r} is not one of {sorted(names)}")
        if model is not None and (not isinstance(model, str) or not model):
            raise ConfigError(f"{where}.model must be a non-empty string")
        limit = _token_limit(entry.get("max_output_tokens"), f"{where}.max_output_tokens")
        fallback = _fallbacks(entry.get("fallback", []), names, f"{where}.fallback")
        rules.append(
            RouteRule(
                match=match,
                upstream=upstream,
                model=model,
                max_output_tokens=limit,
                fallback=fallback,
                min_input_tokens=min_tokens,
                context_window=_token_limit(entry.get("context_window"), f"{where}.context_window"),
                **traits,
            )
        )
    return upstreams, tuple(rules)


def _upstream(path: Path, name: str, table: Any, get: Callable[[str], str | None]) -> UpstreamConfig:
    where = f"{path}: upstreams.{name}"
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table")
    if name == DEFAULT_UPSTREAM:
        raise ConfigError(f"{where}: the name 'default' is reserved for the environment's upstream")
    extra = set(table) - _UPSTREAM_KEYS
    if extra:
        raise ConfigError(f"{where}: unknown key(s) {sorted(extra)}")
    kind = table.get("kind")
    if kind not in UPSTREAM_KINDS:
        raise ConfigError(f"{where}.kind must be one of {', '.join(UPSTREAM_KINDS)}")
    base_url = table.get("base_url")
    if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
        raise ConfigError(f"{where}.base_url must start with http:// or https://")
    pass_client_key = table.get("pass_client_key", False)
    if not isinstance(pass_client_key, bool) or (pass_client_key and kind != "anthropic"):
        raise ConfigError(f"{where}.pass_client_key must be true or false, and only for kind 'anthropic'")
    key_env = table.get("api_key_env", _DEFAULT_KEY_ENV[kind])
    if not isinstance(key_env, str) or not key_env:
        raise ConfigError(f"{where}.api_key_env must name an environment variable")
    api_key = get(key_env)
    if api_key is None and not pass_client_key:
        raise ConfigError(f"{where}: environment variable {key_env} (its API key) is not set")
    headers = table.get("headers", {})
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        raise ConfigError(f"{where}.headers must be a table of strings")
    for header_name, header_value in headers.items():
        problem = header_problem(str(header_name), header_value)
        if problem:
            raise ConfigError(f"{where}.headers.{header_name}: {problem}")
    style = table.get("reasoning_style", default_reasoning_style(base_url))
    if style not in REASONING_STYLES:
        raise ConfigError(f"{where}.reasoning_style must be one of {', '.join(REASONING_STYLES)}")
    effort = table.get("default_effort")
    if effort is not None and effort not in EFFORTS:
        raise ConfigError(f"{where}.default_effort must be one of {', '.join(EFFORTS)}")
    cache_key = table.get("prompt_cache_key", "://api.openai.com" in base_url)
    if not isinstance(cache_key, bool):
        raise ConfigError(f"{where}.prompt_cache_key must be true or false")
    drop = table.get("schema_drop_keys", [])
    if not isinstance(drop, list) or not all(isinstance(k, str) and k for k in drop):
        raise ConfigError(
            f"{where}.schema_drop_keys must be a list of JSON-schema keywords, e.g. ['$schema', 'format']"
        )
    web_search = table.get("web_search", "auto")
    if web_search not in WEB_SEARCH_MODES:
        raise ConfigError(f"{where}.web_search must be one of {', '.join(WEB_SEARCH_MODES)}")
    think_tags = table.get("think_tags", True)
    if not isinstance(think_tags, bool):
        raise ConfigError(f"{where}.think_tags must be true or false")
    limit = _token_limit(table.get("max_output_tokens"), f"{where}.max_output_tokens")
    model_limits = table.get("model_limits", {})
    if not isinstance(model_limits, dict):
        raise ConfigError(f"{where}.model_limits must be a table of model glob = max output tokens")
    per_model = tuple(
        (str(glob), _token_limit(value, f"{where}.model_limits.{glob!r}")) for glob, value in model_limits.items()
    )
    windows = table.get("context_windows", {})
    if not isinstance(windows, dict):
        raise ConfigError(f"{where}.context_windows must be a table of model glob = context window (tokens)")
    per_model_windows = tuple(
        (str(glob), _token_limit(value, f"{where}.context_windows.{glob!r}") or 0) for glob, value in windows.items()
    )
    base_url, basic_auth = split_userinfo(base_url.rstrip("/"))
    return UpstreamConfig(
        name=name,
        kind=kind,
        base_url=base_url,
        api_key=api_key,
        api_key_env=key_env,
        headers=tuple((str(k).lower(), v) for k, v in headers.items()),
        options=UpstreamOptions(
            reasoning_style=style,
            default_effort=effort,
            prompt_cache_key=cache_key,
            schema_drop_keys=tuple(drop),
            think_tags=think_tags,
            web_search=web_search,
        ),
        max_output_tokens=limit,
        model_limits=per_model,  # type: ignore[arg-type]
        pass_client_key=pass_client_key,
        basic_auth=basic_auth,
        context_window=_token_limit(table.get("context_window"), f"{where}.context_window"),
        context_windows=per_model_windows,
    )


def _fallbacks(value: Any, names: set[str], where: str) -> tuple[tuple[str, str | None], ...]:
    """``["name", { upstream = "name", model = "id" }, …]``."""
    if not isinstance(value, list):
        raise ConfigError(f"{where} must be a list of upstream names or {{ upstream, model }} tables")
    out: list[tuple[str, str | None]] = []
    for item in value:
        name, model = (item, None) if isinstance(item, str) else (None, None)
        if isinstance(item, dict) and set(item) <= {"upstream", "model"}:
            name, model = item.get("upstream"), item.get("model")
        if name not in names and name != DEFAULT_UPSTREAM:
            raise ConfigError(f"{where}: {item!r} is not one of the upstreams {sorted(names)}")
        if model is not None and (not isinstance(model, str) or not model):
            raise ConfigError(f"{where}: model must be a non-empty string")
        out.append((name, model))  # type: ignore[arg-type]
    return tuple(out)


def _token_limit(value: Any, where: str) -> int | None:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        raise ConfigError(f"{where} must be a positive integer")
    return value
