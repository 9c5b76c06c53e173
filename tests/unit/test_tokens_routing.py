from __future__ import annotations

import base64

import orjson

from ccproxy import tokens
from ccproxy.routing import Router
from ccproxy.schemas.anthropic import decode_count_tokens_request


def count(**body) -> int:
    body.setdefault("model", "claude-sonnet-5")
    return tokens.count_request(decode_count_tokens_request(orjson.dumps(body)))


def test_encoding_is_shipped_and_verified():
    enc = tokens.load_encoding()
    assert enc.encode_ordinary("hello world") == [15339, 1917]  # cl100k_base ids


def test_counts_grow_with_content_and_cover_every_part():
    base = count(messages=[{"role": "user", "content": "hi"}])
    assert base > 0
    assert count(messages=[{"role": "user", "content": "hi " * 200}]) > base + 150
    assert count(system="You are a helpful assistant " * 20, messages=[{"role": "user", "content": "hi"}]) > base + 80
    with_tool = count(
        messages=[{"role": "user", "content": "hi"}],
        tools=[{"name": "Bash", "description": "Run a shell command", "input_schema": {"type": "object"}}],
    )
    assert with_tool > base + tokens.TOOLS_PREAMBLE_TOKENS
    img = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}
    assert count(messages=[{"role": "user", "content": [img]}]) >= tokens.IMAGE_TOKENS


def test_pdf_pages_are_counted():
    pdf = b"%PDF-1.4 /Type /Pages /Type /Page x /Type /Page y /Type /Page"
    doc = {
        "type": "document",
        "source": {"type": "base64", "media_type": "application/pdf", "data": base64.b64encode(pdf).decode()},
    }
    assert count(messages=[{"role": "user", "content": [doc]}]) >= 3 * tokens.PDF_PAGE_TOKENS


def test_claude_code_request_count_is_plausible(claude_code_fixture):
    body = claude_code_fixture("opus-say-hi")
    n = count(**{k: body[k] for k in ("model", "messages", "system", "tools")})
    size = len(orjson.dumps(body))
    assert size / 8 < n < size / 2  # roughly 4 bytes per token for English and JSON


def test_model_mapping():
    r = Router("gpt-big", "gpt-small")
    assert r.upstream_model("claude-haiku-4-5-20251001") == "gpt-small"
    assert r.upstream_model("claude-3-5-haiku-latest") == "gpt-small"
    assert r.upstream_model("claude-opus-4-8") == "gpt-big"
    assert r.upstream_model("claude-sonnet-5") == "gpt-big"
    assert r.upstream_model("claude-future-9") == "gpt-big"
    assert r.upstream_model("gpt-4o-mini") == "gpt-4o-mini"  # non-claude ids pass through
    assert r.route("claude-sonnet-5").requested_model == "claude-sonnet-5"


def test_models_list_is_never_empty_and_maps():
    models = Router("gpt-big", "gpt-small").models()
    assert models and all(m["type"] == "model" for m in models)
    # the Claude ids, then what can be named directly: "upstream,model"
    assert [m["id"] for m in models if not m["id"].startswith("claude-")] == ["default,gpt-big", "default,gpt-small"]
    assert any("haiku" in m["id"] and "gpt-small" in m["display_name"] for m in models)
