"""A storage that fails never ends a session: tokens obtained are kept, saved later, and used.

These are the faults a real disk or service will not produce on demand (a save that fails once, a
lock that cannot be taken); tests/test_readonly_storage.py has the same cases on real read-only
directories against the real authorization server.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import httpx
import pytest

from planet_async import AuthServerUnavailable, MemoryStorage, StorageError, TokenSet
from tests._helpers import FakeClock
from tests.test_manager import FakeTokenEndpoint, m2m_manager, refresh_manager, token

pytestmark = pytest.mark.anyio

MANAGER_LOG = "planet_async._manager"


class FaultyStorage(MemoryStorage):
    """Memory storage whose saves, loads or locks fail while told to, with any exception."""

    def __init__(self) -> None:
        super().__init__()
        self.failing_saves = 0
        self.save_error: Exception = OSError(28, "No space left on device")
        self.failing_loads = False
        self.failing_lock = False
        self.saves: list[str] = []

    async def save(self, session: str, token: TokenSet) -> None:
        self.saves.append(token.access_token.get_secret_value())
        if self.failing_saves:
            self.failing_saves -= 1
            raise self.save_error
        await super().save(session, token)

    async def load(self, session: str) -> TokenSet | None:
        if self.failing_loads:
            raise ConnectionError("storage service unreachable")
        return await super().load(session)

    @asynccontextmanager
    async def lock(self, session: str) -> AsyncIterator[None]:
        if self.failing_lock:
            raise StorageError("cannot open the lock file: Permission denied")
        async with super().lock(session):
            yield

    def stored(self) -> str | None:
        found = self._tokens.get("default")
        return found.access_token.get_secret_value() if found else None


def rotating(clock: FakeClock, storage: FaultyStorage) -> tuple[FakeTokenEndpoint, object]:
    endpoint = FakeTokenEndpoint(clock)
    endpoint.rotate = True
    return endpoint, refresh_manager(endpoint, storage)


async def test_a_token_that_cannot_be_saved_serves_and_is_saved_before_the_next_renewal(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A renewal whose save fails still serves; the next renewal first saves it, then renews
    with its (rotated) refresh token, never with the spent one in storage."""
    clock = FakeClock()
    storage = FaultyStorage()
    await storage.save("default", token("at-0", clock, age=200, refresh_token="rt-1"))
    endpoint, manager = rotating(clock, storage)
    storage.failing_saves = 1
    with caplog.at_level(logging.INFO, logger=MANAGER_LOG):
        assert await manager.header() == "Bearer at-1"
    assert storage.stored() == "at-0"  # the save failed
    assert await manager.header() == "Bearer at-1"
    clock.advance(100)
    with caplog.at_level(logging.INFO, logger=MANAGER_LOG):
        assert await manager.header() == "Bearer at-2"
    assert [form["refresh_token"] for form in endpoint.forms] == ["rt-1", "rt-2"]
    assert storage.saves == ["at-0", "at-1", "at-1", "at-2"]
    assert storage.stored() == "at-2"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "could not save" in warnings[0].getMessage()
    assert "No space left on device" in warnings[0].getMessage()
    assert any("saved the session" in r.getMessage() for r in caplog.records)


async def test_one_warning_per_episode_however_many_saves_fail(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """While saves keep failing the session renews from memory, with one WARNING in all."""
    clock = FakeClock()
    storage = FaultyStorage()
    await storage.save("default", token("at-0", clock, age=200, refresh_token="rt-1"))
    endpoint, manager = rotating(clock, storage)
    storage.failing_saves = 100
    with caplog.at_level(logging.WARNING, logger=MANAGER_LOG):
        for expected in range(1, 5):
            assert await manager.header() == f"Bearer at-{expected}"
            clock.advance(100)
    assert [form["refresh_token"] for form in endpoint.forms] == ["rt-1", "rt-2", "rt-3", "rt-4"]
    assert storage.stored() == "at-0"
    assert len(caplog.records) == 1


async def test_a_newer_stored_session_wins_over_the_unsaved_one() -> None:
    """If another process saved a session after ours could not be saved, it is used, and ours is
    not written over it."""
    clock = FakeClock()
    storage = FaultyStorage()
    await storage.save("default", token("at-0", clock, age=200, refresh_token="rt-1"))
    endpoint, manager = rotating(clock, storage)
    storage.failing_saves = 1
    assert await manager.header() == "Bearer at-1"
    clock.advance(80)
    await MemoryStorage.save(storage, "default", token("elsewhere", clock, refresh_token="rt-x"))
    assert await manager.header() == "Bearer elsewhere"
    assert endpoint.calls == 1
    assert storage.stored() == "elsewhere"
    clock.advance(100)
    assert await manager.header() == "Bearer at-2"
    assert endpoint.forms[-1]["refresh_token"] == "rt-x"


async def test_a_foreign_storage_exception_is_a_storage_error_only_without_a_valid_token() -> None:
    """A storage failing with its own exception type: callers keep the valid token, and get a
    `StorageError` (not a ConnectionError) once none is left."""
    clock = FakeClock()
    endpoint = FakeTokenEndpoint(clock)
    storage = FaultyStorage()
    manager = m2m_manager(endpoint, storage=storage)
    assert await manager.header() == "Bearer at-1"
    storage.failing_loads = True
    clock.advance(80)  # past the soft threshold: renewals fail, the token still serves
    assert await manager.header() == "Bearer at-1"
    clock.advance(30)
    with pytest.raises(StorageError, match="ConnectionError: storage service unreachable"):
        await manager.header()
    assert endpoint.calls == 1


async def test_a_save_error_message_names_no_secret() -> None:
    """A custom storage's error that quotes the token it failed to save is redacted."""
    clock = FakeClock()
    endpoint = FakeTokenEndpoint(clock)
    storage = FaultyStorage()
    storage.save_error = RuntimeError("could not write {'access_token': 'at-1'} to the service")
    storage.failing_saves = 1
    manager = m2m_manager(endpoint, storage=storage)
    await manager.header()
    new = token("login-token", clock, refresh_token="login-refresh")
    storage.save_error = RuntimeError("rejected login-token / login-refresh")
    storage.failing_saves = 1
    with pytest.raises(StorageError) as info:
        await manager.set_token(new)
    assert "login-token" not in str(info.value)
    assert "login-refresh" not in str(info.value)
    assert "RuntimeError: rejected *** / ***" in str(info.value)


async def test_set_token_adopts_the_login_even_when_it_cannot_be_saved() -> None:
    """A login whose save fails raises `StorageError`, but the session works, and is saved
    before its first renewal."""
    clock = FakeClock()
    storage = FaultyStorage()
    endpoint, manager = rotating(clock, storage)
    storage.failing_saves = 1
    with pytest.raises(StorageError, match="No space left"):
        await manager.set_token(token("login", clock, refresh_token="rt-login"))
    assert await manager.header() == "Bearer login"
    assert await manager.is_initialized()
    assert storage.stored() is None
    clock.advance(100)
    assert await manager.header() == "Bearer at-1"
    assert endpoint.forms[-1]["refresh_token"] == "rt-login"
    assert storage.saves == ["login", "login", "at-1"]


async def test_without_the_lock_a_user_session_uses_a_valid_stored_token_and_never_renews() -> None:
    """When the lock cannot be taken, a valid stored token is used; once it has expired, a user
    session gives `StorageError` and requests nothing (its refresh token must not be spent
    twice)."""
    clock = FakeClock()
    storage = FaultyStorage()
    await storage.save("default", token("stored", clock, age=70, refresh_token="rt-1"))
    storage.failing_lock = True
    endpoint, manager = rotating(clock, storage)
    assert await manager.header() == "Bearer stored"
    clock.advance(5)
    assert await manager.header() == "Bearer stored"
    clock.advance(20)  # expired
    with pytest.raises(StorageError, match="Permission denied"):
        await manager.header()
    assert endpoint.calls == 0
    storage.failing_lock = False
    clock.advance(300)  # past the backoff
    assert await manager.header() == "Bearer at-1"
    assert endpoint.forms == [
        {"grant_type": "refresh_token", "refresh_token": "rt-1", "client_id": "native-app"}
    ]


async def test_without_the_lock_an_m2m_session_renews_uncoordinated_and_saves_later(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An M2M session whose storage cannot be locked renews in this process once its token has
    expired, with a WARNING saying so, and saves the token when the storage is back."""
    clock = FakeClock()
    endpoint = FakeTokenEndpoint(clock)
    storage = FaultyStorage()
    await storage.save("default", token("stored", clock, age=95))
    storage.failing_lock = True
    manager = m2m_manager(endpoint, storage=storage)
    with caplog.at_level(logging.WARNING, logger=MANAGER_LOG):
        assert await manager.header() == "Bearer at-1"
    assert endpoint.calls == 1
    assert "renewing without coordination" in caplog.text
    assert storage.stored() == "stored"
    storage.failing_lock = False
    clock.advance(80)  # past the soft threshold: the next renewal saves at-1 first
    assert await manager.header() == "Bearer at-2"
    assert storage.saves[-2:] == ["at-1", "at-2"]


async def test_failing_fast_during_backoff_lets_other_tasks_run() -> None:
    """A caller retrying in a tight loop while renewals back off does not starve the loop:
    every failed call is a checkpoint."""
    clock = FakeClock()
    endpoint = FakeTokenEndpoint(clock)
    endpoint.fail_with = httpx.Response(503)
    manager = m2m_manager(endpoint)
    with pytest.raises(AuthServerUnavailable):
        await manager.header()
    looping = anyio.Event()
    other_ran = anyio.Event()
    seen_by_the_loop: list[bool] = []

    async def retry_in_a_loop() -> None:
        looping.set()
        for _ in range(100):
            with pytest.raises(AuthServerUnavailable):
                await manager.header()
        seen_by_the_loop.append(other_ran.is_set())

    async def other() -> None:
        await looping.wait()  # runnable from here on: only a checkpoint in the loop lets it run
        other_ran.set()

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(retry_in_a_loop)
        tasks.start_soon(other)
    assert seen_by_the_loop == [True]
    assert endpoint.calls == 1  # all in the backoff: fail fast, no new request


async def test_without_the_lock_m2m_renews_only_once_no_valid_token_is_left() -> None:
    """Past the soft threshold a token that still serves is kept: an uncoordinated renewal
    happens only once it has expired."""
    clock = FakeClock()
    endpoint = FakeTokenEndpoint(clock)
    storage = FaultyStorage()
    manager = m2m_manager(endpoint, storage=storage)
    assert await manager.header() == "Bearer at-1"
    storage.failing_lock = True
    clock.advance(80)  # past the soft threshold, before the hard one
    assert await manager.header() == "Bearer at-1"
    assert endpoint.calls == 1
    clock.advance(15)  # expired
    assert await manager.header() == "Bearer at-2"
    assert endpoint.calls == 2


class LeaseStorage(FaultyStorage):
    """A storage whose lock is a lease that can lapse, like RedisStorage's; `lapsed` refuses
    every save but a mark's, as a lease that lapsed during the token request would."""

    lock_can_lapse = True
    lapsed = False

    async def save(self, session: str, token: TokenSet) -> None:
        if self.lapsed and "_planet_async_renewing" not in token.extra:
            self.saves.append(token.access_token.get_secret_value())
            raise StorageError("the lease lapsed before the save")
        await super().save(session, token)


async def test_a_refresh_token_being_spent_elsewhere_is_not_spent_again() -> None:
    """On a lease storage, a renewal first stores a mark naming its refresh token; another
    manager that finds a fresh mark waits instead of spending that token; an old mark, or the
    manager's own, does not hold anyone back."""
    clock = FakeClock()
    storage = LeaseStorage()
    await storage.save("default", token("at-0", clock, age=200, refresh_token="rt-1"))
    endpoint, first = rotating(clock, storage)
    storage.lapsed = True  # the mark is stored, the rotated token is not
    assert await first.header() == "Bearer at-1"
    marked = storage._tokens["default"]
    assert marked.access_token.get_secret_value() == "at-0"
    assert marked.extra["_planet_async_renewing"]["at"] == clock.now

    _, second = rotating(clock, storage)
    second.grant = first.grant
    with pytest.raises(StorageError, match="another process is renewing it"):
        await second.header()
    assert endpoint.calls == 1

    storage.lapsed = False
    clock.advance(5)  # the first saves its token on its next call; the second then uses it
    assert await first.header() == "Bearer at-1"
    assert storage.stored() == "at-1"
    clock.advance(300)
    assert await second.header() == "Bearer at-2"
    assert [form["refresh_token"] for form in endpoint.forms] == ["rt-1", "rt-2"]


async def test_an_old_mark_does_not_hold_the_session_forever() -> None:
    """A mark left by a process that died is ignored once it is two minutes old."""
    clock = FakeClock()
    storage = LeaseStorage()
    mark = {"_planet_async_renewing": {"by": "gone", "at": clock.now - 121}}
    await storage.save("default", token("at-0", clock, age=200, refresh_token="rt-1", extra=mark))
    endpoint, manager = rotating(clock, storage)
    assert await manager.header() == "Bearer at-1"
    assert endpoint.calls == 1


async def test_file_like_storages_get_no_mark() -> None:
    """A lock that cannot lapse (files, memory) needs no mark: one save per renewal."""
    clock = FakeClock()
    storage = FaultyStorage()
    await storage.save("default", token("at-0", clock, age=200, refresh_token="rt-1"))
    _, manager = rotating(clock, storage)
    await manager.header()
    assert storage.saves == ["at-0", "at-1"]


async def test_leaving_the_manager_does_not_cancel_a_token_request_in_flight() -> None:
    """A renewal whose request is in flight when `async with manager` ends is finished and saved
    (a rotated refresh token sent to the server must not be lost with its answer)."""
    clock = FakeClock()
    storage = FaultyStorage()
    await storage.save("default", token("at-0", clock, age=10, refresh_token="rt-1"))
    endpoint, manager = rotating(clock, storage)
    gate = endpoint.hold()
    left = anyio.Event()

    async def use_and_leave() -> None:
        async with manager:
            assert await manager.header() == "Bearer at-0"
            clock.advance(70)  # past the soft threshold: a background renewal starts
            assert manager.header_nowait() == "Bearer at-0"
            await anyio.wait_all_tasks_blocked()
            assert endpoint.calls == 1  # the background renewal waits at the server
        left.set()

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(use_and_leave)
        await anyio.wait_all_tasks_blocked()
        assert not left.is_set()  # leaving waits for the request in flight
        gate.set()
    assert storage.stored() == "at-1"
    assert manager.header_nowait() == "Bearer at-1"
