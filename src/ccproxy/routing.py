"""Which upstream model serves a requested model id.

Env-only setup (PROTOCOL.md §2): an id containing ``haiku`` → SMALL_MODEL_NAME; any other
``claude-*`` id (opus, sonnet and families not known yet) → BIG_MODEL_NAME; an id that is not
``claude-*`` names an upstream model directly and is sent unchanged. Responses always echo the
requested id; only the upstream sees the mapped one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fnmatch import fnmatchcase

from .errors import ProxyError

DEFAULT_UPSTREAM = "default"  # the upstream the environment settings describe

# The Claude ids /v1/models lists (current families, aliases first). Any claude-* id is
# served, listed or not.
KNOWN_MODELS: tuple[tuple[str, str, str], ...] = (
    ("claude-opus-4-8", "Claude Opus 4.8", "2026-06-01T00:00:00Z"),
    ("claude-sonnet-5", "Claude Sonnet 5", "2026-06-01T00:00:00Z"),
    ("claude-opus-4-1", "Claude Opus 4.1", "2025-08-05T00:00:00Z"),
    ("claude-sonnet-4-5", "Claude Sonnet 4.5", "2025-09-29T00:00:00Z"),
    ("claude-haiku-4-5-20251001", "Claude Haiku 4.5", "2025-10-01T00:00:00Z"),
    ("claude-haiku-4-5", "Claude Haiku 4.5", "2025-10-01T00:00:00Z"),
)


@dataclass(frozen=True, slots=True)
class UpstreamOptions:
    """What one upstream accepts beyond the common Chat Completions request."""

    # "openai": reasoning_effort; "openrouter": reasoning object; "deepseek": thinking switch +
    # reasoning_effort, thinking sent back as reasoning_content; "none"
    reasoning_style: str = "openai"
    default_effort: str | None = None  # effort to request when the client asks for none
    prompt_cache_key: bool = False  # send prompt_cache_key (OpenAI); others may reject unknown fields
    schema_drop_keys: tuple[str, ...] = ()  # JSON-schema keywords a strict upstream rejects in tools
    think_tags: bool = True  # read <think>…</think> at the start of an answer as thinking


@dataclass(frozen=True, slots=True)
class UpstreamConfig:
    """One named upstream (from the environment, or an [upstreams.NAME] table of the config file)."""

    name: str
    kind: str  # "chat" | "anthropic"
    base_url: str
    api_key: str | None
    api_key_env: str  # named in "upstream rejected …" errors; the value is never shown
    headers: tuple[tuple[str, str], ...] = ()
    options: UpstreamOptions = UpstreamOptions()
    max_output_tokens: int | None = None
    model_limits: tuple[tuple[str, int | None], ...] = ()  # (upstream model glob, max output tokens)
    pass_client_key: bool = False  # anthropic: forward the client's own x-api-key instead
    basic_auth: str | None = None  # "Basic …" from user:password@ in base_url (stripped from it)


@dataclass(frozen=True, slots=True)
class RouteRule:
    """A [[routes]] entry: requested ids matching ``match`` (a case-insensitive glob) go to
    ``upstream`` as ``model`` (default: the requested id)."""

    match: str
    upstream: str
    model: str | None = None
    max_output_tokens: int | None = None
    # (upstream, model or None: the rule's model) tried in order while the primary's circuit is open
    fallback: tuple[tuple[str, str | None], ...] = ()


@dataclass(frozen=True, slots=True)
class Route:
    requested_model: str
    upstream_model: str
    reasoning: bool  # upstream takes max_completion_tokens and rejects sampling params
    max_output_tokens: int | None  # clamp for max_tokens, when known
    options: UpstreamOptions = UpstreamOptions()
    upstream: str = DEFAULT_UPSTREAM
    fallbacks: tuple[Route, ...] = ()  # where to go while this upstream's circuit is open


# Known output-token limits of common upstream models, matched by prefix after any
# "provider/" part (OpenRouter ids). Longest prefix wins.
OUTPUT_LIMITS: dict[str, int] = {
    "gpt-3.5-turbo": 4096,
    "gpt-4-turbo": 4096,
    "gpt-4o": 16384,
    "gpt-4o-mini": 16384,
    "gpt-4.1": 32768,
    "o1": 100000,
    "o1-mini": 65536,
    "o3": 100000,
    "o3-mini": 100000,
    "o4-mini": 100000,
    "gpt-5": 128000,
}


class Router:
    """Requested model id → Route. Routing rules (config file) first, in file order; then the
    environment's mapping (haiku → SMALL, other claude-* → BIG, anything else unchanged) to the
    ``default`` upstream, when the environment configures one."""

    def __init__(
        self,
        big_model: str | None,
        small_model: str | None,
        reasoning_pattern: str = r"^(o\d|gpt-5)",
        max_tokens_limit: int | None = None,
        options: UpstreamOptions | None = None,
        rules: tuple[RouteRule, ...] = (),
        upstreams: tuple[UpstreamConfig, ...] = (),
    ) -> None:
        self.options = options or UpstreamOptions()
        self.big_model = big_model
        self.small_model = small_model
        self.rules = rules
        self.upstreams = {u.name: u for u in upstreams}
        self._reasoning = re.compile(reasoning_pattern)
        self._limit = max_tokens_limit
        self._cache: dict[str, Route] = {}

    def resolve(self, requested: str) -> tuple[str, str] | None:
        """(upstream name, upstream model), or None when nothing serves ``requested``."""
        rule = self._rule(requested)
        if rule is not None:
            return rule.upstream, rule.model or requested
        lowered = requested.lower()
        if self.big_model is None or self.small_model is None:
            return None
        if "haiku" in lowered:
            return DEFAULT_UPSTREAM, self.small_model
        if lowered.startswith("claude"):
            return DEFAULT_UPSTREAM, self.big_model
        return DEFAULT_UPSTREAM, requested

    def _rule(self, requested: str) -> RouteRule | None:
        lowered = requested.lower()
        for rule in self.rules:
            if fnmatchcase(lowered, rule.match.lower()):
                return rule
        return None

    def _output_limit(self, requested: str, config: UpstreamConfig | None, upstream_model: str) -> int | None:
        """The max_tokens clamp, most specific first: the rule's, the upstream's per-model
        limit (glob on the upstream model id, with or without its "provider/" part), the
        upstream's, MAX_TOKENS_LIMIT, then the known limit of the model family."""
        rule = self._rule(requested)
        if rule is not None and rule.max_output_tokens:
            return rule.max_output_tokens
        full = upstream_model.lower()
        bare = full.rsplit("/", 1)[-1]
        if config is not None:
            for glob, limit in config.model_limits:
                if fnmatchcase(full, glob.lower()) or fnmatchcase(bare, glob.lower()):
                    return limit
            if config.max_output_tokens:
                return config.max_output_tokens
        return self._limit or _known_limit(bare)

    def upstream_model(self, requested: str) -> str:
        resolved = self.resolve(requested)
        return resolved[1] if resolved else requested

    def route(self, requested: str) -> Route:
        route = self._cache.get(requested)
        if route is None:
            resolved = self.resolve(requested)
            if resolved is None:
                raise ProxyError(404, f"model: {requested} is not served by any route", "not_found_error")
            name, upstream = resolved
            rule = self._rule(requested)
            fallbacks = tuple(
                self._build(requested, other, model or upstream, ()) for other, model in (rule.fallback if rule else ())
            )
            route = self._build(requested, name, upstream, fallbacks)
            if len(self._cache) < 1024:  # requested ids are few; bound it anyway
                self._cache[requested] = route
        return route

    def _build(self, requested: str, name: str, upstream: str, fallbacks: tuple[Route, ...]) -> Route:
        config = self.upstreams.get(name)
        bare = upstream.rsplit("/", 1)[-1].lower()
        return Route(
            requested_model=requested,
            upstream_model=upstream,
            reasoning=bool(self._reasoning.search(bare)),
            max_output_tokens=self._output_limit(requested, config, upstream),
            options=config.options if config else self.options,
            upstream=name,
            fallbacks=fallbacks,
        )

    def models(self) -> list[dict[str, str]]:
        listed = [(model_id, name, created) for model_id, name, created in KNOWN_MODELS]
        known = {model_id for model_id, _, _ in listed}
        for rule in self.rules:  # exact ids named by routing rules are served too
            if not any(c in rule.match for c in "*?[") and rule.match not in known:
                listed.append((rule.match, rule.match, "2026-01-01T00:00:00Z"))
                known.add(rule.match)
        out = []
        for model_id, name, created in listed:
            resolved = self.resolve(model_id)
            if resolved is not None:
                out.append(
                    {
                        "type": "model",
                        "id": model_id,
                        "display_name": f"{name} (→ {resolved[1]})",
                        "created_at": created,
                    }
                )
        return out


def _known_limit(bare_model: str) -> int | None:
    best = ""
    for prefix in OUTPUT_LIMITS:
        if bare_model.startswith(prefix) and len(prefix) > len(best):
            best = prefix
    return OUTPUT_LIMITS.get(best) if best else None
