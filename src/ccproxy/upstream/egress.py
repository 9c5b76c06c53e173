"""How connections leave this host: forward proxies and TLS trust.

Corporate networks reach the internet through an HTTP proxy and inspect TLS with a private CA.
``Egress`` holds what ``config.py`` read for that (``HTTPS_PROXY``, ``HTTP_PROXY``,
``ALL_PROXY``, ``NO_PROXY`` in either case, and ``CCPROXY_CA_BUNDLE``) and answers the two
questions an HTTP client asks per upstream origin: which proxy, if any, and which TLS context.

The rules follow curl's, which most tools share:
- ``https://`` upstreams use ``HTTPS_PROXY`` (else ``ALL_PROXY``) through a ``CONNECT`` tunnel;
  ``http://`` upstreams use ``HTTP_PROXY`` (else ``ALL_PROXY``) with absolute-form requests.
- ``NO_PROXY`` is a comma list: ``*`` (no proxy at all), host names (``example.com`` and
  ``.example.com`` both match the name and every subdomain), IP addresses and CIDR blocks, each
  optionally with ``:port``. Loopback is not bypassed unless listed, as with curl.
- Only ``http://`` proxies are supported (the common kind); credentials in the proxy URL go as
  ``Proxy-Authorization: Basic``.
- ``CCPROXY_CA_BUNDLE`` adds a PEM file of CA certificates to the system's trust (it does not
  replace it); ``SSL_CERT_FILE``/``SSL_CERT_DIR`` keep working through OpenSSL's defaults.
"""

from __future__ import annotations

import base64
import ipaddress
import ssl
from dataclasses import dataclass
from functools import cached_property
from urllib.parse import unquote, urlsplit


class EgressError(ValueError):
    """A proxy or CA setting that cannot be used; the message names the setting."""


@dataclass(frozen=True, slots=True)
class Proxy:
    """A forward proxy: where it listens and the ``Proxy-Authorization`` value, if any."""

    host: str
    port: int
    authorization: str | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def parse_proxy(url: str, setting: str) -> Proxy:
    text = url.strip()
    if "://" not in text:
        text = "http://" + text  # curl's default scheme for a bare host:port
    parts = urlsplit(text)
    if parts.scheme != "http":
        raise EgressError(f"{setting}: only http:// proxies are supported, got {parts.scheme}://")
    if not parts.hostname:
        raise EgressError(f"{setting}: no proxy host in {without_userinfo(url)!r}")
    try:
        port = parts.port or 80
    except ValueError:
        raise EgressError(f"{setting}: invalid port in {without_userinfo(url)!r}") from None
    authorization = None
    if parts.username is not None:
        pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        authorization = "Basic " + base64.b64encode(pair.encode()).decode()
    return Proxy(parts.hostname, port, authorization)


@dataclass(frozen=True, slots=True)
class _Exemption:
    host: str | None = None  # a name (matches itself and its subdomains) …
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None  # … or addresses
    port: int | None = None


def parse_no_proxy(value: str) -> tuple[bool, tuple[_Exemption, ...]]:
    """(everything exempt, the exemptions)."""
    out = []
    for raw in value.split(","):
        entry = raw.strip().lower()
        if not entry:
            continue
        if entry == "*":
            return True, ()
        port = None
        host = entry
        if entry.startswith("["):  # [v6]:port
            host, _, rest = entry[1:].partition("]")
            if rest.startswith(":") and rest[1:].isdigit():
                port = int(rest[1:])
        elif entry.count(":") == 1:
            name, _, maybe_port = entry.partition(":")
            if maybe_port.isdigit():
                host, port = name, int(maybe_port)
        try:
            out.append(_Exemption(network=ipaddress.ip_network(host, strict=False), port=port))
        except ValueError:
            out.append(_Exemption(host=host.lstrip(".").lstrip("*").lstrip("."), port=port))
    return False, tuple(out)


@dataclass(frozen=True)
class Egress:
    https_proxy: Proxy | None = None
    http_proxy: Proxy | None = None
    no_proxy: str = ""
    ca_bundle: str | None = None

    @cached_property
    def _exempt(self) -> tuple[bool, tuple[_Exemption, ...]]:
        return parse_no_proxy(self.no_proxy)

    def proxy_for(self, scheme: str, host: str, port: int) -> Proxy | None:
        proxy = self.https_proxy if scheme == "https" else self.http_proxy
        if proxy is None:
            return None
        everything, exemptions = self._exempt
        if everything:
            return None
        name = host.lower().strip("[]").rstrip(".")
        try:
            address = ipaddress.ip_address(name)
        except ValueError:
            address = None
        for rule in exemptions:
            if rule.port is not None and rule.port != port:
                continue
            if rule.network is not None:
                if address is not None and address.version == rule.network.version and address in rule.network:
                    return None
            elif rule.host and (name == rule.host or name.endswith("." + rule.host)):
                return None
        return proxy

    def ssl_context(self) -> ssl.SSLContext:
        """The system's trust (honouring SSL_CERT_FILE/SSL_CERT_DIR), plus CCPROXY_CA_BUNDLE."""
        context = ssl.create_default_context()
        if self.ca_bundle:
            try:
                context.load_verify_locations(cafile=self.ca_bundle)
            except (OSError, ssl.SSLError) as exc:
                raise EgressError(f"CCPROXY_CA_BUNDLE: cannot load {self.ca_bundle}: {exc}") from None
        return context


NO_EGRESS = Egress()


def without_userinfo(url: str) -> str:
    """``scheme://user:pw@host/…`` → ``scheme://host/…``: fit for messages and logs."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    authority, slash, path = rest.partition("/")
    host = authority.rpartition("@")[2]
    return f"{scheme}{sep}{host}{slash}{path}"


def split_userinfo(url: str) -> tuple[str, str | None]:
    """A base URL without its ``user:password@`` part, and that part as a Basic
    ``Authorization`` value (None when the URL has none)."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url, None
    pair = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}"
    return without_userinfo(url), "Basic " + base64.b64encode(pair.encode()).decode()
