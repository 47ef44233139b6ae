"""The storage protocol: where a session's tokens live between runs and processes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Protocol, runtime_checkable

from .._errors import ConfigurationError
from .._models import TokenSet

__all__ = ["RecordStore", "Storage", "require_storage"]


@runtime_checkable
class Storage(Protocol):
    """Async storage of token sets, one per session name.

    Implement these five methods and two capabilities to keep sessions anywhere (a database, a
    secret manager, a web framework's session store). Blocking work belongs in a worker thread
    (`anyio.to_thread.run_sync`), never on the event loop.

    `lock(session)` must exclude every other holder of the same session's lock, in this process
    and in any other process sharing the storage: the TokenManager renews only while holding it,
    and re-reads the session first, so that processes sharing a session renew once between them.

    The capabilities (`lock_can_lapse`, `watch_deletions`) are members of the protocol, not
    optional attributes: a storage that wraps another (`EncryptedStorage`) forwards them, and an
    object that lacks one is refused when a `TokenManager` is built over it, rather than quietly
    losing the guard the capability turns on.
    """

    @property
    def lock_can_lapse(self) -> bool:
        """Whether `lock` is a lease that a holder which stalls can lose (Redis, a database row
        with an expiry) rather than a lock held until released (a file lock, an in-process lock).

        When it can lapse, the TokenManager marks a stored session before it spends its refresh
        token, so a holder that stalls past its lease cannot make the next holder spend the
        same refresh token again. Say True if in doubt: the mark costs one save per renewal.
        """
        ...

    def watch_deletions(self) -> AbstractAsyncContextManager[AsyncIterator[str]] | None:
        """Sessions deleted by anyone sharing this storage, as they are deleted; None when the
        storage cannot tell (a `SessionPool` then documents how long a signed-out user's token
        may keep serving other replicas: until it needs renewing).

        The context manager subscribes; its iterator yields session names until the context
        ends. A notification may be lost (a dropped connection): watchers treat it as a hint,
        and the stored session, not the notification, stays the truth.
        """
        ...

    async def load(self, session: str) -> TokenSet | None:
        """The stored token set, or None if there is none (or only a corrupt one)."""
        ...

    async def save(self, session: str, token: TokenSet) -> None:
        """Store `token`, replacing what was there; a reader sees the old or the new, never half."""
        ...

    async def save_if_newer(self, session: str, token: TokenSet) -> bool:
        """Store `token` unless the stored session is newer, and return whether it was stored.

        "Newer" is decided by the generation both carry (`may_replace(token, stored)` in
        `planet_async.storage`): a copy of the same login with a higher generation, or one of
        another login (a new login never gets overwritten by a process holding the previous
        one's tokens). The TokenManager saves every renewal this way, so that after a store
        loses writes (a failover) no process overwrites a newer session with an older one.

        The check must hold where the write happens. The TokenManager calls this while holding
        `lock(session)`: a storage whose lock cannot lapse may load, check with `may_replace`
        and save in steps; one whose lock is a lease must make the check part of the write (a
        script, a ``WHERE`` clause), since a holder that stalled past its lease, or a primary
        that never saw the lease, does not exclude anyone. Like `save`, a save under a lease
        that has lapsed raises `LockLost`.
        """
        ...

    async def delete(self, session: str) -> None:
        """Forget the session's tokens. Deleting a session that is not there is not an error.

        A storage whose `watch_deletions` is not None tells its watchers.
        """
        ...

    def lock(self, session: str) -> AbstractAsyncContextManager[None]:
        """An exclusive, cross-process lock on the session, held while the context is open.

        Raises:
            StorageError: The lock could not be taken in reasonable time.
        """
        ...


_MEMBERS = ("lock_can_lapse", "watch_deletions", "load", "save", "save_if_newer", "delete", "lock")


def require_storage(storage: object) -> Storage:
    """`storage`, checked to have every member of the `Storage` protocol.

    Raises:
        ConfigurationError: It lacks one (a wrapper that does not forward a capability, say);
            the message names what is missing.
    """
    missing = [name for name in _MEMBERS if not hasattr(storage, name)]
    if missing:
        raise ConfigurationError(
            f"{type(storage).__name__} is not a planet_async Storage: it lacks "
            f"{', '.join(missing)}. A storage that wraps another must forward its capabilities "
            "(lock_can_lapse, watch_deletions, save_if_newer); see planet_async.Storage"
        )
    if not isinstance(storage.lock_can_lapse, bool):  # type: ignore[attr-defined]
        raise ConfigurationError(
            f"{type(storage).__name__}.lock_can_lapse must be True or False, not "
            f"{type(storage.lock_can_lapse).__name__}"  # type: ignore[attr-defined]
        )
    assert isinstance(storage, Storage)
    return storage


@runtime_checkable
class RecordStore(Protocol):
    """Small records that live a short while and are read at most once: what a web service's
    replicas share between a login's start and its callback (`planet_async.web.WebLogin`).

    `MemoryStorage` (one process) and `RedisStorage` (any number of replicas) implement it.
    """

    async def put_record(self, key: str, data: bytes, ttl: float) -> None:
        """Keep `data` under `key` for `ttl` seconds, replacing what was there.

        Raises:
            StorageError: The record could not be written.
        """
        ...

    async def take_record(self, key: str) -> bytes | None:
        """Return the record under `key` and delete it in one atomic step, or None when there is
        none (never written, expired, or taken already). Of any number of callers taking the
        same record at once, in any process, exactly one gets it.

        Raises:
            StorageError: The record could not be read.
        """
        ...
