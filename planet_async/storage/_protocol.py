"""The storage protocol: where a session's tokens live between runs and processes."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Protocol, runtime_checkable

from .._models import TokenSet

__all__ = ["RecordStore", "Storage"]


@runtime_checkable
class Storage(Protocol):
    """Async storage of token sets, one per session name.

    Implement these four methods to keep sessions anywhere (a database, a secret manager, a web
    framework's session store). Blocking work belongs in a worker thread
    (`anyio.to_thread.run_sync`), never on the event loop.

    `lock(session)` must exclude every other holder of the same session's lock, in this process
    and in any other process sharing the storage: the TokenManager renews only while holding it,
    and re-reads the session first, so that processes sharing a session renew once between them.
    """

    async def load(self, session: str) -> TokenSet | None:
        """The stored token set, or None if there is none (or only a corrupt one)."""
        ...

    async def save(self, session: str, token: TokenSet) -> None:
        """Store `token`, replacing what was there; a reader sees the old or the new, never half."""
        ...

    async def delete(self, session: str) -> None:
        """Forget the session's tokens. Deleting a session that is not there is not an error."""
        ...

    def lock(self, session: str) -> AbstractAsyncContextManager[None]:
        """An exclusive, cross-process lock on the session, held while the context is open.

        Raises:
            StorageError: The lock could not be taken in reasonable time.
        """
        ...


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
