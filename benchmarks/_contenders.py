"""The contenders, each an `httpx.AsyncClient` with its own auth, set up against the test peer.

- static header: an `httpx.Auth` that sets a fixed header; the physical limit.
- planet_async: `PlanetAuth` over a `TokenManager` with the client credentials grant, entered
  (``async with manager``, so renewals ahead of expiry run in the background) or not.
- incumbent: the `planet` SDK's `planet.Auth.from_profile(...)` (planet-auth), from a profile
  under the run's private HOME, as `planet auth` would leave it.
- authlib: `AsyncOAuth2Client` with the client credentials grant.

All of them send API requests to the same `httpx.MockTransport`, through the same routing
transport (only authlib sends its token requests through it; the others have their own HTTP
clients for the token endpoint), and get tokens from the same client of the same peer. Margins
are set fairly for short test lifetimes: authlib's `leeway` (60 s by default, which would renew on
every request when tokens live less than that) is set to planet_async's expiry margin, a tenth of
the lifetime up to 30 s, but at least one second (see `Setup.leeway`). planet-auth renews at three
quarters of the lifetime, in whole seconds, and has nothing to configure.
"""

from __future__ import annotations

import itertools
import json
import logging
import sys
import time
import warnings
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from pydantic import SecretStr

import planet_async

CLIENT_ID = "service-basic"
CLIENT_SECRET = "service-basic-secret"
API_HOST = "api.planet.com"

NAMES = ("static header", "planet_async", "incumbent", "authlib")
"""The contenders every benchmark compares, in table order."""
NO_TASK_GROUP = "planet_async, not entered"
"""planet_async without ``async with manager`` (renews ahead in line instead of in a task)."""


@dataclass(frozen=True)
class Setup:
    """What a contender needs: the peer, a HOME for planet's profiles, the token lifetime."""

    issuer: str
    home: Path
    ttl: float

    @property
    def margin(self) -> float:
        """planet_async's expiry margin for this lifetime: a tenth of it, at most 30 s."""
        return min(30.0, self.ttl / 10)

    @property
    def leeway(self) -> float:
        """authlib's leeway: the same margin, but at least the one second it counts time in.

        authlib keeps a token's expiry in whole seconds (``int(time.time()) + expires_in``), so a
        leeway below a second could let it send a token for up to a second after the JWT's `exp`.
        """
        return max(1.0, self.margin)


Opener = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


class StaticHeader(httpx.Auth):
    """Sets one fixed header and nothing else: no auth layer can be cheaper."""

    def __init__(self, header: str) -> None:
        self._header = header

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        request.headers["Authorization"] = self._header
        yield request


class Route(httpx.AsyncBaseTransport):
    """API requests to the stand-in API; everything else (authlib's token requests) to the peer."""

    def __init__(self, api: httpx.AsyncBaseTransport) -> None:
        self._api = api
        self._network = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.host == API_HOST:
            return await self._api.handle_async_request(request)
        return await self._network.handle_async_request(request)

    async def aclose(self) -> None:
        await self._api.aclose()
        await self._network.aclose()


def expired_token_file(now: float) -> dict[str, object]:
    """A planet `token.json` whose token expired a minute ago: the state at expiry."""
    return {
        "access_token": "expired",
        "token_type": "Bearer",
        "expires_in": 60,
        "_iat": int(now) - 120,
        "_exp": int(now) - 60,
    }


@asynccontextmanager
async def static_header(
    setup: Setup, api: httpx.AsyncBaseTransport, *, expired: bool = False
) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(auth=StaticHeader("Bearer static"), transport=Route(api)) as c:
        yield c


@asynccontextmanager
async def planet_async_client(
    setup: Setup,
    api: httpx.AsyncBaseTransport,
    *,
    expired: bool = False,
    entered: bool = True,
) -> AsyncIterator[httpx.AsyncClient]:
    storage = planet_async.MemoryStorage()
    if expired:
        now = time.time()
        await storage.save(
            "bench",
            planet_async.TokenSet(
                access_token=SecretStr("expired"), issued_at=now - 120, expires_at=now - 60
            ),
        )
    grant = planet_async.ClientCredentialsGrant(
        planet_async.AuthorizationServer(setup.issuer),
        planet_async.ClientSecretBasic(client_id=CLIENT_ID, client_secret=SecretStr(CLIENT_SECRET)),
    )
    manager = planet_async.TokenManager(grant, storage=storage, session="bench")
    auth = planet_async.PlanetAuth(manager)  # Planet's API origins are allowlisted by default
    async with httpx.AsyncClient(auth=auth, transport=Route(api)) as client:
        if entered:
            async with manager:
                yield client
        else:
            yield client


@asynccontextmanager
async def planet_async_not_entered(
    setup: Setup, api: httpx.AsyncBaseTransport, *, expired: bool = False
) -> AsyncIterator[httpx.AsyncClient]:
    async with planet_async_client(setup, api, expired=expired, entered=False) as client:
        yield client


_profiles = itertools.count(1)


def incumbent_profile(setup: Setup, name: str, *, client: dict[str, object] | None = None) -> Path:
    """Write ``~/.planet/<name>/auth_client.json`` under the run's HOME; return the directory.

    By default an M2M profile for the peer's `service-basic` client, with the token endpoint
    given, so planet-auth needs no discovery (planet_async caches it per process; authlib is given
    the endpoint too).
    """
    directory = setup.home / ".planet" / name
    directory.mkdir(parents=True, exist_ok=True)
    config = client or {
        "client_type": "oidc_client_credentials_secret",
        "auth_server": setup.issuer,
        "token_endpoint": f"{setup.issuer}/token",
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "audiences": ["https://api.planet.com/"],
        "scopes": ["api:read"],
    }
    (directory / "auth_client.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    return directory


def quiet_incumbent() -> None:
    """planet-auth logs a warning when a profile has no token file yet; that is expected here."""
    logging.getLogger("planet_auth").setLevel(logging.ERROR)


@asynccontextmanager
async def incumbent(
    setup: Setup, api: httpx.AsyncBaseTransport, *, expired: bool = False
) -> AsyncIterator[httpx.AsyncClient]:
    import planet

    quiet_incumbent()
    name = f"bench-{next(_profiles)}"
    directory = incumbent_profile(setup, name)
    if expired:
        (directory / "token.json").write_text(json.dumps(expired_token_file(time.time())))
    auth = planet.Auth.from_profile(name)
    async with httpx.AsyncClient(auth=auth, transport=Route(api)) as client:
        yield client


def authlib_client_class() -> type:
    # authlib deprecates httpx in favour of httpx2, and builds its clients on httpx2 whenever
    # httpx2 is installed (the clients benchmark installs it). These contenders all run on httpx,
    # so its httpx integration is loaded with httpx2 hidden. Its warnings module installs an
    # "always" filter when first imported, so import it first and put our own filter in front.
    from authlib.deprecate import AuthlibDeprecationWarning

    hidden = sys.modules.get("httpx2")
    sys.modules["httpx2"] = None  # type: ignore[assignment]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AuthlibDeprecationWarning)
            from authlib.integrations.httpx_client import AsyncOAuth2Client
    finally:
        if hidden is None:
            del sys.modules["httpx2"]
        else:
            sys.modules["httpx2"] = hidden
    if not issubclass(AsyncOAuth2Client, httpx.AsyncClient):
        raise RuntimeError("authlib's client was loaded on httpx2 before this benchmark ran")
    return AsyncOAuth2Client  # type: ignore[no-any-return]


@asynccontextmanager
async def authlib_client(
    setup: Setup, api: httpx.AsyncBaseTransport, *, expired: bool = False
) -> AsyncIterator[httpx.AsyncClient]:
    client_class = authlib_client_class()
    client = client_class(
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        token_endpoint_auth_method="client_secret_basic",
        token_endpoint=f"{setup.issuer}/token",
        grant_type="client_credentials",
        leeway=setup.leeway,
        transport=Route(api),
    )
    async with client:
        if expired:
            client.token = {
                "access_token": "expired",
                "token_type": "Bearer",
                "expires_at": int(time.time()) - 60,
            }
        else:
            await client.fetch_token()
        yield client


OPENERS: dict[str, Opener] = {
    "static header": static_header,
    "planet_async": planet_async_client,
    NO_TASK_GROUP: planet_async_not_entered,
    "incumbent": incumbent,
    "authlib": authlib_client,
}
