"""Storage in this process's memory: nothing survives the process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio

from .._models import TokenSet

__all__ = ["MemoryStorage"]


class MemoryStorage:
    """Keeps token sets in a dict. The default storage of a TokenManager."""

    def __init__(self) -> None:
        self._tokens: dict[str, TokenSet] = {}
        self._locks: dict[str, anyio.Lock] = {}

    def __repr__(self) -> str:
        return f"MemoryStorage(sessions={sorted(self._tokens)!r})"

    async def load(self, session: str) -> TokenSet | None:
        return self._tokens.get(session)

    async def save(self, session: str, token: TokenSet) -> None:
        self._tokens[session] = token

    async def delete(self, session: str) -> None:
        self._tokens.pop(session, None)

    @asynccontextmanager
    async def lock(self, session: str) -> AsyncIterator[None]:
        # Uncontended, the lock is taken without yielding to the event loop: on a loop busy with
        # hundreds of downloads each yield of a renewal waits behind every ready task.
        lock = self._locks.setdefault(session, anyio.Lock(fast_acquire=True))
        async with lock:
            yield
