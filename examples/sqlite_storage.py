"""A custom session storage: tokens in an SQLite database, locked across processes.

Any object with the four methods of `planet_async.Storage` can keep sessions. This one uses only
the standard library's `sqlite3`, so several processes on one machine (workers of a web service,
a fleet of download jobs) can share one session and renew its token once between them::

    storage = SQLiteStorage("~/.cache/my-app/sessions.db")
    manager = TokenManager(grant, storage=storage, session="my-service-account")

Three things every storage must get right, and how this one does:

* Never block the event loop: sqlite3 is blocking, so every call runs in a worker thread
  (`anyio.to_thread.run_sync`), on a connection of its own (sqlite3 connections must not be
  shared between threads without care, and opening one is cheap).
* Readers see the old token or the new one, never half: each write is one SQL statement, and
  SQLite makes every statement atomic.
* `lock(session)` excludes every other holder in every process: it is a lease, a row in a
  table that one owner at a time can insert. A process that dies holding it cannot release it,
  so a lease lasts `lease` seconds at most and can then be taken over.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, closing
from pathlib import Path
from typing import TypeVar

import anyio

from planet_async import StorageError, TokenSet
from planet_async.storage import may_replace

__all__ = ["SQLiteStorage"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tokens (
    session TEXT PRIMARY KEY,
    token TEXT NOT NULL  -- TokenSet.to_json_dict() as JSON
);
CREATE TABLE IF NOT EXISTS locks (
    session TEXT PRIMARY KEY,
    owner TEXT NOT NULL,  -- host:pid:random, unique per acquisition
    expires REAL NOT NULL  -- epoch seconds; after that anyone may take the lease over
);
"""


class SQLiteStorage:
    """Keeps each session's tokens as a row of JSON text in an SQLite database.

    Args:
        path: The database file; created (mode 0600) with its tables if missing.
        lock_timeout: Seconds to wait for another holder of a session's lock before raising
            `StorageError`.
        lease: Seconds after which a lock whose holder never released it (it crashed) may be
            taken over. Must be longer than anyone holds the lock: a token renewal is bounded
            by the authorization server's timeout, seconds, not minutes.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, lock_timeout: float = 60.0, lease: float = 120.0
    ) -> None:
        self.path = Path(path).expanduser()
        self.lock_timeout = lock_timeout
        self.lease = lease
        self._ready = False

    def __repr__(self) -> str:
        return f"SQLiteStorage({str(self.path)!r})"

    # -- its capabilities ------------------------------------------------------------------------

    lock_can_lapse = True
    """The lock is a lease that a stalled holder loses (see `lease`)."""

    def watch_deletions(self) -> None:
        """None: SQLite cannot tell other processes that a session was deleted."""
        return None

    # -- the Storage protocol --------------------------------------------------------------------

    async def load(self, session: str) -> TokenSet | None:
        row = await self._run(self._fetch, "SELECT token FROM tokens WHERE session = ?", session)
        if row is None:
            return None
        try:
            return TokenSet.from_json_dict(json.loads(row[0]))
        except (ValueError, TypeError, AttributeError):
            # Like a corrupt file: say so loudly, then act as if absent so a new login (or
            # grant) replaces the row. The row stays until then, for inspection.
            logger.warning("session %r in %s is not a valid token set; ignoring it", session, self)
            return None

    async def save(self, session: str, token: TokenSet) -> None:
        text = json.dumps(token.to_json_dict())
        await self._run(
            self._execute,
            "INSERT INTO tokens (session, token) VALUES (?, ?) "
            "ON CONFLICT (session) DO UPDATE SET token = excluded.token",
            session,
            text,
        )

    async def save_if_newer(self, session: str, token: TokenSet) -> bool:
        # The check and the write in one transaction (BEGIN IMMEDIATE: SQLite's write lock),
        # since this lock is a lease that a stalled holder can lose.
        return await self._run(self._save_if_newer, session, token)

    async def delete(self, session: str) -> None:
        await self._run(self._execute, "DELETE FROM tokens WHERE session = ?", session)

    @asynccontextmanager
    async def lock(self, session: str) -> AsyncIterator[None]:
        # A fresh owner id per acquisition: two tasks of one process must exclude each other too.
        owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex}"
        try:
            await self._acquire(session, owner)
            yield
        finally:
            # Release even when cancelled, or the session stays locked until the lease runs out.
            # This also runs if acquiring failed or was cancelled half-way: deleting a lease we
            # may not hold is harmless, because the statement matches our owner id only.
            with anyio.CancelScope(shield=True):
                await self._run(
                    self._execute,
                    "DELETE FROM locks WHERE session = ? AND owner = ?",
                    session,
                    owner,
                )

    # -- locking ---------------------------------------------------------------------------------

    async def _acquire(self, session: str, owner: str) -> None:
        deadline = time.monotonic() + self.lock_timeout
        delay = 0.005
        while not await self._run(self._try_lease, session, owner):
            if time.monotonic() >= deadline:
                raise StorageError(
                    f"timed out after {self.lock_timeout:g} s waiting for the lock of session "
                    f"{session!r} in {self.path}; another process or task holds it"
                )
            # Poll, backing off: SQLite cannot wake us when the row goes away.
            await anyio.sleep(delay)
            delay = min(delay * 2, 0.2)

    def _try_lease(self, session: str, owner: str) -> bool:
        # One statement, so atomic: insert our lease, or replace one that has expired. When a
        # live lease is there, the WHERE clause leaves it alone and no row changes. Wall-clock
        # time, because the processes comparing it share nothing else.
        now = time.time()
        changed = self._execute(
            "INSERT INTO locks (session, owner, expires) VALUES (?, ?, ?) "
            "ON CONFLICT (session) DO UPDATE "
            "SET owner = excluded.owner, expires = excluded.expires WHERE locks.expires <= ?",
            session,
            owner,
            now + self.lease,
            now,
        )
        return changed == 1

    # -- blocking parts, run in worker threads ---------------------------------------------------

    async def _run(self, func: Callable[..., T], *args: object) -> T:
        try:
            return await anyio.to_thread.run_sync(func, *args)
        except (sqlite3.Error, OSError) as exc:
            # Callers of a Storage expect StorageError, not the database's own exceptions.
            raise StorageError(f"{self.path}: {exc}") from exc

    def _connect(self) -> sqlite3.Connection:
        if not self._ready:
            self._create()
        # isolation_level=None: every statement commits on its own (no open transaction to leak).
        # timeout: wait this long for another writer instead of failing at once (busy_timeout).
        return sqlite3.connect(self.path, timeout=10.0, isolation_level=None)

    def _create(self) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Tokens are secrets: create the file private before SQLite does (with the umask's mode).
        # SQLite gives its -wal and -shm files the database file's permissions.
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        with closing(sqlite3.connect(self.path, timeout=10.0, isolation_level=None)) as db:
            # WAL: readers do not wait for the writer; the setting is kept in the file.
            db.execute("PRAGMA journal_mode = WAL")
            db.executescript(_SCHEMA)
        self._ready = True  # a race to here is harmless: every statement above is idempotent

    def _save_if_newer(self, session: str, token: TokenSet) -> bool:
        with closing(self._connect()) as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                row = db.execute(
                    "SELECT token FROM tokens WHERE session = ?", (session,)
                ).fetchone()
                try:
                    stored = TokenSet.from_json_dict(json.loads(row[0])) if row else None
                except (ValueError, TypeError, AttributeError):
                    stored = None  # unreadable: replaced, as `load` treats it as absent
                if not may_replace(token, stored):
                    return False
                db.execute(
                    "INSERT INTO tokens (session, token) VALUES (?, ?) "
                    "ON CONFLICT (session) DO UPDATE SET token = excluded.token",
                    (session, json.dumps(token.to_json_dict())),
                )
                return True
            finally:
                db.execute("COMMIT")

    def _execute(self, sql: str, *params: object) -> int:
        with closing(self._connect()) as db:
            return db.execute(sql, params).rowcount

    def _fetch(self, sql: str, *params: object) -> tuple[str] | None:
        with closing(self._connect()) as db:
            row: tuple[str] | None = db.execute(sql, params).fetchone()
            return row
