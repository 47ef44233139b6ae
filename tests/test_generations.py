"""Generations: no process adopts an older copy of a session or overwrites a newer one.

The rules alone (`may_replace`, `compare`), then a TokenManager meeting each ordering in its
storage (older adopts newer; newer is written back over older; equal generations with different
tokens keep the stored one; a new login wins), and a store that lost a renewal (a failover) on a
real redis-server with the real authorization server's rotating refresh tokens. The conformance
suite in tests/test_storage.py checks the conditional save itself on every storage.
"""

from __future__ import annotations

import json
import time

import anyio
import pytest

from planet_async import (
    AuthorizationServer,
    MemoryStorage,
    PublicClient,
    RedisStorage,
    RefreshTokenGrant,
    StorageError,
    TokenManager,
    TokenSet,
)
from planet_async.storage import Generation, may_replace
from planet_async.storage._generations import GENERATION_KEY, Order, compare
from tests._browser import device_login_saved
from tests._helpers import FakeClock
from tests._peer import Peer
from tests._redis import RedisServer
from tests.test_manager import FakeTokenEndpoint, token

pytestmark = pytest.mark.anyio


def _at(lineage: str, number: int, tag: str, access: str = "at") -> TokenSet:
    return Generation(lineage, number, tag).on(
        TokenSet(access_token=access, issued_at=0, refresh_token=f"rt-{access}")
    )


# -- the rules -------------------------------------------------------------------------------


def test_the_conditional_save_rule() -> None:
    """A save replaces nothing, an unstamped copy, or a lower number of its own login, or the
    same token set again; never a higher or equal number with another tag, nor another login."""
    new = _at("L", 3, "t")
    assert may_replace(new, None)
    assert may_replace(new, TokenSet(access_token="cli", issued_at=0))
    assert may_replace(new, _at("L", 2, "x"))
    assert may_replace(new, _at("L", 3, "t", access="same set, marked"))
    assert not may_replace(new, _at("L", 3, "other"))
    assert not may_replace(new, _at("L", 4, "x"))
    assert not may_replace(new, _at("M", 1, "x"))
    assert may_replace(TokenSet(access_token="login", issued_at=0), _at("L", 9, "x"))


def test_which_copy_a_process_uses() -> None:
    """Of one login the higher number; on equal numbers the stored one; another login or an
    unstamped copy in storage is a new login and wins; the copy a held token replaced is older."""
    held = _at("L", 3, "h", access="held")
    assert compare(held, _at("L", 2, "s", access="stored")) is Order.HELD
    assert compare(held, _at("L", 4, "s", access="stored")) is Order.STORED
    assert compare(held, _at("L", 3, "s", access="stored")) is Order.STORED
    assert compare(held, _at("L", 3, "h", access="held")) is Order.SAME
    # the planet CLI refreshed the file itself, keeping our stamp: its tokens are the newer
    assert compare(held, _at("L", 3, "h", access="cli")) is Order.STORED
    assert compare(held, _at("M", 1, "s", access="stored")) is Order.STORED
    foreign = TokenSet(access_token="cli", issued_at=0)
    assert compare(held, foreign) is Order.STORED
    assert compare(held, foreign, replaced=foreign) is Order.HELD


@pytest.mark.parametrize(
    "value",
    [
        "L:3",
        {"lineage": "L", "number": "3", "tag": "t"},
        {"lineage": "L", "number": True, "tag": "t"},
        {"lineage": "L", "number": -1, "tag": "t"},
        {"lineage": "L", "number": 2.5, "tag": "t"},
        {"lineage": 7, "number": 3, "tag": "t"},
    ],
)
def test_a_malformed_stamp_counts_as_none(value: object) -> None:
    """Anything but string lineage and tag and a whole number is no stamp (the Redis script and
    the PostgreSQL clause read it the same way)."""
    stamped = TokenSet(access_token="at", issued_at=0, extra={GENERATION_KEY: value})
    assert Generation.of(stamped) is None


def test_renewals_count_up_within_a_login() -> None:
    """A renewal continues its base's lineage; an unstamped base starts one; tags differ."""
    first = Generation.after(TokenSet(access_token="cli", issued_at=0))
    assert first.number == 1
    second = Generation.after(first.on(TokenSet(access_token="a", issued_at=0)))
    assert (second.lineage, second.number) == (first.lineage, 2)
    assert second.tag != first.tag
    assert json.loads(
        json.dumps(second.on(TokenSet(access_token="a", issued_at=0)).to_json_dict())
    )[GENERATION_KEY] == {"lineage": first.lineage, "number": 2, "tag": second.tag}


# -- a TokenManager meeting each ordering ------------------------------------------------------


def _user_manager(endpoint: FakeTokenEndpoint, storage: MemoryStorage) -> TokenManager:
    grant = RefreshTokenGrant(endpoint.server(), PublicClient(client_id="app"))
    return TokenManager(grant, storage=storage, clock=endpoint.clock)


async def _holding(
    endpoint: FakeTokenEndpoint, stamp: Generation
) -> tuple[TokenManager, MemoryStorage]:
    """A manager holding a token of `stamp` (stored too), past its soft threshold."""
    storage = MemoryStorage()
    manager = _user_manager(endpoint, storage)
    await manager.set_token(stamp.on(token("at-held", endpoint.clock, refresh_token="rt-held")))
    endpoint.clock.advance(80)  # of 100 s: past the soft threshold, before the hard one
    return manager, storage


async def test_a_newer_stored_generation_is_adopted() -> None:
    """Storage holds a higher number of the same login (another process renewed): adopted,
    no token request."""
    endpoint = FakeTokenEndpoint(FakeClock())
    manager, storage = await _holding(endpoint, Generation("L", 2, "mine"))
    newer = Generation("L", 3, "theirs").on(token("at-newer", endpoint.clock, refresh_token="rt-3"))
    await storage.save("default", newer)
    assert await manager.header() == "Bearer at-newer"
    assert endpoint.calls == 0


async def test_an_older_stored_generation_is_overwritten_and_never_spent() -> None:
    """Storage lost the last renewal (a failover brought back generation 1): the manager
    writes its generation 2 back and renews with its own refresh token, never the stored older
    one; the result is generation 3."""
    endpoint = FakeTokenEndpoint(FakeClock())
    endpoint.rotate = True
    manager, storage = await _holding(endpoint, Generation("L", 2, "mine"))
    older = Generation("L", 1, "old").on(token("at-old", endpoint.clock, refresh_token="rt-old"))
    await storage.save("default", older)
    writes: list[str] = []
    save_if_newer = storage.save_if_newer

    async def watched(session: str, stored: TokenSet) -> bool:
        writes.append(stored.access_token.get_secret_value())
        return await save_if_newer(session, stored)

    storage.save_if_newer = watched  # type: ignore[method-assign]
    assert await manager.header() == "Bearer at-1"
    assert endpoint.calls == 1
    assert endpoint.forms[0]["refresh_token"] == "rt-held"
    assert writes[0] == "at-held"  # written back before anything was spent
    stored = await storage.load("default")
    assert stored is not None
    stamp = Generation.of(stored)
    assert stamp is not None
    assert (stamp.lineage, stamp.number) == ("L", 3)


async def test_equal_generations_with_different_tokens_keep_the_stored_one() -> None:
    """Two token sets of one generation (written by two processes after a split): the stored
    one is used by everyone, and no token is requested while it is fresh."""
    endpoint = FakeTokenEndpoint(FakeClock())
    manager, storage = await _holding(endpoint, Generation("L", 2, "mine"))
    twin = Generation("L", 2, "theirs").on(token("at-twin", endpoint.clock, refresh_token="rt-t"))
    await storage.save("default", twin)
    assert await manager.header() == "Bearer at-twin"
    assert endpoint.calls == 0


async def test_a_new_login_is_never_overwritten_by_the_previous_one() -> None:
    """A login elsewhere (another lineage, or the planet CLI's unstamped file) replaces the
    session, however many renewals the process's copy of the previous login has had."""
    for login in (
        Generation("M", 1, "login").on(token("at-login", FakeClock(), refresh_token="rt-m")),
        token("at-login", FakeClock(), refresh_token="rt-cli"),
    ):
        endpoint = FakeTokenEndpoint(FakeClock())
        manager, storage = await _holding(endpoint, Generation("L", 9, "mine"))
        await storage.save("default", login.model_copy(update={"issued_at": endpoint.clock.now}))
        assert await manager.header() == "Bearer at-login"
        assert endpoint.calls == 0
        stored = await storage.load("default")
        assert stored is not None
        assert stored.access_token.get_secret_value() == "at-login"


# -- a store that lost a renewal: Redis and the real authorization server ----------------------

SESSION = "fleet"
TOKEN_KEY = "planet_async:{fleet}:token"
EXPIRED = 61  # seconds: past the peer's access token lifetime


def _stored(server: RedisServer) -> dict[str, object]:
    raw = server.call("GET", TOKEN_KEY)
    assert raw is not None
    data = json.loads(raw)
    assert isinstance(data, dict)
    return data


async def test_a_failover_that_lost_a_renewal_on_redis(peer: Peer, redis: RedisServer) -> None:
    """Redis comes back with generation 1 of a rotating session whose generation 2 one process
    holds (the write was lost): that process writes generation 2 back and renews with it (one
    refresh grant, no invalid_grant: the spent refresh token of generation 1 is never sent), and
    a second process then uses the result without a token request."""
    clock = FakeClock(start=time.time())
    await device_login_saved(peer.issuer, RedisStorage(redis.url), SESSION)
    grant = RefreshTokenGrant(
        AuthorizationServer(peer.issuer), PublicClient(client_id="native-app")
    )
    holder = TokenManager(grant, storage=RedisStorage(redis.url), session=SESSION, clock=clock)
    await holder.header()
    first = redis.call("GET", TOKEN_KEY)
    clock.advance(EXPIRED)
    peer.reset()
    with anyio.fail_after(10):
        second = await holder.header()
    assert _stored(redis)[GENERATION_KEY]["number"] == 2  # type: ignore[index]
    redis.call("SET", TOKEN_KEY, first)  # the failover: generation 2 never reached the replica
    clock.advance(EXPIRED)
    with anyio.fail_after(10):
        third = await holder.header()
        other = TokenManager(
            RefreshTokenGrant(
                AuthorizationServer(peer.issuer), PublicClient(client_id="native-app")
            ),
            storage=RedisStorage(redis.url),
            session=SESSION,
            clock=clock,
        )
        assert await other.header() == third
    assert third != second
    assert _stored(redis)[GENERATION_KEY]["number"] == 3  # type: ignore[index]
    assert peer.grants("refresh_token") == 2
    assert peer.errors() == {}


async def test_a_login_whose_save_failed_still_replaces_the_previous_login() -> None:
    """A login is saved unconditionally, also when its first save failed and it is saved again
    later: the previous login's higher-numbered copy in storage does not win over it."""

    class FailingOnce(MemoryStorage):
        failures = 1

        async def save(self, session: str, token: TokenSet) -> None:
            if self.failures:
                self.failures -= 1
                raise OSError("disk full")
            await super().save(session, token)

    endpoint = FakeTokenEndpoint(FakeClock())
    storage = FailingOnce()
    previous = Generation("L", 5, "p").on(token("at-prev", endpoint.clock, refresh_token="rt-p"))
    await MemoryStorage.save(storage, "default", previous)
    manager = _user_manager(endpoint, storage)
    with pytest.raises(StorageError):
        await manager.set_token(token("at-login", endpoint.clock, refresh_token="rt-login"))
    endpoint.clock.advance(5)  # past the wait before saving again
    assert await manager.header() == "Bearer at-login"
    stored = await storage.load("default")
    assert stored is not None
    assert stored.access_token.get_secret_value() == "at-login"
    assert endpoint.calls == 0
