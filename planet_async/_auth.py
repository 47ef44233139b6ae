"""The httpx Auth: sets the Authorization header on requests to allowlisted origins only."""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

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

__all__ = ["PLANET_API_ORIGINS", "PLANET_M2M_ISSUER", "PlanetAuth"]


class PlanetAuth(HttpxStyleFlow, httpx.Auth):
    """Authenticates httpx requests to Planet's APIs, with an OAuth2 session or an API key.

    Pass it as ``httpx.AsyncClient(auth=...)`` or ``planet.Session(auth=...)`` (better:
    `planet_async.planet_sdk.planet_session`, which also recovers from a revoked token). The header
    goes only to allowlisted origins (Planet's API origins by default); every other request,
    including redirects and a manually sent ``response.next_request`` to another origin, passes
    untouched. When an allowlisted origin answers 401 to the current token, the token is renewed
    once and the request resent, if its body can be replayed (streaming bodies are not buffered
    for that).

    OAuth2 sessions work only with `httpx.AsyncClient`: renewing a token is network I/O, and a sync
    client would have to block for it. A sync `httpx.Client` raises `AsyncOnlyError` at once.
    API keys need no I/O and work with both.

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
