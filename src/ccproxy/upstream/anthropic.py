"""Adapter for Anthropic itself: a verbatim pass-through that still records what happened.

The request body goes upstream byte for byte (only the ``model`` is rewritten, when a routing
rule names a different one); the answer comes back byte for byte, error statuses included. On the
way the adapter reads usage (``message_start`` / ``message_delta`` or the JSON body) and the
rate-limit headers for the request log and the dashboard.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import orjson

from .._native import SSEDecoder
from ..errors import ProxyError, error_body, error_type_for
from ..headerrules import HeaderRules
from ..redact import Redactor
from ..routing import UpstreamConfig
from ..schemas.anthropic import MessagesRequest
from ..serving import Response
from ..translate.events import error_event
from .base import Exchange
from .client import HttpClient, UpstreamReadError, UpstreamResponse, read_failure

# Client headers that carry meaning for Anthropic and are forwarded (the key is handled apart).
FORWARD_HEADERS = ("anthropic-version", "anthropic-beta")
# Upstream response headers relayed to the client and recorded.
RECORDED_PREFIXES = ("anthropic-ratelimit-", "anthropic-organization-id", "retry-after")


class AnthropicUpstream:
    kind = "anthropic"
    header_rules: HeaderRules | None = None  # the dashboard's live rules, set by the app

    def __init__(self, client: HttpClient, config: UpstreamConfig, redactor: Redactor) -> None:
        self.client = client
        self.config = config
        base = config.base_url
        self.url = f"{base}/messages" if base.endswith("/v1") else f"{base}/v1/messages"
        self.redact = redactor

    def prepare(self, req: MessagesRequest | None, body: bytes, exchange: Exchange) -> bytes:
        route = exchange.route
        if route.upstream_model == route.requested_model:
            return body  # verbatim
        data = msgspec.json.decode(body)  # (msgspec: integers of any size pass through unchanged)
        data["model"] = route.upstream_model
        return msgspec.json.encode(data)

    def _headers(self, exchange: Exchange) -> dict[str, str]:
        headers = {"content-type": "application/json", "anthropic-version": "2023-06-01"}
        headers.update(self.config.headers)
        for name in FORWARD_HEADERS:
            value = exchange.client_headers.get(name)
            if value:
                headers[name] = value
        key = exchange.client_headers.get("x-api-key") if self.config.pass_client_key else self.config.api_key
        if not key:
            raise ProxyError(401, "no API key for the Anthropic upstream (send x-api-key)", "authentication_error")
        headers["x-api-key"] = key
        if self.config.basic_auth:  # user:password@ of the base URL
            headers["authorization"] = self.config.basic_auth
        if self.header_rules is not None and self.header_rules.request:
            headers = self.header_rules.upstream_headers(headers)
        return headers

    def cache_scope(self, exchange: Exchange) -> str:
        """What besides the body decides the answer: the key sent (the client's own with
        pass_client_key, so a wrong key never gets a right key's cached answer), the beta
        flags and the query string. Hashed: the cache key never holds a secret."""
        headers = exchange.client_headers
        key = headers.get("x-api-key", "") if self.config.pass_client_key else ""
        parts = (key, headers.get("anthropic-beta", ""), headers.get("anthropic-version", ""), exchange.query)
        return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:32]

    def _url(self, exchange: Exchange, url: str | None = None) -> str:
        url = url or self.url
        return f"{url}?{exchange.query}" if exchange.query else url

    async def count_tokens(self, body: bytes, exchange: Exchange) -> Response:
        """Anthropic's own count (exact for its tokenizer), relayed as it answers, errors included.
        Raises ProxyError (502 or 504) when the upstream cannot be reached."""
        payload = self.prepare(None, body, exchange)
        response, _ = await self._whole(self.url + "/count_tokens", payload, exchange)
        return response

    async def create(self, payload: bytes, exchange: Exchange) -> Response:
        response, data = await self._whole(self.url, payload, exchange)
        if response.status < 400:
            _usage_from(_loads(data), exchange)
        else:
            exchange.error_type = "upstream_error"
        return response

    async def _whole(self, url: str, payload: bytes, exchange: Exchange) -> tuple[Response, bytes]:
        resp = await self.client.send(self._url(exchange, url), self._headers(exchange), payload)
        exchange.upstream_status = resp.status
        try:
            data = await resp.read()
        except UpstreamReadError as exc:
            raise read_failure(exc) from None
        relayed = self._record(resp, exchange)
        return self._relayable(resp, data, relayed), data

    def _relayable(self, resp: UpstreamResponse, data: bytes, relayed: list[tuple[str, str]]) -> Response:
        """A whole answer as the client may see it: JSON only (the proxy's origin also serves the
        dashboard, so an upstream's HTML must never be served from it), and error bodies with
        anything shaped like a secret redacted."""
        content_type = resp.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if content_type == "application/json" or (content_type.startswith("application/") and "+json" in content_type):
            if resp.status >= 400:
                data = self._redacted(data)
            return Response(resp.status, data, relayed)
        text = self.redact(data[:500].decode("utf-8", "replace").strip())
        shown = content_type or "no content type"
        if resp.status < 400:
            raise ProxyError(502, f"upstream {self.url} answered {resp.status} with {shown}, not JSON", "api_error")
        message = f"upstream {self.url} answered {resp.status} ({shown}): {text or 'no body'}"
        return Response(resp.status, error_body(error_type_for(resp.status), message), relayed)

    def _redacted(self, data: bytes) -> bytes:
        error = _loads(data)
        inner = error.get("error") if isinstance(error, dict) else None
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            cleaned = self.redact(inner["message"])
            if cleaned != inner["message"]:
                inner["message"] = cleaned
                return orjson.dumps(error)
            return data
        return self.redact(data.decode("utf-8", "replace")).encode() if error is None else data

    async def open_stream(self, payload: bytes, exchange: Exchange) -> AsyncIterator[bytes] | Response:
        resp = await self.client.send(self._url(exchange), self._headers(exchange), payload)
        exchange.upstream_status = resp.status
        relayed = self._record(resp, exchange)
        if resp.status >= 400 or not resp.headers.get("content-type", "").startswith("text/event-stream"):
            try:
                data = await resp.read()
            except UpstreamReadError as exc:
                raise read_failure(exc) from None
            if resp.status >= 400:
                exchange.error_type = "upstream_error"
            return self._relayable(resp, data, relayed)
        exchange.relay_headers = relayed
        return self._relay(resp, exchange)

    async def _relay(self, resp: UpstreamResponse, exchange: Exchange) -> AsyncIterator[bytes]:
        decoder = SSEDecoder()
        try:
            async for chunk in resp.iter_bytes():
                yield chunk  # untouched
                for event, data in decoder.feed(chunk):
                    if event in ("message_start", "message_delta", "error"):
                        _observe(event, data, exchange)
        except UpstreamReadError as exc:
            exchange.error_type, exchange.error_message = exc.error_type, self.redact(exc.message)
            # end any half-sent event first, so the client's parser sees a whole error event
            yield (b"\n\n" if decoder.pending else b"") + error_event(exc.error_type, exchange.error_message)
        finally:
            await resp.close()

    @staticmethod
    def _record(resp: UpstreamResponse, exchange: Exchange) -> list[tuple[str, str]]:
        relayed = [(k.lower(), v) for k, v in resp.headers.items() if k.lower().startswith(RECORDED_PREFIXES)]
        exchange.ratelimit = dict(relayed)
        return relayed

    async def close(self) -> None:
        await self.client.close()


def _loads(data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return None


def _usage_from(message: Any, exchange: Exchange) -> None:
    if isinstance(message, dict):
        usage = message.get("usage")
        if isinstance(usage, dict):
            exchange.usage = {k: v for k, v in usage.items() if isinstance(v, int)}
        if isinstance(message.get("stop_reason"), str):
            exchange.stop_reason = message["stop_reason"]


def _observe(event: str, data: bytes, exchange: Exchange) -> None:
    payload = _loads(data)
    if not isinstance(payload, dict):
        return
    if event == "message_start":
        _usage_from(payload.get("message"), exchange)
    elif event == "message_delta":
        usage = payload.get("usage")
        if isinstance(usage, dict):
            exchange.usage = {**exchange.usage, **{k: v for k, v in usage.items() if isinstance(v, int)}}
        delta = payload.get("delta")
        if isinstance(delta, dict) and isinstance(delta.get("stop_reason"), str):
            exchange.stop_reason = delta["stop_reason"]
    elif event == "error":
        error = payload.get("error")
        exchange.error_type = error.get("type") if isinstance(error, dict) else "api_error"
