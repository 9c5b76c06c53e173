"""OpenAI Chat Completions responses and stream chunks, as decoded from the upstream.

Fields are optional and lenient: OpenAI-compatible servers (vLLM, llama.cpp, Ollama,
OpenRouter, DeepSeek …) omit or null different things.
"""

from __future__ import annotations

from typing import Any

import msgspec


class PromptTokensDetails(msgspec.Struct):
    cached_tokens: int | None = None


class Usage(msgspec.Struct):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    prompt_tokens_details: PromptTokensDetails | None = None
    prompt_cache_hit_tokens: int | None = None  # DeepSeek's name for cached prompt tokens


class FunctionCall(msgspec.Struct):
    name: str | None = None
    arguments: str | None = None


class ToolCall(msgspec.Struct):
    index: int | None = None
    id: str | None = None
    type: str | None = None
    function: FunctionCall | None = None


class ResponseMessage(msgspec.Struct):
    role: str | None = None
    content: str | None = None
    refusal: str | None = None
    reasoning_content: str | None = None
    reasoning: str | None = None
    tool_calls: list[ToolCall] | None = None


class Choice(msgspec.Struct):
    index: int = 0
    message: ResponseMessage | None = None
    finish_reason: str | None = None


class ChatCompletion(msgspec.Struct):
    id: str | None = None
    model: str | None = None
    choices: list[Choice] = []
    usage: Usage | None = None
    error: Any = None


class Delta(msgspec.Struct):
    role: str | None = None
    content: str | None = None
    refusal: str | None = None
    reasoning_content: str | None = None
    reasoning: str | None = None
    tool_calls: list[ToolCall] | None = None


class ChunkChoice(msgspec.Struct):
    index: int = 0
    delta: Delta | None = None
    finish_reason: str | None = None


class ChatChunk(msgspec.Struct):
    id: str | None = None
    choices: list[ChunkChoice] = []
    usage: Usage | None = None
    error: Any = None  # OpenRouter reports mid-stream failures in a chunk


_completion_decoder = msgspec.json.Decoder(ChatCompletion)
_chunk_decoder = msgspec.json.Decoder(ChatChunk)


def decode_completion(body: bytes) -> ChatCompletion:
    return _completion_decoder.decode(body)


def decode_chunk(data: bytes) -> ChatChunk:
    return _chunk_decoder.decode(data)
