"""Errors a client can see, always as an Anthropic error envelope.

``ProxyError`` carries (status, Anthropic error type, message, extra headers). Upstream
failures are mapped here too (PROTOCOL.md §6), so the rest of the code raises and the app
renders: ``{"type":"error","error":{"type":…,"message":…},"request_id":…}``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import orjson

# Anthropic's status → error type table; anything else falls back by class (4xx/5xx).
ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "conflict_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def error_type_for(status: int) -> str:
    return ERROR_TYPES.get(status) or ("invalid_request_error" if status < 500 else "api_error")


class ProxyError(Exception):
    """An error with a definite client-facing status and Anthropic error type."""

    def __init__(
        self,
        status: int,
        message: str,
        error_type: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_type = error_type or error_type_for(status)
        self.headers = list(headers)


def invalid_request(message: str) -> ProxyError:
    return ProxyError(400, message, "invalid_request_error")


def error_body(error_type: str, message: str, request_id: str | None = None) -> bytes:
    body: dict[str, object] = {"type": "error", "error": {"type": error_type, "message": message}}
    if request_id:
        body["request_id"] = request_id
    return orjson.dumps(body)


# --- upstream errors --------------------------------------------------------------------

_CONTEXT_PATTERNS = re.compile(
    r"context[_ ]length|context window|maximum context|too many tokens|prompt is too long|"
    r"reduce the length|input is too long|exceeds the (?:model'?s )?(?:maximum|max)",
    re.IGNORECASE,
)


def upstream_message(body: bytes) -> tuple[str, str | None]:
    """(message, code) from an upstream error body in OpenAI's or any similar JSON shape."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        text = body.decode("utf-8", "replace").strip()
        return (text[:500] or "no error body"), None
    err = data.get("error", data) if isinstance(data, dict) else data
    if isinstance(err, dict):
        message = err.get("message") or err.get("detail") or err.get("msg")
        code = err.get("code") or err.get("type")
        if isinstance(message, (dict, list)):
            message = orjson.dumps(message).decode()
        return str(message or orjson.dumps(err).decode()[:500]), (str(code) if code else None)
    if isinstance(err, str):
        return err[:500], None
    return orjson.dumps(data).decode()[:500], None


def from_upstream(
    status: int,
    body: bytes,
    *,
    key_setting: str,
    retry_after: str | None = None,
    url: str = "",
) -> ProxyError:
    """Map an upstream HTTP error response to the error the client should see."""
    message, code = upstream_message(body)
    if status in (400, 413, 422) and (code == "context_length_exceeded" or _CONTEXT_PATTERNS.search(message)):
        return ProxyError(400, f"prompt is too long: {message}", "invalid_request_error")
    if status in (401, 403):
        return ProxyError(
            status,
            f"upstream rejected {key_setting} ({status}): {message}",
        )
    headers = [("retry-after", retry_after)] if retry_after and status in (429, 503, 529) else []
    if status in (502, 503, 529):
        return ProxyError(529, f"upstream overloaded ({status}): {message}", "overloaded_error", headers)
    if status == 422:
        return ProxyError(400, f"upstream rejected the request: {message}")
    if status >= 500:
        return ProxyError(500 if status != 504 else 504, f"upstream error ({status}): {message}")
    if status == 404:
        # Usually a wrong model name or base URL: say which URL answered.
        return ProxyError(
            404, f"upstream {url} returned 404: {message}" if url else f"upstream returned 404: {message}"
        )
    return ProxyError(status, message, None, headers)


class ConfigError(Exception):
    """A setting is missing or invalid; the message is one line meant for the user."""
