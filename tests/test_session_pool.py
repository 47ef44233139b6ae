"""SessionPool: many users' sessions by user id, bounded in memory, renewed once per user."""

from __future__ import annotations

import logging
import random
import time
import unicodedata
from typing import Any

import anyio
import httpx
import pytest

from planet_async import (
    AuthorizationServer,
    ConfigurationError,
    FileStorage,
    InvalidGrantError,
    LoginRequired,
    MemoryStorage,
    SessionExpired,
    StorageError,
    TokenManager,
    TokenSet,
)
from planet_async._oauth import revoke_token
from planet_async.flows import ClientCredentialsGrant
from planet_async.web import SessionPool
from tests._fleet import jwt_claims
from tests._helpers import API, FakeClock, VerifyingApi
from tests._web_login import web_client, web_login

pytestmark = pytest.mark.anyio


def make_pool(peer: Any, storage: Any, **kwargs: Any) -> SessionPool:
    return SessionPool(AuthorizationServer(peer.issuer), web_client(), storage, **kwargs)


def token_requests(peer: Any) -> int:
    """Refresh token requests the peer answered, granted or refused."""
    refused = sum(n for k, n in peer.errors().items() if k.startswith("refresh_token"))
    return peer.grants("refresh_token") + refused


class FlakyStorage(MemoryStorage):
    """Memory storage whose saves fail while `failing` is set (a store that is down)."""

    def __init__(self) -> None:
        super().__init__()
        self.failing = False

    async def save(self, session: str, token: TokenSet) -> None:
        if self.failing:
            raise StorageError("the store is down (test)")
        await super().save(session, token)


# -- whose token goes where --------------------------------------------------------------------


async def test_each_user_gets_their_own_token(peer: Any) -> None:
    """Requests made with a user's auth carry a token whose `sub` is that user's."""
    api = VerifyingApi(peer.issuer)
    logins = ["alice", "bob", "carol"]
    async with make_pool(peer, MemoryStorage()) as pool:
        for login in logins:
            await pool.sign_in(f"id-{login}", await web_login(peer.issuer, login))
        seen: dict[str, str] = {}

        def handler(request: httpx.Request) -> httpx.Response:
            token = request.headers["authorization"].removeprefix("Bearer ")
            seen[request.url.params["as"]] = jwt_claims(token)["sub"]
            return api.handler(request)

        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
            for login in logins:
                response = await client.get(f"{API}/x?as={login}", auth=pool.auth(f"id-{login}"))
                assert response.status_code == 200
        assert seen == {login: login for login in logins}
        header = await pool.header("id-bob")
        assert jwt_claims(header["Authorization"].removeprefix("Bearer "))["sub"] == "bob"


async def test_a_user_with_no_session_gets_session_expired(peer: Any) -> None:
    """No stored session: SessionExpired (a LoginRequired), and no token request is made."""
    async with make_pool(peer, MemoryStorage()) as pool:
        with pytest.raises(SessionExpired) as caught:
            await pool.header("nobody")
        assert caught.value.session == pool.key("nobody")
        assert isinstance(caught.value, LoginRequired)
        async with httpx.AsyncClient(
            transport=httpx.MockTransport(VerifyingApi(peer.issuer).handler)
        ) as c:
            with pytest.raises(SessionExpired):
                await c.get(f"{API}/x", auth=pool.auth("nobody"))
    assert token_requests(peer) == 0


async def test_a_refused_refresh_token_is_session_expired_and_never_resent(peer: Any) -> None:
    """The server refuses the refresh token (revoked): SessionExpired, also an InvalidGrantError;
    asking again sends nothing to the server; a new login on any replica is picked up at once."""
    clock = FakeClock(time.time())
    storage = MemoryStorage()
    token = await web_login(peer.issuer, "dave")
    assert token.refresh_token is not None
    async with make_pool(peer, storage, clock=clock) as pool:
        await pool.sign_in("dave", token)
        await revoke_token(
            AuthorizationServer(peer.issuer),
            web_client(),
            token.refresh_token.get_secret_value(),
            hint="refresh_token",
            clock=time.time,
        )
        clock.advance(3600)
        peer.reset()
        with pytest.raises(SessionExpired) as caught:
            await pool.header("dave")
        assert isinstance(caught.value, InvalidGrantError)
        assert token_requests(peer) == 1
        assert await storage.load(pool.key("dave")) is None  # dead for every replica
        for _ in range(3):
            with pytest.raises(SessionExpired):
                await pool.header("dave")
        assert token_requests(peer) == 1  # the refused refresh token is not sent again

        # The user logs in again, through another replica (another pool on the same storage).
        other = make_pool(peer, storage, clock=clock)
        again = await web_login(peer.issuer, "dave")
        # Received now, by the replicas' (fake) clock.
        again = again.model_copy(update={"issued_at": clock(), "expires_at": clock() + 60})
        await other.sign_in("dave", again)
        header = await pool.header("dave")
        assert jwt_claims(header["Authorization"].removeprefix("Bearer "))["sub"] == "dave"
        assert token_requests(peer) == 1


async def test_n_users_times_concurrent_requests_make_n_token_requests(peer: Any) -> None:
    """5 users with expired tokens, 20 concurrent requests each: exactly 5 refresh requests."""
    clock = FakeClock(time.time())
    users = [f"user-{i}" for i in range(5)]
    tokens = [await web_login(peer.issuer, user) for user in users]
    api = VerifyingApi(peer.issuer)
    async with make_pool(peer, MemoryStorage(), clock=clock) as pool:
        for user, token in zip(users, tokens, strict=False):
            await pool.sign_in(user, token)
        clock.advance(3600)
        peer.reset()
        subs: list[tuple[str, str]] = []

        def handler(request: httpx.Request) -> httpx.Response:
            token = request.headers["authorization"].removeprefix("Bearer ")
            subs.append((request.url.params["as"], jwt_claims(token)["sub"]))
            return api.handler(request)

        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:

            async def call(user: str) -> None:
                response = await client.get(f"{API}/x?as={user}", auth=pool.auth(user))
                assert response.status_code == 200

            async with anyio.create_task_group() as tasks:
                for _ in range(20):
                    for user in users:
                        tasks.start_soon(call, user)
        assert peer.grants("refresh_token") == 5
        assert peer.errors() == {}
        assert len(subs) == 100
        assert all(asked == sub for asked, sub in subs)


# -- bounded memory ------------------------------------------------------------------------------


async def test_least_recently_used_users_are_dropped_first(peer: Any) -> None:
    """With max_sessions=2, a third user drops the least recently used one."""
    storage = MemoryStorage()
    async with make_pool(peer, storage, max_sessions=2) as pool:
        for user in ("a", "b", "c"):
            await storage.save(pool.key(user), await web_login(peer.issuer, user))
        for user in ("a", "b"):
            await pool.header(user)
        pool.auth("a")  # a is now the most recently used
        await pool.header("c")
        assert "b" not in pool
        assert "a" in pool
        assert "c" in pool
        assert len(pool) == 2


async def test_idle_users_are_dropped_lazily(peer: Any) -> None:
    """A user not asked for in idle_after seconds is dropped on a later call for anyone."""
    clock = FakeClock(time.time())
    storage = MemoryStorage()
    async with make_pool(peer, storage, idle_after=60, clock=clock) as pool:
        token = await web_login(peer.issuer, "idle")
        for user in ("idle", "busy"):
            await pool.sign_in(user, token)
        clock.advance(30)
        pool.auth("busy")
        clock.advance(31)
        assert "idle" in pool  # nothing runs by itself
        pool.auth("busy")
        assert "idle" not in pool
        assert "busy" in pool


@pytest.mark.parametrize("why", ["least recently used", "idle"])
async def test_dropping_a_user_saves_their_unsaved_token_first(peer: Any, why: str) -> None:
    """A user renewed while the store was down is dropped (least recently used, or idle): the
    pool keeps them until the store is back and their token saved, then lets them go; nothing
    is left running or held."""
    clock = FakeClock(time.time())
    storage = FlakyStorage()
    limits = {"max_sessions": 1} if why != "idle" else {"idle_after": 60}
    async with make_pool(peer, storage, clock=clock, **limits) as pool:
        await pool.sign_in("erin", await web_login(peer.issuer, "erin"))
        clock.advance(3600)
        storage.failing = True
        header = (await pool.header("erin"))["Authorization"]  # renewed; cannot be saved
        before = await storage.load(pool.key("erin"))
        assert before is not None
        assert f"Bearer {before.access_token.get_secret_value()}" != header
        if why == "idle":
            clock.advance(61)
        pool.auth("frank")  # erin is dropped, but kept until saved
        assert "erin" not in pool
        await anyio.wait_all_tasks_blocked()
        assert pool._draining  # still down: still held
        storage.failing = False
        clock.advance(5)  # past the backoff: the next call settles the users kept
        pool.auth("frank")
        await anyio.wait_all_tasks_blocked()
        assert not pool._draining
        assert not pool._settling
        stored = await storage.load(pool.key("erin"))
        assert stored is not None
        assert f"Bearer {stored.access_token.get_secret_value()}" == header


async def test_closing_the_pool_saves_unsaved_tokens(peer: Any) -> None:
    """Leaving `async with pool` saves a token the store refused before, and leaves no task."""
    clock = FakeClock(time.time())
    storage = FlakyStorage()
    pool = make_pool(peer, storage, clock=clock)
    async with pool:
        await pool.sign_in("gus", await web_login(peer.issuer, "gus"))
        clock.advance(3600)
        storage.failing = True
        header = (await pool.header("gus"))["Authorization"]
        storage.failing = False
    stored = await storage.load(pool.key("gus"))
    assert stored is not None
    assert f"Bearer {stored.access_token.get_secret_value()}" == header


# -- keys --------------------------------------------------------------------------------------


def _variants() -> list[str]:
    base = ["alice", "Alice", "ALICE", "straße", "STRASSE", "strasse", "ﬀ", "ff"]
    composed = unicodedata.normalize("NFC", "José Müller")
    decomposed = unicodedata.normalize("NFD", "José Müller")
    assert composed != decomposed
    odd = [
        "a/b",
        "a\\b",
        "..",
        "{x}",
        "a}b{",
        "a:b",
        "a\x00b",
        "a\nb",
        " alice",
        "alice ",
        "\ud800",  # a lone surrogate
        "\U0001f600",
        "a" * 10_000,
        "a" * 10_001,
        "user-abc",
    ]
    return [*base, composed, decomposed, *odd]


@pytest.mark.parametrize("secret", [None, b"k" * 32])
def test_keys_never_collide_and_every_storage_takes_them(
    secret: bytes | None, tmp_path: Any
) -> None:
    """Ids that differ in case, Unicode normalization, length or odd characters get distinct
    keys, short and safe as a file name and a Redis hash tag; with a secret they reveal no id."""
    pool = SessionPool(
        AuthorizationServer("https://login.example"),
        web_client(),
        MemoryStorage(),
        key_secret=secret,
    )
    ids = _variants()
    keys = [pool.key(i) for i in ids]
    assert len(set(keys)) == len(ids)
    assert keys == [pool.key(i) for i in ids]  # stable
    files = FileStorage(tmp_path)
    for key in keys:
        assert len(key) <= 64
        assert key.isascii()
        assert key == key.lower()
        assert not set(key) & set("{}/\\:")
        files.session_dir(key)  # a valid directory name
    plain = SessionPool(AuthorizationServer("https://login.example"), web_client(), MemoryStorage())
    if secret is not None:
        assert all(pool.key(i) != plain.key(i) for i in ids)
        other = SessionPool(
            AuthorizationServer("https://login.example"),
            web_client(),
            MemoryStorage(),
            key_secret=b"o" * 32,
        )
        assert all(pool.key(i) != other.key(i) for i in ids)


_ALPHABET = (
    "aAbBzZ09 _-.@/\\{}:%+\x00\n\t\u00e9\u0065\u0301\u00df\u1e9e\ufb00\u212b\u00c5\U0001f600\ud800"
)


def test_keys_of_random_ids_never_collide() -> None:
    """Seeded property test: 3,000 random ids from an alphabet of case pairs, combining marks,
    compatibility characters, separators, NUL and a lone surrogate, each with its upper- and
    lower-case, NFC, NFD, NFKC and NFKD variants: distinct ids always get distinct keys."""
    pool = SessionPool(AuthorizationServer("https://login.example"), web_client(), MemoryStorage())
    rng = random.Random(19)
    ids: set[str] = set()
    for _ in range(3_000):
        base = "".join(rng.choice(_ALPHABET) for _ in range(rng.randint(1, 40)))
        if rng.random() < 0.01:
            base *= 400  # very long ids too
        ids.add(base)
        for variant in (base.upper(), base.lower(), base.swapcase()):
            ids.add(variant)
        for form in ("NFC", "NFD", "NFKC", "NFKD"):
            ids.add(unicodedata.normalize(form, base))
    keys = {pool.key(i) for i in ids}
    assert len(keys) == len(ids)
    assert len(ids) > 9_000


def test_bad_user_ids_and_settings_are_refused() -> None:
    """An empty or non-string id, and impossible settings, are ConfigurationErrors."""
    pool = SessionPool(AuthorizationServer("https://login.example"), web_client(), MemoryStorage())
    for bad in ("", None, b"bytes"):
        with pytest.raises(ConfigurationError):
            pool.key(bad)  # type: ignore[arg-type]
    for kwargs in ({"max_sessions": 0}, {"idle_after": 0}, {"key_secret": b"short"}):
        with pytest.raises(ConfigurationError):
            SessionPool(
                AuthorizationServer("https://login.example"),
                web_client(),
                MemoryStorage(),
                **kwargs,  # type: ignore[arg-type]
            )


# -- storage capabilities ------------------------------------------------------------------------


class ForgetfulWrapper:
    """Wraps a storage but forgets to forward its capabilities (the bug the protocol prevents)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def load(self, session: str) -> TokenSet | None:
        return await self.inner.load(session)

    async def save(self, session: str, token: TokenSet) -> None:
        await self.inner.save(session, token)

    async def delete(self, session: str) -> None:
        await self.inner.delete(session)

    def lock(self, session: str) -> Any:
        return self.inner.lock(session)


class ForwardingWrapper(ForgetfulWrapper):
    async def save_if_newer(self, session: str, token: TokenSet) -> bool:
        return bool(await self.inner.save_if_newer(session, token))

    @property
    def lock_can_lapse(self) -> bool:
        return bool(self.inner.lock_can_lapse)

    def watch_deletions(self) -> Any:
        return self.inner.watch_deletions()


def test_a_wrapper_that_forgets_a_capability_is_refused_loudly() -> None:
    """A storage wrapper that does not forward `lock_can_lapse` / `watch_deletions` is refused
    when a TokenManager or a pool is built over it, naming what is missing."""
    grant = ClientCredentialsGrant(
        AuthorizationServer("https://login.example", token_endpoint="https://login.example/t"),
        web_client(),
    )
    with pytest.raises(ConfigurationError, match="lock_can_lapse, watch_deletions"):
        TokenManager(grant, storage=ForgetfulWrapper(MemoryStorage()))  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="lock_can_lapse"):
        SessionPool(
            AuthorizationServer("https://login.example"),
            web_client(),
            ForgetfulWrapper(MemoryStorage()),  # type: ignore[arg-type]
        )
    manager = TokenManager(grant, storage=ForwardingWrapper(MemoryStorage()))  # type: ignore[arg-type]
    assert manager.storage.lock_can_lapse is False


def test_a_grant_without_renews_without_lock_is_refused() -> None:
    """A grant must say whether it may renew without the lock; one that does not is refused."""

    class Vague:
        description = "vague"

        async def renew(self, current: Any, *, clock: Any) -> TokenSet:
            raise AssertionError

    with pytest.raises(ConfigurationError, match="renews_without_lock"):
        TokenManager(Vague())  # type: ignore[arg-type]


# -- sign-out ------------------------------------------------------------------------------------


async def test_sign_out_revokes_deletes_and_reaches_other_pools(peer: Any) -> None:
    """Sign-out on one pool revokes the refresh token, deletes the session, and a second pool on
    the same storage drops the user (told by the storage), so its next request needs a login."""
    storage = MemoryStorage()
    token = await web_login(peer.issuer, "hank")
    seen = anyio.Event()
    async with (
        make_pool(peer, storage) as here,
        make_pool(peer, storage, on_sign_out=lambda key: seen.set()) as there,
    ):
        await here.sign_in("hank", token)
        await there.header("hank")  # cached on the other replica too
        assert await here.sign_out("hank") is True
        assert await storage.load(here.key("hank")) is None
        with anyio.fail_after(5):
            await seen.wait()
        assert "hank" not in there
        with pytest.raises(SessionExpired):
            await there.header("hank")
    # The refresh token is dead at the server.
    grant_refused = peer.errors()
    assert token_requests(peer) == sum(grant_refused.values())
    from planet_async import RefreshTokenGrant

    with pytest.raises(InvalidGrantError):
        await RefreshTokenGrant(AuthorizationServer(peer.issuer), web_client()).renew(
            token, clock=time.time
        )


async def test_sign_out_of_a_user_not_held_here(peer: Any) -> None:
    """Signing out a user this replica never served still deletes and revokes."""
    storage = MemoryStorage()
    async with make_pool(peer, storage) as pool:
        await storage.save(pool.key("ivy"), await web_login(peer.issuer, "ivy"))
        assert await pool.sign_out("ivy") is True
        assert await storage.load(pool.key("ivy")) is None
        assert await pool.sign_out("ivy") is False  # nothing left


# -- the store failing ---------------------------------------------------------------------------


class DownStorage(MemoryStorage):
    """Memory storage that fails every call while `down` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False

    def _check(self) -> None:
        if self.down:
            raise StorageError("the store is down (test)")

    async def load(self, session: str) -> TokenSet | None:
        self._check()
        return await super().load(session)

    async def save(self, session: str, token: TokenSet) -> None:
        self._check()
        await super().save(session, token)

    def lock(self, session: str) -> Any:
        self._check()
        return super().lock(session)


async def test_a_store_that_is_down_serves_held_tokens_and_never_renews(
    peer: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Store down: a user whose token is held and valid is served; an expired one gets a
    StorageError with retry_after, and no refresh token is spent without the lock."""
    caplog.set_level(logging.ERROR)
    clock = FakeClock(time.time())
    storage = DownStorage()
    async with make_pool(peer, storage, clock=clock) as pool:
        await pool.sign_in("jo", await web_login(peer.issuer, "jo"))
        await pool.sign_in("kim", await web_login(peer.issuer, "kim"))
        storage.down = True
        peer.reset()
        assert (await pool.header("jo"))["Authorization"].startswith("Bearer ")
        clock.advance(3600)
        with pytest.raises(StorageError) as caught:
            await pool.header("kim")
        assert caught.value.retry_after is not None
        assert caught.value.retry_after > 0
        with pytest.raises(StorageError):
            await pool.header("new-user")
        assert token_requests(peer) == 0
        storage.down = False
        clock.advance(caught.value.retry_after)
        assert (await pool.header("kim"))["Authorization"].startswith("Bearer ")
        assert token_requests(peer) == 1


async def test_idle_users_cost_nothing_and_active_ones_renew_ahead(peer: Any) -> None:
    """Past the refresh-ahead point nothing happens for users nobody asks for (no token request,
    no task); a request for one user serves the current token at once and renews that user
    alone, in the background."""
    clock = FakeClock(time.time())
    async with make_pool(peer, MemoryStorage(), clock=clock) as pool:
        for user in ("sam", "tia", "uma"):
            login = await web_login(peer.issuer, user)
            await pool.sign_in(
                user, login.model_copy(update={"issued_at": clock(), "expires_at": clock() + 60})
            )
        peer.reset()
        clock.advance(50)  # past the soft threshold (about 70% of 60 s), before the hard one
        await anyio.wait_all_tasks_blocked()
        assert token_requests(peer) == 0
        renewed = anyio.Event()
        _manager_of(pool, "sam").add_listener(
            lambda event: renewed.set() if event.kind == "renewal_succeeded" else None
        )
        before = (await pool.header("sam"))["Authorization"]
        with anyio.fail_after(10):  # a guard: the background renewal's exchange with the peer
            await renewed.wait()
        after = (await pool.header("sam"))["Authorization"]
        assert after != before
        assert peer.grants("refresh_token") == 1
        assert not any(_manager_of(pool, u).pending for u in ("tia", "uma"))


def _manager_of(pool: SessionPool, user: str) -> TokenManager:
    manager = pool.auth(user).manager
    assert manager is not None
    return manager
