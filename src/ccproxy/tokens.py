"""Local token counting for /v1/messages/count_tokens (no upstream call, no network).

The cl100k_base BPE ranks ship inside the package (``data/``) and are checked against the
sha256 that tiktoken publishes for them before use, so counting works offline and a
corrupted file fails loudly instead of miscounting. Counting follows OpenAI's chat
accounting (a few tokens per message) and adds fixed costs for images and document pages,
erring high rather than low.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import threading
from importlib import resources

import tiktoken

from .jsontext import json_text
from .schemas.anthropic import Block, CountTokensRequest, MessagesRequest

ENCODING_FILE = "cl100k_base.tiktoken"
ENCODING_SHA256 = "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"
_CL100K_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|"""
    r"""\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)
_SPECIAL = {
    "<|endoftext|>": 100257,
    "<|fim_prefix|>": 100258,
    "<|fim_middle|>": 100259,
    "<|fim_suffix|>": 100260,
    "<|endofprompt|>": 100276,
}

IMAGE_TOKENS = 1600  # Anthropic's cost of a ~1.15 megapixel image, the largest it keeps
PDF_PAGE_TOKENS = 1500  # text plus page image, a typical page
PER_MESSAGE_TOKENS = 4
PER_REQUEST_TOKENS = 3
PER_TOOL_TOKENS = 8
TOOLS_PREAMBLE_TOKENS = 300  # the tool-use system text the provider adds when tools are present

_lock = threading.Lock()
_encoding: tiktoken.Encoding | None = None


class EncodingIntegrityError(RuntimeError):
    pass


def verify_encoding_file() -> bytes:
    """The shipped ranks file, after checking its sha256 (raises EncodingIntegrityError)."""
    raw = resources.files("ccproxy").joinpath("data", ENCODING_FILE).read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    if digest != ENCODING_SHA256:
        raise EncodingIntegrityError(f"{ENCODING_FILE} has sha256 {digest}, expected {ENCODING_SHA256}")
    return raw


def encoding_loaded() -> bool:
    return _encoding is not None


def load_encoding() -> tiktoken.Encoding:
    """The shipped encoding, built once (thread-safe); raises if its sha256 is wrong."""
    global _encoding
    if _encoding is None:
        with _lock:
            if _encoding is None:
                raw = verify_encoding_file()
                ranks = {
                    base64.b64decode(token): int(rank)
                    for token, rank in (line.split() for line in raw.splitlines() if line)
                }
                encoding = tiktoken.Encoding(
                    name="cl100k_base",
                    pat_str=_CL100K_PATTERN,
                    mergeable_ranks=ranks,
                    special_tokens=_SPECIAL,
                )
                # The Rust core keeps its own copy of the ranks and encoding never reads the
                # Python dict, which would hold ~13 MB per worker for nothing.
                if isinstance(getattr(encoding, "_mergeable_ranks", None), dict):
                    encoding._mergeable_ranks = {}
                _encoding = encoding
    return _encoding


def count_text(text: str) -> int:
    if not text:
        return 0
    return len(load_encoding().encode_ordinary(text))


_PDF_PAGE = re.compile(rb"/Type\s*/Page(?![s\w])")


def _pdf_pages(data_b64: str) -> int:
    try:
        pdf = base64.b64decode(data_b64, validate=False)
    except ValueError:
        return 1
    return max(1, len(_PDF_PAGE.findall(pdf)))


def _block_cost(block: Block, texts: list[str]) -> int:
    """Fixed-cost tokens of one block; its countable text goes to ``texts``."""
    kind = block.get("type")
    if kind == "text":
        texts.append(str(block.get("text", "")))
    elif kind == "image":
        return IMAGE_TOKENS
    elif kind == "document":
        source = block.get("source")
        if not isinstance(source, dict):  # malformed: counted, never a crash
            return PDF_PAGE_TOKENS
        if source.get("type") == "base64" and source.get("media_type") == "application/pdf":
            return PDF_PAGE_TOKENS * _pdf_pages(str(source.get("data", "")))
        if source.get("type") == "text":
            texts.append(str(source.get("data", "")))
        elif source.get("type") == "content" and isinstance(source.get("content"), list):
            return sum(_block_cost(b, texts) for b in source["content"] if isinstance(b, dict))
        else:
            return PDF_PAGE_TOKENS
    elif kind == "tool_use":
        texts.append(str(block.get("name", "")))
        texts.append(json_text(block.get("input", {})))
    elif kind == "tool_result":
        content = block.get("content")
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            return sum(_block_cost(b, texts) for b in content if isinstance(b, dict))
    elif kind == "thinking":
        texts.append(str(block.get("thinking", "")))
    elif kind is not None:
        texts.append(json_text(block))
    return 0


def count_request(req: CountTokensRequest | MessagesRequest) -> int:
    texts: list[str] = []
    fixed = PER_REQUEST_TOKENS
    system = req.system
    if isinstance(system, str):
        texts.append(system)
    elif system:
        fixed += sum(_block_cost(b, texts) for b in system if isinstance(b, dict))
    for msg in req.messages:
        fixed += PER_MESSAGE_TOKENS
        if isinstance(msg.content, str):
            texts.append(msg.content)
        else:
            fixed += sum(_block_cost(b, texts) for b in msg.content if isinstance(b, dict))
    if req.tools:
        fixed += TOOLS_PREAMBLE_TOKENS
        for tool in req.tools:
            fixed += PER_TOOL_TOKENS
            texts.append(tool.name)
            if tool.description:
                texts.append(tool.description)
            if tool.input_schema:
                texts.append(bytes(tool.input_schema).decode("utf-8", "replace"))
    # One encode call over the joined text: tiktoken's per-call overhead dominates small pieces.
    return fixed + count_text("\n".join(texts))


TOKENS_INLINE_LIMIT = 64 * 1024  # larger requests are counted off the event loop


async def count_request_async(req: CountTokensRequest | MessagesRequest, size: int) -> int:
    """``count_request`` in a worker thread when the request is large (``size`` bytes) or the
    encoding is not loaded yet (~0.3 s the first time), inline otherwise."""
    if size > TOKENS_INLINE_LIMIT or not encoding_loaded():
        return await asyncio.to_thread(count_request, req)
    return count_request(req)


def estimate_tokens(size_bytes: int) -> int:
    """Cheap stand-in where an exact count would cost too much (stream start estimates)."""
    return max(1, size_bytes // 4)
