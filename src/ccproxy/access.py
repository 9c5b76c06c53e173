"""Who may call what (docs/security.md).

The proxy holds the user's upstream key and logs their prompts, and any web page their browser
opens can send requests to 127.0.0.1. So before a handler runs, every request that is not a
probe passes three checks:

1. **Host**: only loopback names and addresses, the listen address, and the names in
   ``CCPROXY_ALLOWED_HOSTS``. A page that rebinds its own name to 127.0.0.1 (DNS rebinding)
   sends its name as Host, and is refused.
2. **Origin / Sec-Fetch-Site**: a browser marks what a page sends. Requests from another origin
   (even a no-cors "simple" request, which needs no preflight) are refused; the dashboard's own
   requests are same-origin. Clients that are not browsers send neither header.
3. **Credentials**: client keys (``CCPROXY_CLIENT_API_KEYS``) on the proxy routes, the dashboard
   password on ``/dashboard`` and ``/api/*``, either of them for cache clearing and (with
   ``CCPROXY_PROTECT_METRICS``) for metrics.

JSON routes also demand a JSON content type (``require_json``): a page cannot send one cross-site
without a CORS preflight, which this server never grants.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from urllib.parse import urlsplit

from .config import Settings, is_loopback
from .errors import ProxyError
from .serving import Request

# route classes, from most to least open
OPEN = 0  # probes and the static API description
PROXY = 1  # the Messages API and models: client keys
DASHBOARD = 2  # /dashboard and /api/*: the dashboard password
ADMIN = 3  # cache clearing: a client key or the dashboard password
METRICS = 4  # metrics and cache figures: like ADMIN when CCPROXY_PROTECT_METRICS is on

OPEN_PATHS = frozenset({"/", "/health", "/livez", "/openapi.json", "/openapi.yaml"})
METRICS_PATHS = frozenset({"/metrics", "/v1/metrics", "/v1/cache/stats"})

# Sent with every dashboard and admin answer: no framing (clickjacking), no MIME sniffing, no
# Referer leaving the page, and a page that can load nothing but its own files.
SECURITY_HEADERS: list[tuple[str, str]] = [
    (
        "content-security-policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    ),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("x-frame-options", "DENY"),
    ("cross-origin-resource-policy", "same-origin"),
]

_CACHE_LIMIT = 1024  # distinct Host / Origin values remembered


def classify(path: str) -> int:
    if path in OPEN_PATHS:
        return OPEN
    if path.startswith("/api/") or path == "/dashboard" or path.startswith("/dashboard/"):
        return DASHBOARD
    if path == "/v1/cache/clear":
        return ADMIN
    if path in METRICS_PATHS:
        return METRICS
    return PROXY  # /v1/messages…, /anthropic/…, /v1/models…, and unknown paths


def require_json(req: Request) -> None:
    """415 unless the body is declared JSON: ``text/plain`` and form bodies are what a web page
    can send cross-site without asking (a "simple" request)."""
    declared = req.header("content-type")
    if declared == "application/json":  # what the SDKs and Claude Code send
        return
    content_type = (declared or "").split(";", 1)[0].strip().lower()
    if content_type != "application/json" and not (
        content_type.startswith("application/") and content_type.endswith("+json")
    ):
        raise ProxyError(
            415,
            f"content-type must be application/json, got {content_type or 'none'!r}",
            "invalid_request_error",
        )


def host_name(host: str) -> str:
    """``Host`` header → the name without port, lower-case (``[::1]:8080`` → ``::1``)."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    name, sep, port = host.rpartition(":")
    if sep and port.isdigit() and ":" not in name:
        return name.rstrip(".")
    return host.rstrip(".")


class Access:
    def __init__(self, settings: Settings) -> None:
        self.password = settings.dashboard_password
        self.client_keys = {hashlib.sha256(k.encode()).digest() for k in settings.client_api_keys}
        self.protect_metrics = settings.protect_metrics
        names = set(settings.allowed_hosts)
        self.any_host = "*" in names
        self.suffixes = tuple(name[1:] for name in names if name.startswith("*."))  # ".example.com"
        self.names = frozenset(name.strip("[]") for name in names if not name.startswith("*"))
        self.public = frozenset(self.names)  # configured names: pages served on them are the user's
        bind = settings.host.strip("[]").lower()
        if bind not in ("0.0.0.0", "::", ""):
            self.names |= {bind}
        self._hosts: dict[str, bool] = {}
        self._origins: dict[tuple[str, str | None], bool] = {}

    # --- the checks -----------------------------------------------------------------------------

    def check(self, req: Request, path: str, kind: int) -> None:
        """Raise the ProxyError a request gets before its handler, or return."""
        if kind == OPEN:
            return
        header = req.header
        host = header("host")
        if host is not None and not (self._hosts.get(host) or self.host_allowed(host)):
            raise ProxyError(
                403,
                f"Host {host!r} is not a name of this proxy (a DNS-rebinding page?); add it to "
                "CCPROXY_ALLOWED_HOSTS if clients really use it",
                "permission_error",
            )
        origin = header("origin")
        if origin is not None and not self.origin_allowed(origin, host):
            raise ProxyError(
                403,
                f"requests from web pages of another origin ({origin}) are refused",
                "permission_error",
            )
        site = header("sec-fetch-site")  # (browsers send Origin on POST, not always on GET)
        if site in ("cross-site", "same-site") and not (kind == DASHBOARD and req.method == "GET" and _navigation(req)):
            raise ProxyError(403, f"requests from other sites are refused (Sec-Fetch-Site: {site})", "permission_error")
        if kind == PROXY:
            if self.client_keys and not self._key_ok(req):
                raise ProxyError(
                    401, "invalid x-api-key for this proxy (CCPROXY_CLIENT_API_KEYS)", "authentication_error"
                )
        elif kind == DASHBOARD:
            if self.password and not self._password_ok(req):
                raise self._password_needed()
        elif (
            (kind == ADMIN or (kind == METRICS and self.protect_metrics))
            and (self.client_keys or self.password)
            and not (self._key_ok(req) or self._password_ok(req))
        ):
            raise ProxyError(
                401,
                "this endpoint needs a client key (x-api-key or Bearer) or the dashboard password (Basic)",
                "authentication_error",
                [("www-authenticate", 'Basic realm="ccproxy", charset="UTF-8"')],
            )

    def host_allowed(self, host: str) -> bool:
        known = self._hosts.get(host)
        if known is None:
            name = host_name(host)
            known = (
                self.any_host
                or is_loopback(name)
                or name in self.names
                or (bool(self.suffixes) and name.endswith(self.suffixes))
            )
            if len(self._hosts) < _CACHE_LIMIT:
                self._hosts[host] = known
        return known

    def origin_allowed(self, origin: str, host: str | None) -> bool:
        """Same origin as the request's Host (the dashboard's own requests), or a page on one of
        the configured public names (a reverse proxy may rewrite Host)."""
        key = (origin, host)
        known = self._origins.get(key)
        if known is None:
            known = False
            if origin != "null":
                parts = urlsplit(origin.strip().lower())
                authority = parts.netloc
                if parts.scheme in ("http", "https") and authority:
                    known = (host is not None and authority == host.strip().lower()) or (
                        host_name(authority) in self.public
                        or (bool(self.suffixes) and host_name(authority).endswith(self.suffixes))
                    )
            if len(self._origins) < _CACHE_LIMIT:
                self._origins[key] = known
        return known

    # --- credentials ----------------------------------------------------------------------------

    def _key_ok(self, req: Request) -> bool:
        if not self.client_keys:
            return False
        key = req.header("x-api-key")
        if not key:
            auth = req.header("authorization") or ""
            key = auth[7:].strip() if auth[:7].lower() == "bearer " else None
        return bool(key) and hashlib.sha256(key.encode()).digest() in self.client_keys  # type: ignore[union-attr]

    def _password_ok(self, req: Request) -> bool:
        return bool(self.password) and basic_auth_ok(req.header("authorization"), self.password)  # type: ignore[arg-type]

    @staticmethod
    def _password_needed() -> ProxyError:
        return ProxyError(
            401,
            "the dashboard needs the password (HTTP Basic auth; any user name)",
            "authentication_error",
            [("www-authenticate", 'Basic realm="ccproxy", charset="UTF-8"')],
        )


def _navigation(req: Request) -> bool:
    """A top-level page load (a link or a bookmark to the dashboard): harmless, it carries no data."""
    return req.header("sec-fetch-mode") == "navigate" and req.header("sec-fetch-dest") in ("document", None)


def basic_auth_ok(header: str | None, password: str) -> bool:
    if not header or header[:6].lower() != "basic ":
        return False
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return False
    _, _, given = decoded.partition(":")
    return hmac.compare_digest(given.encode(), password.encode())
