"""The dashboard's HTTP side: its page and assets, the JSON APIs over the request log
(``dashboard.py``) and Claude Code's transcripts (``conversations.py``), the header-rule
settings it edits, and the OpenAPI description of all of it.

The read APIs are alike: parse the query, run one synchronous query in a worker thread, answer
JSON. They are a table (``_QUERIES``) of query parsers; ``routes()`` turns it into handlers.
Who may call them is decided before dispatch (``access.py``: the dashboard's password).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs, unquote

import orjson

from .access import require_json
from .config import Settings
from .conversations import Conversations
from .dashboard import MAX_PAGE, MAX_SUMMARY, Dashboard, parse_int, parse_time
from .errors import ProxyError, invalid_request
from .headerrules import HeaderRules
from .openapi import openapi_spec, static_file, to_yaml
from .serving import Request, Response
from .store import get_setting, put_setting

log = logging.getLogger("ccproxy.dashboard")

Handler = Callable[[Request], Awaitable[Response]]
SETTINGS_POLL_SECONDS = 2.0

# A read API: (query, the path's last part) → (the query function, its arguments)
Query = Callable[["DashboardApi", dict[str, str], str], tuple[Callable[..., Any], tuple[Any, ...]]]


def _page(q: dict[str, str]) -> tuple[int, int]:
    return parse_int(q.get("page"), "page", 1, 1, 10**9), parse_int(q.get("limit"), "limit", 10, 1, MAX_PAGE)


def required_range(q: dict[str, str]) -> tuple[float, float]:
    start = parse_time(q.get("start"), "start")
    end = parse_time(q.get("end"), "end", end_of_day=True)
    if start is None or end is None:
        raise invalid_request("start and end: both required (ISO 8601 date-times)")
    if end <= start:
        raise invalid_request("end: must be after start")
    return start, end


_QUERIES: dict[tuple[str, str], Query] = {
    ("GET", "/api/requests"): lambda api, q, _: (api.dashboard.requests, (*_page(q), q.get("model", "all"))),
    ("DELETE", "/api/requests"): lambda api, q, _: (api.dashboard.delete_requests, ()),
    ("GET", "/api/requests/summary"): lambda api, q, _: (
        api.dashboard.summary,
        (
            q.get("model", "all"),
            parse_time(q.get("start"), "start"),
            parse_time(q.get("end"), "end"),
            parse_int(q.get("offset"), "offset", 0, 0, 10**9),
            parse_int(q.get("limit"), "limit", 0, 0, MAX_SUMMARY),
        ),
    ),
    ("GET", "/api/requests/latest-date"): lambda api, q, _: (api.dashboard.latest_date, ()),
    ("GET", "/api/requests/"): lambda api, q, last: (api.dashboard.request, (last,)),
    ("GET", "/api/stats"): lambda api, q, _: (
        api.dashboard.stats,
        (
            parse_time(q.get("start_date") or q.get("start"), "start_date"),
            parse_time(q.get("end_date") or q.get("end"), "end_date", end_of_day=True),
            q.get("model"),
            q.get("org"),
        ),
    ),
    ("GET", "/api/stats/dashboard"): lambda api, q, _: (
        api.dashboard.daily,
        (parse_time(q.get("start"), "start"), parse_time(q.get("end"), "end", end_of_day=True), q.get("org")),
    ),
    ("GET", "/api/stats/hourly"): lambda api, q, _: (
        api.dashboard.hourly,
        (*required_range(q), parse_int(q.get("bucket"), "bucket", 60, 1, 1440), q.get("org")),
    ),
    ("GET", "/api/stats/models"): lambda api, q, _: (api.dashboard.models, (*required_range(q), q.get("org"))),
    ("GET", "/api/stats/organizations"): lambda api, q, _: (api.dashboard.organizations, ()),
    ("GET", "/api/conversations"): lambda api, q, _: (api.conversations.list, (q.get("model", "all"), *_page(q))),
    ("GET", "/api/conversations/project"): lambda api, q, _: (api.conversations.by_project, (q.get("project"),)),
    ("GET", "/api/conversations/"): lambda api, q, last: (api.conversations.get, (last, q.get("project"))),
}


class DashboardApi:
    def __init__(self, settings: Settings, header_rules: HeaderRules, has_store: Callable[[], bool]) -> None:
        self.settings = settings
        self.dashboard = Dashboard(settings.db_path)
        self.conversations = Conversations(settings.projects_dir)
        self.header_rules = header_rules
        self._has_store = has_store  # the request log opened (settings are kept in it)
        self._watch_task: asyncio.Task[None] | None = None

    def routes(self) -> tuple[dict[tuple[str, str], Handler], list[tuple[str, str, Handler]]]:
        """(exact routes, prefix routes ending in "/" whose last part is an id)."""
        exact: dict[tuple[str, str], Handler] = {
            ("GET", "/api/settings"): self.get_settings,
            ("PUT", "/api/settings"): self.put_settings,
            ("GET", "/openapi.json"): self.openapi_json,
            ("GET", "/openapi.yaml"): self.openapi_yaml,
            ("GET", "/dashboard"): self.page,
        }
        prefixed: list[tuple[str, str, Handler]] = [("GET", "/dashboard/", self.asset)]
        for (method, path), query in _QUERIES.items():
            handler = self._reader(query)
            if path.endswith("/"):
                prefixed.append((method, path, handler))
            else:
                exact[(method, path)] = handler
        return exact, prefixed

    def _reader(self, query: Query) -> Handler:
        async def handle(req: Request) -> Response:
            q = {k: v[-1] for k, v in parse_qs(req.query, keep_blank_values=True).items()}
            last = unquote(req.path.rstrip("/").rsplit("/", 1)[-1])
            call, args = query(self, q, last)
            return Response(200, orjson.dumps(await asyncio.to_thread(call, *args)))

        return handle

    # --- header-rule settings (kept in the request store, shared by every worker) -------------

    async def start(self) -> None:
        """Load the stored header rules and follow other workers' changes."""
        try:
            await self.reload_header_rules()
        except Exception as exc:  # the store is busy: the watcher tries again
            log.debug("settings load failed: %s", exc)
        self._watch_task = asyncio.get_running_loop().create_task(self._watch())

    def close(self) -> None:
        if self._watch_task is not None:
            self._watch_task.cancel()

    async def reload_header_rules(self) -> None:
        assert self.settings.db_path is not None
        stored = await asyncio.to_thread(get_setting, self.settings.db_path, "header_rules")
        if stored is not None and stored[1] > self.header_rules.updated:
            try:
                self.header_rules.load(orjson.loads(stored[0]))
            except (ProxyError, orjson.JSONDecodeError) as exc:
                log.error("stored header rules are invalid, keeping the current ones: %s", exc)
            self.header_rules.updated = stored[1]

    async def _watch(self) -> None:
        """Another worker may save settings: pick them up within a couple of seconds."""
        while True:
            await asyncio.sleep(SETTINGS_POLL_SECONDS)
            try:
                await self.reload_header_rules()
            except Exception as exc:  # the store is busy or gone: try again later
                log.debug("settings reload failed: %s", exc)

    async def get_settings(self, req: Request) -> Response:
        if self._has_store():
            await self.reload_header_rules()
        return Response(200, orjson.dumps(self.header_rules.to_json()))

    async def put_settings(self, req: Request) -> Response:
        require_json(req)
        body = await req.body(1 << 20)
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise invalid_request(f"settings: not valid JSON: {exc}") from None
        candidate = HeaderRules()
        candidate.load(data)  # validates; 400 naming the field
        if self._has_store():
            updated = await asyncio.to_thread(
                put_setting, self.settings.db_path, "header_rules", orjson.dumps(candidate.to_json()).decode()
            )
        else:
            updated = time.time()
        self.header_rules.request, self.header_rules.response = candidate.request, candidate.response
        self.header_rules.updated = updated
        return Response(200, orjson.dumps(self.header_rules.to_json()))

    # --- documents ------------------------------------------------------------------------------

    async def openapi_json(self, req: Request) -> Response:
        return Response(200, orjson.dumps(openapi_spec()), [("access-control-allow-origin", "*")])

    async def openapi_yaml(self, req: Request) -> Response:
        return Response(
            200, to_yaml(openapi_spec()).encode(), [("access-control-allow-origin", "*")], "application/x-yaml"
        )

    async def page(self, req: Request) -> Response:
        return static_file("dashboard.html")

    async def asset(self, req: Request) -> Response:
        return static_file(req.path.rsplit("/", 1)[-1])
