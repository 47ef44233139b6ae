"""SessionPool: the Planet sessions of a web service's users, by the application's user id."""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import logging
import math
import random
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import AbstractAsyncContextManager
from types import TracebackType

import anyio
import anyio.abc

from .._auth import PLANET_API_ORIGINS, PlanetAuth
from .._errors import (
    ConfigurationError,
    InvalidGrantError,
    LoginRequired,
    PlanetAuthError,
    SessionExpired,
)
from .._manager import TokenManager
from .._models import TokenSet
from .._oauth import AuthorizationServer, ClientAuth, revoke_token
from .._urls import OriginPolicy
from ..flows._refresh import RefreshTokenGrant
from ..storage._protocol import Storage, require_storage

__all__ = ["SessionPool"]

logger = logging.getLogger(__name__)

_KEY_DOMAIN = b"planet_async user id\x00"
"""Prefixed to a user id before hashing, so a pool's keys hash nothing else's input."""

_IDLE_SWEEP = 4
"""Idle users dropped per call at most: the sweep is lazy, and no call pays for many."""

_WATCH_RETRY_CAP = 5.0
"""Longest wait, in seconds, between attempts to watch the storage for sign-outs again."""

_RESTORE_MARGIN = 60.0
"""A session the storage lost is stored again as this replica held it while its access token
has this many seconds left; otherwise it is renewed first."""


class _Refused(SessionExpired, InvalidGrantError):
    """The server refused the user's refresh token: a `SessionExpired` that the TokenManager
    also sees as the `InvalidGrantError` it is (it then re-reads storage before giving up)."""

    def __init__(self, message: str, *, session: str, refused: InvalidGrantError) -> None:
        InvalidGrantError.__init__(
            self,
            message,
            error=refused.error,
            error_description=refused.error_description,
            status_code=refused.status_code,
            endpoint=refused.endpoint,
        )
        self.session = session


class _UserGrant:
    """One user's refresh token grant: the pool's, plus the user's key and the refresh token the
    server last refused, so the same one is never sent again (no storm from an expired user)."""

    __slots__ = ("_entry", "_grant", "_refused", "_storage")

    renews_without_lock = False

    def __init__(self, grant: RefreshTokenGrant, entry: _Entry, storage: Storage) -> None:
        self._grant = grant
        self._entry = entry
        self._storage = storage
        self._refused: bytes | None = None

    @property
    def description(self) -> str:
        return f"{self._grant.description}, user session {self._entry.key!r}"

    async def renew(self, current: TokenSet | None, *, clock: Callable[[], float]) -> TokenSet:
        key = self._entry.key
        if self._entry.orphan is not None:
            if current is None:
                return await self._restore(clock)
            self._entry.orphan = None  # the storage had the session: nothing to restore
        if current is None or current.refresh_token is None:
            self._entry.expired = True
            raise SessionExpired(
                f"user session {key!r} is not stored (never logged in, signed out, or past its "
                "retention): log the user in",
                session=key,
            )
        fingerprint = _fingerprint(current.refresh_token.get_secret_value())
        if fingerprint == self._refused:
            self._entry.expired = True
            raise SessionExpired(
                f"the server refused user session {key!r}'s refresh token: log the user in again",
                session=key,
            )
        try:
            return await self._grant.renew(current, clock=clock)
        except InvalidGrantError as exc:
            self._refused = fingerprint
            self._entry.expired = True
            await self._forget_refused(current)
            raise _Refused(
                f"the server refused user session {key!r}'s refresh token (invalid_grant: "
                "revoked, expired or spent): log the user in again",
                session=key,
                refused=exc,
            ) from None
        except LoginRequired as exc:
            self._entry.expired = True
            raise SessionExpired(str(exc), session=key) from None

    async def still_active(self, current: TokenSet, *, clock: Callable[[], float]) -> bool | None:
        return await self._grant.still_active(current, clock=clock)

    async def _restore(self, clock: Callable[[], float]) -> TokenSet:
        """The storage holds no session for the user, and this replica held one until its
        deletions watch broke (see `SessionPool._watch`): a store that came back empty, or a
        sign-out the watch missed. Ask the server whether the held refresh token is still
        active (it spends nothing): if so, this is the user's newest session, and it is stored
        again (renewed first if its access token is about to expire). If it is inactive (the
        user was signed out, which revokes it, or another replica renewed since) or the server
        cannot tell, the user logs in again. Called under the user's lock."""
        entry = self._entry
        held = entry.orphan
        assert held is not None
        active = await self._grant.still_active(held, clock=clock)  # raises: kept for next time
        entry.orphan = None
        if not active:
            entry.expired = True
            raise SessionExpired(
                f"user session {entry.key!r} is not stored, and the refresh token this replica "
                "held is "
                + (
                    "inactive at the server (signed out, or renewed on another replica since)"
                    if active is False
                    else "one the server cannot say is active"
                )
                + ": log the user in",
                session=entry.key,
            )
        logger.info(
            "user session %r: the storage lost it; the refresh token this replica held is still "
            "active, so it is stored again",
            entry.key,
        )
        if held.expires_at is None or clock() < held.expires_at - _RESTORE_MARGIN:
            return held
        return await self._grant.renew(held, clock=clock)

    async def _forget_refused(self, refused: TokenSet) -> None:
        """Delete the stored session if it still holds the refresh token the server refused
        (called under the session's lock): it is dead for every replica, which then tells the
        user to log in (`SessionExpired`) without sending the refused token again (the
        TokenManager would otherwise put it back, without its renewing mark, for the next
        replica to try). A newer session stored meanwhile (a login) is kept. Replicas watching
        the storage drop the user."""
        key = self._entry.key
        try:
            stored = await self._storage.load(key)
            if stored is not None and stored.same_refresh_token(refused):
                await self._storage.delete(key)
        except Exception as exc:
            logger.warning(
                "user session %r: could not delete the session whose refresh token was refused: %s",
                key,
                str(exc),
            )


class _Entry:
    """A cached user: their adapter (over their TokenManager) and when they were last asked for."""

    __slots__ = ("auth", "expired", "grant", "key", "orphan", "used", "user_id")

    def __init__(self, user_id: str, key: str, used: float) -> None:
        self.user_id = user_id
        self.key = key
        self.used = used
        self.expired = False
        self.orphan: TokenSet | None = None  # held before the deletions watch broke
        self.grant: _UserGrant
        self.auth: PlanetAuth


def _fingerprint(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


class SessionPool:
    """The Planet sessions of a web service's users, keyed by the application's own user id.

    Ask it for a user's httpx auth (`auth`) or header (`header`) on each request. A user's
    session is created on first use from the shared storage (one read), and renewed by a
    `TokenManager` of its own with every guarantee a single session has: one renewal at a time in
    this process, and across replicas under the storage's lock (the Redis lease, per user), so
    rotating refresh tokens are never spent twice.

    Memory stays bounded: at most `max_sessions` users are held, the least recently used dropped
    first, and users not asked for in `idle_after` seconds are dropped as other requests come
    (lazily: no timer, no task per user). Dropping loses nothing: a user whose renewal is in
    flight, or whose new token could not be saved yet, is settled first (in the pool's task
    group) and only then let go. An idle user costs nothing but memory: no token request and no
    task; an active user's token is renewed ahead of expiry in the background, while requests go
    on with the current one.

    A user with no stored session, or whose refresh token the server refuses, gets
    `SessionExpired`: send them to log in. While the storage fails, a user whose token is in
    memory and valid keeps being served; no user session is renewed without the lock, and the
    caller gets `StorageError` (with `retry_after`) once no valid token is left.

    `sign_out` revokes the user's refresh token at the server (RFC 7009) and deletes the stored
    session; replicas watching the same storage (`Storage.watch_deletions`: Redis publishes each
    deletion, PostgreSQL notifies it) drop the user at once. With a storage that cannot notify
    (files), another replica's in-memory token keeps serving until it needs renewing, at most the
    refresh-ahead part of one token lifetime; its renewal then finds no session and raises
    `SessionExpired`.

    Use the pool as an async context manager (``async with SessionPool(...) as pool:``): it then
    renews ahead of expiry in the background, watches for sign-outs, and on leaving saves what is
    unsaved and leaves no task running.

    Args:
        server: The authorization server.
        client: The web service's confidential client (`ClientSecretBasic`, `ClientSecretPost`,
            `PrivateKeyJWT`).
        storage: The shared storage (`RedisStorage` or `PostgresStorage`, wrapped in
            `EncryptedStorage` to keep tokens encrypted at rest). Give Redis a `retention` so
            that sessions of users who never come back expire there.
        scopes: Scopes to ask for on refresh; by default the server keeps the granted ones.
        max_sessions: Users held in memory at most.
        idle_after: Seconds after which a user nobody asked for is dropped from memory.
        key_secret: A secret (32 random bytes, say) that makes storage keys an HMAC of the user
            id, so the keys do not tell who the users are (a plain SHA-256 of a known id can be
            recomputed). Changing it orphans every stored session: keep it like a password.
        key_prefix: Put before every storage key.
        allowed_origins: Origins the users' tokens are sent to; Planet's API origins by default.
        allow_loopback_http: Also authenticate ``http://`` requests to loopback (tests).
        clock: Wall-clock seconds since the epoch; injectable for tests.
        on_sign_out: Called with a storage key when this pool drops a user because their session
            was deleted elsewhere (a sign-out on another replica).
        expiry_margin: As `TokenManager`'s.
    """

    def __init__(
        self,
        server: AuthorizationServer,
        client: ClientAuth,
        storage: Storage,
        *,
        scopes: str | Iterable[str] = (),
        max_sessions: int = 10_000,
        idle_after: float = 900.0,
        key_secret: bytes | None = None,
        key_prefix: str = "user-",
        allowed_origins: Iterable[str] | None = None,
        allow_loopback_http: bool = False,
        clock: Callable[[], float] = time.time,
        on_sign_out: Callable[[str], object] | None = None,
        expiry_margin: float = 30.0,
    ) -> None:
        if not isinstance(max_sessions, int) or max_sessions < 1:
            raise ConfigurationError("max_sessions must be a positive integer")
        if not (math.isfinite(idle_after) and idle_after > 0):
            raise ConfigurationError("idle_after must be a positive number of seconds")
        if key_secret is not None and len(key_secret) < 16:
            raise ConfigurationError("key_secret must be at least 16 bytes (32 random ones, say)")
        self.server = server
        self.client = client
        self.storage = require_storage(storage)
        self.max_sessions = max_sessions
        self.idle_after = float(idle_after)
        self._grant = RefreshTokenGrant(server, client, scopes=scopes)
        self._key_secret = key_secret
        self._key_prefix = key_prefix
        self._policy = OriginPolicy(
            PLANET_API_ORIGINS if allowed_origins is None else allowed_origins,
            loopback_http=allow_loopback_http,
        )
        self._clock = clock
        self._on_sign_out = on_sign_out
        self._expiry_margin = expiry_margin
        self._rng = random.Random()  # noqa: S311 - jitter, shared by every user's manager
        self._entries: OrderedDict[str, _Entry] = OrderedDict()  # user id -> entry, LRU first
        self._by_key: dict[str, str] = {}  # storage key -> user id, for sign-outs elsewhere
        self._draining: dict[str, _Entry] = {}  # dropped, but settling first (user id -> entry)
        # Sessions held when the deletions watch last broke (storage key -> token), restored on
        # the user's next request if the storage lost them (see `_watch`); at most
        # `max_sessions`.
        self._orphans: dict[str, TokenSet] = {}
        self._task_group: anyio.abc.TaskGroup | None = None
        self._settling = False
        self._settle_failures = 0
        self._settle_not_before = 0.0
        self._next_sweep = 0.0  # when `auth` next looks for idle users or users to settle

    def __repr__(self) -> str:
        return (
            f"SessionPool({self.storage!r}, users={len(self._entries)}, "
            f"max_sessions={self.max_sessions})"
        )

    def __len__(self) -> int:
        """Users held in memory (settling ones not counted)."""
        return len(self._entries)

    def __contains__(self, user_id: object) -> bool:
        """Whether `user_id`'s session is held in memory."""
        return user_id in self._entries

    # -- lifecycle -------------------------------------------------------------------------------

    async def __aenter__(self) -> SessionPool:
        if self._task_group is not None:
            raise RuntimeError("this SessionPool is already entered")
        tasks = anyio.create_task_group()
        await tasks.__aenter__()
        try:
            watch = self.storage.watch_deletions()
            if watch is not None:
                await tasks.start(self._watch, watch)
        except BaseException:
            tasks.cancel_scope.cancel()
            await tasks.__aexit__(None, None, None)
            raise
        self._task_group = tasks
        for entry in (*self._entries.values(), *self._draining.values()):
            _manager(entry)._task_group = tasks
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Settle every user (finish renewals in flight, save unsaved tokens), then stop the
        pool's tasks. A token that still cannot be saved is logged at WARNING and lost with the
        process; the user's stored session is then the one before it."""
        tasks, self._task_group = self._task_group, None
        try:
            with anyio.CancelScope(shield=True):
                await self._settle_all()
        finally:
            for entry in (*self._entries.values(), *self._draining.values()):
                _manager(entry)._task_group = None
            if tasks is not None:
                tasks.cancel_scope.cancel()
                await tasks.__aexit__(None, None, None)

    async def _settle_all(self) -> None:
        entries = [e for e in (*self._entries.values(), *self._draining.values()) if _pending(e)]
        lost = 0
        for entry in entries:
            try:
                await _manager(entry).settle()
            except PlanetAuthError as exc:
                lost += 1
                logger.warning("user session %r: %s", entry.key, str(exc))
        self._draining = {k: e for k, e in self._draining.items() if _pending(e)}
        if lost:
            logger.warning(
                "%d user sessions could not be saved when the pool closed; each keeps the "
                "session stored before",
                lost,
            )

    # -- keys ------------------------------------------------------------------------------------

    def key(self, user_id: str) -> str:
        """The storage key of `user_id`'s session.

        Keys are a SHA-256 (with `key_secret`: an HMAC-SHA256) of the id's exact UTF-8 bytes,
        in lower-case base 32: ids that differ in anything, case or Unicode normalization
        included, get different keys, and any id (long, with ``/``, ``{``, NUL or lone
        surrogates) makes a short key that every storage takes.

        Raises:
            ConfigurationError: `user_id` is not a non-empty string.
        """
        if not isinstance(user_id, str) or not user_id:
            raise ConfigurationError("a user id must be a non-empty string")
        data = user_id.encode("utf-8", "surrogatepass")
        if self._key_secret is not None:
            digest = hmac.digest(self._key_secret, data, "sha256")
        else:
            digest = hashlib.sha256(_KEY_DOMAIN + data).digest()
        return self._key_prefix + _base32(digest)

    # -- a user's session --------------------------------------------------------------------------

    def auth(self, user_id: str) -> PlanetAuth:
        """The httpx `Auth` of `user_id`'s session (``httpx.AsyncClient(auth=...)`` or per
        request), created on first use. Ask the pool for it on each request: that is what
        keeps the user recently used.

        Requests then raise `SessionExpired` when the user must log in again, and `StorageError`
        when the storage fails and no valid token is left.

        Raises:
            ConfigurationError: `user_id` is not a non-empty string.
        """
        now = self._clock()
        entries = self._entries
        entry = entries.get(user_id)
        if entry is None or entry.expired:
            entry = self._admit(user_id, now, entry)
        else:
            entries.move_to_end(user_id)
            entry.used = now
        if now >= self._next_sweep:
            self._sweep(now)
        return entry.auth

    async def header(self, user_id: str) -> dict[str, str]:
        """``{"Authorization": "Bearer ..."}`` for `user_id`, for a client other than httpx.

        Raises:
            SessionExpired: The user must log in again.
            StorageError: The storage failed and no valid token is left (see `retry_after`).
            AuthServerError: The authorization server failed and no valid token is left.
        """
        manager = _manager_of(self.auth(user_id))
        return {"Authorization": manager.header_nowait() or await manager.header()}

    async def sign_in(self, user_id: str, token: TokenSet) -> None:
        """Make `token` (from the user's login) `user_id`'s session, here and in storage.

        Raises:
            StorageError: It could not be stored; it serves this replica all the same, and is
                saved again before its renewal.
        """
        await _manager_of(self.auth(user_id)).set_token(token)

    async def sign_out(self, user_id: str) -> bool:
        """Sign `user_id` out everywhere: delete the stored session (under its lock, so no
        renewal races it), drop the user from memory, revoke the refresh token at the server
        (RFC 7009), and let replicas watching the storage drop the user too.

        Returns:
            Whether a refresh token was revoked (False: none was stored, or the server does not
            support revocation).

        Raises:
            StorageError: The stored session could not be deleted.
            AuthServerError: The server failed to revoke (the session is deleted all the same).
        """
        key = self.key(user_id)
        entry = self._entries.pop(user_id, None) or self._draining.pop(user_id, None)
        self._by_key.pop(key, None)
        orphan = self._orphans.pop(key, None)
        if entry is None:  # not held here: a manager of its own, to delete under the lock
            entry = self._new_entry(user_id, key, self._clock())
        token = await _manager(entry).forget()
        if token is None:
            # Nothing stored, nothing held here (the storage lost it?): delete all the same,
            # which tells the replicas watching to drop what they still hold of the user.
            await self.storage.delete(key)
            token = orphan or entry.orphan
        if token is None or token.refresh_token is None:
            return False
        return await revoke_token(
            self.server,
            self.client,
            token.refresh_token.get_secret_value(),
            hint="refresh_token",
            clock=self._clock,
        )

    # -- the cache -------------------------------------------------------------------------------

    def _new_entry(self, user_id: str, key: str, now: float) -> _Entry:
        entry = _Entry(user_id, key, now)
        entry.grant = _UserGrant(self._grant, entry, self.storage)
        manager = TokenManager(
            entry.grant,
            storage=self.storage,
            session=key,
            clock=self._clock,
            expiry_margin=self._expiry_margin,
            rng=self._rng,
            task_group=self._task_group,
        )
        entry.auth = PlanetAuth._over(manager, self._policy)
        return entry

    def _admit(self, user_id: str, now: float, stale: _Entry | None) -> _Entry:
        entry = self._draining.pop(user_id, None)
        if entry is None:
            key = stale.key if stale is not None else self.key(user_id)
            entry = self._new_entry(user_id, key, now)
            if self._orphans:
                entry.orphan = self._orphans.pop(key, None)
            if stale is not None:
                # The user was told to log in again: a fresh manager reads the stored session
                # (a login on another replica), while the grant still refuses to resend the
                # refresh token the server refused.
                self._entries.pop(user_id, None)
                entry.grant._refused = stale.grant._refused
                if _pending(stale):
                    self._keep_until_settled(stale)
        else:
            entry.used = now
        entry.expired = False
        self._entries[user_id] = entry
        self._by_key[entry.key] = user_id
        self._next_sweep = min(self._next_sweep, now + self.idle_after)
        while len(self._entries) > self.max_sessions:
            _, oldest = self._entries.popitem(last=False)
            self._let_go(oldest)
        return entry

    def _sweep(self, now: float) -> None:
        """Drop idle users and settle dropped ones, lazily: from a call, when one is due.

        The least recently used user comes first, so none can become idle before the first
        one's time: until then, calls skip this (it costs one comparison per call).
        """
        oldest: _Entry | None = None
        for _ in range(_IDLE_SWEEP):
            oldest = next(iter(self._entries.values()), None)
            if oldest is None or now - oldest.used < self.idle_after:
                break
            del self._entries[oldest.user_id]
            self._let_go(oldest)
            oldest = None
        if self._draining and now >= self._settle_not_before:
            self._settle_later(now)
        due = now if oldest is None and self._entries else math.inf
        if oldest is not None:
            due = oldest.used + self.idle_after
        if self._draining:
            due = min(due, self._settle_not_before)
        self._next_sweep = due

    def _let_go(self, entry: _Entry) -> None:
        if self._by_key.get(entry.key) == entry.user_id:
            del self._by_key[entry.key]
        if _pending(entry):
            self._keep_until_settled(entry)
        else:
            # Someone may still hold its auth: it then renews in line, not in the pool's tasks.
            _manager(entry)._task_group = None

    def _keep_until_settled(self, entry: _Entry) -> None:
        """Keep `entry` until its renewal is done and its token saved; then let it go."""
        self._draining[entry.user_id] = entry
        self._settle_later(self._clock())

    def _settle_later(self, now: float) -> None:
        """Settle the users kept for it, in one task; after a failure, again on a later call
        (lazily, like idle users are dropped), not before a backoff."""
        if self._task_group is None or self._settling:
            return
        self._settling = True
        self._settle_not_before = math.inf
        self._task_group.start_soon(self._settle_draining)

    async def _settle_draining(self) -> None:
        failed = 0
        try:
            for user_id, entry in list(self._draining.items()):
                try:
                    await _manager(entry).settle()
                except PlanetAuthError as exc:
                    failed += 1
                    logger.warning("user session %r: %s; trying again later", entry.key, str(exc))
                    continue
                if self._draining.get(user_id) is entry and not _pending(entry):
                    del self._draining[user_id]
                    _manager(entry)._task_group = None
        finally:
            self._settling = False
            self._settle_failures = self._settle_failures + 1 if failed else 0
            delay = min(0.5 * 2 ** min(self._settle_failures, 10), 30.0) if failed else 0.0
            self._settle_not_before = self._clock() + delay
            self._next_sweep = min(self._next_sweep, self._settle_not_before)

    # -- sign-outs elsewhere ---------------------------------------------------------------------

    async def _watch(
        self,
        watch: AbstractAsyncContextManager[AsyncIterator[str]],
        *,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Drop users whose session is deleted elsewhere. When the watch breaks (the storage
        restarted), deletions may have been missed: every settled user is dropped, so that each
        reads the storage again on its next request; a user the storage lost meanwhile (a
        Redis restarted without persistence) is restored from what this replica held, if the
        server says its refresh token is still active (`_UserGrant._restore`)."""
        delay = 0.1
        started = False
        while True:
            try:
                async with watch as deletions:
                    if not started:
                        task_status.started()
                        started = True
                    else:
                        self._forget_settled()
                    delay = 0.1
                    async for key in deletions:
                        self._deleted_elsewhere(key)
            except Exception as exc:
                logger.warning(
                    "%r: watching for sign-outs failed (%s); retrying in %.1f s",
                    self,
                    str(exc),  # not the exception: a log record must not keep its frames alive
                    delay,
                )
            if not started:
                task_status.started()
                started = True
            await anyio.sleep(delay)
            delay = min(delay * 2, _WATCH_RETRY_CAP)
            renewed = self.storage.watch_deletions()
            if renewed is None:  # pragma: no cover - a storage that stopped being able to
                return
            watch = renewed

    def _deleted_elsewhere(self, key: str) -> None:
        self._orphans.pop(key, None)
        user_id = self._by_key.pop(key, None)
        if user_id is None:
            return
        entry = self._entries.pop(user_id, None) or self._draining.pop(user_id, None)
        if entry is None:
            return
        _manager(entry).discard()
        if self._on_sign_out is not None:
            try:
                self._on_sign_out(key)
            except Exception:
                logger.exception("%r: on_sign_out raised", self)

    def _forget_settled(self) -> None:
        """After the deletions watch broke: drop every settled user, so that each reads the
        storage again, and keep what each held (an orphan) in case the storage lost it."""
        orphans = self._orphans  # those of an earlier break whose users did not come back yet
        for user_id, entry in list(self._entries.items()):
            if not _pending(entry):
                del self._entries[user_id]
                self._by_key.pop(entry.key, None)
                current = _manager(entry)._current
                held = current.token if current is not None else entry.orphan
                if held is not None and held.refresh_token is not None:
                    orphans[entry.key] = held
        for key in list(itertools.islice(orphans, max(len(orphans) - self.max_sessions, 0))):
            del orphans[key]  # the oldest first: memory stays bounded


def _manager(entry: _Entry) -> TokenManager:
    return _manager_of(entry.auth)


def _manager_of(auth: PlanetAuth) -> TokenManager:
    manager = auth.manager
    assert manager is not None
    return manager


def _pending(entry: _Entry) -> bool:
    return _manager(entry).pending


def _base32(digest: bytes) -> str:
    return base64.b32encode(digest).decode().rstrip("=").lower()
