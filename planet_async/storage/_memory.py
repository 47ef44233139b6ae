"""Storage in this process's memory: nothing survives the process."""

from __future__ import annotations

import os
import time
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from anyio.streams.memory import MemoryObjectSendStream

from .._models import TokenSet
from ._generations import may_replace

__all__ = ["MemoryStorage"]

_WATCH_BUFFER = 1024
"""Deletions a slow watcher may fall behind by before further ones are dropped (a watcher
treats a notification as a hint; see `Storage.watch_deletions`)."""


class MemoryStorage:
    """Keeps token sets in a dict. The default storage of a TokenManager.

    It is also a `RecordStore` for the pending logins of a web service that runs as one process.
    Its lock is an `anyio.Lock` per session (it cannot lapse), and `watch_deletions` tells every
    watcher in this process of each `delete`.

    After ``fork`` the child keeps the stored sessions and starts with no lock held and no
    watcher: a lock the parent held at the fork (a renewal in flight on another thread) belongs
    to a task the child does not have, and would otherwise never be released there.
    """

    lock_can_lapse = False

    def __init__(self) -> None:
        self._tokens: dict[str, TokenSet] = {}
        self._locks: dict[str, anyio.Lock] = {}
        self._records: dict[str, tuple[bytes, float]] = {}
        self._watchers: set[MemoryObjectSendStream[str]] = set()
        _instances.add(self)

    def _after_fork_in_child(self) -> None:
        self._locks = {}
        self._watchers = set()

    def __repr__(self) -> str:
        return f"MemoryStorage(sessions={sorted(self._tokens)!r})"

    async def load(self, session: str) -> TokenSet | None:
        return self._tokens.get(session)

    async def save(self, session: str, token: TokenSet) -> None:
        self._tokens[session] = token

    async def save_if_newer(self, session: str, token: TokenSet) -> bool:
        # No await between the check and the write: atomic on the event loop. Through `save`,
        # so that a subclass's `save` (a test's faults) applies to it too.
        if not may_replace(token, self._tokens.get(session)):
            return False
        await self.save(session, token)
        return True

    async def delete(self, session: str) -> None:
        self._tokens.pop(session, None)
        for watcher in tuple(self._watchers):
            try:
                watcher.send_nowait(session)
            except anyio.WouldBlock:
                pass  # a hint lost; the stored session stays the truth
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                self._watchers.discard(watcher)

    @asynccontextmanager
    async def lock(self, session: str) -> AsyncIterator[None]:
        # Uncontended, the lock is taken without yielding to the event loop: on a loop busy with
        # hundreds of downloads each yield of a renewal waits behind every ready task.
        lock = self._locks.setdefault(session, anyio.Lock(fast_acquire=True))
        async with lock:
            yield

    async def put_record(self, key: str, data: bytes, ttl: float) -> None:
        now = time.monotonic()
        # Expired records go on every write, so that abandoned logins do not pile up.
        for stale in [k for k, (_, until) in self._records.items() if until <= now]:
            del self._records[stale]
        self._records[key] = (bytes(data), now + ttl)

    async def take_record(self, key: str) -> bytes | None:
        data, until = self._records.pop(key, (b"", 0.0))
        return data if until > time.monotonic() else None

    @asynccontextmanager
    async def watch_deletions(self) -> AsyncIterator[AsyncIterator[str]]:
        send, receive = anyio.create_memory_object_stream[str](_WATCH_BUFFER)
        self._watchers.add(send)
        try:
            async with receive:
                yield receive
        finally:
            self._watchers.discard(send)
            send.close()


_instances: weakref.WeakSet[MemoryStorage] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for storage in list(_instances):
        storage._after_fork_in_child()


if hasattr(os, "register_at_fork"):  # POSIX; Windows has no fork
    os.register_at_fork(after_in_child=_after_fork_in_child)
