"""When PostgreSQL fails, sessions go on as they do with Redis (tests/test_redis_failures.py): on a
real server and the real authorization server, with every token request counted at the peer.

- The server down: a still-valid token keeps serving; once it has expired an M2M session renews
  in this process, uncoordinated, with a WARNING, while a user session with rotating refresh
  tokens gives a clear StorageError and spends nothing until the server is back.
- A renewal that stalls past its lease: its save is refused, and it uses the session the process
  that went on stored meanwhile.

Managers read a settable clock (`FakeClock`), so tokens expire when a test says so; leases run on
the server's real clock.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from typing import Any

import anyio
import pytest

from planet_async import (
    AuthorizationServer,
    ClientCredentialsGrant,
    ClientSecretBasic,
    PostgresStorage,
    PublicClient,
    RefreshTokenGrant,
    StorageError,
    TokenManager,
)
from tests._browser import device_login_saved
from tests._helpers import FakeClock, VerifyingApi
from tests._peer import Peer
from tests._postgres import PostgresServer
from tests.test_postgres_storage import StalledStorage

pytestmark = pytest.mark.anyio

SESSION = "fleet"
TIMEOUT = 1.0  # seconds any one call to the server may take, in these tests
LEASE = 0.5  # seconds a lease lasts unless extended
VALID = 30  # seconds into a token's 60 s life: before any renewal is due
EXPIRED = 61  # seconds: past the peer's access token lifetime
PAST_BACKOFF = 300  # seconds: the longest wait between attempts after failures


def _m2m(peer: Peer) -> ClientCredentialsGrant:
    client = ClientSecretBasic(client_id="service-basic", client_secret="service-basic-secret")
    return ClientCredentialsGrant(AuthorizationServer(peer.issuer), client)


def _user(peer: Peer) -> RefreshTokenGrant:
    return RefreshTokenGrant(AuthorizationServer(peer.issuer), PublicClient(client_id="native-app"))


def _manager(grant: Any, storage: PostgresStorage, clock: FakeClock) -> TokenManager:
    return TokenManager(grant, storage=storage, session=SESSION, clock=clock)


def _stored(server: PostgresServer) -> str | None:
    rows = server.sql(
        "SELECT token->>'access_token' FROM planet_async_sessions WHERE session = %s", SESSION
    )
    return f"Bearer {rows[0][0]}" if rows and rows[0][0] is not None else None


def _uncoordinated(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "without coordination" in r.getMessage()]


async def test_m2m_session_rides_out_a_postgres_outage(
    peer: Peer, start_postgres: Callable[..., PostgresServer], caplog: pytest.LogCaptureFixture
) -> None:
    """With PostgreSQL down, an M2M session's valid token keeps serving with no token request;
    after it expires the session renews in this process, one grant per renewal, each with a
    WARNING that says so; once the server is back the renewal is coordinated again and stored
    for others."""
    server = start_postgres()
    clock = FakeClock(start=time.time())
    storage = PostgresStorage(server.url, timeout=TIMEOUT)
    manager = _manager(_m2m(peer), storage, clock)
    first = await manager.header()
    assert _stored(server) == first

    server.stop()
    clock.advance(VALID)
    assert [await manager.header() for _ in range(3)] == [first] * 3
    assert peer.grants("client_credentials") == 1

    headers = []
    for renewal in range(2):
        clock.advance(EXPIRED)
        with caplog.at_level(logging.WARNING, logger="planet_async"):
            headers.append(await manager.header())
        assert peer.grants("client_credentials") == 2 + renewal
        (warning,) = _uncoordinated(caplog)
        assert f"cannot lock session 'fleet' in {storage.url}" in warning
        caplog.clear()
    assert len({first, *headers}) == 3
    assert all(VerifyingApi(peer.issuer).verify(h.removeprefix("Bearer ")) for h in headers)

    server.start()
    clock.advance(EXPIRED)
    with caplog.at_level(logging.WARNING, logger="planet_async"):
        back = await manager.header()
    assert _uncoordinated(caplog) == []
    assert peer.grants("client_credentials") == 4
    assert _stored(server) == back
    other = _manager(_m2m(peer), PostgresStorage(server.url, timeout=TIMEOUT), clock)
    assert await other.header() == back
    assert peer.grants("client_credentials") == 4


async def test_user_session_waits_for_postgres(
    peer: Peer, start_postgres: Callable[..., PostgresServer], caplog: pytest.LogCaptureFixture
) -> None:
    """With PostgreSQL down, a user session's valid token keeps serving; after it expires every
    attempt is a StorageError naming the session and the store, and no refresh token is spent;
    once the server is back the session renews once, without an error at the peer."""
    server = start_postgres()
    await device_login_saved(peer.issuer, PostgresStorage(server.url), SESSION)
    peer.reset()
    clock = FakeClock(start=time.time())
    storage = PostgresStorage(server.url, timeout=TIMEOUT)
    manager = _manager(_user(peer), storage, clock)
    login = await manager.header()
    assert _stored(server) == login

    server.stop()
    clock.advance(VALID)
    assert await manager.header() == login
    clock.advance(EXPIRED)
    for _ in range(3):
        with pytest.raises(
            StorageError, match=f"cannot lock session 'fleet' in {re.escape(storage.url)}"
        ):
            await manager.header()
        clock.advance(PAST_BACKOFF)
    assert peer.grants("refresh_token") == 0
    assert manager.renewals == 0

    server.start()
    with caplog.at_level(logging.WARNING, logger="planet_async"):
        renewed = await manager.header()
    assert _uncoordinated(caplog) == []
    assert peer.grants("refresh_token") == 1
    assert peer.errors() == {}
    assert _stored(server) == renewed != login
    assert VerifyingApi(peer.issuer).verify(renewed.removeprefix("Bearer "))


async def test_a_stalled_holder_adopts_the_session_stored_meanwhile(
    peer: Peer, postgres: PostgresServer, caplog: pytest.LogCaptureFixture
) -> None:
    """An M2M process that stalls past its lease in the middle of a renewal finds its save
    refused, and uses the token the process that went on stored meanwhile: one token in use
    everywhere (two grants: the stalled process's token is dropped)."""
    clock = FakeClock(start=time.time())
    obtained = anyio.Event()
    go_on = anyio.Event()

    class StallingGrant(ClientCredentialsGrant):
        """Stalls after its token request, until told to go on."""

        async def renew(self, current: Any, *, clock: Callable[[], float]) -> Any:
            token = await super().renew(current, clock=clock)
            obtained.set()
            await go_on.wait()
            return token

    m2m = _m2m(peer)
    stalling = _manager(
        StallingGrant(m2m.server, m2m.client), StalledStorage(postgres.url, lease=LEASE), clock
    )
    other = _manager(_m2m(peer), PostgresStorage(postgres.url, lease=LEASE, lock_timeout=5), clock)
    results: list[str] = []

    async def collect() -> None:
        results.append(await stalling.header())

    with anyio.fail_after(10), caplog.at_level(logging.WARNING, logger="planet_async"):
        async with anyio.create_task_group() as tg:
            tg.start_soon(collect)
            await obtained.wait()
            went_on = await other.header()  # after the stalled lease lapsed
            go_on.set()
    assert results == [went_on]
    assert _stored(postgres) == went_on
    assert peer.grants("client_credentials") == 2
    assert "the lock lapsed during the renewal" in caplog.text
