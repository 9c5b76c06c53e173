"""Which upstream model serves a requested model id.

Env-only setup (PROTOCOL.md §2): an id containing ``haiku`` → SMALL_MODEL_NAME; any other
``claude-*`` id (opus, sonnet and families not known yet) → BIG_MODEL_NAME; an id that is not
``claude-*`` names an upstream model directly and is sent unchanged. Responses always echo the
requested id; only the upstream sees the mapped one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

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

    reasoning_style: str = "openai"  # "openai": reasoning_effort; "openrouter": reasoning object; "none"
    default_effort: str | None = None  # effort to request when the client asks for none
    prompt_cache_key: bool = False  # send prompt_cache_key (OpenAI); others may reject unknown fields


@dataclass(frozen=True, slots=True)
class Route:
    requested_model: str
    upstream_model: str
    reasoning: bool  # upstream takes max_completion_tokens and rejects sampling params
    max_output_tokens: int | None  # clamp for max_tokens, when known
    options: UpstreamOptions = UpstreamOptions()


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
    def __init__(
        self,
        big_model: str,
        small_model: str,
        reasoning_pattern: str = r"^(o\d|gpt-5)",
        max_tokens_limit: int | None = None,
        options: UpstreamOptions | None = None,
    ) -> None:
        self.options = options or UpstreamOptions()
        self.big_model = big_model
        self.small_model = small_model
        self._reasoning = re.compile(reasoning_pattern)
        self._limit = max_tokens_limit
        self._cache: dict[str, Route] = {}

    def upstream_model(self, requested: str) -> str:
        lowered = requested.lower()
        if "haiku" in lowered:
            return self.small_model
        if lowered.startswith("claude"):
            return self.big_model
        return requested

    def route(self, requested: str) -> Route:
        route = self._cache.get(requested)
        if route is None:
            upstream = self.upstream_model(requested)
            bare = upstream.rsplit("/", 1)[-1].lower()
            route = Route(
                requested_model=requested,
                upstream_model=upstream,
                reasoning=bool(self._reasoning.search(bare)),
                max_output_tokens=self._limit or _known_limit(bare),
                options=self.options,
            )
            if len(self._cache) < 1024:  # requested ids are few; bound it anyway
                self._cache[requested] = route
        return route

    def models(self) -> list[dict[str, str]]:
        return [
            {
                "type": "model",
                "id": model_id,
                "display_name": f"{name} (→ {self.upstream_model(model_id)})",
                "created_at": created,
            }
            for model_id, name, created in KNOWN_MODELS
        ]


def _known_limit(bare_model: str) -> int | None:
    best = ""
    for prefix in OUTPUT_LIMITS:
        if bare_model.startswith(prefix) and len(prefix) > len(best):
            best = prefix
    return OUTPUT_LIMITS.get(best) if best else None
