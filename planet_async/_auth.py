"""The httpx Auth: sets the Authorization header on requests to allowlisted origins only."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

import httpx

from ._adapter import PLANET_API_ORIGINS, PLANET_M2M_ISSUER
from ._httpx_flow import HttpxStyleFlow
from ._session import SessionSource
from .profiles import (
    AuthClientConfig,
    PlanetHome,
    credential_for_client,
    credential_from_source,
)
from .storage._protocol import Storage

__all__ = ["PLANET_API_ORIGINS", "PLANET_M2M_ISSUER", "PlanetAuth", "RenewingTransport"]


class PlanetAuth(HttpxStyleFlow, httpx.Auth):
    """Authenticates httpx requests to Planet's APIs, with an OAuth2 session or an API key.

    Pass it as ``httpx.AsyncClient(auth=...)`` or ``planet.Session(auth=...)`` (better:
    `planet_async.planet_sdk.planet_session`, which also recovers from a revoked token). The header
    goes only to allowlisted origins (Planet's API origins by default); every other request,
    including redirects and a manually sent ``response.next_request`` to another origin, passes
    untouched. When an allowlisted origin answers 401 to the current token, the token is renewed
    once and the request resent, if its body can be replayed (streaming bodies are not buffered
    for that).

    It serves `httpx.AsyncClient` and the sync `httpx.Client` alike. With a sync client, a
    renewal runs on the process's renewal loop (a daemon thread), once for every thread that waits
    for it; a fresh token's header is read from memory, as on the async path.

    The constructors (`from_client_credentials`, `for_user`, `from_user_default_session`, ...)
    and logins are those of `AuthAdapter`, shared with the httpx2 and aiohttp adapters.

    Args:
        manager: The session's `TokenManager` (OAuth2).
        api_key: A Planet API key, instead of a manager. Never sent to services.sentinel-hub.com.
        allowed_origins: Origins to authenticate, e.g. ``["https://api.planet.com"]``. An
            ``http://`` origin is allowed only on loopback (for tests and local proxies).
        allow_loopback_http: Also authenticate ``http://`` requests to any loopback address and
            port. Off by default.
    """

    _replayable: ClassVar[tuple[type, ...]] = (httpx.ByteStream,)


def auth_from_source(
    source: SessionSource,
    *,
    home: PlanetHome | None = None,
    storage: Storage | None = None,
    allowed_origins: Iterable[str] | None = None,
    allow_loopback_http: bool = False,
) -> PlanetAuth:
    """The PlanetAuth of a chosen session (`credential_from_source`).

    Raises:
        ConfigurationError: The profile's configuration cannot work.
    """
    credential = credential_from_source(source, home=home, storage=storage)
    return PlanetAuth.from_credential(
        credential, allowed_origins=allowed_origins, allow_loopback_http=allow_loopback_http
    )


def auth_for_client(
    config: AuthClientConfig,
    *,
    session: str,
    storage: Storage | None = None,
    home: PlanetHome | None = None,
    allowed_origins: Iterable[str] | None = None,
    allow_loopback_http: bool = False,
) -> PlanetAuth:
    """The PlanetAuth a client configuration describes (`credential_for_client`).

    Raises:
        ConfigurationError: The configuration lacks what its client type needs.
        LoginRequired: A legacy profile without a saved API key.
    """
    credential = credential_for_client(config, session=session, storage=storage, home=home)
    return PlanetAuth.from_credential(
        credential, allowed_origins=allowed_origins, allow_loopback_http=allow_loopback_http
    )


class RenewingTransport(httpx.AsyncBaseTransport):
    """An httpx transport that renews the token and resends once when an allowlisted origin
    answers 401 to a request `auth` authenticated.

    `PlanetAuth` does this itself, but only when it sees the response: a client whose response
    hooks raise on 4xx (`planet.Session`'s do) stops before that. This transport acts before any
    hook. Pass it as ``httpx.AsyncClient(auth=auth, transport=RenewingTransport(auth))``; see
    `planet_async.planet_sdk.planet_session` for the Planet SDK.

    Args:
        auth: The `PlanetAuth` that sets the header.
        transport: The transport to send through; a default `httpx.AsyncHTTPTransport` if None.
    """

    def __init__(self, auth: PlanetAuth, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.auth = auth
        self.transport = transport if transport is not None else httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.transport.handle_async_request(request)
        if response.status_code != 401:
            return response
        sent = request.headers.get("Authorization")
        url = request.url
        if sent is None or not self.auth.authenticates(url.scheme, url.host, url.port):
            return response
        retry = await self.auth.retry_header(sent)
        if retry is None or not isinstance(request.stream, httpx.ByteStream):
            return response
        await response.aread()
        await response.aclose()
        request.headers["Authorization"] = retry
        return await self.transport.handle_async_request(request)

    async def __aenter__(self) -> RenewingTransport:
        await self.transport.__aenter__()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.transport.__aexit__(*exc_info)

    async def aclose(self) -> None:
        await self.transport.aclose()
