"""Adapter for the OpenAI Responses API: the Chat adapter's plumbing with Responses translation."""

from __future__ import annotations

from typing import Any

import orjson

from ..schemas.anthropic import MessagesRequest
from ..tokens import estimate_tokens
from ..translate.responses_request import build_responses_request
from ..translate.responses_response import ResponsesStreamTranslator, response_to_message
from .base import Exchange
from .chat import ChatUpstream


class ResponsesUpstream(ChatUpstream):
    kind = "responses"
    endpoint = "/responses"

    def build(self, req: MessagesRequest, exchange: Exchange) -> dict[str, Any]:
        return build_responses_request(req, exchange.route)

    def to_message(self, data: bytes, exchange: Exchange) -> dict[str, Any]:
        return response_to_message(
            orjson.loads(data), exchange.route.requested_model, estimate_tokens(exchange.body_size), exchange.tool_names
        )

    def new_translator(self, exchange: Exchange) -> ResponsesStreamTranslator:
        return ResponsesStreamTranslator(
            exchange.route.requested_model, estimate_tokens(exchange.body_size), exchange.tool_names
        )
