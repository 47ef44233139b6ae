"""A store's bad day (issue 18), on real redis-servers and the real authorization server.

- Redis unreachable when a process starts: an M2M session still gets its token (uncoordinated,
  with a WARNING); a user session raises StorageError and spends no refresh token.
- A store outage does not spend the authorization server's backoff: once the token expires an
  M2M session renews at once, with one token request per renewal point.
- Many readers of one corrupt stored value: one moves it aside, the others treat the session as
  absent, and a late mover never moves aside a valid session stored meanwhile (Redis and files).
- Stored sessions expire in Redis (retention), refreshed on every save; leases keep their own.

Token requests are counted at the peer; its rotating refresh tokens revoke the whole grant when an
old one comes back, so zero errors at the peer proves no refresh token was spent twice. Managers
read a `FakeClock`, so tokens expire when a test says so.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from planet_async import (
    AuthorizationServer,
    ClientCredentialsGrant,
    ClientSecretBasic,
    FileStorage,
    PlanetAuthError,
    PublicClient,
    RedisStorage,
    RefreshTokenGrant,
    StorageError,
    TokenEvent,
    TokenManager,
    TokenSet,
)
from tests._browser import device_login_saved
from tests._helpers import FakeClock
from tests._peer import Peer
from tests._redis import RedisServer

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("redis_connections_fail")]

SESSION = "fleet"
TOKEN_KEY = "planet_async:{fleet}:token"
LOCK_KEY = "planet_async:{fleet}:lock"
TIMEOUT = 0.5  # seconds any one Redis call may take, in these tests
VALID = 30  # seconds into a token's 60 s life: before any renewal is due
EXPIRED = 61  # seconds: past the peer's access token lifetime


def _m2m(peer: Peer) -> ClientCredentialsGrant:
    client = ClientSecretBasic(client_id="service-basic", client_secret="service-basic-secret")
    return ClientCredentialsGrant(AuthorizationServer(peer.issuer), client)


def _user(peer: Peer) -> RefreshTokenGrant:
    return RefreshTokenGrant(AuthorizationServer(peer.issuer), PublicClient(client_id="native-app"))


def _manager(grant: Any, storage: Any, clock: FakeClock) -> TokenManager:
    return TokenManager(grant, storage=storage, session=SESSION, clock=clock)


def _stored(server: RedisServer) -> str | None:
    raw = server.call("GET", TOKEN_KEY)
    return None if raw is None else f"Bearer {json.loads(raw)['access_token']}"


def _uncoordinated(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "without coordination" in r.getMessage()]


async def _outcome(manager: TokenManager) -> str:
    try:
        return await manager.header()
    except PlanetAuthError as exc:
        return f"{type(exc).__name__}: {exc}"


# -- Redis down when the process starts ---------------------------------------------------------


async def test_m2m_gets_a_token_with_redis_down_at_start(
    peer: Peer, start_redis: Callable[..., RedisServer], caplog: pytest.LogCaptureFixture
) -> None:
    """A process started while Redis is down gets its M2M token: 50 callers at once, one token
    request, one WARNING saying it renews without coordination; later calls cost nothing more.
    When Redis comes up, the next renewal is coordinated and stored for the others again."""
    server = start_redis()
    server.stop()
    clock = FakeClock(start=time.time())
    manager = _manager(_m2m(peer), RedisStorage(server.url, timeout=TIMEOUT), clock)
    headers: list[str] = []

    async def ask() -> None:
        headers.append(await manager.header())

    with caplog.at_level(logging.WARNING, logger="planet_async"):
        async with anyio.create_task_group() as tg:
            for _ in range(50):
                tg.start_soon(ask)
        first = headers[0]
        assert headers == [first] * 50
        assert [await manager.header() for _ in range(3)] == [first] * 3
    assert peer.grants("client_credentials") == 1
    (warning,) = _uncoordinated(caplog)
    assert f"cannot read session 'fleet' in {server.url}" in warning

    server.start()
    clock.advance(EXPIRED)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="planet_async"):
        renewed = await manager.header()
    assert _uncoordinated(caplog) == []
    assert peer.grants("client_credentials") == 2
    assert _stored(server) == renewed != first


async def test_user_session_with_redis_down_at_start_is_a_storage_error(
    peer: Peer, start_redis: Callable[..., RedisServer]
) -> None:
    """A user session started while Redis is down raises StorageError naming the store, and
    spends nothing; when Redis is up again it uses the stored session, and refreshes once."""
    server = start_redis("--appendonly", "yes", "--appendfsync", "always")
    await device_login_saved(peer.issuer, RedisStorage(server.url), SESSION)
    peer.reset()
    server.stop()
    clock = FakeClock(start=time.time())
    manager = _manager(_user(peer), RedisStorage(server.url, timeout=TIMEOUT), clock)
    for _ in range(3):
        with pytest.raises(StorageError, match=f"in {server.url}"):
            await manager.header()
        clock.advance(10)  # past the short wait between attempts on the store
    assert manager.renewals == 0
    assert peer.grants("refresh_token") == 0

    server.start()
    login = await manager.header()  # the stored login, still valid
    assert peer.grants("refresh_token") == 0
    clock.advance(EXPIRED)
    renewed = await manager.header()
    assert renewed != login
    assert peer.grants("refresh_token") == 1
    assert peer.errors() == {}


# -- a store outage does not spend the server's backoff -----------------------------------------


class _Highest(random.Random):
    """Jitter at its highest: every backoff is its full length."""

    def random(self) -> float:
        return 0.999


@pytest.mark.parametrize("end", ["stop", "kill"])
async def test_an_outage_in_the_renew_ahead_window_costs_no_server_backoff(
    end: str, peer: Peer, start_redis: Callable[..., RedisServer]
) -> None:
    """Redis down (stopped, or killed) through the last minutes of an hour-long token's
    renew-ahead window, with a caller every second: each failed lock attempt keeps the token
    serving, and none stretches the wait (with the server's backoff, 8 of them would put the
    next attempt two minutes out);
    once the token is past its hard threshold the next call renews at once, uncoordinated, with
    one token request for this renewal point."""
    peer.set_access_token_ttl(3600)
    server = start_redis()
    clock = FakeClock(start=time.time())
    storage = RedisStorage(server.url, timeout=TIMEOUT)
    manager = TokenManager(
        _m2m(peer), storage=storage, session=SESSION, clock=clock, rng=_Highest()
    )
    first = await manager.header()
    getattr(server, end)()  # stopped, or killed (SIGKILL)
    clock.advance(3400)  # renew-ahead started at 2340 s; the hard threshold is at 3570 s
    for _ in range(170):
        assert await manager.header() == first
        clock.advance(1)
    assert peer.grants("client_credentials") == 1
    clock.advance(1)  # 3571 s: past the hard threshold, the token is handed out no more
    outcomes = [await _outcome(manager) for _ in range(5)]
    assert outcomes[0].startswith("Bearer "), outcomes[0]
    assert outcomes == [outcomes[0]] * 5
    assert outcomes[0] != first
    assert peer.grants("client_credentials") == 2  # one request for this renewal point


class Settled:
    """A listener that tells when every renewal started has ended (background ones included)."""

    def __init__(self) -> None:
        self.started = self.ended = 0
        self.event = anyio.Event()
        self.event.set()

    def __call__(self, event: TokenEvent) -> None:
        if event.kind == "renewal_started":
            self.started += 1
            if self.event.is_set():
                self.event = anyio.Event()
        elif event.kind in ("renewal_succeeded", "renewal_failed"):
            self.ended += 1
            if self.ended == self.started:
                self.event.set()


async def test_background_renewals_in_an_outage_cost_no_server_backoff(
    peer: Peer, start_redis: Callable[..., RedisServer]
) -> None:
    """The same with the manager entered (`async with`), so that each call past the soft
    threshold starts a renewal in the background, as applications run it: every background
    attempt fails on the store, the token keeps serving, and past the hard threshold the next
    call renews at once with one token request."""
    peer.set_access_token_ttl(3600)
    server = start_redis()
    clock = FakeClock(start=time.time())
    settled = Settled()
    manager = TokenManager(
        _m2m(peer),
        storage=RedisStorage(server.url, timeout=TIMEOUT),
        session=SESSION,
        clock=clock,
        rng=_Highest(),
        on_event=settled,
    )
    async with manager:
        first = await manager.header()
        server.stop()
        clock.advance(3400)
        for _ in range(170):
            assert await manager.header() == first
            with anyio.fail_after(10):
                await settled.event.wait()
            clock.advance(1)
        assert settled.started > 8  # attempted in the background, over and over
        assert peer.grants("client_credentials") == 1
        clock.advance(1)
        outcomes = [await _outcome(manager) for _ in range(5)]
    assert outcomes[0].startswith("Bearer "), outcomes[0]
    assert outcomes == [outcomes[0]] * 5 != [first] * 5
    assert peer.grants("client_credentials") == 2


async def test_m2m_renews_while_redis_is_paused(
    peer: Peer, start_redis: Callable[..., RedisServer]
) -> None:
    """Redis paused (SIGSTOP) when the M2M token expires: the lock attempt times out, and the
    session renews uncoordinated: one token request; calls after it are answered from memory."""
    server = start_redis()
    clock = FakeClock(start=time.time())
    manager = _manager(_m2m(peer), RedisStorage(server.url, timeout=TIMEOUT), clock)
    first = await manager.header()
    server.pause()
    try:
        clock.advance(EXPIRED)
        with anyio.fail_after(10):
            renewed = await manager.header()
            assert [await manager.header() for _ in range(3)] == [renewed] * 3
    finally:
        server.resume()
    assert renewed != first
    assert peer.grants("client_credentials") == 2


async def test_a_user_session_never_spends_its_refresh_token_during_an_outage(
    peer: Peer, start_redis: Callable[..., RedisServer]
) -> None:
    """Two processes sharing a user session through an outage that outlasts its token: neither
    refreshes while Redis is down (StorageError); when it is back, one refresh between them."""
    server = start_redis("--appendonly", "yes", "--appendfsync", "always")
    await device_login_saved(peer.issuer, RedisStorage(server.url), SESSION)
    peer.reset()
    clock = FakeClock(start=time.time())
    managers = [
        _manager(_user(peer), RedisStorage(server.url, timeout=TIMEOUT), clock) for _ in range(2)
    ]
    login = {await m.header() for m in managers}
    server.stop()
    for _ in range(6):
        clock.advance(15)
        for manager in managers:
            await _outcome(manager)
    assert peer.grants("refresh_token") == 0
    server.start()
    clock.advance(10)
    headers = {await m.header() for m in managers}
    assert len(headers) == 1
    assert headers != login
    assert peer.grants("refresh_token") == 1
    assert peer.errors() == {}


# -- a corrupt stored value and many readers ----------------------------------------------------


class Meeting:
    """Where `expected` readers meet before any goes on: `here` is set once all have arrived,
    and they wait for `go`."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.arrived = 0
        self.here = anyio.Event()
        self.go = anyio.Event()

    async def arrive(self) -> None:
        self.arrived += 1
        if self.arrived >= self.expected:
            self.here.set()
        await self.go.wait()


class GatedRedisStorage(RedisStorage):
    """Stops every move-aside at a `Meeting`, so that readers meet there."""

    def __init__(self, *args: Any, meeting: Meeting, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.meeting = meeting

    async def _move_aside(self, *args: Any) -> Any:
        await self.meeting.arrive()
        return await super()._move_aside(*args)


async def test_many_readers_of_one_corrupt_value(
    redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Four readers (four storages, as four processes) read one corrupt value and move it aside
    at once: one moves it (one WARNING), every reader gets None, none an error."""
    redis.call("SET", TOKEN_KEY, b"\x00 not json")
    meeting = Meeting(4)
    storages = [GatedRedisStorage(redis.url, meeting=meeting) for _ in range(4)]
    results: list[object] = []

    async def read(storage: RedisStorage) -> None:
        try:
            results.append(await storage.load(SESSION))
        except StorageError as exc:
            results.append(exc)

    with caplog.at_level(logging.WARNING, logger="planet_async"), anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            for storage in storages:
                tg.start_soon(read, storage)
            await meeting.here.wait()
            meeting.go.set()
    assert results == [None] * 4
    assert redis.call("EXISTS", TOKEN_KEY) == 0
    assert len(redis.call("KEYS", f"{TOKEN_KEY}.corrupt-*")) == 1
    assert len([r for r in caplog.records if "was corrupt" in r.getMessage()]) == 1


async def test_a_late_mover_leaves_a_valid_session_alone(redis: RedisServer) -> None:
    """A reader that read a corrupt value, and moves it aside only after another process stored
    a valid session, leaves that session where it is and loads it."""
    redis.call("SET", TOKEN_KEY, b"corrupt")
    meeting = Meeting(1)
    late = GatedRedisStorage(redis.url, meeting=meeting)
    valid = TokenSet(access_token="valid-at", issued_at=time.time(), refresh_token="valid-rt")
    loaded: list[TokenSet | None] = []

    async def read() -> None:
        loaded.append(await late.load(SESSION))

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(read)
            await meeting.here.wait()
            await RedisStorage(redis.url).save(SESSION, valid)
            meeting.go.set()
    assert _stored(redis) == "Bearer valid-at"
    assert redis.call("KEYS", f"{TOKEN_KEY}.corrupt-*") == []
    (token,) = loaded
    assert token is not None
    assert token.access_token.get_secret_value() == "valid-at"


@pytest.mark.parametrize("kind", ["m2m", "user"])
async def test_managers_meeting_a_corrupt_value_renew_once(
    kind: str, peer: Peer, redis: RedisServer
) -> None:
    """Three managers (three storages) start on a corrupt stored session and meet at its move
    aside: none fails; an M2M session is obtained once and shared. A user session has nothing to
    refresh with: each asks for a login (LoginRequired), none spends a refresh token."""
    redis.call("SET", TOKEN_KEY, b"[]")
    meeting = Meeting(3)
    clock = FakeClock(start=time.time())
    grant = _m2m if kind == "m2m" else _user
    managers = [
        _manager(grant(peer), GatedRedisStorage(redis.url, meeting=meeting), clock)
        for _ in range(3)
    ]
    results: list[str] = []

    async def ask(manager: TokenManager) -> None:
        results.append(await _outcome(manager))

    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            for manager in managers:
                tg.start_soon(ask, manager)
            await meeting.here.wait()
            meeting.go.set()
    assert not any(r.startswith("StorageError") for r in results), results
    if kind == "m2m":
        assert len(set(results)) == 1
        assert results[0].startswith("Bearer ")
        assert peer.grants("client_credentials") == 1
        assert _stored(redis) == results[0]
    else:
        assert all(r.startswith("LoginRequired") for r in results), results
        assert peer.grants("refresh_token") == 0


class GatedFileStorage(FileStorage):
    """Stops every move-aside (in its worker thread) until `go` is set."""

    def __init__(self, *args: Any, go: threading.Event, arrived: threading.Semaphore) -> None:
        super().__init__(*args)
        self.go = go
        self.arrived = arrived

    def _move_aside(self, *args: Any) -> Any:  # type: ignore[override]
        self.arrived.release()
        assert self.go.wait(10)
        return FileStorage._move_aside(*args)


async def test_file_readers_of_one_corrupt_file(tmp_path: Path) -> None:
    """Three readers of one corrupt token.json meet at its move-aside: one moves it, all get
    None, none an error."""
    path = tmp_path / SESSION / "token.json"
    path.parent.mkdir()
    path.write_text("not json")
    go, arrived = threading.Event(), threading.Semaphore(0)
    results: list[object] = []

    async def read() -> None:
        storage = GatedFileStorage(tmp_path, go=go, arrived=arrived)
        try:
            results.append(await storage.load(SESSION))
        except StorageError as exc:
            results.append(exc)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(read)
            for _ in range(3):
                await anyio.to_thread.run_sync(arrived.acquire)
            go.set()
    assert results == [None] * 3
    assert not path.exists()
    assert len(list(path.parent.glob("token.json.corrupt-*"))) == 1


async def test_a_late_file_mover_leaves_a_valid_session_alone(tmp_path: Path) -> None:
    """A reader that read a corrupt token.json, and moves it aside only after another process
    saved a valid session, leaves that session in place and loads it."""
    path = tmp_path / SESSION / "token.json"
    path.parent.mkdir()
    path.write_text("not json")
    go, arrived = threading.Event(), threading.Semaphore(0)
    late = GatedFileStorage(tmp_path, go=go, arrived=arrived)
    valid = TokenSet(access_token="valid-at", issued_at=time.time(), refresh_token="valid-rt")
    loaded: list[TokenSet | None] = []

    async def read() -> None:
        loaded.append(await late.load(SESSION))

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(read)
            await anyio.to_thread.run_sync(arrived.acquire)
            await FileStorage(tmp_path).save(SESSION, valid)
            go.set()
    assert json.loads(path.read_text())["access_token"] == "valid-at"
    assert list(path.parent.glob("token.json.corrupt-*")) == []
    (token,) = loaded
    assert token is not None
    assert token.access_token.get_secret_value() == "valid-at"


# -- retention ----------------------------------------------------------------------------------


def _ttl(server: RedisServer, key: str = TOKEN_KEY) -> float:
    return int(server.call("PTTL", key)) / 1000


async def test_stored_sessions_expire_after_the_retention(redis: RedisServer) -> None:
    """A saved session gets a TTL: 30 days by default, `retention=` seconds when given (as an
    argument or a URL parameter), none with retention=None; each save sets it again; the lease
    keeps its own."""
    token = TokenSet(access_token="at", issued_at=time.time(), refresh_token="rt")
    default = RedisStorage(redis.url, lease=5)
    async with default.lock(SESSION):
        await default.save(SESSION, token)
        assert 0 < _ttl(redis, LOCK_KEY) <= 5
    assert 30 * 86400 - 60 < _ttl(redis) <= 30 * 86400

    await RedisStorage(redis.url, retention=3600).save(SESSION, token)
    assert 3600 - 60 < _ttl(redis) <= 3600
    redis.call("PEXPIRE", TOKEN_KEY, "5000")
    await RedisStorage(redis.url + "?retention=2h").save(SESSION, token)
    assert 7200 - 60 < _ttl(redis) <= 7200
    await RedisStorage(redis.url, retention=None).save(SESSION, token)
    assert _ttl(redis) == -0.001  # PTTL -1: no expiry


async def test_retention_follows_the_refresh_tokens_lifetime(
    peer: Peer, redis: RedisServer
) -> None:
    """Where the server says how long the refresh token lasts (`refresh_expires_in`, as Keycloak
    and Planet send), the stored session is kept that long, from each refresh on."""
    peer.set_refresh_expires_in(7200)
    await device_login_saved(peer.issuer, RedisStorage(redis.url), SESSION)
    assert 7200 - 60 < _ttl(redis) <= 7200
    redis.call("PEXPIRE", TOKEN_KEY, "600000")
    clock = FakeClock(start=time.time())
    manager = _manager(_user(peer), RedisStorage(redis.url), clock)
    await manager.header()
    await manager.renew()
    assert 7200 - 60 < _ttl(redis) <= 7200
    assert peer.grants("refresh_token") == 1


async def test_a_moved_aside_value_expires_too(redis: RedisServer) -> None:
    """A corrupt value moved aside is kept for the retention, not forever."""
    redis.call("SET", TOKEN_KEY, b"corrupt")
    assert await RedisStorage(redis.url, retention=600).load(SESSION) is None
    (aside,) = redis.call("KEYS", "*")
    assert 540 < _ttl(redis, aside.decode()) <= 600
