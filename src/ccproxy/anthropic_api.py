"""The Anthropic API's endpoints besides ``/v1/messages`` (``pipeline.py``): token counting and
the model list; and a pointer for clients that call the OpenAI path by mistake."""

from __future__ import annotations

import logging

import orjson

from . import tokens
from .access import require_json
from .config import Settings
from .errors import ProxyError, invalid_request
from .routing import Router
from .schemas.anthropic import decode_count_tokens_request, decode_request
from .serving import Request, Response
from .upstream.base import Exchange
from .upstream.registry import Upstreams

log = logging.getLogger("ccproxy.api")


class AnthropicApi:
    def __init__(self, settings: Settings, router: Router, upstreams: Upstreams) -> None:
        self.settings = settings
        self.router = router
        self.upstreams = upstreams

    async def count_tokens(self, req: Request) -> Response:
        require_json(req)
        body = await req.body(self.settings.max_request_bytes)
        parsed = decode_request(decode_count_tokens_request, body)
        forwarded = await self._count_upstream(req, body, parsed.model)
        if forwarded is not None:
            return forwarded
        count = await tokens.count_request_async(parsed, len(body))
        return Response(200, orjson.dumps({"input_tokens": count}))

    async def _count_upstream(self, req: Request, body: bytes, model: str) -> Response | None:
        """Models served by an Anthropic upstream are counted by it (its tokenizer, not ours);
        when it cannot be reached the local estimate answers instead of an error."""
        try:
            route = self.router.route(model)
        except ProxyError:
            return None  # no route: the local count still tells the client the prompt's size
        upstream = self.upstreams.adapter(route.upstream)
        exchange = Exchange(req.request_id, route, len(body), False)
        exchange.keep_client_side(req)
        try:
            return await upstream.count_tokens(body, exchange)
        except ProxyError as exc:
            if exc.status in (502, 504):
                log.warning("count_tokens: upstream unreachable, counting locally: %s", exc.message)
                return None
            raise

    async def models(self, req: Request) -> Response:
        data = self.router.models()
        first, last = (data[0]["id"], data[-1]["id"]) if data else (None, None)
        body = {"data": data, "has_more": False, "first_id": first, "last_id": last}
        return Response(200, orjson.dumps(body))

    async def model(self, req: Request) -> Response:
        model_id = req.path.rstrip("/").rsplit("/", 1)[-1]
        for entry in self.router.models():
            if entry["id"] == model_id:
                return Response(200, orjson.dumps(entry))
        raise ProxyError(404, f"model: {model_id}", "not_found_error")

    async def chat_completions(self, req: Request) -> Response:
        raise invalid_request(
            "this is an Anthropic Messages API proxy: POST /v1/messages instead of "
            "/v1/chat/completions (it translates to the OpenAI upstream itself)"
        )
