"""Where credentials may go: the one URL policy every other module uses.

- A host is compared in canonical form: lower case, no trailing dot, IPv6 without brackets.
- Loopback is an IP literal in 127.0.0.0/8, the IPv6 literal ``::1``, or exactly ``localhost``.
  Nothing else: ``127.0.0.1.example.net`` is a DNS name like any other.
- Secrets travel over https, or plain http to loopback (tests, local proxies).
- An origin is (scheme, canonical host, port), the port made explicit; allowlists hold origins.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import NamedTuple
from urllib.parse import urlsplit

from ._errors import ConfigurationError

__all__ = [
    "Origin",
    "OriginPolicy",
    "canonical_host",
    "is_ipv6_address",
    "is_loopback",
    "origin_of",
    "require_issuer",
    "require_secure_url",
]

DEFAULT_PORTS = {"http": 80, "https": 443}

_REMEMBERED = 1024
"""Origins whose decision `OriginPolicy` keeps; a program talks to a handful."""

_LOOPBACK_V4 = ipaddress.IPv4Network("127.0.0.0/8")
_LOOPBACK_V6 = ipaddress.IPv6Address("::1")


class Origin(NamedTuple):
    """An origin in canonical form, with an explicit port."""

    scheme: str
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = DEFAULT_PORTS.get(self.scheme)
        return f"{self.scheme}://{host}" + ("" if self.port == default else f":{self.port}")


def canonical_host(host: str) -> str:
    """`host` lower-cased, without IPv6 brackets or a trailing dot."""
    host = host.lower()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host[:-1] if host.endswith(".") else host


def is_ipv6_address(host: str) -> bool:
    """Whether `host` (brackets optional) is an IPv6 address."""
    try:
        ipaddress.IPv6Address(canonical_host(host))
    except ValueError:
        return False
    return True


def is_loopback(host: str) -> bool:
    """Whether `host` names this machine: 127.0.0.0/8, ``::1`` or ``localhost`` (nothing else)."""
    host = canonical_host(host)
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv4Address):
        return address in _LOOPBACK_V4
    return address == _LOOPBACK_V6 and address.scope_id is None


def origin_of(url: str) -> Origin:
    """The origin of an absolute http(s) URL.

    Raises:
        ConfigurationError: `url` is not an absolute http or https URL.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ConfigurationError(f"{url!r} is not a valid URL") from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not parts.hostname:
        raise ConfigurationError(f"{url!r} is not an origin like https://api.planet.com")
    return Origin(scheme, canonical_host(parts.hostname), port or DEFAULT_PORTS[scheme])


def require_secure_url(
    url: str, *, what: str = "authorization server URL", loopback_http: bool = True
) -> str:
    """`url` if secrets may be sent to it: https, or (when allowed) plain http on loopback.

    Args:
        url: The URL.
        what: What it is, for the message.
        loopback_http: Whether plain http to a loopback host is acceptable.

    Raises:
        ConfigurationError: Anything else, or a URL with credentials in it.
    """
    where = "allowed only on loopback, for tests" if loopback_http else "not allowed here"
    refusal = f"refusing {what} {url!r}: it must be https (plain http is {where})"
    try:
        origin = origin_of(url)
    except ConfigurationError:
        raise ConfigurationError(refusal) from None
    if "@" in urlsplit(url).netloc:
        raise ConfigurationError(f"refusing {what} with a user name or password in it")
    if origin.scheme == "https" or (loopback_http and is_loopback(origin.host)):
        return url
    raise ConfigurationError(refusal)


def require_issuer(url: str, *, loopback_http: bool = True) -> str:
    """`url` if it can be an issuer (RFC 8414 section 2): secure, and no query or fragment.

    Raises:
        ConfigurationError: It cannot.
    """
    require_secure_url(url, what="issuer", loopback_http=loopback_http)
    parts = urlsplit(url)
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        raise ConfigurationError(f"refusing issuer {url!r}: an issuer has no query or fragment")
    return url


class OriginPolicy:
    """Which request URLs get credentials: an allowlist of origins, and optionally any loopback
    origin over plain http.

    Only https origins, and http origins on loopback, can be listed. An ``http://host`` origin on
    port 80 counts only if ``https://host`` is listed too: HTTP clients (httpx, requests) keep the
    Authorization header on an http-to-https redirect to the same host, so listing the first
    would send credentials to the second.

    Args:
        origins: The allowlisted origins, e.g. ``["https://api.planet.com"]``.
        loopback_http: Also allow ``http://`` to any loopback host and port.

    Raises:
        ConfigurationError: An origin is not an origin, or is plain http to a non-loopback host.
    """

    def __init__(self, origins: Iterable[str | Origin], *, loopback_http: bool = False) -> None:
        allowed = {o if isinstance(o, Origin) else origin_of(o) for o in origins}
        for origin in allowed:
            if origin.scheme != "https" and not is_loopback(origin.host):
                raise ConfigurationError(
                    f"refusing to send credentials to {origin}: only https origins "
                    "(or http on loopback) can be allowlisted"
                )
            twin = Origin("https", origin.host, 443)
            if origin.scheme == "http" and origin.port == 80 and twin not in allowed:
                raise ConfigurationError(
                    f"refusing to allowlist {origin} alone: HTTP clients keep the Authorization "
                    f"header on a redirect from it to {twin}; list {twin} too, or use another port"
                )
        self.origins = frozenset(allowed)
        self.loopback_http = loopback_http
        self._decided: dict[tuple[str, str, int | None], bool] = {}
        self._decided_text: dict[str, bool] = {}

    def __repr__(self) -> str:
        listed = sorted(str(o) for o in self.origins)
        return f"OriginPolicy({listed}, loopback_http={self.loopback_http})"

    def without(self, refused: Iterable[Origin]) -> OriginPolicy:
        """The same policy less `refused` origins."""
        return OriginPolicy(self.origins - set(refused), loopback_http=self.loopback_http)

    def allows(self, scheme: str, host: str, port: int | None) -> bool:
        """Whether a request to this URL's origin gets credentials (`port` None: the default).

        Called for every request: decisions are remembered (for a bounded number of origins).
        """
        key = (scheme, host, port)
        decided = self._decided.get(key)
        if decided is None:
            decided = self._decide(
                Origin(scheme, canonical_host(host), port or DEFAULT_PORTS.get(scheme, 0))
            )
            if len(self._decided) < _REMEMBERED:
                self._decided[key] = decided
        return decided

    def allows_url(self, url: str) -> bool:
        """`allows` for a URL given as text (as `requests` gives it); a URL that cannot be parsed
        gets no credentials. Decisions are remembered per scheme and authority text."""
        end = url.find("/", url.find("//") + 2)
        prefix = url if end < 0 else url[:end]
        decided = self._decided_text.get(prefix)
        if decided is None:
            parts = urlsplit(prefix)
            try:
                port = parts.port
            except ValueError:
                return False
            decided = self.allows(parts.scheme, parts.hostname or "", port)
            if len(self._decided_text) < _REMEMBERED:
                self._decided_text[prefix] = decided
        return decided

    def _decide(self, origin: Origin) -> bool:
        if origin.scheme == "http" and origin.port == 80:
            # The header would follow an http-to-https redirect: both must be allowed.
            return self._allows(origin) and self._allows(Origin("https", origin.host, 443))
        return self._allows(origin)

    def _allows(self, origin: Origin) -> bool:
        if origin in self.origins:
            return True
        return self.loopback_http and origin.scheme == "http" and is_loopback(origin.host)
