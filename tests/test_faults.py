"""Token endpoint faults: a valid token keeps serving, backoff bounds retries, nothing is lost.

Every fault is a small handler behind `httpx.MockTransport` (or one that raises the httpx exception
a real network would). The manager renews in line (no task group), so every token request happens
inside an API request and the counts below are exact.
"""

from __future__ import annotations

import random
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio
import httpx
import pytest

from planet_async import (
    AuthorizationServer,
    AuthServerError,
    AuthServerUnavailable,
    ClientCredentialsGrant,
    ClientSecretBasic,
    ClientSecretPost,
    FileStorage,
    HttpxTransport,
    InvalidClientError,
    InvalidGrantError,
    InvalidTokenResponse,
    MemoryStorage,
    OAuthError,
    PlanetAuth,
    RefreshTokenGrant,
    Storage,
    TokenManager,
    TokenSet,
)
from tests._helpers import API, FakeClock

pytestmark = pytest.mark.anyio

TOKEN_URL = "https://auth.test/realms/main/protocol/openid-connect/token"
SESSION = "default"
CLIENT_ID = "svc-faults"
CLIENT_SECRET = "cs-secret-d6f1"
FIRST_REFRESH_TOKEN = "rt-secret-0"

# With the TokenManager defaults the soft threshold is at 65-75% of the lifetime, whatever the
# jitter (refresh_ahead 0.75 less up to jitter 0.1), and the hard one 10% before expiry (the 30 s
# margin is capped at a tenth of the lifetime). For 100 s tokens: soft <= 75 s, hard = 90 s.
LIFETIME = 100.0
PAST_SOFT = 80.0
HARD = 90.0
STEP = 0.125  # a power of two: FakeClock times stay exact, so Retry-After lands on a step


@dataclass(frozen=True)
class Fault:
    """One way the token endpoint can fail, and what the client must make of it."""

    name: str
    respond: Callable[[httpx.Request], httpx.Response]
    error: type[AuthServerError]
    # Token requests made from PAST_SOFT to HARD, one API request every STEP (see _window).
    attempts: tuple[int, int]
    retry_after: float | None = None
    oauth_error: str | None = None

    def longest_wait(self, failures: int) -> float:
        """The longest the manager may wait after `failures` failures in a row.

        The rule in _manager.py: base 1 s doubling per failure, times a jitter factor in
        [0.5, 1] (the cap of 300 s is never reached here), raised to Retry-After if that is longer.
        """
        return max(self.retry_after or 0.0, 2.0 ** (failures - 1))


def _raise(
    exc_type: type[httpx.TransportError], message: str
) -> Callable[[httpx.Request], httpx.Response]:
    def respond(request: httpx.Request) -> httpx.Response:
        raise exc_type(message, request=request)

    return respond


# Attempt bounds in the 10 s window from PAST_SOFT (80 s) to HARD (90 s), requests every 0.125 s.
# The first attempt is at 80 s; after failure k the next may come d_k later, where
# d_k = 2**(k-1) * u with u in [0.5, 1] (or Retry-After when that is longer), at the first step at
# or after it.
# - No Retry-After. Shortest waits (0.5, 1, 2, 4, 8) put attempts at 80, 80.5, 81.5, 83.5,
#   87.5 and the sixth at 95.5: at most 5. Longest waits (1, 2, 4, 8) put them at 80, 81, 83, 87
#   and the fifth at 95: at least 4.
# - Retry-After 7 (503): every wait is exactly 7 s (the backoff stays below 7 for three
#   failures): attempts at 80 and 87, the third at 94: exactly 2.
# - Retry-After 4 (429): waits are 4, 4, then max(2..4, 4) = 4 s: attempts at 80, 84, 88: exactly 3.
NO_RETRY_AFTER = (4, 5)

FAULTS = [
    Fault(
        "http-500",
        lambda r: httpx.Response(500, text="Internal Server Error"),
        AuthServerUnavailable,
        NO_RETRY_AFTER,
    ),
    Fault(
        "http-503-retry-after-7",
        lambda r: httpx.Response(503, headers={"Retry-After": "7"}, text="Service Unavailable"),
        AuthServerUnavailable,
        (2, 2),
        retry_after=7,
    ),
    Fault(
        "http-429",
        lambda r: httpx.Response(429, json={"error": "slow_down"}),
        AuthServerUnavailable,
        NO_RETRY_AFTER,
    ),
    Fault(
        "http-429-retry-after-4",
        lambda r: httpx.Response(429, headers={"Retry-After": "4"}),
        AuthServerUnavailable,
        (3, 3),
        retry_after=4,
    ),
    Fault(
        "read-timeout",
        _raise(httpx.ReadTimeout, "timed out"),
        AuthServerUnavailable,
        NO_RETRY_AFTER,
    ),
    Fault(
        "connection-refused",
        _raise(httpx.ConnectError, "[Errno 111] Connection refused"),
        AuthServerUnavailable,
        NO_RETRY_AFTER,
    ),
    Fault(
        "html-200",
        lambda r: httpx.Response(200, html="<html><body>Please sign in</body></html>"),
        InvalidTokenResponse,
        NO_RETRY_AFTER,
    ),
    Fault(
        "invalid-json-200",
        lambda r: httpx.Response(
            200, headers={"Content-Type": "application/json"}, content=b'{"access_token": "x'
        ),
        InvalidTokenResponse,
        NO_RETRY_AFTER,
    ),
    Fault(
        "json-without-access-token",
        lambda r: httpx.Response(200, json={"token_type": "Bearer", "expires_in": 100}),
        InvalidTokenResponse,
        NO_RETRY_AFTER,
    ),
    Fault(
        "invalid-grant",
        lambda r: httpx.Response(
            400, json={"error": "invalid_grant", "error_description": "Token is not active"}
        ),
        InvalidGrantError,
        NO_RETRY_AFTER,
        oauth_error="invalid_grant",
    ),
    Fault(
        "invalid-client",
        lambda r: httpx.Response(
            401,
            headers={"WWW-Authenticate": 'Basic realm="main"'},
            json={"error": "invalid_client", "error_description": "Invalid client credentials"},
        ),
        InvalidClientError,
        NO_RETRY_AFTER,
        oauth_error="invalid_client",
    ),
]

fault_cases = pytest.mark.parametrize("fault", [pytest.param(f, id=f.name) for f in FAULTS])
grant_kinds = pytest.mark.parametrize("grant_kind", ["client_credentials", "refresh_token"])


class TokenEndpoint:
    """Issues numbered tokens (`at-secret-<n>`), or answers with `fault` while one is set."""

    def __init__(self, *, rotate_refresh_tokens: bool) -> None:
        self.fault: Fault | None = None
        self.calls = 0
        self.issued = 0
        self.forms: list[dict[str, str]] = []
        self.rotate_refresh_tokens = rotate_refresh_tokens

    def handler(self, request: httpx.Request) -> httpx.Response:
        assert request.url == TOKEN_URL
        self.calls += 1
        self.forms.append(dict(httpx.QueryParams(request.content.decode())))
        if self.fault is not None:
            return self.fault.respond(request)
        self.issued += 1
        body: dict[str, object] = {
            "access_token": f"at-secret-{self.issued}",
            "token_type": "Bearer",
            "expires_in": LIFETIME,
        }
        if self.rotate_refresh_tokens:
            body["refresh_token"] = f"rt-secret-{self.issued}"
        return httpx.Response(200, json=body)


class Api:
    """The API: answers 200 and remembers the Authorization header of every request."""

    def __init__(self) -> None:
        self.headers: list[str | None] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.headers.append(request.headers.get("authorization"))
        return httpx.Response(200, json={"ok": True})


@dataclass
class Rig:
    clock: FakeClock
    endpoint: TokenEndpoint
    api: Api
    storage: Storage
    client: httpx.AsyncClient
    received_at: float  # when the first good token arrived

    def at(self, offset: float) -> None:
        """Set the clock to `offset` seconds after the first good token arrived."""
        self.clock.now = self.received_at + offset

    async def get(self) -> str | None:
        """One API request that must succeed; returns the Authorization header it carried."""
        response = await self.client.get(f"{API}/data/v1/searches")
        assert response.status_code == 200
        return self.api.headers[-1]

    async def get_fails(self, fault: Fault) -> AuthServerError:
        """One API request that must fail with the fault's typed error; returns the error."""
        sent = len(self.api.headers)
        with pytest.raises(fault.error) as info:
            await self.client.get(f"{API}/data/v1/searches")
        assert len(self.api.headers) == sent, "no request may reach the API without a token"
        check_error(info.value, fault)
        return info.value

    async def run_window(self) -> list[str | None]:
        """API requests every STEP from PAST_SOFT until just before HARD; their headers."""
        headers = []
        n = int((HARD - PAST_SOFT) / STEP)
        for i in range(n):
            self.at(PAST_SOFT + i * STEP)
            headers.append(await self.get())
        assert self.clock.now < self.received_at + HARD
        return headers


SECRETS = (CLIENT_SECRET, FIRST_REFRESH_TOKEN, "at-secret-", "rt-secret-")


def check_error(exc: BaseException, fault: Fault) -> None:
    """The typed error of `fault`, naming the token endpoint and carrying no secret."""
    assert type(exc) is fault.error
    message = str(exc)
    assert TOKEN_URL in message
    assert isinstance(exc, AuthServerError)
    assert exc.endpoint == TOKEN_URL
    for secret in SECRETS:
        assert secret not in message
        assert secret not in repr(exc)
    if fault.oauth_error is not None:
        assert isinstance(exc, OAuthError)
        assert exc.error == fault.oauth_error
        assert exc.error_description is not None
        assert exc.error_description in message
    if fault.retry_after is not None:
        assert exc.retry_after == fault.retry_after


@asynccontextmanager
async def rig(
    grant_kind: str,
    storage: Storage | None = None,
    *,
    handler: Callable[[httpx.Request], Coroutine[None, None, httpx.Response]] | None = None,
    timeout: float = 10.0,
) -> AsyncIterator[Rig]:
    """A PlanetAuth client whose session already holds a good token, `at-secret-1`.

    For "refresh_token" the session starts as a stored, expired token set with a refresh token,
    and the first request refreshes it (the server rotates refresh tokens: `rt-secret-1`).
    """
    clock = FakeClock()
    storage = storage if storage is not None else MemoryStorage()
    endpoint = TokenEndpoint(rotate_refresh_tokens=grant_kind == "refresh_token")
    token_http = httpx.AsyncClient(transport=httpx.MockTransport(handler or endpoint.handler))
    server = AuthorizationServer(
        token_endpoint=TOKEN_URL, transport=HttpxTransport(token_http), timeout=timeout
    )
    grant: ClientCredentialsGrant | RefreshTokenGrant
    if grant_kind == "client_credentials":
        grant = ClientCredentialsGrant(
            server, ClientSecretBasic(client_id=CLIENT_ID, client_secret=CLIENT_SECRET)
        )
    else:
        grant = RefreshTokenGrant(
            server, ClientSecretPost(client_id=CLIENT_ID, client_secret=CLIENT_SECRET)
        )
        expired = TokenSet(
            access_token="at-secret-0",
            issued_at=clock.now - 2 * LIFETIME,
            expires_at=clock.now - LIFETIME,
            refresh_token=FIRST_REFRESH_TOKEN,
        )
        await storage.save(SESSION, expired)
    manager = TokenManager(
        grant, storage=storage, session=SESSION, clock=clock, rng=random.Random(0)
    )
    api = Api()
    async with (
        token_http,
        httpx.AsyncClient(
            auth=PlanetAuth(manager), transport=httpx.MockTransport(api.handler)
        ) as client,
    ):
        the_rig = Rig(clock, endpoint, api, storage, client, received_at=clock.now)
        if handler is None:
            assert await the_rig.get() == "Bearer at-secret-1"
            assert endpoint.calls == 1
            if grant_kind == "refresh_token":
                assert endpoint.forms[0]["grant_type"] == "refresh_token"
                assert endpoint.forms[0]["refresh_token"] == FIRST_REFRESH_TOKEN
        yield the_rig


@fault_cases
@grant_kinds
async def test_valid_token_keeps_serving(fault: Fault, grant_kind: str) -> None:
    """Past the soft threshold the old token keeps serving while failed renewals back off."""
    async with rig(grant_kind) as r:
        r.endpoint.fault = fault
        headers = await r.run_window()
        assert headers == ["Bearer at-secret-1"] * len(headers)
        low, high = fault.attempts
        assert low <= r.endpoint.calls - 1 <= high


@fault_cases
@grant_kinds
async def test_no_valid_token_raises_typed_error(fault: Fault, grant_kind: str) -> None:
    """Past expiry the typed error propagates; no request within the backoff, one after it."""
    async with rig(grant_kind) as r:
        r.endpoint.fault = fault
        r.at(LIFETIME)
        await r.get_fails(fault)
        assert r.endpoint.calls == 2

        r.clock.advance(0.25)  # the shortest first backoff is 0.5 s
        await r.get_fails(fault)
        assert r.endpoint.calls == 2

        r.clock.advance(fault.longest_wait(1))
        await r.get_fails(fault)
        assert r.endpoint.calls == 3


@fault_cases
@grant_kinds
@pytest.mark.parametrize("storage_kind", ["memory", "file"])
async def test_nothing_stored_is_lost(
    fault: Fault, grant_kind: str, storage_kind: str, tmp_path: Path
) -> None:
    """Failed renewals, ahead of time or after expiry, leave the stored session untouched."""
    storage = MemoryStorage() if storage_kind == "memory" else FileStorage(tmp_path / "planet")
    async with rig(grant_kind, storage) as r:
        r.endpoint.fault = fault
        await r.run_window()
        r.at(LIFETIME)
        await r.get_fails(fault)
        r.clock.advance(fault.longest_wait(10))
        await r.get_fails(fault)
        assert r.endpoint.calls > 2

    reread = FileStorage(tmp_path / "planet") if storage_kind == "file" else storage
    stored = await reread.load(SESSION)
    assert stored is not None
    assert stored.access_token.get_secret_value() == "at-secret-1"
    assert stored.issued_at == r.received_at
    if grant_kind == "refresh_token":
        assert stored.refresh_token is not None
        assert stored.refresh_token.get_secret_value() == "rt-secret-1"


@fault_cases
@grant_kinds
async def test_recovery_renews_once_and_resets_backoff(fault: Fault, grant_kind: str) -> None:
    """Once the endpoint works one request renews, and the next failure backs off from the base."""
    async with rig(grant_kind) as r:
        r.endpoint.fault = fault
        r.at(LIFETIME)
        # Five failures in a row: had the count not been reset, the sixth wait would be >= 16 s,
        # longer than the first wait of any fault here (at most 7 s).
        for failures in range(1, 6):
            await r.get_fails(fault)
            assert r.endpoint.calls == 1 + failures
            r.clock.advance(fault.longest_wait(failures))

        r.endpoint.fault = None
        assert await r.get() == "Bearer at-secret-2"
        assert r.endpoint.calls == 7
        if grant_kind == "refresh_token":
            assert r.endpoint.forms[-1]["refresh_token"] == "rt-secret-1"
        for _ in range(20):
            assert await r.get() == "Bearer at-secret-2"
        assert r.endpoint.calls == 7

        r.clock.advance(LIFETIME)
        r.endpoint.fault = fault
        await r.get_fails(fault)
        assert r.endpoint.calls == 8
        r.clock.advance(fault.longest_wait(1))
        await r.get_fails(fault)
        assert r.endpoint.calls == 9


async def test_stalled_endpoint_is_bounded_by_the_server_timeout() -> None:
    """A token endpoint that never answers costs one timeout, then AuthServerUnavailable."""
    finished = False

    async def stall(request: httpx.Request) -> httpx.Response:
        nonlocal finished
        await anyio.sleep(10)
        finished = True
        return httpx.Response(200, json={"access_token": "at-secret-late", "expires_in": 100})

    async with rig("client_credentials", handler=stall, timeout=0.2) as r:
        started = time.monotonic()
        with pytest.raises(AuthServerUnavailable) as info:
            await r.client.get(f"{API}/data/v1/searches")
        elapsed = time.monotonic() - started
    assert 0.15 <= elapsed < 1.5
    assert not finished
    assert r.api.headers == []
    assert TOKEN_URL in str(info.value)
    assert "0.2 s" in str(info.value)
    assert CLIENT_SECRET not in str(info.value)
