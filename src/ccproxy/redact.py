"""Redaction: what must never be stored or shown, taken out of text before it is.

Everything the proxy writes about a request (error messages, the error log, stored bodies with
CCPROXY_LOG_BODIES, upstream errors relayed to the client) passes through a ``Redactor`` first.
It removes the configured secrets (upstream keys and credentials) verbatim, then anything shaped
like a secret: provider API keys, cloud and forge tokens, JWTs, private keys, passwords in URLs
and ``key = value`` pairs with a secret-sounding key (the key itself is kept).

Speed matters, since a stored body is up to 64 KB per request: a single regular expression with
an alternative per shape made CPython's ``re`` try every branch at every position (~17 ms per
100 KB body). Each shape here is found by its literal *anchor* (``str.find``, a memchr-speed
scan), and only at an anchor is its pattern matched, so the cost is a few scans per shape plus
the anchors actually present (~0.3 ms per 100 KB).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

MASK = "[REDACTED]"


@dataclass(frozen=True, slots=True)
class Shape:
    anchor: str  # a literal every such secret contains (lower-case when ``folded``)
    pattern: re.Pattern[str]  # matched at the anchor; its ``secret`` group (or all of it) is masked
    folded: bool = False  # matched on the lower-cased text (keywords in any case)
    word_start: bool = True  # the anchor may not follow a letter or digit
    after: tuple[str, ...] = ()  # the text before the anchor must end with one of these


def _literal(prefix: str, rest: str, **kwargs: bool) -> Shape:
    return Shape(prefix, re.compile(re.escape(prefix) + rest), **kwargs)  # type: ignore[arg-type]


# A value after a secret-sounding key: up to whitespace, quotes, a backslash (an escape inside a
# JSON string) or a separator; at least 6 characters, so "token: none" and friends stay.
_VALUE = r"(?P<secret>[^\s\"'\\,;&<>]{6,})"
_PAIR = r"(?:\\?[\"'])?\s*[:=]\s*(?:\\?[\"'])?(?:(?:bearer|basic|token)\s+)?" + _VALUE


def _keyword(anchor: str, tail: str = "", after: tuple[str, ...] = ()) -> Shape:
    return Shape(anchor, re.compile(re.escape(anchor) + tail + _PAIR), folded=True, word_start=False, after=after)


SHAPES: tuple[Shape, ...] = (
    # provider API keys: OpenAI, Anthropic (sk-ant-…), DeepSeek, OpenRouter (sk-or-…) …
    *(_literal(p, r"[A-Za-z0-9_\-]{8,}") for p in ("sk-", "rk-", "pk-")),
    *(_literal(p, r"[A-Za-z0-9]{10,}") for p in ("sk_live_", "sk_test_", "rk_live_", "rk_test_")),  # Stripe
    *(_literal(p, r"[0-9A-Z]{16}(?![0-9A-Za-z])") for p in ("AKIA", "ASIA", "ABIA", "ACCA")),  # AWS key ids
    *(_literal(p, r"[A-Za-z0-9]{30,}") for p in ("ghp_", "gho_", "ghu_", "ghs_", "ghr_")),  # GitHub
    _literal("github_pat_", r"[A-Za-z0-9_]{20,}"),
    _literal("glpat-", r"[A-Za-z0-9_\-]{20,}"),  # GitLab
    *(_literal(p, r"[A-Za-z0-9\-]{10,}") for p in ("xoxa-", "xoxb-", "xoxp-", "xoxo-", "xoxs-", "xoxr-", "xoxe-")),
    _literal("xapp-", r"[A-Za-z0-9\-]{10,}"),  # Slack
    _literal("hf_", r"[A-Za-z0-9]{30,}"),  # Hugging Face
    _literal("npm_", r"[A-Za-z0-9]{36}"),
    _literal("AIza", r"[0-9A-Za-z_\-]{35}"),  # Google
    _literal("eyJ", r"[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}"),  # JWTs
    _literal(
        "-----BEGIN ",
        r"[A-Z ]{0,40}PRIVATE KEY-----[\s\S]{0,16384}?-----END [A-Z ]{0,40}PRIVATE KEY-----",
        word_start=False,
    ),
    # user:password@host in URLs (user and host are kept)
    Shape("://", re.compile(r"://(?P<secret>[^/\s:@\"'\\]{1,256}:[^/\s@\"'\\]{1,256})@"), word_start=False),
    # Authorization: Bearer <token> anywhere (a token has a digit or punctuation; words do not)
    Shape("bearer", re.compile(r"bearer\s+(?P<secret>(?=[a-z]*[0-9._\-+/=~])[a-z0-9._\-+/=~]{8,})"), folded=True),
    # key = value pairs: JSON, env files, query strings, headers, YAML
    _keyword("token"),  # token, auth_token, access_token, refresh_token, csrftoken …
    _keyword("secret"),  # secret, client_secret
    _keyword("passw", r"(?:or)?d"),
    _keyword("pwd"),
    _keyword("passphrase"),
    _keyword("authorization"),
    _keyword(
        "key",
        r"(?:[_-]?id)?",
        after=("api", "api_", "api-", "access", "access_", "access-", "secret", "secret_", "secret-", "private_"),
    ),
)
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def find_secrets(text: str) -> list[tuple[int, int]]:
    """The spans of ``text`` that are secrets, in order, not overlapping."""
    spans: list[tuple[int, int]] = []
    lowered: str | None = None
    for shape in SHAPES:
        if shape.folded:
            if lowered is None:
                lowered = text.lower()
                if len(lowered) != len(text):  # (a few non-ASCII letters grow when lowered)
                    lowered = text.translate(_ASCII_LOWER)
            haystack = lowered
        else:
            haystack = text
        anchor, pattern = shape.anchor, shape.pattern
        at = haystack.find(anchor)
        while at >= 0:
            if (
                (not shape.word_start or at == 0 or not haystack[at - 1].isalnum())
                and (not shape.after or haystack.endswith(shape.after, 0, at))
                and (match := pattern.match(haystack, at)) is not None
            ):
                group = "secret" if "secret" in pattern.groupindex else 0
                spans.append(match.span(group))
                at = haystack.find(anchor, match.end())
            else:
                at = haystack.find(anchor, at + 1)
    if len(spans) > 1:
        spans.sort()
        merged = [spans[0]]
        for start, end in spans[1:]:
            if start <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
            else:
                merged.append((start, end))
        spans = merged
    return spans


def mask(text: str) -> str:
    """``text`` with every secret-shaped span replaced by ``[REDACTED]``."""
    spans = find_secrets(text)
    if not spans:
        return text
    out, last = [], 0
    for start, end in spans:
        out.append(text[last:start])
        out.append(MASK)
        last = end
    out.append(text[last:])
    return "".join(out)


class Redactor:
    """Removes the configured secrets and anything shaped like a secret from text."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def __call__(self, text: str, extra: Iterable[str] = ()) -> str:
        for secret in (*self._secrets, *(s for s in extra if s and len(s) >= 4)):
            if secret in text:
                text = text.replace(secret, MASK)
        return mask(text)


def without_password(url: str) -> str:
    """A URL fit for logs and metrics: user and host kept, the password left out."""
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not sep or not at:
        return url
    user = credentials.split(":", 1)[0]
    return f"{scheme}{sep}{user + '@' if user else ''}{host}"
