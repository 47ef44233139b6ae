"""Requests to authorization servers as plain data, and the protocol of what sends them.

`_oauth` builds `HttpRequest`s and reads `HttpResponse`s; a transport (`_http.HttpxTransport`)
sends them, so the protocol logic imports no HTTP library.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import unquote_plus

from ._redact import secret_forms

__all__ = ["HttpRequest", "HttpResponse", "HttpTransport"]

_SECRET_FIELDS = frozenset(
    {
        "client_secret",
        "client_assertion",
        "refresh_token",
        "code",
        "code_verifier",
        "device_code",
        "token",
        "password",
    }
)
"""Form fields whose values are secrets (RFC 6749, 7009, 7523, 7636, 8628)."""


@dataclass(frozen=True)
class HttpRequest:
    """A request to an authorization server, independent of the HTTP library that sends it."""

    method: str
    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    form: Mapping[str, str] | None = None

    def __repr__(self) -> str:
        # Headers and form carry client secrets, assertions and refresh tokens.
        return f"HttpRequest({self.method} {self.url})"

    def secrets(self) -> set[str]:
        """Every secret this request carries, in each form a server might echo it back: the
        secret form fields, and the credentials of an Authorization header, whole and decoded."""
        found: set[str] = set()
        for name, value in (self.form or {}).items():
            if name in _SECRET_FIELDS and value:
                found |= secret_forms(value)
        for name, value in self.headers.items():
            if name.lower() != "authorization":
                continue
            _, _, credentials = value.partition(" ")
            found |= secret_forms(value) | secret_forms(credentials)
            try:
                decoded = base64.b64decode(credentials, validate=True).decode()
            except ValueError:
                continue
            # client_secret_basic: "id:secret", each form-urlencoded; the id is no secret.
            secret = decoded.partition(":")[2]
            found |= secret_forms(secret) | secret_forms(unquote_plus(secret))
        return found


@dataclass(frozen=True)
class HttpResponse:
    """An authorization server's response. Header names are lower-case."""

    status_code: int
    headers: Mapping[str, str]
    content: bytes
    request_secrets: frozenset[str] = field(default=frozenset(), repr=False)
    """The secrets of the request this answers: masked wherever the response's text is quoted,
    since a server's `error_description` may echo the request."""

    def __repr__(self) -> str:
        return f"HttpResponse({self.status_code}, {len(self.content)} bytes)"


class HttpTransport(Protocol):
    """Sends requests to authorization servers. `_http.HttpxTransport` is the httpx one."""

    async def send(self, request: HttpRequest, *, timeout: float) -> HttpResponse:
        """Send `request`, taking at most `timeout` seconds in all.

        Raises:
            AuthServerUnavailable: The server could not be reached or did not answer in time.
        """
        ...
