"""Storage in PostgreSQL, for services that already run it: sessions survive the loss of any
process, and a commit is durable before it is acknowledged.

Built on psycopg 3's synchronous API, run in anyio worker threads: psycopg's async connection
and asyncpg both run on asyncio only, and a storage must work the same on trio. A worker thread
costs about a tenth of a millisecond a call next to a round trip to the server (see
benchmarks/storage.py), and each call uses a connection kept open between calls. Installed with
the ``postgres`` extra: ``python3 -m pip install '.[postgres]'`` in a clone.

The schema (version 1), created on first use when missing::

    CREATE TABLE planet_async_sessions (
        session       text PRIMARY KEY,
        token         jsonb,            -- the planet CLI's token.json; NULL once deleted
        generation    bigint NOT NULL DEFAULT 0,  -- the row's version: +1 on every save and delete
        lease_owner   text,             -- the lock: a random token of the holder's
        lease_expires timestamptz,      -- ... until then, by the server's clock
        set_aside     jsonb,            -- the last corrupt value found in `token`
        updated_at    timestamptz NOT NULL DEFAULT now()
    );
    CREATE TABLE planet_async_sessions_schema (version integer NOT NULL);  -- one row: 1

The ``generation`` column counts writes to the row, across logins and deletions; the session's
own generation (which login, which renewal) is the stamp inside ``token``, the same in every
store (see `planet_async.storage.may_replace`), and `save_if_newer` compares that stamp in its
``WHERE`` clause.
"""

from __future__ import annotations

import contextvars
import functools
import json
import logging
import math
import re
import secrets
import threading
import time
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar, cast
from urllib.parse import urlsplit

import anyio

from .._errors import ConfigurationError, LockLost, StorageError
from .._extras import missing_extra
from .._models import TokenSet
from .._redact import redact
from ._generations import Generation
from ._stored import stored_token
from ._url import describe_url, mask_url, url_secrets

if TYPE_CHECKING:
    import psycopg

__all__ = ["SCHEMA_VERSION", "PostgresStorage"]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

SCHEMA_VERSION = 1
"""The version of the tables this release creates and reads."""

_TABLE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,47}")
# Serialises creating the tables among processes that start at once (any constant will do; this
# one is "planet_async" in ASCII, truncated to 63 bits).
_SCHEMA_LOCK = 0x706C616E65745F61

_CREATE = """
CREATE TABLE {table} (
    session       text PRIMARY KEY,
    token         jsonb,
    generation    bigint NOT NULL DEFAULT 0,
    lease_owner   text,
    lease_expires timestamptz,
    set_aside     jsonb,
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE {table}_schema (version integer NOT NULL);
INSERT INTO {table}_schema (version) VALUES ({version});
"""
_LOAD = "SELECT token FROM {table} WHERE session = %s"
# Without the lock: an upsert.
_SAVE = """
INSERT INTO {table} AS t (session, token, generation) VALUES (%s, %s::jsonb, 1)
ON CONFLICT (session) DO UPDATE
SET token = EXCLUDED.token, generation = t.generation + 1, updated_at = clock_timestamp()
"""
# Under the lock: written only while the lease is ours, checked in the same statement.
_FENCED_SAVE = """
UPDATE {table}
SET token = %s::jsonb, generation = generation + 1, updated_at = clock_timestamp()
WHERE session = %s AND lease_owner = %s AND lease_expires > clock_timestamp()
"""
# The save of a renewal (`save_if_newer`): written only if the stored session is not newer
# (`may_replace`), in the same statement as the write. A stamp is read as the Python side reads
# it: anything but string lineage and tag and a whole number counts as no stamp (the CASE keeps
# a malformed number from being cast).
_G = "(t.token -> '_planet_async_generation')"
_N = f"(CASE WHEN jsonb_typeof({_G} -> 'number') = 'number' THEN ({_G} ->> 'number')::numeric END)"
_STAMPED = (
    f"jsonb_typeof({_G} -> 'lineage') = 'string' AND jsonb_typeof({_G} -> 'tag') = 'string' "
    f"AND {_N} >= 0 AND {_N} = floor({_N})"
)
_REPLACEABLE = (
    f"(t.token IS NULL OR NOT COALESCE({_STAMPED}, false) OR ({_G} ->> 'lineage' = %(lineage)s "
    f"AND ({_N} < %(number)s OR ({_N} = %(number)s AND {_G} ->> 'tag' = %(tag)s))))"
)
_SAVE_IF_NEWER = (
    """
INSERT INTO {table} AS t (session, token, generation) VALUES (%(session)s, %(token)s::jsonb, 1)
ON CONFLICT (session) DO UPDATE
SET token = EXCLUDED.token, generation = t.generation + 1, updated_at = clock_timestamp()
WHERE """
    + _REPLACEABLE
)
_FENCED_SAVE_IF_NEWER = (
    """
UPDATE {table} AS t
SET token = %(token)s::jsonb, generation = t.generation + 1, updated_at = clock_timestamp()
WHERE t.session = %(session)s AND t.lease_owner = %(owner)s
  AND t.lease_expires > clock_timestamp() AND """
    + _REPLACEABLE
)
_HOLDS = """
SELECT 1 FROM {table}
WHERE session = %s AND lease_owner = %s AND lease_expires > clock_timestamp()
"""
_DELETE = """
UPDATE {table}
SET token = NULL, generation = generation + 1, updated_at = clock_timestamp()
WHERE session = %s AND token IS NOT NULL
"""
_SET_ASIDE = """
UPDATE {table}
SET set_aside = token, token = NULL, generation = generation + 1, updated_at = clock_timestamp()
WHERE session = %s AND token = %s::jsonb
"""
# The lease's statements do not wait for their commit to reach the disk (`relaxed`, in the
# statement's own transaction): a lease lost in a server crash only makes its holder's fenced
# save fail (nothing is spent without a fenced save first), and a release lost in one leaves a
# lease that lapses by itself. Saves wait, as the server's settings say (synchronous_commit is
# on by default).
_RELAXED = "WITH relaxed AS (SELECT set_config('synchronous_commit', 'off', true))"
# Taking a lease we already hold succeeds too, so an attempt whose answer was lost can simply be
# made again.
_ACQUIRE = (
    _RELAXED
    + """
INSERT INTO {table} AS t (session, lease_owner, lease_expires)
SELECT %s, %s, clock_timestamp() + %s * interval '1 millisecond' FROM relaxed
ON CONFLICT (session) DO UPDATE
SET lease_owner = EXCLUDED.lease_owner, lease_expires = EXCLUDED.lease_expires
WHERE t.lease_owner IS NULL OR t.lease_owner = EXCLUDED.lease_owner
   OR t.lease_expires <= clock_timestamp()
RETURNING 1
"""
)
_EXTEND = (
    _RELAXED
    + """
UPDATE {table} SET lease_expires = clock_timestamp() + %s * interval '1 millisecond'
FROM relaxed
WHERE session = %s AND lease_owner = %s AND lease_expires > clock_timestamp()
"""
)
_RELEASE = (
    _RELAXED
    + """
UPDATE {table} SET lease_owner = NULL, lease_expires = NULL
FROM relaxed
WHERE session = %s AND lease_owner = %s
"""
)
_VERSION = "SELECT max(version) FROM {table}_schema"
# Deletion notices: one channel per sessions table, named after the table's OID, which is unique
# in the database (LISTEN/NOTIFY's scope) even for tables of one name in different schemas, so
# apps sharing a database never hear each other's. Channel names are at most 63 bytes; this one
# is at most 30 whatever the table is called. The notice is sent in the delete's transaction: it
# reaches the listeners when the delete commits, and never for a delete rolled back.
_CHANNEL = "SELECT 'planet_async_deleted_' || %s::regclass::oid"
_NOTIFY = "SELECT pg_notify('planet_async_deleted_' || %s::regclass::oid, %s)"
_NOTIFY_LIMIT = 8000
"""Bytes a NOTIFY payload may have (PostgreSQL's limit); a longer session name is not announced."""
_LISTEN_POLL = 1.0
"""Seconds a watcher's worker thread waits for notices at a time: a watch that ends leaves its
thread that long at most, and closes its connection then."""
_LISTENER_KEEPALIVES = {
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
}
"""libpq's TCP keepalives for a watcher's connection, unless the URL sets its own: a connection
that only listens sends nothing, and without them a server lost behind a dead network would
leave the watch waiting, unaware, for as long as the system's default (over two hours);
with these it ends within about a minute."""


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError:
        raise missing_extra("PostgresStorage", "postgres") from None
    return psycopg


@dataclass
class _Lease:
    """A held (or sought) lease: the session, and our owner token."""

    session: str
    owner: str
    lost: bool = False
    broken: bool = False  # PostgreSQL failed a call: do not wait on it to release
    # Set when the caller stopped waiting for the acquire: a worker thread whose acquire then
    # succeeds releases the lease itself, so that an abandoned attempt never holds it.
    abandoned: threading.Event = field(default_factory=threading.Event)


class _Connections:
    """Open connections between calls, each used by one worker thread at a time."""

    def __init__(self, connect: Callable[[], psycopg.Connection[Any]], keep: int) -> None:
        self._connect = connect
        self._keep = keep
        self._idle: list[psycopg.Connection[Any]] = []
        self._lock = threading.Lock()
        self._closed = False

    def take(self) -> tuple[psycopg.Connection[Any], bool]:
        """A connection, and whether it was open already (so may have been broken since)."""
        with self._lock:
            if self._idle:
                return self._idle.pop(), True
        return self._connect(), False

    def give(self, conn: psycopg.Connection[Any]) -> None:
        with self._lock:
            if not (self._closed or conn.closed or len(self._idle) >= self._keep):
                self._idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


class _Listener:
    """A connection that LISTENs, used by one worker thread at a time and closed by whichever of
    that thread and `stop` comes last: a watch that is cancelled stops waiting for its thread at
    once, and the thread, when it returns, closes what it opened or still holds."""

    def __init__(self) -> None:
        self._conn: psycopg.Connection[Any] | None = None
        self._state = threading.Lock()  # held for no more than a look at the flags
        self._busy = False
        self._stopped = False

    def open(self, connect: Callable[[], psycopg.Connection[Any]]) -> None:
        """Connect (and LISTEN) with `connect`, unless stopped meanwhile."""
        self._use(lambda: setattr(self, "_conn", connect()))

    def poll(self, wait: float) -> list[str]:
        """The session names notified within `wait` seconds (none once stopped)."""
        names: list[str] = []

        def receive() -> None:
            assert self._conn is not None
            names.extend(notice.payload for notice in self._conn.notifies(timeout=wait))

        self._use(receive)
        return names

    def stop(self) -> None:
        with self._state:
            self._stopped = True
            close = not self._busy
        if close and self._conn is not None:
            self._conn.close()

    def _use(self, work: Callable[[], None]) -> None:
        with self._state:
            if self._stopped:
                return
            self._busy = True
        try:
            work()
        finally:
            with self._state:
                self._busy = False
                close = self._stopped
            if close and self._conn is not None:
                self._conn.close()


def _connect(driver: Any, url: str, timeout: float, **options: Any) -> psycopg.Connection[Any]:
    conn = cast(
        "psycopg.Connection[Any]",
        driver.connect(url, autocommit=True, connect_timeout=max(2, math.ceil(timeout)), **options),
    )
    try:
        # The server gives up on a statement that outlives the caller's wait for it.
        conn.execute(f"SET statement_timeout = {max(1, round(timeout * 1000))}".encode())
    except BaseException:
        conn.close()
        raise
    return conn


class PostgresStorage:
    """Keeps sessions in one PostgreSQL table, as the same JSON as the `planet` CLI's
    ``token.json`` (in a ``jsonb`` column).

    `lock(session)` is a lease: a random owner token and an expiry (by the server's clock) in the
    session's row, taken only when no live lease is there, extended while it is held, and given
    up on leaving; a holder that crashed blocks others for one lease period at most. A save made
    under the lease is fenced: the ``UPDATE`` that writes it checks, in the same statement, that
    the lease is still ours and not expired, so a holder that stalled past its lease cannot
    overwrite a newer session (it gets `LockLost`, and the TokenManager adopts the stored one).

    Why a lease row and not an advisory lock: an advisory lock lives as long as its connection,
    and a stalled holder's connection stays open, so it would hold every other process back for
    as long as it stalls; a server restart drops advisory locks without the holder noticing, and
    a write cannot be fenced by one; and poolers in transaction mode (PgBouncer) do not keep them.
    The row survives restarts, lapses by itself, and fences the write.

    The tables are created on first use when missing (see the module's schema); the
    `SCHEMA_VERSION` they record lets later releases migrate them. Each call runs in a worker
    thread on a connection kept open between calls (up to `connections` of them); every call is
    bounded by `timeout`, and the wait for the lease by `lock_timeout`. `aclose()` (or leaving
    ``async with storage:``) closes the connections; so does garbage collection.

    Args:
        url: A libpq URL, ``postgresql://[user[:password]@]host[:port]/dbname[?param=value]``
            (``postgres://`` too); parameters such as ``sslmode=verify-full`` pass through.
        table: The sessions table (lower-case letters, digits and ``_``), in the connection's
            ``search_path``; its schema version is kept in ``<table>_schema``.
        lease: Seconds a lease lasts unless extended (extended every third of it while held).
        lock_timeout: Seconds to wait for another holder's lease before `StorageError`.
        timeout: Seconds any one call to the server may take.
        connections: Connections kept open between calls.

    Raises:
        ConfigurationError: The URL is not a PostgreSQL URL, an argument is out of range, or the
            ``postgres`` extra is missing.
    """

    lock_can_lapse = True
    """The lock is a lease: a holder that stalls past it loses it (see `TokenManager`)."""

    def __init__(
        self,
        url: str,
        *,
        table: str = "planet_async_sessions",
        lease: float = 10.0,
        lock_timeout: float = 60.0,
        timeout: float = 5.0,
        connections: int = 4,
    ) -> None:
        self._psycopg = _psycopg()
        self._secrets = url_secrets(url)
        try:
            scheme = urlsplit(url).scheme.lower()
        except ValueError:
            scheme = ""
        if scheme not in ("postgresql", "postgres"):
            raise ConfigurationError(
                f"{describe_url(url)} is not a PostgreSQL URL (postgresql://user@host:port/dbname)"
            )
        try:
            # libpq reads the URL here, not at the first connection: its objections belong to
            # construction, where the URL is given.
            self._psycopg.conninfo.conninfo_to_dict(url)
        except self._psycopg.Error as exc:
            raise ConfigurationError(
                f"not a usable PostgreSQL URL: {redact(str(exc), self._secrets)}"
            ) from None
        if not _TABLE_NAME.fullmatch(table):
            raise ConfigurationError(
                f"table {table!r}: use at most 48 lower-case letters, digits and _, "
                "not starting with a digit"
            )
        for name, value in (("lease", lease), ("lock_timeout", lock_timeout), ("timeout", timeout)):
            if not (math.isfinite(value) and value > 0):
                raise ConfigurationError(f"{name} must be a positive number of seconds")
        if connections < 0:
            raise ConfigurationError("connections must be 0 or more")
        self._url = url
        self.url = mask_url(url)
        """The URL with its password masked."""
        self.table = table
        self.lease = lease
        self.lock_timeout = lock_timeout
        self.timeout = timeout
        self._sql = {
            name: query.format(table=table, version=SCHEMA_VERSION).encode()
            for name, query in (
                ("create", _CREATE),
                ("load", _LOAD),
                ("save", _SAVE),
                ("fenced_save", _FENCED_SAVE),
                ("save_if_newer", _SAVE_IF_NEWER),
                ("fenced_save_if_newer", _FENCED_SAVE_IF_NEWER),
                ("holds", _HOLDS),
                ("delete", _DELETE),
                ("set_aside", _SET_ASIDE),
                ("acquire", _ACQUIRE),
                ("extend", _EXTEND),
                ("release", _RELEASE),
                ("version", _VERSION),
            )
        }
        self._connections = _Connections(
            functools.partial(_connect, self._psycopg, url, timeout), connections
        )
        # Connections close when the storage is collected, even if no one closed it.
        self._finalizer = weakref.finalize(self, self._connections.close)
        self._schema_ready = False
        self._schema_lock = threading.Lock()
        self._held: contextvars.ContextVar[_Lease | None] = contextvars.ContextVar(
            "planet_async_postgres_lease", default=None
        )

    def __repr__(self) -> str:
        return f"PostgresStorage({self.url!r}, table={self.table!r})"

    @asynccontextmanager
    async def watch_deletions(self) -> AsyncIterator[AsyncIterator[str]]:
        """Listen for deleted sessions (``LISTEN``) on a connection of its own, until the block
        ends: `delete` sends the session's name (``pg_notify``) in the delete's transaction, on
        the channel ``planet_async_deleted_<OID of the table>``.

        The notices arrive in a worker thread that waits at most a second at a time, so leaving
        the block (or cancelling it) is immediate; that thread closes the connection when its
        wait ends.

        Raises:
            StorageError: PostgreSQL cannot be reached, or the connection is lost while
                listening (a restart): the iterator raises it, and the notices sent meanwhile are
                missed, so watchers listen again and re-read what they hold (`SessionPool` does).
        """
        listener = _Listener()
        try:
            try:
                with anyio.fail_after(self.timeout):
                    await self._in_listener(functools.partial(listener.open, self._listen))
            except TimeoutError:
                raise StorageError(
                    f"cannot watch deletions of session '*' in {self.url}: no answer within "
                    f"{self.timeout:g} s"
                ) from None
            async with aclosing(self._notices(listener)) as names:
                yield names
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(listener.stop)

    async def __aenter__(self) -> PostgresStorage:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connections kept open; a later call opens new ones."""
        connections = self._connections
        self._connections = _Connections(connections._connect, connections._keep)
        self._finalizer.detach()
        self._finalizer = weakref.finalize(self, self._connections.close)
        await anyio.to_thread.run_sync(connections.close)

    # -- the Storage protocol ------------------------------------------------------------------

    async def load(self, session: str) -> TokenSet | None:
        rows = await self._call(
            lambda c: c.execute(self._sql["load"], (session,)).fetchall(), "read", session
        )
        if not rows or rows[0][0] is None:
            return None
        data = rows[0][0]
        if not isinstance(data, dict):
            await self._set_aside(session, data)
            return None
        return stored_token(data, f"session {session!r} in {self.url}")

    async def save(self, session: str, token: TokenSet) -> None:
        payload = json.dumps(token.to_json_dict(), sort_keys=True)
        lease = self._held.get()
        if lease is None or lease.session != session:
            await self._call(
                lambda c: c.execute(self._sql["save"], (session, payload)), "save", session
            )
            return
        written = await self._call(
            lambda c: c.execute(self._sql["fenced_save"], (payload, session, lease.owner)).rowcount,
            "save",
            session,
        )
        if written != 1:
            lease.lost = True
            raise LockLost(
                f"the lease on session {session!r} in {self.url} lapsed before the save "
                "(this process stalled, or PostgreSQL did); the stored session was left as it was"
            )

    async def save_if_newer(self, session: str, token: TokenSet) -> bool:
        stamp = Generation.of(token)
        if stamp is None:
            await self.save(session, token)  # no stamp: a login's write, unconditional
            return True
        params = {
            "session": session,
            "token": json.dumps(token.to_json_dict(), sort_keys=True),
            "lineage": stamp.lineage,
            "number": stamp.number,
            "tag": stamp.tag,
        }
        lease = self._held.get()
        if lease is None or lease.session != session:
            written = await self._call(
                lambda c: c.execute(self._sql["save_if_newer"], params).rowcount, "save", session
            )
            return written == 1

        def fenced(conn: psycopg.Connection[Any]) -> int:
            if conn.execute(
                self._sql["fenced_save_if_newer"], {**params, "owner": lease.owner}
            ).rowcount:
                return 1
            # Not written: refused as older, or the lease is gone (checked after: a lease that
            # lapses in between makes this a refusal, which the caller treats alike).
            return 2 if conn.execute(self._sql["holds"], (session, lease.owner)).fetchall() else 0

        written = await self._call(fenced, "save", session)
        if written == 0:
            lease.lost = True
            raise LockLost(
                f"the lease on session {session!r} in {self.url} lapsed before the save "
                "(this process stalled, or PostgreSQL did); the stored session was left as it was"
            )
        return written == 1

    async def delete(self, session: str) -> None:
        await self._call(lambda c: self._delete_and_notify(c, session), "delete", session)

    def _delete_and_notify(self, conn: psycopg.Connection[Any], session: str) -> None:
        with conn.transaction():
            conn.execute(self._sql["delete"], (session,))
            if len(session.encode()) < _NOTIFY_LIMIT:
                conn.execute(_NOTIFY.encode(), (self.table, session))
            else:
                # No watcher hears of it: they find the session gone at their next renewal.
                logger.info("session name of %d bytes: its deletion is not announced", len(session))

    @asynccontextmanager
    async def lock(self, session: str) -> AsyncIterator[None]:
        lease = _Lease(session, secrets.token_urlsafe(24))
        # The task group (for the extending task) is entered and left by hand, so that an error
        # of the caller's comes out as itself, not wrapped in an ExceptionGroup.
        tasks = anyio.create_task_group()
        await tasks.__aenter__()
        reset = self._held.set(lease)
        try:
            # The release also follows a failed or cancelled acquire (see `_try_acquire`).
            acquired = False
            try:
                await self._acquire(lease)
                acquired = True
                tasks.start_soon(self._keep_extended, lease)
                yield
            finally:
                if not acquired:
                    lease.abandoned.set()
                tasks.cancel_scope.cancel()
                with anyio.CancelScope(shield=True):
                    await self._release(lease)
        finally:
            self._held.reset(reset)
            tasks.cancel_scope.cancel()
            await tasks.__aexit__(None, None, None)

    # -- the lease -------------------------------------------------------------------------------

    def _try_acquire(self, conn: psycopg.Connection[Any], lease: _Lease) -> bool:
        lease_ms = max(1, round(self.lease * 1000))
        taken = bool(
            conn.execute(self._sql["acquire"], (lease.session, lease.owner, lease_ms)).fetchall()
        )
        if taken and lease.abandoned.is_set():
            conn.execute(self._sql["release"], (lease.session, lease.owner))
            return False
        return taken

    async def _acquire(self, lease: _Lease) -> None:
        deadline = time.monotonic() + self.lock_timeout
        delay = 0.005
        while not await self._call(lambda c: self._try_acquire(c, lease), "lock", lease.session):
            if time.monotonic() >= deadline:
                raise StorageError(
                    f"timed out after {self.lock_timeout:g} s waiting for the lease on "
                    f"session {lease.session!r} in {self.url}; another process holds it (a "
                    f"lease lapses by itself within {self.lease:g} s of its holder stopping)"
                )
            await anyio.sleep(delay)
            delay = min(delay * 2, 0.1, self.lease / 10)

    async def _keep_extended(self, lease: _Lease) -> None:
        lease_ms = max(1, round(self.lease * 1000))
        while True:
            await anyio.sleep(self.lease / 3)
            try:
                extended = await self._call(
                    lambda c: (
                        c.execute(
                            self._sql["extend"], (lease_ms, lease.session, lease.owner)
                        ).rowcount
                    ),
                    "extend the lease on",
                    lease.session,
                    mark_broken=False,
                )
            except StorageError as exc:
                logger.warning("session %r: %s", lease.session, exc)
                continue  # the fenced save still decides; the lease may yet be ours
            if extended != 1:
                lease.lost = True
                logger.warning(
                    "session %r: the lease in %s lapsed while held; a save now would be refused",
                    lease.session,
                    self.url,
                )
                return

    async def _release(self, lease: _Lease) -> None:
        if lease.lost:
            return  # not ours any more: nothing to release
        if lease.broken:
            # PostgreSQL just failed us: waiting on it again would only delay the caller's
            # error, and the lease lapses by itself.
            logger.info("session %r: not releasing the lease; it lapses by itself", lease.session)
            return
        try:
            await self._call(
                lambda c: c.execute(self._sql["release"], (lease.session, lease.owner)),
                "unlock",
                lease.session,
            )
        except StorageError as exc:
            logger.warning("session %r: %s; the lease will lapse by itself", lease.session, exc)

    # -- deletion notices ------------------------------------------------------------------------

    def _listen(self) -> psycopg.Connection[Any]:
        """In a worker thread: a new connection, listening on the deletions channel."""
        psycopg = self._psycopg
        given = psycopg.conninfo.conninfo_to_dict(self._url)
        keepalives = {k: v for k, v in _LISTENER_KEEPALIVES.items() if k not in given}
        conn = _connect(psycopg, self._url, self.timeout, **keepalives)
        try:
            if conn.info.server_version >= 140000:
                # A listening connection is idle by design: a server that ends idle sessions
                # (idle_session_timeout, PostgreSQL 14+) would break the watch each time.
                conn.execute(b"SET idle_session_timeout = 0")
            self._ensure_schema(conn)  # the channel is named after the table's OID
            row = conn.execute(_CHANNEL.encode(), (self.table,)).fetchone()
            assert row is not None
            conn.execute(psycopg.sql.SQL("LISTEN {}").format(psycopg.sql.Identifier(row[0])))
        except BaseException:
            conn.close()
            raise
        return conn

    async def _in_listener(self, work: Callable[[], _T]) -> _T:
        """`work` in a worker thread, its driver errors as `StorageError`s."""
        try:
            return await anyio.to_thread.run_sync(work, abandon_on_cancel=True)
        except StorageError:
            raise
        except self._psycopg.Error as exc:
            raise self._error(exc, "watch deletions of", "*") from None

    async def _notices(self, listener: _Listener) -> AsyncGenerator[str, None]:
        while True:
            for name in await self._in_listener(functools.partial(listener.poll, _LISTEN_POLL)):
                yield name

    # -- talking to PostgreSQL -------------------------------------------------------------------

    async def _call(
        self,
        work: Callable[[psycopg.Connection[Any]], _T],
        action: str,
        session: str,
        *,
        mark_broken: bool = True,
    ) -> _T:
        """Run `work` on a connection in a worker thread, bounded by `timeout`.

        A call the caller stops waiting for (a timeout, a cancellation) finishes in its thread,
        and the server ends a statement that runs longer than `timeout` (``statement_timeout``).
        """
        try:
            with anyio.fail_after(self.timeout):
                return await anyio.to_thread.run_sync(
                    self._run, work, action, session, abandon_on_cancel=True
                )
        except StorageError:
            self._mark_broken(mark_broken)
            raise
        except TimeoutError:
            self._mark_broken(mark_broken)
            raise StorageError(
                f"cannot {action} session {session!r} in {self.url}: "
                f"no answer within {self.timeout:g} s"
            ) from None

    def _mark_broken(self, mark: bool) -> None:
        lease = self._held.get()
        if mark and lease is not None:
            lease.broken = True

    def _run(self, work: Callable[[psycopg.Connection[Any]], _T], action: str, session: str) -> _T:
        """In a worker thread: `work` on an open connection; once more on a new connection when
        the open one turns out to be broken (the server restarted since it was last used)."""
        psycopg = self._psycopg
        connections = self._connections
        for attempt in range(2):
            try:
                conn, reused = connections.take()
            except psycopg.Error as exc:
                raise self._error(exc, action, session) from None
            try:
                self._ensure_schema(conn)
                result = work(conn)
            except psycopg.Error as exc:
                if conn.broken or conn.closed:
                    conn.close()
                    if reused and attempt == 0:
                        continue
                else:
                    connections.give(conn)
                raise self._error(exc, action, session) from None
            except BaseException:
                conn.close()
                raise
            connections.give(conn)
            return result
        raise AssertionError("unreachable")  # pragma: no cover

    def _ensure_schema(self, conn: psycopg.Connection[Any]) -> None:
        """Create the tables if they are missing; refuse tables of a newer schema."""
        if self._schema_ready:
            return
        with self._schema_lock:
            if self._schema_ready:
                return
            version = self._schema_version(conn)
            if version is None:
                # One process creates them; the others wait here, then find them. A lock of the
                # connection's, not the transaction's: the check after it must run in a
                # transaction of its own to see tables another one just created.
                conn.execute("SELECT pg_advisory_lock(%s)", (_SCHEMA_LOCK,))
                try:
                    version = self._schema_version(conn)
                    if version is None:
                        with conn.transaction():
                            conn.execute(self._sql["create"])
                        version = SCHEMA_VERSION
                        logger.info("created table %s in %s", self.table, self.url)
                finally:
                    conn.execute("SELECT pg_advisory_unlock(%s)", (_SCHEMA_LOCK,))
            if version > SCHEMA_VERSION:
                raise StorageError(
                    f"table {self.table} in {self.url} has schema version {version}, newer than "
                    f"this release of planet-async reads ({SCHEMA_VERSION}); upgrade planet-async"
                )
            self._schema_ready = True

    def _schema_version(self, conn: psycopg.Connection[Any]) -> int | None:
        found = conn.execute(
            "SELECT to_regclass(%s) IS NOT NULL, to_regclass(%s) IS NOT NULL",
            (self.table, f"{self.table}_schema"),
        ).fetchone()
        assert found is not None
        if not found[0]:
            return None
        if not found[1]:
            raise StorageError(
                f"table {self.table} in {self.url} exists but {self.table}_schema does not: it was "
                "not created by planet-async; choose another table name"
            )
        rows = conn.execute(self._sql["version"]).fetchone()
        if rows is None or rows[0] is None:
            raise StorageError(f"table {self.table}_schema in {self.url} holds no version")
        return int(rows[0])

    def _error(self, exc: Exception, action: str, session: str) -> StorageError:
        # A driver error can quote the URL it failed to reach, or parts of it: mask them.
        detail = f"{type(exc).__name__}: {exc}".replace(self._url, self.url).strip()
        detail = redact(detail, self._secrets)
        return StorageError(f"cannot {action} session {session!r} in {self.url}: {detail}")

    async def _set_aside(self, session: str, data: Any) -> None:
        await self._call(
            lambda c: c.execute(self._sql["set_aside"], (session, json.dumps(data))),
            "set aside",
            session,
        )
        logger.warning(
            "session %r in %s was corrupt (not a JSON object); moved it to the set_aside column "
            "of table %s and treating the session as absent",
            session,
            self.url,
            self.table,
        )
