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
from typing import TypeVar

from .errors import ProxyError

T = TypeVar("T")

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
    # Anthropic's web_search server tool: "auto" (the upstream's own search where it has one, else
    # the proxy's engine), "plugin" (OpenRouter's web plugin), "engine" (the proxy's), "off"
    web_search: str = "auto"


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
    context_window: int | None = None  # input tokens the upstream's models take (beats the known ones)
    context_windows: tuple[tuple[str, int], ...] = ()  # (upstream model glob, context window)


@dataclass(frozen=True, slots=True)
class Traits:
    """What a request needs, for rules that route by it (claude-code-router's classes)."""

    input_tokens: int = 0  # the local count; 0 when no rule asks and no window is exceeded
    thinking: bool = False  # thinking enabled or adaptive
    web_search: bool = False  # Anthropic's web_search server tool is offered
    images: bool = False  # an image anywhere in the messages
    background: bool = False  # the haiku class: Claude Code's small, background requests


@dataclass(frozen=True, slots=True)
class RouteRule:
    """A [[routes]] entry: requested ids matching ``match`` (a case-insensitive glob) go to
    ``upstream`` as ``model`` (default: the requested id). Trait conditions, when set, must
    all hold too (``min_input_tokens``: the request's count is at least this)."""

    match: str
    upstream: str
    model: str | None = None
    max_output_tokens: int | None = None
    # (upstream, model or None: the rule's model) tried in order while the primary's circuit is open
    fallback: tuple[tuple[str, str | None], ...] = ()
    min_input_tokens: int | None = None
    thinking: bool | None = None
    web_search: bool | None = None
    images: bool | None = None
    background: bool | None = None
    context_window: int | None = None  # the routed model's window (beats the upstream's and the known ones)

    @property
    def has_traits(self) -> bool:
        return any(
            v is not None for v in (self.min_input_tokens, self.thinking, self.web_search, self.images, self.background)
        )

    def matches(self, requested: str, traits: Traits | None) -> bool:
        if not fnmatchcase(requested.lower(), self.match.lower()):
            return False
        if not self.has_traits:
            return True
        if traits is None:
            return False
        return (
            (self.min_input_tokens is None or traits.input_tokens >= self.min_input_tokens)
            and (self.thinking is None or traits.thinking == self.thinking)
            and (self.web_search is None or traits.web_search == self.web_search)
            and (self.images is None or traits.images == self.images)
            and (self.background is None or traits.background == self.background)
        )


@dataclass(frozen=True, slots=True)
class Route:
    requested_model: str
    upstream_model: str
    reasoning: bool  # upstream takes max_completion_tokens and rejects sampling params
    max_output_tokens: int | None  # clamp for max_tokens, when known
    options: UpstreamOptions = UpstreamOptions()
    upstream: str = DEFAULT_UPSTREAM
    fallbacks: tuple[Route, ...] = ()  # where to go while this upstream's circuit is open
    context_window: int | None = None  # input tokens the upstream model takes, when known


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

# Known context windows (tokens) of common upstream model families, matched like OUTPUT_LIMITS.
# A model not listed has no window check: the upstream decides (Claude ids too: with the 1M
# context beta their window depends on the request's headers).
CONTEXT_WINDOWS: dict[str, int] = {
    "gpt-3.5-turbo": 16385,
    "gpt-4-turbo": 128000,
    "gpt-4o": 128000,
    "gpt-4.1": 1047576,
    "o1": 200000,
    "o3": 200000,
    "o4-mini": 200000,
    "gpt-5": 400000,
    "deepseek-chat": 128000,
    "deepseek-reasoner": 128000,
    "gemini-1.5-pro": 2097152,
    "gemini-1.5-flash": 1048576,
    "gemini-2": 1048576,
    "llama-3.1": 131072,
    "llama-3.3": 131072,
    "mistral-large": 131072,
    "grok-4": 256000,
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
        context_window: int | None = None,
    ) -> None:
        self.options = options or UpstreamOptions()
        self.big_model = big_model
        self.small_model = small_model
        self.rules = rules
        self.uses_traits = any(rule.has_traits for rule in rules)
        # the smallest min_input_tokens of any rule: below it (in bytes, an upper bound of the
        # tokens) no request needs counting
        self.count_from = min((r.min_input_tokens for r in rules if r.min_input_tokens), default=None)
        self.upstreams = {u.name: u for u in upstreams}
        self.context_window = context_window
        self._reasoning = re.compile(reasoning_pattern)
        self._limit = max_tokens_limit
        self._cache: dict[tuple[str, int], Route] = {}

    def resolve(self, requested: str, traits: Traits | None = None) -> tuple[str, str] | None:
        """(upstream name, upstream model), or None when nothing serves ``requested``."""
        named = self.named(requested)
        if named is not None:
            return named
        rule = self._rule(requested, traits)
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

    def named(self, requested: str) -> tuple[str, str] | None:
        """``upstream,model`` (claude-code-router's ``/model`` form) or ``upstream/model`` naming
        a configured upstream: that upstream, with that model."""
        for sep in (",", "/"):
            name, found, model = requested.partition(sep)
            if found and model and (name in self.upstreams or (name == DEFAULT_UPSTREAM and self.big_model)):
                return name, model
        return None

    def _rule(self, requested: str, traits: Traits | None = None) -> RouteRule | None:
        for rule in self.rules:
            if rule.matches(requested, traits):
                return rule
        return None

    def _window(self, rule: RouteRule | None, config: UpstreamConfig | None, upstream_model: str) -> int | None:
        """The context window, most specific first: the rule's, the upstream's per-model
        windows, the upstream's, CCPROXY_CONTEXT_WINDOW (the environment's upstream), then the
        known window of the model family."""
        if rule is not None and rule.context_window:
            return rule.context_window
        bare = upstream_model.lower().rsplit("/", 1)[-1]
        if config is not None:
            match = _first_glob(config.context_windows, upstream_model)
            if match is not None:
                return match[1]
            if config.context_window:
                return config.context_window
        elif self.context_window:
            return self.context_window
        return _known(CONTEXT_WINDOWS, bare)

    def _output_limit(self, rule: RouteRule | None, config: UpstreamConfig | None, upstream_model: str) -> int | None:
        """The max_tokens clamp, most specific first: the rule's, the upstream's per-model
        limit (glob on the upstream model id, with or without its "provider/" part), the
        upstream's, MAX_TOKENS_LIMIT, then the known limit of the model family."""
        if rule is not None and rule.max_output_tokens:
            return rule.max_output_tokens
        bare = upstream_model.lower().rsplit("/", 1)[-1]
        if config is not None:
            match = _first_glob(config.model_limits, upstream_model)
            if match is not None:
                return match[1]
            if config.max_output_tokens:
                return config.max_output_tokens
        return self._limit or _known(OUTPUT_LIMITS, bare)

    def upstream_model(self, requested: str) -> str:
        resolved = self.resolve(requested)
        return resolved[1] if resolved else requested

    def route(self, requested: str, traits: Traits | None = None) -> Route:
        """The route of a requested id; with ``traits``, rules that route by them count too."""
        if not self.uses_traits:  # (the common case: one dict lookup per request)
            route = self._cache.get((requested, -1))
            if route is not None:
                return route
        named = self.named(requested)
        rule = None if named is not None else self._rule(requested, traits)
        key = (requested, self.rules.index(rule) if rule is not None and rule.has_traits else -1)
        route = self._cache.get(key)
        if route is None:
            route = self._build(requested, *named, (), None) if named else self._from_rule(requested, rule)
            if len(self._cache) < 1024:  # requested ids are few; bound it anyway
                self._cache[key] = route
        return route

    def long_context_route(self, requested: str, traits: Traits) -> Route | None:
        """For a request beyond its route's window: the first rule for long inputs
        (``min_input_tokens``) that matches and whose model's window takes it."""
        for rule in self.rules:
            if rule.min_input_tokens is not None and rule.matches(requested, traits):
                route = self._from_rule(requested, rule)
                if route.context_window is None or route.context_window >= traits.input_tokens:
                    return route
        return None

    def _from_rule(self, requested: str, rule: RouteRule | None) -> Route:
        if rule is not None:
            name, upstream = rule.upstream, rule.model or requested
        else:
            resolved = self.resolve(requested)
            if resolved is None:
                raise ProxyError(404, f"model: {requested} is not served by any route", "not_found_error")
            name, upstream = resolved
        fallbacks = tuple(
            self._build(requested, other, model or upstream, (), rule)
            for other, model in (rule.fallback if rule else ())
        )
        return self._build(requested, name, upstream, fallbacks, rule)

    def _build(
        self, requested: str, name: str, upstream: str, fallbacks: tuple[Route, ...], rule: RouteRule | None
    ) -> Route:
        config = self.upstreams.get(name)
        bare = upstream.rsplit("/", 1)[-1].lower()
        return Route(
            requested_model=requested,
            upstream_model=upstream,
            reasoning=bool(self._reasoning.search(bare)),
            max_output_tokens=self._output_limit(rule, config, upstream),
            options=config.options if config else self.options,
            upstream=name,
            fallbacks=fallbacks,
            context_window=self._window(rule, config, upstream),
        )

    def models(self) -> list[dict[str, str]]:
        """What a client may name: the Claude ids (with where they go), exact ids of routing
        rules, and ``upstream,model`` for every upstream model the rules name (switching)."""
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
        targets = [(r.upstream, r.model) for r in self.rules if r.model]
        if self.big_model and self.small_model:
            targets += [(DEFAULT_UPSTREAM, self.big_model), (DEFAULT_UPSTREAM, self.small_model)]
        for upstream, model in dict.fromkeys(targets):
            out.append(
                {
                    "type": "model",
                    "id": f"{upstream},{model}",
                    "display_name": f"{model} on {upstream}",
                    "created_at": "2026-01-01T00:00:00Z",
                }
            )
        return out


def _first_glob(pairs: tuple[tuple[str, T], ...], upstream_model: str) -> tuple[str, T] | None:
    """The first (glob, value) whose glob matches the upstream model id, with or without its
    "provider/" part (case-insensitive); None when none does."""
    full = upstream_model.lower()
    bare = full.rsplit("/", 1)[-1]
    for pair in pairs:
        glob = pair[0].lower()
        if fnmatchcase(full, glob) or fnmatchcase(bare, glob):
            return pair
    return None


def _known(table: dict[str, int], bare_model: str) -> int | None:
    """The entry of the longest prefix of ``bare_model`` in ``table``."""
    best = ""
    for prefix in table:
        if bare_model.startswith(prefix) and len(prefix) > len(best):
            best = prefix
    return table.get(best) if best else None
