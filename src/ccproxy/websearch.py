"""Web search engines the proxy runs itself, for upstreams that cannot search (docs/websearch.md).

Claude Code's WebSearch tool asks the Anthropic API to search (the ``web_search_20250305`` server
tool). An OpenAI-style upstream has no such tool, so the proxy offers the model a
``web_search(query)`` function, runs each call against one of these engines and answers in
Anthropic's server-tool shape (``upstream/chat_search.py``).

Engines: SearXNG (self-hosted, ``GET /search?q=…&format=json``), Brave Search and Tavily (API
keys). An engine never raises into the request: a failure is a ``SearchError`` with one of the
documented ``error_code`` values, which becomes that search's error result.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlencode, urlsplit

import orjson

from .errors import ProxyError
from .upstream.client import HttpClient, UpstreamReadError
from .upstream.egress import split_userinfo

log = logging.getLogger("ccproxy.websearch")

ENGINES = ("searxng", "brave", "tavily")
MODES = ("auto", "off", *ENGINES)
SEARCH_TIMEOUT = 15.0  # seconds for one search, whatever the engine
MAX_RESULTS = 8
MAX_RESPONSE = 4 << 20  # an engine's JSON answer larger than this is refused


class SearchError(Exception):
    """One search failed; ``error_code`` is Anthropic's (``unavailable``, ``too_many_requests``,
    ``invalid_tool_input``, ``max_uses_exceeded``, ``query_too_long``)."""

    def __init__(self, error_code: str, detail: str = "") -> None:
        super().__init__(detail or error_code)
        self.error_code = error_code
        self.detail = detail


@dataclass(frozen=True, slots=True)
class SearchResult:
    url: str
    title: str
    snippet: str
    page_age: str | None = None

    def encrypted_content(self) -> str:
        """Anthropic's field is opaque to clients; ours carries the result itself, so a later
        turn that sends the block back can show the model what it saw (chat_request.py)."""
        data = orjson.dumps({"u": self.url, "t": self.title, "s": self.snippet})
        return base64.urlsafe_b64encode(data).decode()


def decode_encrypted_content(value: str) -> dict[str, str] | None:
    """What ``encrypted_content`` of one of our results holds, or None for anything else
    (Anthropic's own results are opaque)."""
    try:
        data = orjson.loads(base64.urlsafe_b64decode(value.encode()))
    except (ValueError, orjson.JSONDecodeError):
        return None
    if isinstance(data, dict) and isinstance(data.get("u"), str):
        return {k: str(v) for k, v in data.items()}
    return None


class Engine(Protocol):
    name: str
    client: HttpClient

    async def search(self, query: str, allowed: list[str], blocked: list[str]) -> list[SearchResult]: ...


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """Which engine a worker uses (from Settings: CCPROXY_WEB_SEARCH and the engine's variable)."""

    mode: str = "auto"  # auto | off | searxng | brave | tavily
    searxng_url: str | None = None
    brave_api_key: str | None = None
    tavily_api_key: str | None = None

    def engine_name(self) -> str | None:
        """The engine to run, or None: searching is unavailable (off, or nothing configured)."""
        if self.mode == "off":
            return None
        if self.mode in ENGINES:
            return self.mode
        if self.searxng_url:
            return "searxng"
        if self.brave_api_key:
            return "brave"
        if self.tavily_api_key:
            return "tavily"
        return None


SEARCH_DEFAULTS = EngineConfig()


def create_engine(config: EngineConfig, client: HttpClient) -> Engine | None:
    name = config.engine_name()
    if name == "searxng" and config.searxng_url:
        return SearxngEngine(client, config.searxng_url)
    if name == "brave" and config.brave_api_key:
        return BraveEngine(client, config.brave_api_key)
    if name == "tavily" and config.tavily_api_key:
        return TavilyEngine(client, config.tavily_api_key)
    return None


async def fetch_json(client: HttpClient, url: str, headers: dict[str, str], body: bytes, method: str) -> Any:
    """One engine call: its JSON, or SearchError (timeouts, refusals, broken answers)."""
    try:
        async with asyncio.timeout(SEARCH_TIMEOUT):
            resp = await client.send(url, headers, body, method)
            data = await resp.read()
    except TimeoutError:
        raise SearchError("unavailable", "the search engine did not answer in time") from None
    except (ProxyError, UpstreamReadError) as exc:
        raise SearchError("unavailable", exc.message) from None
    if resp.status == 429:
        raise SearchError("too_many_requests", "the search engine is rate limiting")
    if resp.status >= 400:
        raise SearchError("unavailable", f"the search engine answered {resp.status}")
    if len(data) > MAX_RESPONSE:
        raise SearchError("unavailable", "the search engine's answer is too large")
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        raise SearchError("unavailable", "the search engine's answer is not JSON") from None


def _kept(url: str, allowed: list[str], blocked: list[str]) -> bool:
    host = (urlsplit(url).hostname or "").lower()

    def under(domain: str) -> bool:
        domain = domain.lower().lstrip(".")
        return host == domain or host.endswith("." + domain)

    if allowed and not any(under(d) for d in allowed):
        return False
    return not any(under(d) for d in blocked)


def _results(items: Any, url_key: str, title_key: str, snippet_keys: tuple[str, ...], age_keys: tuple[str, ...],
             allowed: list[str], blocked: list[str]) -> list[SearchResult]:  # fmt: skip
    out: list[SearchResult] = []
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict):
            continue
        url = item.get(url_key)
        if not isinstance(url, str) or not url.startswith(("http://", "https://")) or not _kept(url, allowed, blocked):
            continue
        snippet = next((item[k] for k in snippet_keys if isinstance(item.get(k), str) and item[k]), "")
        age = next((item[k] for k in age_keys if isinstance(item.get(k), str) and item[k]), None)
        title = item.get(title_key)
        out.append(SearchResult(url, title if isinstance(title, str) and title else url, snippet[:2000], age))
        if len(out) == MAX_RESULTS:
            break
    return out


def _with_domains(query: str, allowed: list[str]) -> str:
    # engines that take no domain filter get it in the query (site: works on all three)
    if not allowed:
        return query
    return f"{query} ({' OR '.join(f'site:{d}' for d in allowed[:5])})"


class SearxngEngine:
    name = "searxng"

    def __init__(self, client: HttpClient, base_url: str) -> None:
        self.client = client
        base_url, basic = split_userinfo(base_url)  # (an instance behind Basic auth: user:pw@ in the URL)
        self.url = base_url.rstrip("/") + "/search"
        self.headers = {"accept": "application/json", **({"authorization": basic} if basic else {})}

    async def search(self, query: str, allowed: list[str], blocked: list[str]) -> list[SearchResult]:
        params = urlencode({"q": _with_domains(query, allowed), "format": "json"})
        data = await fetch_json(self.client, f"{self.url}?{params}", self.headers, b"", "GET")
        items = data.get("results") if isinstance(data, dict) else None
        return _results(items, "url", "title", ("content",), ("publishedDate",), allowed, blocked)


class BraveEngine:
    name = "brave"
    url = "https://api.search.brave.com/res/v1/web/search"

    def __init__(self, client: HttpClient, api_key: str) -> None:
        self.client = client
        self.headers = {"accept": "application/json", "x-subscription-token": api_key}

    async def search(self, query: str, allowed: list[str], blocked: list[str]) -> list[SearchResult]:
        params = urlencode({"q": _with_domains(query, allowed), "count": MAX_RESULTS})
        data = await fetch_json(self.client, f"{self.url}?{params}", self.headers, b"", "GET")
        web = data.get("web") if isinstance(data, dict) else None
        items = web.get("results") if isinstance(web, dict) else None
        return _results(items, "url", "title", ("description",), ("page_age", "age"), allowed, blocked)


class TavilyEngine:
    name = "tavily"
    url = "https://api.tavily.com/search"

    def __init__(self, client: HttpClient, api_key: str) -> None:
        self.client = client
        self.headers = {"content-type": "application/json", "authorization": f"Bearer {api_key}"}

    async def search(self, query: str, allowed: list[str], blocked: list[str]) -> list[SearchResult]:
        body: dict[str, Any] = {"query": query, "max_results": MAX_RESULTS}
        if allowed:
            body["include_domains"] = allowed
        if blocked:
            body["exclude_domains"] = blocked
        data = await fetch_json(self.client, self.url, self.headers, orjson.dumps(body), "POST")
        items = data.get("results") if isinstance(data, dict) else None
        return _results(items, "url", "title", ("content",), ("published_date",), allowed, blocked)


def results_text(query: str, results: list[SearchResult]) -> str:
    """The search as the model reads it (the ``web_search`` function's result)."""
    if not results:
        return f'No results for "{query}".'
    lines = [f'Results for "{query}" (cite the URLs you use):']
    for i, r in enumerate(results, 1):
        lines.append(f"\n[{i}] {r.title}\nURL: {r.url}" + (f"\nPublished: {r.page_age}" if r.page_age else ""))
        if r.snippet:
            lines.append(r.snippet)
    return "\n".join(lines)
