"""Upstream failures → Anthropic status and error type (PROTOCOL.md §6), and redaction."""

from __future__ import annotations

import orjson
import pytest

from ccproxy.errors import error_body, from_upstream
from ccproxy.redact import Redactor


def openai_error(message: str, code: str | None = None) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": "invalid_request_error", "code": code}})


@pytest.mark.parametrize(
    ("status", "client_status", "error_type"),
    [
        (400, 400, "invalid_request_error"),
        (401, 401, "authentication_error"),
        (402, 402, "billing_error"),
        (403, 403, "permission_error"),
        (404, 404, "not_found_error"),
        (409, 409, "conflict_error"),
        (413, 413, "request_too_large"),
        (422, 400, "invalid_request_error"),
        (429, 429, "rate_limit_error"),
        (500, 500, "api_error"),
        (502, 529, "overloaded_error"),
        (503, 529, "overloaded_error"),
        (504, 504, "timeout_error"),
        (529, 529, "overloaded_error"),  # PROTOCOL.md §6
    ],
)
def test_status_mapping(status, client_status, error_type):
    err = from_upstream(status, openai_error("nope"), key_setting="OPENAI_API_KEY")
    assert (err.status, err.error_type) == (client_status, error_type)
    assert "nope" in err.message


def test_auth_failures_name_the_setting():
    err = from_upstream(401, openai_error("Incorrect API key provided"), key_setting="OPENROUTER_API_KEY")
    assert err.message.startswith("upstream rejected OPENROUTER_API_KEY")


def test_retry_after_is_kept_for_429():
    err = from_upstream(429, openai_error("slow down"), key_setting="K", retry_after="7")
    assert ("retry-after", "7") in err.headers


@pytest.mark.parametrize(
    "body",
    [
        openai_error("This model's maximum context length is 128000 tokens. However...", "context_length_exceeded"),
        openai_error("prompt is too long: 300000 tokens"),
        b'{"detail": "Input is too long for requested model."}',
    ],
)
def test_context_length_becomes_prompt_is_too_long(body):
    err = from_upstream(400, body, key_setting="K")
    assert err.status == 400 and err.error_type == "invalid_request_error"
    assert err.message.startswith("prompt is too long")


def test_non_json_error_body():
    err = from_upstream(500, b"<html>Internal Server Error</html>", key_setting="K")
    assert err.status == 500 and "Internal Server Error" in err.message


def test_envelope_shape():
    assert orjson.loads(error_body("rate_limit_error", "slow", "req_1")) == {
        "type": "error",
        "error": {"type": "rate_limit_error", "message": "slow"},
        "request_id": "req_1",
    }


def test_redactor_removes_configured_and_key_shaped_secrets():
    redact = Redactor(["my-very-secret-upstream-key"])
    text = redact(
        "key my-very-secret-upstream-key failed; sk-proj-abcdefghijklmnop; Authorization: Bearer abc.def.ghijkl",
        extra=["client-key-12345"],
    )
    assert "my-very-secret" not in text and "abcdefghijklmnop" not in text and "ghijkl" not in text
    assert redact("client-key-12345 leaked", extra=["client-key-12345"]) == "[REDACTED] leaked"
