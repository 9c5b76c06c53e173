"""Adapter for OpenAI Chat Completions upstreams (OpenAI, OpenRouter, vLLM, llama.cpp, Ollama …)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import msgspec
import orjson

from .._native import SSEDecoder
from ..errors import ProxyError, from_upstream, invalid_request
from ..headerrules import HeaderRules
from ..redact import Redactor
from ..schemas.anthropic import MessagesRequest
from ..schemas.openai_chat import decode_completion
from ..serving import Response
from ..tokens import estimate_tokens
from ..translate.chat_request import build_chat_request, encode_chat_request, request_tool_names
from ..translate.chat_response import ChatStreamTranslator, completion_to_message
from ..translate.events import StreamFailure, StreamTranslator, message_events
from ..websearch import Engine
from .base import Exchange
from .chat_search import (
    ProviderSearch,
    Rounds,
    SearchRun,
    search_events,
    search_message,
    search_plan,
    with_provider_search,
    with_search_function,
)
from .client import HttpClient, UpstreamReadError, UpstreamResponse, read_failure


class ChatUpstream:
    """Chat Completions, and the base of every OpenAI-style adapter: subclasses change the
    endpoint and three hooks (``build``, ``to_message``, ``new_translator``)."""

    kind = "chat"
    endpoint = "/chat/completions"
    header_rules: HeaderRules | None = None  # the dashboard's live rules, set by the app

    def __init__(
        self,
        client: HttpClient,
        base_url: str,
        api_key: str,
        api_key_env: str,
        redactor: Redactor,
        extra_headers: tuple[tuple[str, str], ...] = (),
        basic_auth: str | None = None,
        think_tags: bool = True,
        search: Engine | None = None,
        provider_search: bool = False,
    ) -> None:
        self.client = client
        self.think_tags = think_tags
        self.search = search  # runs the web_search server tool (None: searching is unavailable)
        self.provider_search = provider_search  # the upstream searches itself (OpenRouter's web plugin)
        self.url = f"{base_url}{self.endpoint}"
        self.api_key_env = api_key_env
        self.redact = redactor
        # Only these go upstream: never the client's x-api-key / Authorization / anthropic-*.
        # Credentials in the base URL (user:password@) are HTTP Basic auth, in place of the key.
        self.headers = {
            "authorization": basic_auth or f"Bearer {api_key}",
            "content-type": "application/json",
            "accept": "application/json, text/event-stream",
            **dict(extra_headers),
        }

    def prepare(self, req: MessagesRequest, body: bytes, exchange: Exchange) -> bytes:
        """The upstream request body (pure translation; 400 for what cannot be sent)."""
        exchange.tool_names = request_tool_names(req)
        body = self.build(req, exchange)
        if self.kind == "chat" and req.tools:
            exchange.web_search = search_plan(req)
            if exchange.web_search is not None:
                if self.provider_search:
                    body = with_provider_search(body, exchange.web_search)
                else:
                    body = with_search_function(body, req)
        try:
            return encode_chat_request(body, req, exchange.route.options.schema_drop_keys)
        except orjson.JSONEncodeError as exc:  # e.g. max_tokens beyond 64 bits
            raise invalid_request(f"request has a value that cannot be sent upstream: {exc}") from None

    def cache_scope(self, exchange: Exchange) -> str:
        """What besides the body decides the answer: nothing of the client's goes upstream."""
        return ""

    async def count_tokens(self, body: bytes, exchange: Exchange) -> None:
        """OpenAI-style APIs have no count endpoint: the proxy counts locally."""
        return None

    async def create(self, payload: bytes, exchange: Exchange) -> Response:
        if exchange.web_search is not None:
            message = await search_message(self._search_run(payload, exchange))
        else:
            message = await self.complete(payload, exchange)
        return Response(200, orjson.dumps(message))

    def _search_run(self, payload: bytes, exchange: Exchange) -> Rounds:
        if self.provider_search:
            return ProviderSearch(self, exchange.web_search, payload, exchange)
        return SearchRun(self, self.search, exchange.web_search, payload, exchange)

    async def complete(self, payload: bytes, exchange: Exchange) -> dict[str, Any]:
        """One whole (non-streamed) completion, translated."""
        return await self._complete(await self._send(payload, exchange), exchange)

    async def _complete(self, resp: UpstreamResponse, exchange: Exchange) -> dict[str, Any]:
        """Read a whole (non-streamed) completion and translate it."""
        try:
            data = await resp.read()
        except UpstreamReadError as exc:
            raise read_failure(exc) from None
        if resp.status >= 400:
            raise self._error(resp, data)
        try:
            message = self.to_message(data, exchange)
        except (msgspec.MsgspecError, orjson.JSONDecodeError) as exc:
            raise ProxyError(502, f"upstream returned an invalid response: {exc}", "api_error") from None
        except StreamFailure as exc:
            raise ProxyError(502, self.redact(exc.message), exc.error_type) from None
        exchange.usage = message["usage"]
        exchange.stop_reason = message["stop_reason"]
        return message

    async def open_stream(self, payload: bytes, exchange: Exchange) -> AsyncIterator[bytes]:
        if exchange.web_search is not None:
            return await search_events(self._search_run(payload, exchange))
        resp = await self._send(payload, exchange)
        if resp.status >= 400:
            try:
                data = await resp.read()
            except UpstreamReadError:
                data = b""
            raise self._error(resp, data)
        content_type = resp.headers.get("content-type", "")
        if content_type.startswith("application/json"):
            # Some servers ignore stream=true; give the client the stream it asked for.
            return _single(message_events(await self._complete(resp, exchange)))
        if content_type and not content_type.startswith("text/event-stream"):
            await resp.close()
            raise ProxyError(
                502,
                f"upstream {self.url} answered with {content_type.split(';')[0]}, not an event stream "
                "(is OPENAI_BASE_URL right?)",
                "api_error",
            )
        return self._events(resp, self.new_translator(exchange), exchange)

    # -- the hooks an OpenAI-style adapter provides --

    def build(self, req: MessagesRequest, exchange: Exchange) -> dict[str, Any]:
        return build_chat_request(req, exchange.route)

    def to_message(self, data: bytes, exchange: Exchange) -> dict[str, Any]:
        return completion_to_message(
            decode_completion(data),
            exchange.route.requested_model,
            estimate_tokens(exchange.body_size),
            exchange.tool_names,
            self.think_tags,
        )

    def new_translator(self, exchange: Exchange) -> StreamTranslator:
        return ChatStreamTranslator(
            exchange.route.requested_model,
            estimate_tokens(exchange.body_size),
            tool_names=exchange.tool_names,
            think_tags=self.think_tags,
        )

    async def _events(
        self, resp: UpstreamResponse, translator: StreamTranslator, exchange: Exchange
    ) -> AsyncIterator[bytes]:
        decoder = SSEDecoder()
        out: list[bytes] = []  # events of the current read, sent even if a later chunk fails
        try:
            yield translator.start()
            try:
                async for raw in resp.iter_bytes():
                    translator.feed_all(decoder.feed(raw), out)
                    if out:
                        yield b"".join(out)
                        out.clear()
                    if translator.upstream_done:
                        break
                translator.feed_all(decoder.flush(), out)
                out.append(translator.finish())
                exchange.usage = translator.final_usage()
                exchange.stop_reason = translator.stop_reason
                yield b"".join(out)
            except (StreamFailure, UpstreamReadError) as exc:
                exchange.error_type, exchange.error_message = (
                    exc.error_type,
                    self.redact(exc.message),
                )
                yield b"".join(out) + translator.fail(exc.error_type, exchange.error_message)
        finally:
            await resp.close()

    async def _send(self, payload: bytes, exchange: Exchange) -> UpstreamResponse:
        headers = self.headers
        if self.header_rules is not None and self.header_rules.request:
            headers = self.header_rules.upstream_headers(headers)
        resp = await self.client.send(self.url, headers, payload)
        exchange.upstream_status = resp.status
        return resp

    def _error(self, resp: UpstreamResponse, data: bytes) -> ProxyError:
        err = from_upstream(
            resp.status,
            data,
            key_setting=self.api_key_env,
            retry_after=resp.headers.get("retry-after"),
            url=self.url,
        )
        err.message = self.redact(err.message)
        return err

    async def close(self) -> None:
        await self.client.close()


async def _single(data: bytes) -> AsyncIterator[bytes]:
    yield data
