"""Anthropic's web_search server tool on a Chat Completions upstream: the proxy searches itself.

The model is offered a ``web_search(query)`` function in place of the server tool. Each round
is one whole (non-streamed) completion: when the model calls ``web_search``, the proxy runs the
query on the configured engine (``websearch.py``), sends the client a ``server_tool_use`` block
and a ``web_search_tool_result`` block, appends the call and its results to the conversation,
and asks again, until the model answers or the request's ``max_uses`` is spent (then the
function is withheld). Text, thinking and client tool calls of every round go to the client
as they are. Without an engine the answer says so: an ``unavailable`` error result and a
sentence, never an answer from the model's memory presented as a search.

Streams send ``message_start`` once the first round is in (so a failing first round is still
a proper HTTP error), then each round's blocks as soon as they exist; pings cover the waits.
"""

from __future__ import annotations

import itertools
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from ..errors import ProxyError
from ..schemas.anthropic import MessagesRequest, web_search_tool
from ..tokens import estimate_tokens
from ..translate.chat_request import convert_tool_choice
from ..translate.events import (
    assistant_message,
    block_events,
    error_event,
    message_end,
    message_start_event,
    new_message_id,
    search_blocks,
    with_searches,
)
from ..websearch import Engine, SearchError, SearchResult, results_text
from .base import Exchange


class Completes(Protocol):
    """The Chat adapter, as a round sees it: one whole completion, translated."""

    async def complete(self, payload: bytes, exchange: Exchange) -> dict[str, Any]: ...


FUNCTION_NAME = "web_search"
SEARCH_FUNCTION = {
    "type": "function",
    "function": {
        "name": FUNCTION_NAME,
        "description": (
            "Search the web for current information. Returns the top results with titles, URLs and "
            "snippets; cite the URLs you use."
        ),
        "parameters": {
            "type": "object",
            "properties": {"query": {"type": "string", "description": "the search query"}},
            "required": ["query"],
        },
    },
}
DEFAULT_MAX_USES = 5
MAX_QUERY = 400  # characters; longer is Anthropic's query_too_long
UNAVAILABLE_TEXT = (
    "Web search is not available on this proxy, so no search was run. (The proxy's operator can "
    "set SEARXNG_URL, BRAVE_API_KEY or TAVILY_API_KEY to enable it.)"
)
CLAUDE_CODE_PREFIX = "Perform a web search for the query: "

_ID_PREFIX = secrets.token_hex(6)
_ids = itertools.count(1)


def server_tool_id() -> str:
    return f"srvtoolu_{_ID_PREFIX}{next(_ids):012x}"


@dataclass(slots=True)
class SearchPlan:
    """The request's web_search server tool: how often and where it may search."""

    max_uses: int
    allowed: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)
    fallback_query: str = ""  # what the client asked to search, for the answer without an engine
    forced: bool = False  # tool_choice names web_search: the first search happens whatever the model does


def search_plan(req: MessagesRequest) -> SearchPlan | None:
    tool = web_search_tool(req.tools)
    if tool is None:
        return None
    return SearchPlan(
        max_uses=max(1, tool.max_uses) if tool.max_uses else DEFAULT_MAX_USES,
        allowed=list(tool.allowed_domains or ()),
        blocked=list(tool.blocked_domains or ()),
        fallback_query=_last_user_text(req)[:MAX_QUERY],
        forced=_forces(req.tool_choice, tool.name, len(req.tools or ())),
    )


def _forces(choice: dict[str, Any] | None, name: str, tools: int) -> bool:
    if not isinstance(choice, dict):
        return False
    return (choice.get("type") == "tool" and choice.get("name") == name) or (choice.get("type") == "any" and tools == 1)


def _last_user_text(req: MessagesRequest) -> str:
    for message in reversed(req.messages):
        if message.role != "user":
            continue
        content = message.content
        if isinstance(content, str):
            text = content
        else:
            texts = [b.get("text") for b in content if isinstance(b, dict) and b.get("type") == "text"]
            text = " ".join(t for t in texts if isinstance(t, str))
        return text.strip().removeprefix(CLAUDE_CODE_PREFIX).strip()
    return ""


def with_search_function(chat: dict[str, Any], req: MessagesRequest) -> dict[str, Any]:
    """The Chat request offering ``web_search`` in place of the server tool, with the client's
    tool choice (Claude Code forces web_search); rounds are whole completions."""
    if "tools" not in chat and req.tool_choice:  # (the server tool was the only one: no choice yet)
        choice = convert_tool_choice(req.tool_choice)
        if choice is not None:
            chat["tool_choice"] = choice
    chat["tools"] = [*chat.get("tools", ()), SEARCH_FUNCTION]
    chat.pop("stream", None)
    chat.pop("stream_options", None)
    return chat


def with_provider_search(chat: dict[str, Any], plan: SearchPlan) -> dict[str, Any]:
    """OpenRouter searches itself (its web plugin): the request asks for it; one whole round."""
    chat["plugins"] = [{"id": "web", "max_results": 5}]
    chat.pop("stream", None)
    chat.pop("stream_options", None)
    return chat


class Rounds:
    """What a search's rounds share: the answer so far (usage, stop reason, searches made) and
    ``round()``, called until ``done``; ``search_message`` / ``search_events`` drive it."""

    def __init__(self, adapter: Completes, plan: SearchPlan, exchange: Exchange) -> None:
        self.adapter = adapter
        self.plan = plan
        self.exchange = exchange
        self.done = False
        self.stop_reason = "end_turn"
        self.usage: dict[str, Any] = {}
        self.uses = 0

    async def round(self) -> list[dict[str, Any]]:
        raise NotImplementedError

    def final_usage(self) -> dict[str, Any]:
        return with_searches(self.usage, self.uses)

    def finish(self) -> None:
        """The request's record (the log and the rate limiter) gets the answer's usage."""
        self.exchange.usage = dict(self.usage)
        self.exchange.stop_reason = self.stop_reason


class ProviderSearch(Rounds):
    """A round on an upstream that searches by itself (OpenRouter's web plugin): its answer's
    citations become the search's results. The provider does not say what it searched for, so
    the block's query is what the client asked to search."""

    def __init__(self, adapter: Completes, plan: SearchPlan, payload: bytes, exchange: Exchange) -> None:
        super().__init__(adapter, plan, exchange)
        self.payload = payload

    async def round(self) -> list[dict[str, Any]]:
        message = await self.adapter.complete(self.payload, self.exchange)
        self.done = True
        self.usage = dict(message["usage"])
        self.stop_reason = message["stop_reason"]
        found: dict[str, str] = {}
        for block in message["content"]:
            for cite in block.get("citations") or () if block["type"] == "text" else ():
                found.setdefault(cite["url"], cite["title"])
        if not found:
            return message["content"]
        self.uses = 1
        srv_id = server_tool_id()
        results = [
            {"type": "web_search_result", "url": url, "title": title, "encrypted_content": "", "page_age": None}
            for url, title in found.items()
        ]
        return [*search_blocks(srv_id, self.plan.fallback_query, results), *message["content"]]


class SearchRun(Rounds):
    """The proxy searches with its engine; the model's rounds are summed into one answer."""

    def __init__(
        self, adapter: Completes, engine: Engine | None, plan: SearchPlan, payload: bytes, exchange: Exchange
    ) -> None:
        super().__init__(adapter, plan, exchange)
        self.engine = engine
        self.body: dict[str, Any] = orjson.loads(payload)
        self._searched_first = False
        self.usage = dict.fromkeys(
            ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"), 0
        )

    async def round(self) -> list[dict[str, Any]]:
        """The blocks of the next round (raises ProxyError when the upstream fails)."""
        if self.engine is None:
            self.done = True
            return self._unavailable()
        if self.plan.forced and self.plan.fallback_query and not self._searched_first:
            return await self._first_search()
        if self.uses >= self.plan.max_uses:
            self.body["tool_choice"] = "none"  # no more searches: answer with what was found
        message = await self.adapter.complete(orjson.dumps(self.body), self.exchange)
        for key in self.usage:
            self.usage[key] += message["usage"].get(key, 0)
        calls = [b for b in message["content"] if b["type"] == "tool_use" and b["name"] == FUNCTION_NAME]
        others = [b for b in message["content"] if b not in calls]
        if not calls or any(b["type"] == "tool_use" for b in others):
            # an answer, or calls of the client's own tools (those end the turn, as upstream)
            self.done = True
            self.stop_reason = message["stop_reason"] if not calls else "tool_use"
            return others
        blocks = [b for b in others if b["type"] != "text" or b["text"]]
        said = "".join(b["text"] for b in others if b["type"] == "text")
        queries = []
        for call in calls:
            query = call["input"].get("query") if isinstance(call["input"], dict) else None
            queries.append((call["id"], query if isinstance(query, str) else ""))
        return blocks + await self._run_searches(queries, said)

    async def _first_search(self) -> list[dict[str, Any]]:
        """The client forced the tool (Claude Code's WebSearch does): search its query at once,
        as Anthropic would, and let the model answer from the results."""
        self._searched_first = True
        return await self._run_searches([(f"call_{server_tool_id()[9:]}", self.plan.fallback_query)], "")

    async def _run_searches(self, queries: list[tuple[str, str]], said: str) -> list[dict[str, Any]]:
        """Run each (call id, query), and hand the calls and their results to the model."""
        blocks: list[dict[str, Any]] = []
        replies = []
        for call_id, query in queries:
            srv_id = server_tool_id()
            content, text = await self._search(query)
            blocks += search_blocks(srv_id, query, content)
            replies.append({"role": "tool", "tool_call_id": call_id, "content": text})
        calls = [
            {
                "id": call_id,
                "type": "function",
                "function": {"name": FUNCTION_NAME, "arguments": _arguments(query)},
            }
            for call_id, query in queries
        ]
        self.body["messages"] += [{"role": "assistant", "content": said or None, "tool_calls": calls}, *replies]
        self.body["tool_choice"] = "auto"
        return blocks

    async def _search(self, query: str) -> tuple[Any, str]:
        """(the result block's content, the text the model reads)."""
        assert self.engine is not None
        try:
            if self.uses >= self.plan.max_uses:
                raise SearchError("max_uses_exceeded")
            if not query.strip():
                raise SearchError("invalid_tool_input")
            if len(query) > MAX_QUERY:
                raise SearchError("query_too_long")
            self.uses += 1
            results = await self.engine.search(query, self.plan.allowed, self.plan.blocked)
        except SearchError as exc:
            error = {"type": "web_search_tool_result_error", "error_code": exc.error_code}
            return error, f"The search failed ({exc.error_code}{': ' + exc.detail if exc.detail else ''})."
        return [_result_block(r) for r in results], results_text(query, results)

    def _unavailable(self) -> list[dict[str, Any]]:
        srv_id = server_tool_id()
        error = {"type": "web_search_tool_result_error", "error_code": "unavailable"}
        return [*search_blocks(srv_id, self.plan.fallback_query, error), {"type": "text", "text": UNAVAILABLE_TEXT}]


def _arguments(query: str) -> str:
    return orjson.dumps({"query": query}).decode()


def _result_block(result: SearchResult) -> dict[str, Any]:
    return {
        "type": "web_search_result",
        "url": result.url,
        "title": result.title,
        "encrypted_content": result.encrypted_content(),
        "page_age": result.page_age,
    }


async def search_message(run: Rounds) -> dict[str, Any]:
    """Every round, as one Anthropic message."""
    blocks: list[dict[str, Any]] = []
    while not run.done:
        blocks += await run.round()
    run.finish()
    model = run.exchange.route.requested_model
    return assistant_message(model, blocks, run.stop_reason, run.final_usage())


async def search_events(run: Rounds) -> AsyncIterator[bytes]:
    """The rounds as an SSE stream; the first round runs before this is returned."""
    first = await run.round()
    return _stream(run, first)


async def _stream(run: Rounds, first: list[dict[str, Any]]) -> AsyncIterator[bytes]:
    exchange = run.exchange
    start = message_start_event(new_message_id(), exchange.route.requested_model, estimate_tokens(exchange.body_size))
    out = [start]
    index = 0
    blocks = first
    while True:
        for block in blocks:
            out.append(block_events(index, block))
            index += 1
        yield b"".join(out)
        out.clear()
        if run.done:
            break
        try:
            blocks = await run.round()
        except ProxyError as exc:
            exchange.error_type, exchange.error_message = exc.error_type, exc.message
            yield error_event(exc.error_type, exc.message)
            return
    run.finish()
    yield message_end(run.stop_reason, run.final_usage())
