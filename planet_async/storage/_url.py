"""Storage URLs: masking their secrets whatever their shape, and checking them where they are given.

Masking does not trust the URL to parse: a password holding ``/``, ``?`` or ``#``, or a URL that
lost one of its slashes, moves the password out of what a parser calls the user information. So
everything between the scheme (and its slashes) and the last ``@`` is treated as user information,
and any query parameter whose name holds "pass" is masked too.
"""

from __future__ import annotations

import math
import re
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

from .._errors import ConfigurationError
from .._redact import MASK, secret_forms
from .._urls import is_ipv6_address

__all__ = [
    "check_redis_url",
    "describe_url",
    "mask_url",
    "parse_retention",
    "url_secrets",
    "without_password",
]

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:")
_KNOWN_SCHEMES = frozenset(
    {
        "redis",
        "rediss",
        "redis+sentinel",
        "redis+cluster",
        "rediss+cluster",
        "unix",
        "postgresql",
        "postgres",
        "file",
        "http",
        "https",
    }
)
_PLAIN_USER = re.compile(r"[A-Za-z0-9._~\-]+")
_SECRET_QUERY = re.compile(r"([?&;][^=&;#]*pass[^=&;#]*=)([^&;#]*)", re.IGNORECASE)

RETENTION_PARAMETER = "retention"
"""The query parameter of a Redis URL that sets how long stored sessions are kept, in seconds."""


def _split(url: str) -> tuple[str, str, str | None, str]:
    """(scheme and slashes, user name kept, the rest of the user information or None, the rest
    from the last ``@`` on), without parsing the URL."""
    found = _SCHEME.match(url)
    scheme = found.group(0) if found else ""
    rest = url[len(scheme) :]
    stripped = rest.lstrip("/\\")
    lead = scheme + rest[: len(rest) - len(stripped)]
    at = stripped.rfind("@")
    if at < 0:
        return lead, "", None, stripped
    userinfo, tail = stripped[:at], stripped[at:]
    user, colon, password = userinfo.partition(":")
    # A user name is shown only where the URL is well formed up to it (scheme://user:password):
    # in any other shape, what looks like one may be part of the password.
    well_formed = (
        scheme[:-1].lower() in _KNOWN_SCHEMES
        and rest.startswith("//")
        and not rest.startswith("///")
    )
    if well_formed and colon and password and (not user or _PLAIN_USER.fullmatch(user)):
        return lead, user + colon, password, tail
    return lead, "", userinfo, tail  # no plain user name: all of it may be the password


def mask_url(url: str) -> str:
    """`url` with its password (and a user name alone, which may be a password) masked, however
    malformed the URL is."""
    lead, user, secret, tail = _split(url)
    masked = tail if secret is None else f"{user}{MASK}{tail}"
    return lead + _SECRET_QUERY.sub(rf"\g<1>{MASK}", masked)


def url_secrets(url: str) -> list[str]:
    """Every form in which `url`'s secrets could reach a message: raw, percent-decoded, encoded."""
    _, _, secret, tail = _split(url)
    found = [m.group(2) for m in _SECRET_QUERY.finditer(tail)]
    if secret:
        found.append(secret)
    forms: set[str] = set()
    for value in found:
        if value:
            forms |= secret_forms(value) | secret_forms(unquote(value))
    return sorted(forms, key=len, reverse=True)


def describe_url(url: str) -> str:
    """`url` quoted and masked for an error message when it parses; else no quote of it at all
    (what a parser cannot read, a mask cannot be sure to cover)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises for a port that is not a number in range
    except ValueError:
        return "the URL given (not quoted: it cannot be parsed)"
    if not parts.scheme or url.count("@") != parts.netloc.count("@"):
        return "the URL given (not quoted: it cannot be parsed)"
    return repr(mask_url(url))


def check_redis_url(url: str) -> tuple[str, float | bool | None]:
    """`url` checked as coredis will read it, without our own query parameters, and the
    retention it asks for (False when it does not say).

    Raises:
        ConfigurationError: The URL is not a Redis URL coredis can use; the message names the
            problem and never quotes what could be a password.
    """
    hint = (
        "; a password with reserved characters (/ ? # @ :) must be percent-encoded, e.g. / as %2F"
    )
    try:
        parts = urlsplit(url)
    except ValueError:  # "Invalid IPv6 URL" and the like; its text may quote the URL
        raise ConfigurationError(
            f"not a usable Redis URL: its host is not a valid IPv6 address in brackets{hint}"
        ) from None
    scheme = parts.scheme.lower()
    if scheme not in ("redis", "rediss", "unix") or not url[len(scheme) + 1 :].startswith("//"):
        raise ConfigurationError(
            f"{describe_url(url)} is not a Redis URL: use redis://host[:port][/db], "
            "rediss://... (TLS) or unix:///path/to/socket"
        )
    if url.count("@") != parts.netloc.count("@"):
        raise ConfigurationError(f"not a usable Redis URL: an @ outside the host part{hint}")
    try:
        port = parts.port
        host = parts.hostname
    except ValueError:  # its text quotes the port, which may be a misplaced password
        raise ConfigurationError(
            f"not a usable Redis URL: the port must be a number from 1 to 65535{hint}"
        ) from None
    if scheme == "unix":
        if not parts.path or parts.path == "/":
            raise ConfigurationError("not a usable Redis URL: unix:// needs the socket's path")
    else:
        if not host:
            raise ConfigurationError(f"not a usable Redis URL: it names no host{hint}")
        if parts.netloc.rpartition("@")[2].startswith("[") and not is_ipv6_address(host):
            raise ConfigurationError(
                "not a usable Redis URL: its host is not a valid IPv6 address in brackets"
            )
        if port == 0:
            raise ConfigurationError("not a usable Redis URL: port 0")
        database = parts.path.strip("/")
        if database and not database.isdigit():
            raise ConfigurationError(
                f"not a usable Redis URL: the path must be a database number (/0, /1, ...){hint}"
            )
    query = parse_qsl(parts.query, keep_blank_values=True)
    retention: float | bool | None = False
    kept = []
    for name, value in query:
        if name != RETENTION_PARAMETER:
            kept.append((name, value))
            continue
        retention = parse_retention(value)
    if len(kept) == len(query):
        return url, retention
    return parts._replace(query=urlencode(kept)).geturl(), retention


def parse_retention(value: str) -> float | None:
    """A ``retention=`` value: seconds (a number, or with a suffix s, m, h, d), or ``none``.

    Raises:
        ConfigurationError: Anything else.
    """
    text = value.strip().lower()
    if text in ("none", "never", "forever"):
        return None
    scale = {"s": 1, "m": 60, "h": 3600, "d": 86400}.get(text[-1:])
    number = text[:-1] if scale is not None else text
    try:
        seconds = float(number) * (scale or 1)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise ConfigurationError(
            f"retention={value!r}: give seconds (86400, or 30d, 12h, 90m) or none"
        )
    return seconds


def without_password(url: str) -> tuple[str, bool]:
    """`url` with its password left out (its user name kept), and whether it had one; for
    remembering where a session is stored without writing a password to disk.

    A URL that does not parse is given back masked (`mask_url`), with True.
    """
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises for a port that is not a number in range
    except ValueError:
        return mask_url(url), True
    if url.count("@") != parts.netloc.count("@"):
        return mask_url(url), True
    if not url_secrets(url):
        return url, False
    host = parts.netloc.rpartition("@")[2]
    user = parts.netloc.rpartition("@")[0].partition(":")[0]
    query = urlencode(
        [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if "pass" not in k]
    )
    plain = f"{parts.scheme}://{user + '@' if user else ''}{host}{parts.path}"
    return plain + (f"?{query}" if query else ""), True
