"""OpenAI Chat Completions responses and stream chunks, as decoded from the upstream.

Fields are optional and lenient: OpenAI-compatible servers (vLLM, llama.cpp, Ollama,
OpenRouter, DeepSeek …) omit or null different things.
"""

from __future__ import annotations

from typing import Any

import msgspec

Number = int | float  # some servers send token counts as 12.0


class PromptTokensDetails(msgspec.Struct):
    cached_tokens: Number | None = None


class CompletionTokensDetails(msgspec.Struct):
    reasoning_tokens: Number | None = None


class Usage(msgspec.Struct):
    prompt_tokens: Number | None = None
    completion_tokens: Number | None = None
    total_tokens: Number | None = None
    prompt_tokens_details: PromptTokensDetails | None = None
    completion_tokens_details: CompletionTokensDetails | None = None
    prompt_cache_hit_tokens: Number | None = None  # DeepSeek's name for cached prompt tokens
    cached_tokens: Number | None = None  # at the top level: Moonshot, Together (via Hugging Face)


class ProviderExtension(msgspec.Struct):
    """Groq's ``x_groq``: the stream's usage comes here, in the last chunk."""

    usage: Usage | None = None


class FunctionCall(msgspec.Struct):
    name: str | None = None
    arguments: str | dict[str, Any] | None = None  # (a few servers send an object, not a string)


class ToolCall(msgspec.Struct):
    index: int | None = None
    id: str | None = None
    type: str | None = None
    function: FunctionCall | None = None


# ``content`` is a string, or (Mistral's reasoning models, some gateways) a list of parts:
# {"type": "text", "text": …}, {"type": "thinking", "thinking": [parts] | str}, …
Content = str | list[Any] | None


class ResponseMessage(msgspec.Struct):
    role: str | None = None
    content: Content = None
    refusal: str | None = None
    reasoning_content: str | None = None
    reasoning: str | None = None
    reasoning_details: list[Any] | None = None  # OpenRouter: reasoning as typed items
    tool_calls: list[ToolCall] | None = None
    # url_citation annotations (OpenRouter's web plugin, OpenAI's search models)
    annotations: list[Any] | None = None


class Choice(msgspec.Struct):
    index: int = 0
    message: ResponseMessage | None = None
    finish_reason: str | None = None


class ChatCompletion(msgspec.Struct):
    id: str | None = None
    model: str | None = None
    choices: list[Choice] | None = None
    usage: Usage | None = None
    error: Any = None


class Delta(msgspec.Struct):
    role: str | None = None
    content: Content = None
    refusal: str | None = None
    reasoning_content: str | None = None
    reasoning: str | None = None
    reasoning_details: list[Any] | None = None
    tool_calls: list[ToolCall] | None = None


class ChunkChoice(msgspec.Struct):
    index: int = 0
    delta: Delta | None = None
    finish_reason: str | None = None


class ChatChunk(msgspec.Struct):
    id: str | None = None
    choices: list[ChunkChoice] | None = None  # (Azure's first chunk: [] with prompt_filter_results)
    usage: Usage | None = None
    error: Any = None  # OpenRouter reports mid-stream failures in a chunk
    x_groq: ProviderExtension | None = None


_completion_decoder = msgspec.json.Decoder(ChatCompletion)
_chunk_decoder = msgspec.json.Decoder(ChatChunk)


def decode_completion(body: bytes) -> ChatCompletion:
    return _completion_decoder.decode(body)


def decode_chunk(data: bytes) -> ChatChunk:
    return _chunk_decoder.decode(data)
