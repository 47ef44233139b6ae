"""When Redis fails, sessions go on: issue 11's failure cases on a real redis-server and the real
authorization server, with every token request counted at the peer.

- Redis unreachable or restarted in the middle of a run: a still-valid token keeps serving; once
  it has expired an M2M session renews in this process, uncoordinated, with a WARNING, while a
  user session with rotating refresh tokens gives a clear StorageError and spends nothing until
  Redis is back.
- The lease holder is SIGKILLed mid-renewal: the others go on within one lease period, and one
  of them makes the one token request.
- Redis is paused (SIGSTOP) for longer than a lease: waits end, bounded by the Redis timeout, and
  after it resumes the refresh token is spent once.

The peer rotates refresh tokens and revokes the whole grant when an old one comes back, so zero
errors at the peer is the proof that no refresh token was spent twice. Managers read a settable
clock (`FakeClock`), so tokens expire when a test says so; Redis's leases run on real time.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from subprocess import PIPE
from typing import Any

import anyio
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream

from planet_async import (
    AuthorizationServer,
    AuthServerUnavailable,
    ClientCredentialsGrant,
    ClientSecretBasic,
    InvalidGrantError,
    LoginRequired,
    PlanetAuthError,
    PublicClient,
    RedisStorage,
    RefreshTokenGrant,
    StorageError,
    TokenManager,
)
from planet_async._oauth import revoke_token
from tests._browser import device_login_saved
from tests._helpers import FakeClock, VerifyingApi
from tests._peer import Peer
from tests._redis import RedisServer
from tests.test_redis_storage import StalledStorage

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("redis_connections_fail")]

SESSION = "fleet"
TOKEN_KEY = "planet_async:{fleet}:token"
LOCK_KEY = "planet_async:{fleet}:lock"
TIMEOUT = 0.5  # seconds any one Redis call may take, in these tests
LEASE = 0.5  # seconds a lease lasts unless extended
SLACK = 0.5  # seconds of scheduling delay allowed on a busy machine
VALID = 30  # seconds into a token's 60 s life: before any renewal is due
EXPIRED = 61  # seconds: past the peer's access token lifetime
PAST_BACKOFF = 300  # seconds: the longest wait between attempts after failures
KEEPS_DATA = ("--appendonly", "yes", "--appendfsync", "always")  # survives a restart
REPO = Path(__file__).resolve().parent.parent


def _m2m(peer: Peer) -> ClientCredentialsGrant:
    client = ClientSecretBasic(client_id="service-basic", client_secret="service-basic-secret")
    return ClientCredentialsGrant(AuthorizationServer(peer.issuer), client)


def _user(peer: Peer) -> RefreshTokenGrant:
    return RefreshTokenGrant(AuthorizationServer(peer.issuer), PublicClient(client_id="native-app"))


def _manager(grant: Any, storage: RedisStorage, clock: FakeClock) -> TokenManager:
    return TokenManager(grant, storage=storage, session=SESSION, clock=clock)


def _stored(server: RedisServer) -> str | None:
    raw = server.call("GET", TOKEN_KEY)
    return None if raw is None else f"Bearer {json.loads(raw)['access_token']}"


def _uncoordinated(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "without coordination" in r.getMessage()]


class WatchedStorage(RedisStorage):
    """RedisStorage that tells when `lock` is asked for and when the lease was taken, and that
    can hold a renewal at the point just after the lease is taken until told to go on."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.asked = anyio.Event()
        self.entered = anyio.Event()
        self.go_on = anyio.Event()
        self.go_on.set()
        self.entered_at: float | None = None

    def hold(self) -> None:
        """From now on, stop just after taking the lease, until `go_on` is set."""
        self.entered = anyio.Event()
        self.go_on = anyio.Event()

    @asynccontextmanager
    async def lock(self, session: str) -> AsyncIterator[None]:
        self.asked.set()
        async with super().lock(session):
            self.entered_at = time.monotonic()
            self.entered.set()
            await self.go_on.wait()
            yield


async def _outcome(manager: TokenManager) -> tuple[str, float]:
    """The manager's header, or its error's type and message, and the seconds it took."""
    started = time.monotonic()
    try:
        result = await manager.header()
    except PlanetAuthError as exc:
        result = f"{type(exc).__name__}: {exc}"
    return result, time.monotonic() - started


async def _headers(*managers: TokenManager) -> list[str]:
    """Ask every manager for a header at once."""
    results: list[str] = [""] * len(managers)

    async def ask(index: int) -> None:
        results[index] = await managers[index].header()

    async with anyio.create_task_group() as tg:
        for index in range(len(managers)):
            tg.start_soon(ask, index)
    return results


# -- Redis unreachable or restarted -----------------------------------------------------------


async def test_m2m_session_rides_out_a_redis_outage(
    peer: Peer, start_redis: Callable[..., RedisServer], caplog: pytest.LogCaptureFixture
) -> None:
    """With Redis down, an M2M session's valid token keeps serving with no token request; after
    it expires the session renews in this process, one grant per renewal, each with a WARNING
    that says so; once Redis is back the renewal is coordinated again and stored for others."""
    server = start_redis(*KEEPS_DATA)
    clock = FakeClock(start=time.time())
    manager = _manager(_m2m(peer), RedisStorage(server.url, timeout=TIMEOUT), clock)
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
        assert f"cannot lock session 'fleet' in {server.url}" in warning
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
    other = _manager(_m2m(peer), RedisStorage(server.url, timeout=TIMEOUT), clock)
    assert await other.header() == back
    assert peer.grants("client_credentials") == 4


async def test_user_session_waits_for_redis(
    peer: Peer, start_redis: Callable[..., RedisServer], caplog: pytest.LogCaptureFixture
) -> None:
    """With Redis down, a user session's valid token keeps serving; after it expires every
    attempt is a StorageError naming the session and the store, and no refresh token is spent;
    once Redis is back the session renews once, without an error at the peer."""
    server = start_redis(*KEEPS_DATA)
    await device_login_saved(peer.issuer, RedisStorage(server.url), SESSION)
    peer.reset()
    clock = FakeClock(start=time.time())
    manager = _manager(_user(peer), RedisStorage(server.url, timeout=TIMEOUT), clock)
    login = await manager.header()
    assert _stored(server) == login

    server.stop()
    clock.advance(VALID)
    assert await manager.header() == login
    clock.advance(EXPIRED)
    for _ in range(3):
        with pytest.raises(
            StorageError, match=f"cannot lock session 'fleet' in {re.escape(server.url)}"
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


@pytest.mark.parametrize("kind", ["m2m", "user"])
async def test_a_restart_that_loses_the_session(
    kind: str,
    peer: Peer,
    start_redis: Callable[..., RedisServer],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Redis restarted without its data in the middle of a run: the valid token keeps serving two
    processes with no request; at expiry one of them renews once, from the session in its
    memory (a user session's once the server says its refresh token is unspent), stores it
    again, and the other adopts it (0 errors at the peer)."""
    server = start_redis()  # keeps nothing over a restart
    grant_type = "client_credentials" if kind == "m2m" else "refresh_token"
    if kind == "user":
        await device_login_saved(peer.issuer, RedisStorage(server.url), SESSION)
        peer.reset()
    grant = _m2m if kind == "m2m" else _user
    clock = FakeClock(start=time.time())
    first, second = (
        _manager(grant(peer), RedisStorage(server.url, timeout=TIMEOUT), clock) for _ in range(2)
    )
    header = await first.header()
    assert await second.header() == header
    before = peer.grants(grant_type)  # 1 for M2M (its first token), 0 for the user's login
    asked = peer.introspections()

    server.stop()
    server.start()
    assert server.call("KEYS", "*") == []
    clock.advance(VALID)
    assert [await first.header(), await second.header()] == [header, header]
    assert peer.grants(grant_type) == before

    clock.advance(EXPIRED)
    with caplog.at_level(logging.WARNING, logger="planet_async"):
        renewed = await first.header()
        assert await second.header() == renewed != header
    assert peer.grants(grant_type) == before + 1
    assert peer.errors() == {}
    assert _stored(server) == renewed
    assert caplog.records == []
    # A user's refresh token is spent only once the server says nobody spent it first.
    assert peer.introspections() - asked == (1 if kind == "user" else 0)


# -- the lease holder killed --------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["m2m", "user"])
async def test_the_others_go_on_within_one_lease_when_the_holder_is_killed(
    kind: str, peer: Peer, redis: RedisServer
) -> None:
    """A process holding the lease (mid-renewal, as far as the others know) is SIGKILLed while
    two managers wait for it: one of them takes the lease within one lease period of the kill
    and makes the one token request; the other adopts that token."""
    lease = 1.0
    grant_type = "client_credentials" if kind == "m2m" else "refresh_token"
    if kind == "user":
        await device_login_saved(peer.issuer, RedisStorage(redis.url), SESSION)
        peer.reset()
    clock = FakeClock(start=time.time() + EXPIRED)  # any stored token has expired
    command = [sys.executable, "-m", "tests._redis_lease_holder", redis.url, SESSION, str(lease)]
    holder = await anyio.open_process(command, stdout=PIPE, cwd=REPO)
    try:
        assert holder.stdout is not None
        with anyio.fail_after(20):
            line = await BufferedByteReceiveStream(holder.stdout).receive_until(b"\n", 100)
        assert line == b"held"
        storages = [WatchedStorage(redis.url, lease=lease, lock_timeout=10) for _ in range(2)]
        grant = _m2m if kind == "m2m" else _user
        managers = [_manager(grant(peer), storage, clock) for storage in storages]
        results: list[str] = []
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                for manager in managers:
                    tg.start_soon(_collect, manager, results)
                for storage in storages:
                    await storage.asked.wait()
                remaining = redis.call("PTTL", LOCK_KEY) / 1000
                holder.kill()
                killed = time.monotonic()
    finally:
        if holder.returncode is None:
            holder.kill()
        await holder.aclose()
    recovered = min(s.entered_at for s in storages if s.entered_at is not None) - killed
    print(
        f"\nlease {lease:g} s, {remaining:.3f} s left at the kill: went on after {recovered:.3f} s"
    )
    assert recovered <= lease + 0.25  # the lease left, and one round of the waiters' polling
    assert len(set(results)) == 1
    assert peer.grants(grant_type) == 1
    assert peer.errors() == {}
    assert _stored(redis) == results[0]


async def _collect(manager: TokenManager, results: list[str]) -> None:
    results.append(await manager.header())


async def test_a_stalled_holder_adopts_the_session_stored_meanwhile(
    peer: Peer, redis: RedisServer, caplog: pytest.LogCaptureFixture
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
        StallingGrant(m2m.server, m2m.client), StalledStorage(redis.url, lease=LEASE), clock
    )
    other = _manager(_m2m(peer), RedisStorage(redis.url, lease=LEASE, lock_timeout=5), clock)
    results: list[str] = []
    with anyio.fail_after(10), caplog.at_level(logging.WARNING, logger="planet_async"):
        async with anyio.create_task_group() as tg:
            tg.start_soon(_collect, stalling, results)
            await obtained.wait()
            went_on = await other.header()  # after the stalled lease lapsed
            go_on.set()
    assert results == [went_on]
    assert _stored(redis) == went_on
    assert peer.grants("client_credentials") == 2
    assert "the lock lapsed during the renewal" in caplog.text


# -- Redis paused --------------------------------------------------------------------------------


async def test_waits_end_while_redis_is_paused_and_one_refresh_follows(
    peer: Peer, start_redis: Callable[..., RedisServer]
) -> None:
    """Redis paused for longer than a lease, with one manager holding the lease and two waiting
    for it: every wait ends in a StorageError within two Redis timeouts (the lock, then the read
    of the stored session), nobody refreshes, and after Redis resumes the three renew with one
    refresh request and no error at the peer."""
    server = start_redis()
    await device_login_saved(peer.issuer, RedisStorage(server.url), SESSION)
    peer.reset()
    clock = FakeClock(start=time.time())
    options: dict[str, Any] = {"lease": LEASE, "timeout": TIMEOUT, "lock_timeout": 5}
    holding = WatchedStorage(server.url, **options)
    storages = [holding, RedisStorage(server.url, **options), RedisStorage(server.url, **options)]
    managers = [_manager(_user(peer), storage, clock) for storage in storages]
    login = (await _headers(*managers))[0]

    clock.advance(EXPIRED)
    holding.hold()
    outcomes: dict[int, tuple[str, float]] = {}

    async def attempt(index: int) -> None:
        outcomes[index] = await _outcome(managers[index])

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(attempt, 0)
            await holding.entered.wait()
            server.pause()
            paused = time.monotonic()
            holding.go_on.set()
            tg.start_soon(attempt, 1)
            tg.start_soon(attempt, 2)
    stalled = time.monotonic() - paused
    server.resume()
    print(
        f"\nRedis paused {stalled:.3f} s (lease {LEASE:g} s, timeout {TIMEOUT:g} s): waits ended"
        f" after {', '.join(f'{took:.3f}' for _, took in outcomes.values())} s"
    )
    assert stalled > LEASE
    for result, took in outcomes.values():
        assert result.startswith("StorageError: cannot ")
        assert f"in {server.url}: no answer within {TIMEOUT:g} s" in result
        assert took <= 2 * TIMEOUT + SLACK
    assert peer.grants("refresh_token") == 0

    clock.advance(PAST_BACKOFF)
    with anyio.fail_after(10):
        headers = await _headers(*managers)
    assert len(set(headers)) == 1
    assert headers[0] != login
    assert peer.grants("refresh_token") == 1
    assert peer.errors() == {}
    assert _stored(server) == headers[0]


async def test_a_refresh_in_flight_while_redis_is_paused_longer_than_the_lease(
    peer: Peer, start_redis: Callable[..., RedisServer]
) -> None:
    """The lease holder's refresh is in flight while Redis is paused for longer than the lease:
    after Redis resumes, the manager waiting for the lease does not spend the refresh token the
    holder already spent (it finds the holder's mark, and waits), the holder saves its rotated
    token on its next call, and the waiter then uses it: one refresh request, no error at the
    peer."""
    server = start_redis()
    await device_login_saved(peer.issuer, RedisStorage(server.url), SESSION)
    peer.reset()
    clock = FakeClock(start=time.time())
    paused = anyio.Event()

    class PausingGrant(RefreshTokenGrant):
        """Pauses Redis for longer than a lease while its refresh request is in flight."""

        async def renew(self, current: Any, *, clock: Callable[[], float]) -> Any:
            server.pause()
            started = time.monotonic()
            paused.set()
            try:
                token = await super().renew(current, clock=clock)
                await anyio.sleep(LEASE + 0.2 - (time.monotonic() - started))
            finally:
                server.resume()
            return token

    pausing = PausingGrant(AuthorizationServer(peer.issuer), PublicClient(client_id="native-app"))
    holder = _manager(pausing, RedisStorage(server.url, lease=LEASE, timeout=2), clock)
    waiter = _manager(_user(peer), RedisStorage(server.url, lease=LEASE, timeout=2), clock)
    assert await holder.header() == await waiter.header()
    clock.advance(EXPIRED)
    outcomes: list[tuple[str, float]] = []

    async def attempt(manager: TokenManager) -> None:
        outcomes.append(await _outcome(manager))

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(attempt, holder)
            await paused.wait()
            tg.start_soon(attempt, waiter)
    assert peer.errors() == {}, outcomes
    assert peer.grants("refresh_token") == 1
    renewed = next(result for result, _ in outcomes if result.startswith("Bearer "))
    assert any("another process is renewing it" in result for result, _ in outcomes), outcomes
    assert _stored(server) != renewed  # the holder's save was fenced off

    clock.advance(5)  # past the wait between save attempts, well before the token's renewal
    with anyio.fail_after(10):
        assert await holder.header() == renewed  # saves it first, and it is still fresh
        assert _stored(server) == renewed
        assert await waiter.header() == renewed
    assert peer.grants("refresh_token") == 1
    assert peer.errors() == {}


# -- a failed renewal leaves no mark behind ---------------------------------------------------


def _mark(server: RedisServer) -> object:
    raw = server.call("GET", TOKEN_KEY)
    return None if raw is None else json.loads(raw).get("_planet_async_renewing")


async def test_a_refresh_that_fails_with_a_5xx_lets_the_next_process_renew(
    peer: Peer, redis: RedisServer
) -> None:
    """The first process's refresh is answered 503 (its refresh token never reaches the
    provider): it puts the stored session back without its renewing mark, so a second process
    with a storage of its own renews at once with the same refresh token (one grant, no
    invalid_grant) instead of getting StorageError for the mark's two minutes."""
    clock = FakeClock(start=time.time())
    await device_login_saved(peer.issuer, RedisStorage(redis.url), SESSION)
    first = _manager(_user(peer), RedisStorage(redis.url, lease=LEASE), clock)
    second = _manager(_user(peer), RedisStorage(redis.url, lease=LEASE), clock)
    clock.advance(EXPIRED)
    peer.reset()
    peer.fail_next_token_requests(1)
    with anyio.fail_after(10):
        with pytest.raises(AuthServerUnavailable):
            await first.header()
        assert _mark(redis) is None
        renewed = await second.header()
    assert peer.injected_failures() == 1
    assert peer.grants("refresh_token") == 1
    assert peer.errors() == {}
    assert _stored(redis) == renewed
    assert _mark(redis) is None


async def test_a_refused_refresh_token_gives_the_next_process_the_real_error(
    peer: Peer, redis: RedisServer
) -> None:
    """The server refuses the refresh token (revoked: invalid_grant) in the first process: the
    second process meets the same typed error, InvalidGrantError, not a StorageError about a
    renewal that is not happening."""
    clock = FakeClock(start=time.time())
    token = await device_login_saved(peer.issuer, RedisStorage(redis.url), SESSION)
    assert token.refresh_token is not None
    await revoke_token(
        AuthorizationServer(peer.issuer),
        PublicClient(client_id="native-app"),
        token.refresh_token.get_secret_value(),
        hint="refresh_token",
        clock=time.time,
    )
    first = _manager(_user(peer), RedisStorage(redis.url, lease=LEASE), clock)
    second = _manager(_user(peer), RedisStorage(redis.url, lease=LEASE), clock)
    clock.advance(EXPIRED)
    peer.reset()
    with anyio.fail_after(10):
        with pytest.raises(InvalidGrantError):
            await first.header()
        assert _mark(redis) is None
        with pytest.raises(InvalidGrantError):
            await second.header()
    assert peer.errors() == {"refresh_token:invalid_grant": 2}


# -- a store that comes back empty -------------------------------------------------------------

SOFT = 48  # seconds into a 60 s token: past every soft threshold, before the hard one (54 s)


async def _renewed_by_one_then_lost(
    peer: Peer, server: RedisServer, clock: FakeClock, *, lost_session_wait: float | None
) -> tuple[TokenManager, TokenManager, str, str]:
    """Two managers on a logged-in rotating user session; `newest` renews it (1 refresh grant),
    so it alone holds the newest refresh token; then Redis restarts without its data. Returns
    the managers, the login's header (what `older` still holds) and the renewed one."""
    await device_login_saved(peer.issuer, RedisStorage(server.url), SESSION)

    def manager() -> TokenManager:
        storage = RedisStorage(server.url, lease=LEASE, timeout=TIMEOUT)
        return TokenManager(
            _user(peer),
            storage=storage,
            session=SESSION,
            clock=clock,
            lost_session_wait=lost_session_wait,
        )

    newest, older = manager(), manager()
    login = await newest.header()
    assert await older.header() == login
    clock.advance(SOFT)
    peer.reset()
    with anyio.fail_after(10):
        renewed = await newest.header()  # generation 2, held by `newest` alone after the restart
    assert renewed != login
    assert peer.grants("refresh_token") == 1
    server.stop()
    server.start()
    assert server.call("KEYS", "*") == []
    return newest, older, login, renewed


async def test_a_store_that_comes_back_empty_keeps_the_newest_refresh_token(
    peer: Peer, start_redis: Callable[..., RedisServer], caplog: pytest.LogCaptureFixture
) -> None:
    """Two processes on a rotating user session; one renewed last (it alone holds the newest
    refresh token), then Redis restarts without its data. The other, holding the older refresh
    token, finds the store empty first: with `lost_session_wait` it stores its copy again,
    marked, and does not spend it (its token keeps serving; past expiry its callers get
    StorageError). At its own renewal the holder of the newest copy writes it back over the
    marked older one and renews with it; the other then adopts the result. One refresh grant,
    0 invalid_grant: the session survives."""
    server = start_redis()  # keeps nothing over a restart
    clock = FakeClock(start=time.time())
    newest, older, login, renewed = await _renewed_by_one_then_lost(
        peer, server, clock, lost_session_wait=60
    )

    with anyio.fail_after(10), caplog.at_level(logging.WARNING, logger="planet_async"):
        assert await older.header() == login  # stored again, not spent; its token still serves
        assert "stored it again" in caplog.text
        clock.advance(10)  # past the older token's expiry, within the wait
        with pytest.raises(StorageError, match="not spent for another"):
            await older.header()
        clock.advance(SOFT - 10)  # the newest copy's renewal point
        third = await newest.header()
        clock.advance(PAST_BACKOFF / 100)  # past the short wait between store attempts
        assert await older.header() == third
    assert third != renewed
    assert _stored(server) == third
    assert peer.grants("refresh_token") == 2
    assert peer.errors() == {}


async def test_a_lone_holder_of_a_lost_session_renews_it_once_the_wait_is_over(
    peer: Peer, start_redis: Callable[..., RedisServer]
) -> None:
    """With nobody holding a newer copy, the process that stored the session again renews it
    from its copy once `lost_session_wait` is over: one refresh grant, no error; until then it
    spends nothing."""
    server = start_redis()
    await device_login_saved(peer.issuer, RedisStorage(server.url), SESSION)
    clock = FakeClock(start=time.time())
    storage = RedisStorage(server.url, lease=LEASE, timeout=TIMEOUT)
    alone = TokenManager(
        _user(peer), storage=storage, session=SESSION, clock=clock, lost_session_wait=30
    )
    login = await alone.header()
    server.stop()
    server.start()
    peer.reset()
    clock.advance(SOFT)
    with anyio.fail_after(10):
        assert await alone.header() == login  # stored again; the token still serves
        clock.advance(EXPIRED - SOFT)
        with pytest.raises(StorageError, match="not spent for another"):
            await alone.header()
        assert peer.grants("refresh_token") == 0
        clock.advance(30)
        renewed = await alone.header()
    assert renewed != login
    assert _stored(server) == renewed
    assert peer.grants("refresh_token") == 1
    assert peer.errors() == {}


async def test_by_default_the_holder_of_an_older_refresh_token_asks_before_spending_it(
    peer: Peer, start_redis: Callable[..., RedisServer]
) -> None:
    """The same store that comes back empty, without `lost_session_wait`. The process holding
    the older refresh token asks the server whether it is still active (introspection, which
    spends nothing): it was rotated, so it is not spent; that process's callers get
    `LoginRequired` once its token expires. The holder of the newest copy finds the store
    empty at its own renewal point, asks too (active), renews and stores the result; the other
    adopts it. Two refresh grants in all, 0 invalid_grant: the session survives."""
    server = start_redis()  # keeps nothing over a restart
    clock = FakeClock(start=time.time())
    newest, older, login, renewed = await _renewed_by_one_then_lost(
        peer, server, clock, lost_session_wait=None
    )

    with anyio.fail_after(10):
        assert await older.header() == login  # its renewal ahead of time fails; it still serves
        assert (peer.grants("refresh_token"), peer.introspections()) == (1, 1)
        clock.advance(10)  # past the older token's expiry and the first backoff
        with pytest.raises(LoginRequired, match="reports this process's refresh token inactive"):
            await older.header()
        assert (peer.grants("refresh_token"), peer.introspections()) == (1, 2)
        assert server.call("KEYS", "*") == []  # nothing stored, nothing spent
        clock.advance(SOFT - 10)  # the newest copy's renewal point
        third = await newest.header()
        assert (peer.grants("refresh_token"), peer.introspections()) == (2, 3)
        clock.advance(PAST_BACKOFF / 10)  # past the server backoff after two failures
        assert await older.header() == third
    assert third not in (login, renewed)
    assert _stored(server) == third
    assert peer.grants("refresh_token") == 2
    assert peer.introspections() == 3
    assert peer.errors() == {}


async def test_by_default_a_lone_holder_of_a_lost_session_renews_it_at_once(
    peer: Peer, start_redis: Callable[..., RedisServer]
) -> None:
    """Alone with the session when the store comes back empty, a process asks the server about
    its refresh token (active: nobody renewed with it) and renews from memory at its renewal
    point, with no wait: one introspection, one refresh grant, the result stored."""
    server = start_redis()
    await device_login_saved(peer.issuer, RedisStorage(server.url), SESSION)
    clock = FakeClock(start=time.time())
    storage = RedisStorage(server.url, lease=LEASE, timeout=TIMEOUT)
    alone = TokenManager(_user(peer), storage=storage, session=SESSION, clock=clock)
    login = await alone.header()
    server.stop()
    server.start()
    peer.reset()
    clock.advance(SOFT)
    with anyio.fail_after(10):
        renewed = await alone.header()
    assert renewed != login
    assert _stored(server) == renewed
    assert (peer.grants("refresh_token"), peer.introspections()) == (1, 1)
    assert peer.errors() == {}
