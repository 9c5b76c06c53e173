"""CCProxy's OpenAPI 3.0 description (served at /openapi.json and /openapi.yaml), a YAML writer
for it, and the dashboard's static files.

The spec is written for this project and kept in sync by a test that checks every route of
``ProxyApp`` is documented here (tests/unit/test_openapi.py).
"""

from __future__ import annotations

import functools
from importlib import resources
from typing import Any

import orjson

from . import __version__
from .errors import ProxyError
from .serving import Response


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_ERRORS = {
    "400": _json(_ref("Error"), "Invalid request (invalid_request_error)"),
    "401": _json(_ref("Error"), "Missing or wrong password / key (authentication_error)"),
    "403": _json(_ref("Error"), "Foreign Host, or a page of another origin (permission_error; docs/security.md)"),
}


def _query(name: str, kind: str = "string", description: str = "", required: bool = False, **extra: Any) -> dict:
    param: dict[str, Any] = {"name": name, "in": "query", "required": required, "schema": {"type": kind, **extra}}
    if description:
        param["description"] = description
    return param


def _path_param(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}, "description": description}


def _op(
    op_id: str, tag: str, summary: str, ok: dict[str, Any], params: list | None = None, **extra: Any
) -> dict[str, Any]:
    operation: dict[str, Any] = {"operationId": op_id, "tags": [tag], "summary": summary, "responses": {"200": ok}}
    if params:
        operation["parameters"] = params
    if tag == "dashboard":
        operation["security"] = [{"dashboardBasicAuth": []}, {}]
        operation["responses"].update(_ERRORS)
    for key, value in extra.items():
        if key == "responses":
            operation["responses"].update(value)
        else:
            operation[key] = value
    return operation


_RANGE = [
    _query("start", description="Start (ISO 8601; naive means UTC)", required=True, format="date-time"),
    _query("end", description="End (ISO 8601)", required=True, format="date-time"),
    _query("org", description="Organization id (from anthropic-organization-id)"),
]
_OBJECT = {"type": "object"}
_INT = {"type": "integer"}
_STR = {"type": "string"}


@functools.cache
def openapi_spec() -> dict[str, Any]:
    message_errors = {
        "400": _json(_ref("Error"), "Invalid request"),
        "401": _json(_ref("Error"), "Upstream rejected the key, or a key this proxy does not accept"),
        "403": _json(_ref("Error"), "Foreign Host, or a page of another origin (permission_error)"),
        "404": _json(_ref("Error"), "Model not served by any route"),
        "413": _json(_ref("Error"), "Request too large"),
        "415": _json(_ref("Error"), "Not declared application/json (invalid_request_error)"),
        "429": _json(_ref("Error"), "Rate limited (upstream, or this proxy's CCPROXY_RPM/TPM)"),
        "500": _json(_ref("Error"), "Upstream error (api_error)"),
        "502": _json(_ref("Error"), "Upstream unreachable or invalid answer"),
        "503": _json(_ref("Error"), "Draining, or the upstream's circuit is open (overloaded_error)"),
        "504": _json(_ref("Error"), "Upstream timeout (timeout_error)"),
        "529": _json(_ref("Error"), "Upstream overloaded (overloaded_error)"),
    }
    create = _op(
        "createMessage",
        "proxy",
        "Anthropic Messages API, translated to the routed upstream (streaming or not)",
        {
            "description": "A message, or an SSE stream of Anthropic events",
            "content": {
                "application/json": {"schema": _ref("Message")},
                "text/event-stream": {"schema": _STR},
            },
        },
        [_query("beta", "boolean", "Accepted and ignored (sent by Claude Code)")],
        requestBody={"required": True, "content": {"application/json": {"schema": _ref("MessagesRequest")}}},
        responses=message_errors,
    )
    count = _op(
        "countTokens",
        "proxy",
        "Count input tokens (locally, or by Anthropic for models routed to it)",
        _json({"type": "object", "properties": {"input_tokens": _INT}}),
        requestBody={"required": True, "content": {"application/json": {"schema": _ref("MessagesRequest")}}},
        responses={"400": message_errors["400"], "403": message_errors["403"], "415": message_errors["415"]},
    )
    paths: dict[str, Any] = {
        "/v1/messages": {"post": create},
        "/anthropic/v1/messages": {"post": {**create, "operationId": "createMessageAlias"}},
        "/v1/messages/count_tokens": {"post": count},
        "/anthropic/v1/messages/count_tokens": {"post": {**count, "operationId": "countTokensAlias"}},
        "/v1/models": {
            "get": _op("listModels", "proxy", "Claude ids served and their upstream models", _json(_OBJECT))
        },
        "/v1/models/{model_id}": {
            "get": _op(
                "getModel",
                "proxy",
                "One served model",
                _json(_OBJECT),
                [_path_param("model_id", "A model id")],
                responses={"404": _json(_ref("Error"), "Not served")},
            )
        },
        "/v1/chat/completions": {
            "post": _op(
                "chatCompletions",
                "proxy",
                "Not supported: this proxy speaks the Anthropic API (always 400)",
                _json(_ref("Error"), "never"),
                responses={"400": _json(_ref("Error"), "Use /v1/messages")},
            )
        },
        "/": {
            "get": _op("root", "health", "Service name and version", _json(_OBJECT)),
            "head": _op("rootHead", "health", "Up", {"description": "Up"}),
        },
        "/health": {
            "get": _op(
                "health",
                "health",
                "Load-balancer signal: 200 healthy, 503 draining after SIGTERM",
                _json(_ref("Health")),
                responses={"503": _json(_ref("Draining"), "Draining: stop sending requests here")},
            ),
            "head": _op("healthHead", "health", "Up", {"description": "Up"}),
        },
        "/livez": {"get": _op("livez", "health", "Always 200: in-flight count, draining flag", _json(_ref("Livez")))},
        "/v1/metrics": {"get": _op("metrics", "health", "Metrics as JSON (per worker process)", _json(_OBJECT))},
        "/metrics": {
            "get": _op(
                "metricsPrometheus",
                "health",
                "Metrics in the Prometheus text format",
                {"description": "OK", "content": {"text/plain": {"schema": _STR}}},
            )
        },
        "/v1/cache/stats": {"get": _op("cacheStats", "health", "Response cache figures", _json(_OBJECT))},
        "/v1/cache/clear": {"post": _op("cacheClear", "health", "Empty the response cache", _json(_OBJECT))},
        "/openapi.json": {"get": _op("openapiJson", "health", "This document as JSON", _json(_OBJECT))},
        "/openapi.yaml": {
            "get": _op(
                "openapiYaml",
                "health",
                "This document as YAML",
                {"description": "OK", "content": {"application/x-yaml": {"schema": _STR}}},
            )
        },
        "/dashboard": {
            "get": _op(
                "dashboard",
                "dashboard",
                "The web dashboard (one page, assets under /dashboard/)",
                {"description": "OK", "content": {"text/html": {"schema": _STR}}},
            )
        },
        "/dashboard/{asset}": {
            "get": _op(
                "dashboardAsset",
                "dashboard",
                "A static asset of the dashboard",
                {"description": "OK"},
                [_path_param("asset", "File name")],
                responses={"404": _json(_ref("Error"), "No such asset")},
            )
        },
        "/api/requests": {
            "get": _op(
                "getRequests",
                "dashboard",
                "Logged requests, newest first",
                _json(
                    {
                        "type": "object",
                        "properties": {
                            "requests": {"type": "array", "items": _ref("RequestLog")},
                            "total": _INT,
                            "page": _INT,
                            "limit": _INT,
                        },
                    }
                ),
                [
                    _query("page", "integer", default=1, minimum=1),
                    _query("limit", "integer", default=10, minimum=1, maximum=1000),
                    _query("model", description="Substring of the requested or routed model, or 'all'", default="all"),
                ],
            ),
            "delete": _op(
                "deleteRequests",
                "dashboard",
                "Delete every logged request",
                _json({"type": "object", "properties": {"message": _STR, "deleted": _INT}}),
            ),
        },
        "/api/requests/summary": {
            "get": _op(
                "getRequestsSummary",
                "dashboard",
                "Lightweight summaries for list rendering",
                _json(
                    {
                        "type": "object",
                        "properties": {
                            "requests": {"type": "array", "items": _ref("RequestSummary")},
                            "total": _INT,
                            "offset": _INT,
                            "limit": _INT,
                        },
                    }
                ),
                [
                    _query("model", default="all"),
                    _query("start", format="date-time"),
                    _query("end", format="date-time"),
                    _query("offset", "integer", default=0, minimum=0),
                    _query("limit", "integer", "0: all (up to 100 000)", default=0, minimum=0),
                ],
            )
        },
        "/api/requests/latest-date": {
            "get": _op(
                "getLatestRequestDate",
                "dashboard",
                "Time of the newest logged request",
                _json({"type": "object", "properties": {"latestDate": {**_STR, "nullable": True}}}),
            )
        },
        "/api/requests/{id}": {
            "get": _op(
                "getRequestById",
                "dashboard",
                "One logged request (full id, a unique prefix, or its last characters)",
                _json({"type": "object", "properties": {"request": _ref("RequestLog"), "fullId": _STR}}),
                [_path_param("id", "Request id")],
                responses={"404": _json(_ref("Error"), "Not found")},
            )
        },
        "/api/stats": {
            "get": _op(
                "getStats",
                "dashboard",
                "Usage totals and per model",
                _json(_ref("UsageStats")),
                [_query("start_date"), _query("end_date"), _query("model"), _query("org")],
            )
        },
        "/api/stats/dashboard": {
            "get": _op(
                "getDashboardStats",
                "dashboard",
                "Tokens and requests per day (UTC)",
                _json(_ref("DailyStats")),
                [_query("start", format="date-time"), _query("end", format="date-time"), _query("org")],
            )
        },
        "/api/stats/hourly": {
            "get": _op(
                "getHourlyStats",
                "dashboard",
                "Tokens and requests per time bucket",
                _json(_ref("HourlyStats")),
                [*_RANGE, _query("bucket", "integer", "Bucket size in minutes", default=60, minimum=1, maximum=1440)],
            )
        },
        "/api/stats/models": {
            "get": _op("getModelStats", "dashboard", "Tokens and requests per model", _json(_ref("ModelStats")), _RANGE)
        },
        "/api/stats/organizations": {
            "get": _op(
                "getOrganizations",
                "dashboard",
                "Organization ids seen in Anthropic answers",
                _json({"type": "object", "properties": {"organizations": {"type": "array", "items": _STR}}}),
            )
        },
        "/api/conversations": {
            "get": _op(
                "getConversations",
                "dashboard",
                "Claude Code conversations from CLAUDE_PROJECTS_DIR, newest first",
                _json(_OBJECT),
                [
                    _query("model", default="all"),
                    _query("page", "integer", default=1, minimum=1),
                    _query("limit", "integer", default=10, minimum=1),
                ],
            )
        },
        "/api/conversations/project": {
            "get": _op(
                "getConversationsByProject",
                "dashboard",
                "Conversations of one project",
                _json(_OBJECT),
                [_query("project", description="Project path or directory name", required=True)],
                responses={"404": _json(_ref("Error"), "No such project")},
            )
        },
        "/api/conversations/{id}": {
            "get": _op(
                "getConversationById",
                "dashboard",
                "One conversation with its messages",
                _json(_OBJECT),
                [_path_param("id", "Session id"), _query("project", required=True)],
                responses={"404": _json(_ref("Error"), "Not found")},
            )
        },
        "/api/settings": {
            "get": _op("getSettings", "dashboard", "Header rules", _json(_ref("ProxySettings"))),
            "put": _op(
                "saveSettings",
                "dashboard",
                "Replace the header rules (validated, stored, applied at once)",
                _json(_ref("ProxySettings")),
                requestBody={"required": True, "content": {"application/json": {"schema": _ref("ProxySettings")}}},
            ),
        },
    }
    usage = {
        "type": "object",
        "properties": {
            "input_tokens": _INT,
            "output_tokens": _INT,
            "cache_creation_input_tokens": _INT,
            "cache_read_input_tokens": _INT,
        },
    }
    ratelimit = {
        "type": "object",
        "nullable": True,
        "properties": {
            name: kind
            for name, kind in (
                ("organizationId", _STR),
                ("requestsLimit", _INT),
                ("requestsRemaining", _INT),
                ("requestsReset", _STR),
                ("tokensLimit", _INT),
                ("tokensRemaining", _INT),
                ("tokensReset", _STR),
                ("unifiedStatus", _STR),
                ("unifiedUtilization5h", {"type": "number"}),
                ("unifiedReset5h", _STR),
                ("unifiedUtilization7d", {"type": "number"}),
                ("unifiedReset7d", _STR),
            )
        },
    }
    summary_props = {
        "requestId": _STR,
        "timestamp": {**_STR, "format": "date-time"},
        "method": _STR,
        "endpoint": _STR,
        "model": _STR,
        "originalModel": _STR,
        "routedModel": _STR,
        "upstream": _STR,
        "statusCode": _INT,
        "responseTime": {**_INT, "description": "ms"},
        "isStreaming": {"type": "boolean"},
        "errorType": {**_STR, "nullable": True},
        "usage": usage,
        "conversationHash": _STR,
        "messageCount": _INT,
        "stopReason": {**_STR, "nullable": True},
    }
    rule = {
        "type": "object",
        "required": ["header", "action"],
        "properties": {
            "header": {**_STR, "description": "Header name (case-insensitive)"},
            "action": {"type": "string", "enum": ["block", "set", "replace"]},
            "value": _STR,
            "find": {**_STR, "description": "For replace: the text to find"},
            "enabled": {"type": "boolean", "default": True},
        },
    }
    schemas = {
        "Error": {
            "type": "object",
            "description": "Every error, as Anthropic sends them",
            "properties": {
                "type": {"type": "string", "enum": ["error"]},
                "error": {"type": "object", "properties": {"type": _STR, "message": _STR}},
                "request_id": _STR,
            },
        },
        "MessagesRequest": {
            "type": "object",
            "required": ["model", "messages", "max_tokens"],
            "properties": {
                "model": _STR,
                "max_tokens": _INT,
                "messages": {"type": "array", "items": _OBJECT},
                "system": {"oneOf": [_STR, {"type": "array", "items": _OBJECT}]},
                "stream": {"type": "boolean"},
                "tools": {"type": "array", "items": _OBJECT},
                "tool_choice": _OBJECT,
                "thinking": _OBJECT,
                "temperature": {"type": "number"},
                "metadata": _OBJECT,
            },
        },
        "Message": {
            "type": "object",
            "properties": {
                "id": _STR,
                "type": _STR,
                "role": _STR,
                "model": _STR,
                "content": {"type": "array", "items": _OBJECT},
                "stop_reason": _STR,
                "stop_sequence": {**_STR, "nullable": True},
                "usage": usage,
            },
        },
        "Health": {"type": "object", "properties": {"status": _STR, "timestamp": _STR}},
        "Draining": {"type": "object", "properties": {"status": _STR, "timestamp": _STR, "in_flight": _INT}},
        "Livez": {
            "type": "object",
            "properties": {"status": _STR, "timestamp": _STR, "in_flight": _INT, "draining": {"type": "boolean"}},
        },
        "RequestSummary": {"type": "object", "properties": summary_props},
        "RequestLog": {
            "type": "object",
            "properties": {
                **{k: v for k, v in summary_props.items() if k not in ("statusCode", "responseTime", "isStreaming")},
                "userAgent": _STR,
                "contentType": _STR,
                "organizationId": {**_STR, "nullable": True},
                "sessionHash": {**_STR, "nullable": True},
                "body": {**_STR, "nullable": True, "description": "With CCPROXY_LOG_BODIES, in the detail view"},
                "response": {
                    "type": "object",
                    "properties": {
                        "statusCode": _INT,
                        "responseTime": _INT,
                        "isStreaming": {"type": "boolean"},
                        "completedAt": _STR,
                        "streamError": {**_STR, "nullable": True},
                        "rateLimit": ratelimit,
                        "body": {**_STR, "nullable": True},
                    },
                },
            },
        },
        "UsageStats": {
            "type": "object",
            "properties": {
                "total_requests": _INT,
                "total_input_tokens": _INT,
                "total_output_tokens": _INT,
                "total_cache_tokens": _INT,
                "requests_by_model": {"type": "object", "additionalProperties": _OBJECT},
                "start_date": {**_STR, "nullable": True},
                "end_date": {**_STR, "nullable": True},
            },
        },
        "DailyStats": {"type": "object", "properties": {"dailyStats": {"type": "array", "items": _OBJECT}}},
        "HourlyStats": {
            "type": "object",
            "properties": {
                "hourlyStats": {"type": "array", "items": _OBJECT},
                "todayTokens": _INT,
                "todayRequests": _INT,
                "avgResponseTime": _INT,
            },
        },
        "ModelStats": {"type": "object", "properties": {"modelStats": {"type": "array", "items": _OBJECT}}},
        "ProxySettings": {
            "type": "object",
            "properties": {
                "requestHeaderRules": {"type": "array", "items": rule},
                "responseHeaderRules": {"type": "array", "items": rule},
            },
        },
    }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "CCProxy",
            "version": __version__,
            "description": "Anthropic Messages API in front of OpenAI Chat Completions, OpenAI Responses and "
            "Anthropic upstreams, with a request log and a dashboard.",
        },
        "servers": [{"url": "/"}],
        "tags": [
            {"name": "proxy", "description": "Anthropic-compatible endpoints"},
            {"name": "health", "description": "Health, metrics, cache and this document (no auth)"},
            {"name": "dashboard", "description": "Dashboard APIs (HTTP Basic auth when DASHBOARD_PASSWORD is set)"},
        ],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
                "dashboardBasicAuth": {"type": "http", "scheme": "basic"},
            },
            "schemas": schemas,
        },
    }


# --- YAML --------------------------------------------------------------------------------------


def to_yaml(value: Any, indent: int = 0) -> str:
    """Block-style YAML for JSON-like data. Scalars are written as JSON, which YAML reads."""
    pad = "  " * indent
    if isinstance(value, dict):
        if not value:
            return "{}\n"
        out = []
        for key, item in value.items():
            name = orjson.dumps(str(key)).decode()
            if isinstance(item, (dict, list)) and item:
                out.append(f"{pad}{name}:\n{to_yaml(item, indent + 1)}")
            else:
                out.append(f"{pad}{name}: {_scalar(item)}\n")
        return "".join(out)
    if isinstance(value, list):
        if not value:
            return "[]\n"
        out = []
        for item in value:
            if isinstance(item, (dict, list)) and item:
                inner = to_yaml(item, indent + 1)
                out.append(f"{pad}- {inner.lstrip()}")
            else:
                out.append(f"{pad}- {_scalar(item)}\n")
        return "".join(out)
    return f"{pad}{_scalar(value)}\n"


def _scalar(value: Any) -> str:
    if isinstance(value, dict):
        return "{}"
    if isinstance(value, list):
        return "[]"
    return orjson.dumps(value).decode()


# --- static files --------------------------------------------------------------------------------

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}


@functools.cache
def _asset(name: str) -> bytes | None:
    try:
        return (resources.files("ccproxy") / "static" / name).read_bytes()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None


def static_file(name: str) -> Response:
    suffix = name[name.rfind(".") :] if "." in name else ""
    if "/" in name or name.startswith(".") or suffix not in _TYPES:
        raise ProxyError(404, f"no dashboard asset {name!r}", "not_found_error")
    data = _asset(name)
    if data is None:
        raise ProxyError(404, f"no dashboard asset {name!r}", "not_found_error")
    return Response(200, data, [("cache-control", "no-cache")], _TYPES[suffix])
