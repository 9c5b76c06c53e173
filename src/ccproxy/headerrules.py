"""Header rules from the dashboard's settings (GET/PUT /api/settings), applied live.

Request rules rewrite the headers CCProxy sends upstream; response rules rewrite the headers it
sends back to the client on /v1/messages. A rule is ``{"header", "action", "value", "find",
"enabled"}``: ``block`` removes the header, ``set`` adds or overwrites it with ``value``,
``replace`` substitutes ``find`` with ``value`` inside an existing value. Header names compare
case-insensitively. Rules are validated on PUT (400 naming the bad field) and persisted in the
store's ``settings`` table.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .errors import invalid_request

ACTIONS = ("block", "set", "replace")
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 field-name (always fullmatch)
# visible ASCII, space, tab and obs-text (latin-1): what HTTP/1.1 can carry in a field value
_VALUE = re.compile(r"[\t\x20-\x7e\x80-\xff]*")
# Headers a rule may not touch: they frame the message or the connection, or say where it goes.
# Setting them would let a rule desynchronise requests and responses (smuggling) or redirect them.
FORBIDDEN = frozenset(
    {
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
        "proxy-authorization",
        "proxy-authenticate",
        "content-encoding",
    }
)


def header_problem(name: str, value: str = "") -> str | None:
    """Why ``name: value`` cannot be sent as a header, or None when it can."""
    if not _TOKEN.fullmatch(name):
        return "must be a header name (letters, digits and !#$%&'*+-.^_`|~ only)"
    if name.lower() in FORBIDDEN:
        return f"{name.lower()} frames or routes the message and cannot be set"
    if not _VALUE.fullmatch(value):
        return "the value must be visible ASCII or latin-1 text, without control characters or line breaks"
    return None


_RULE_KEYS = {"header", "action", "value", "find", "enabled"}
MAX_RULES = 100


@dataclass(frozen=True, slots=True)
class HeaderRule:
    header: str  # lower-case
    action: str
    value: str = ""
    find: str = ""
    enabled: bool = True

    def to_json(self) -> dict[str, Any]:
        return {
            "header": self.header,
            "action": self.action,
            "value": self.value,
            "find": self.find,
            "enabled": self.enabled,
        }


def parse_rules(data: Any, where: str) -> tuple[HeaderRule, ...]:
    if data is None:
        return ()
    if not isinstance(data, list):
        raise invalid_request(f"{where}: must be a list of rules")
    if len(data) > MAX_RULES:
        raise invalid_request(f"{where}: at most {MAX_RULES} rules")
    rules = []
    for i, item in enumerate(data):
        path = f"{where}[{i}]"
        if not isinstance(item, dict):
            raise invalid_request(f"{path}: must be an object")
        extra = set(item) - _RULE_KEYS
        if extra:
            raise invalid_request(f"{path}: unknown field(s) {sorted(extra)}")
        header = item.get("header")
        if not isinstance(header, str) or (problem := header_problem(header)):
            raise invalid_request(f"{path}.header: {problem if isinstance(header, str) else 'must be a string'}")
        action = item.get("action")
        if action not in ACTIONS:
            raise invalid_request(f"{path}.action: must be one of {', '.join(ACTIONS)}")
        value, find, enabled = item.get("value", ""), item.get("find", ""), item.get("enabled", True)
        if value is None:
            value = ""
        if find is None:
            find = ""
        for field_name, text in (("value", value), ("find", find)):
            if not isinstance(text, str) or not _VALUE.fullmatch(text):
                raise invalid_request(
                    f"{path}.{field_name}: must be visible ASCII or latin-1 text, without control characters or line "
                    "breaks"
                )
        if not isinstance(enabled, bool):
            raise invalid_request(f"{path}.enabled: must be true or false")
        if action == "replace" and not find:
            raise invalid_request(f"{path}.find: required for action replace")
        rules.append(HeaderRule(header.lower(), action, value, find, enabled))
    return tuple(rules)


def apply(rules: Iterable[HeaderRule], headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """``headers`` with the enabled rules applied in order (names compared case-insensitively)."""
    out = list(headers)
    for rule in rules:
        if not rule.enabled:
            continue
        if rule.action == "block":
            out = [(k, v) for k, v in out if k.lower() != rule.header]
        elif rule.action == "set":
            out = [(k, v) for k, v in out if k.lower() != rule.header]
            out.append((rule.header, rule.value))
        else:
            out = [(k, v.replace(rule.find, rule.value) if k.lower() == rule.header else v) for k, v in out]
    return out


class HeaderRules:
    """The live rule set of one worker (reloaded from the store when another worker saved)."""

    def __init__(self) -> None:
        self.request: tuple[HeaderRule, ...] = ()
        self.response: tuple[HeaderRule, ...] = ()
        self.updated = 0.0

    def load(self, data: Any) -> None:
        if not isinstance(data, dict):
            raise invalid_request("settings: must be an object")
        extra = set(data) - {"requestHeaderRules", "responseHeaderRules"}
        if extra:
            raise invalid_request(f"settings: unknown field(s) {sorted(extra)}")
        request = parse_rules(data.get("requestHeaderRules"), "requestHeaderRules")
        response = parse_rules(data.get("responseHeaderRules"), "responseHeaderRules")
        self.request, self.response = request, response

    def to_json(self) -> dict[str, Any]:
        return {
            "requestHeaderRules": [r.to_json() for r in self.request],
            "responseHeaderRules": [r.to_json() for r in self.response],
        }

    def upstream_headers(self, headers: dict[str, str]) -> dict[str, str]:
        if not self.request:
            return headers
        return dict(apply(self.request, headers.items()))
