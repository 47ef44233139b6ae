"""PostgresStorage against a real PostgreSQL server: the tables, the lease, fencing, connections.

The contract every storage meets (round trips, exclusion, a cancelled waiter, another process)
is in tests/test_storage.py; this file holds what only PostgreSQL's tables and lease row have.
Leases here last a fraction of a second, so a lease that lapses does so within the test; sleeps
appear only where the time passing is itself what is tested.
"""

from __future__ import annotations

import json
import logging
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream

from planet_async import (
    ConfigurationError,
    LockLost,
    PostgresStorage,
    StorageError,
    TokenSet,
)
from planet_async.storage import storage_from_url
from planet_async.storage._postgres import SCHEMA_VERSION, _Lease
from tests._postgres import PostgresServer
from tests._redis import free_port

pytestmark = pytest.mark.anyio

LEASE = 0.3  # seconds; short, so a lease lapses within a test
SLACK = 0.5  # seconds of scheduling delay allowed on a busy machine
TABLE = "planet_async_sessions"
REPO = Path(__file__).resolve().parent.parent


def _token(access: str) -> TokenSet:
    return TokenSet(
        access_token=access, issued_at=100, expires_at=200, refresh_token=f"rt-{access}"
    )


def _row(server: PostgresServer, session: str = "s") -> dict[str, Any] | None:
    rows = server.sql(
        f"SELECT token, generation, lease_owner, lease_expires - now(), set_aside FROM {TABLE} "
        "WHERE session = %s",
        session,
    )
    if not rows:
        return None
    token, generation, owner, left, aside = rows[0]
    return {"token": token, "generation": generation, "owner": owner, "left": left, "aside": aside}


def _stored(server: PostgresServer, session: str = "s") -> str | None:
    row = _row(server, session)
    return None if row is None or row["token"] is None else row["token"]["access_token"]


class StalledStorage(PostgresStorage):
    """A holder that stalls: its lease is never extended, so it lapses while held."""

    async def _keep_extended(self, lease: _Lease) -> None:
        return


# -- the tables --------------------------------------------------------------------------------


async def test_the_tables_are_created_with_the_documented_schema(
    postgres: PostgresServer,
) -> None:
    """On first use the storage creates its table, with the columns the docs list, and records
    the schema version; the token is stored as the planet CLI's token.json, as jsonb."""
    storage = PostgresStorage(postgres.url)
    assert await storage.load("s") is None
    columns = postgres.sql(
        "SELECT column_name, data_type, is_nullable FROM information_schema.columns "
        "WHERE table_name = %s ORDER BY ordinal_position",
        TABLE,
    )
    assert columns == [
        ("session", "text", "NO"),
        ("token", "jsonb", "YES"),
        ("generation", "bigint", "NO"),
        ("lease_owner", "text", "YES"),
        ("lease_expires", "timestamp with time zone", "YES"),
        ("set_aside", "jsonb", "YES"),
        ("updated_at", "timestamp with time zone", "NO"),
    ]
    assert postgres.sql(f"SELECT version FROM {TABLE}_schema") == [(SCHEMA_VERSION,)]
    token = _token("at-1")
    await storage.save("s", token)
    row = _row(postgres)
    assert row is not None
    assert row["token"] == token.to_json_dict()
    await storage.aclose()


async def test_many_storages_create_the_tables_at_once(postgres: PostgresServer) -> None:
    """Eight storages (processes starting together) using a new database at the same moment:
    one creates the tables, none fails, and one version row is recorded."""
    storages = [PostgresStorage(postgres.url) for _ in range(8)]
    async with anyio.create_task_group() as tg:
        for index, storage in enumerate(storages):
            tg.start_soon(storage.save, f"s{index}", _token(f"at-{index}"))
    assert postgres.sql(f"SELECT count(*) FROM {TABLE}") == [(8,)]
    assert postgres.sql(f"SELECT version FROM {TABLE}_schema") == [(SCHEMA_VERSION,)]
    for storage in storages:
        await storage.aclose()


async def test_a_newer_schema_is_refused(postgres: PostgresServer) -> None:
    """Tables of a newer schema version are not read or written: the error says to upgrade."""
    await PostgresStorage(postgres.url).save("s", _token("at-1"))
    postgres.sql(f"UPDATE {TABLE}_schema SET version = %s", SCHEMA_VERSION + 1)
    with pytest.raises(StorageError, match="upgrade planet-async"):
        await PostgresStorage(postgres.url).load("s")


async def test_a_table_of_someone_else_is_refused(postgres: PostgresServer) -> None:
    """A table of that name that planet_async did not create is left alone, with an error."""
    postgres.sql(f"CREATE TABLE {TABLE} (id integer)")
    with pytest.raises(StorageError, match="not created by planet-async"):
        await PostgresStorage(postgres.url).load("s")
    postgres.sql(f"DROP TABLE {TABLE}")


async def test_a_table_of_its_own(postgres: PostgresServer) -> None:
    """`table` names the table: two storages with different tables keep separate sessions."""
    one, two = PostgresStorage(postgres.url), PostgresStorage(postgres.url, table="other_app")
    await one.save("s", _token("one"))
    await two.save("s", _token("two"))
    loaded = await two.load("s")
    assert loaded is not None
    assert loaded.access_token.get_secret_value() == "two"
    assert postgres.sql("SELECT token->>'access_token' FROM other_app") == [("two",)]
    postgres.sql("DROP TABLE other_app, other_app_schema")


async def test_the_generation_grows_on_every_save_and_delete(postgres: PostgresServer) -> None:
    """The row's generation counts writes: it grows on each save and delete, never shrinks."""
    storage = PostgresStorage(postgres.url)
    generations = []
    for step in ("save", "save", "delete", "save"):
        if step == "save":
            await storage.save("s", _token(f"at-{len(generations)}"))
        else:
            await storage.delete("s")
        row = _row(postgres)
        assert row is not None
        generations.append(row["generation"])
    assert generations == [1, 2, 3, 4]


@pytest.mark.parametrize("content", ['["at-1"]', '"at-1"', "42"], ids=["list", "string", "number"])
async def test_a_corrupt_value_is_set_aside(
    postgres: PostgresServer, caplog: pytest.LogCaptureFixture, content: str
) -> None:
    """A stored value that is not a JSON object loads as None, after being moved to the
    `set_aside` column (kept for inspection), with one WARNING naming the session and store."""
    storage = PostgresStorage(postgres.url)
    await storage.save("s", _token("at-1"))
    postgres.sql(f"UPDATE {TABLE} SET token = %s::jsonb", content)
    with caplog.at_level(logging.WARNING, logger="planet_async"):
        assert await storage.load("s") is None
    row = _row(postgres)
    assert row is not None
    assert row["token"] is None
    assert row["aside"] == json.loads(content)
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "'s'" in warning.getMessage()
    assert storage.url in warning.getMessage()


async def test_a_json_object_that_is_no_token_is_left_alone(postgres: PostgresServer) -> None:
    """A JSON object that is not a token set raises StorageError without quoting it, and stays."""
    storage = PostgresStorage(postgres.url)
    await storage.save("s", _token("at-1"))
    postgres.sql(f"UPDATE {TABLE} SET token = %s::jsonb", '{"api_key": "PLAK-not-ours"}')
    with pytest.raises(StorageError, match="log in again") as info:
        await storage.load("s")
    assert "PLAK-not-ours" not in str(info.value)
    assert postgres.sql(f"SELECT token->>'api_key' FROM {TABLE}") == [("PLAK-not-ours",)]


# -- the lease -------------------------------------------------------------------------------


async def test_the_lease_is_a_random_owner_that_expires(postgres: PostgresServer) -> None:
    """A held lease is a random owner token in the session's row, expiring within one lease by
    the server's clock; each holding gets a new owner, and leaving clears it."""
    storage = PostgresStorage(postgres.url, lease=5)
    owners = []
    for _ in range(2):
        async with storage.lock("s"):
            row = _row(postgres)
            assert row is not None
            owners.append(row["owner"])
            assert 0 < row["left"].total_seconds() <= 5
        row = _row(postgres)
        assert row is not None
        assert (row["owner"], row["left"]) == (None, None)
    first, second = owners
    assert first != second
    assert len(first) >= 32


async def test_a_long_hold_keeps_the_lease(postgres: PostgresServer) -> None:
    """A holder keeps its lease for several lease periods (it is extended while held): another
    storage waiting all that time does not get in, and the holder's fenced save still lands."""
    holder = PostgresStorage(postgres.url, lease=LEASE)
    waiter = PostgresStorage(postgres.url, lease=LEASE, lock_timeout=4 * LEASE)
    async with holder.lock("s"):
        with pytest.raises(StorageError, match="timed out") as info:
            async with waiter.lock("s"):
                pytest.fail("entered a lease its holder kept extending")
        await holder.save("s", _token("held-long"))
    assert not isinstance(info.value, LockLost)
    assert f"waiting for the lease on session 's' in {waiter.url}" in str(info.value)
    assert _stored(postgres) == "held-long"


async def test_a_stalled_holder_loses_the_lease_after_one_period(postgres: PostgresServer) -> None:
    """A lease not extended (its holder stalled) lapses by itself: another storage gets in
    about one lease period after it was taken."""
    stalled = StalledStorage(postgres.url, lease=LEASE)
    other = PostgresStorage(postgres.url, lock_timeout=5)
    async with stalled.lock("s"):
        taken = time.monotonic()
        async with other.lock("s"):
            waited = time.monotonic() - taken
    assert LEASE - 0.05 <= waited < LEASE + SLACK


async def test_a_save_after_the_lease_lapsed_is_refused(postgres: PostgresServer) -> None:
    """A holder whose lease lapsed and was taken by another cannot overwrite the session the new
    holder saved: its save raises LockLost (a StorageError) and the newer session stays; leaving,
    it does not release the new holder's lease."""
    stalled = StalledStorage(postgres.url, lease=LEASE)
    other = PostgresStorage(postgres.url, lease=5, lock_timeout=5)
    taken_over = anyio.Event()
    done = anyio.Event()
    owners: list[str] = []

    async def take_over() -> None:
        async with other.lock("s"):
            await other.save("s", _token("newer"))
            row = _row(postgres)
            assert row is not None
            owners.append(row["owner"])
            taken_over.set()
            await done.wait()

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            async with stalled.lock("s"):
                row = _row(postgres)
                assert row is not None
                stale_owner = row["owner"]
                tg.start_soon(take_over)
                await taken_over.wait()
                with pytest.raises(LockLost) as info:
                    await stalled.save("s", _token("stale"))
            row = _row(postgres)
            assert row is not None
            assert row["owner"] == owners[0] != stale_owner
            done.set()
    assert "lapsed before the save" in str(info.value)
    assert _stored(postgres) == "newer"
    row = _row(postgres)
    assert row is not None
    assert row["owner"] is None  # released by its own holder


async def test_an_expired_lease_fences_even_when_no_one_took_it(postgres: PostgresServer) -> None:
    """The fence is the lease's expiry, not only its owner: a save after the lease lapsed is
    refused even though no other holder has come (the server's clock decides)."""
    stalled = StalledStorage(postgres.url, lease=LEASE)
    await stalled.save("s", _token("before"))
    async with stalled.lock("s"):
        await anyio.sleep(LEASE + 0.1)  # the lease lapses (nobody extends it)
        with pytest.raises(LockLost):
            await stalled.save("s", _token("late"))
    assert _stored(postgres) == "before"


async def test_release_never_clears_another_owners_lease(postgres: PostgresServer) -> None:
    """Leaving a lease that lapsed and was taken over clears nothing: the row keeps its new
    owner and expiry."""
    stalled = StalledStorage(postgres.url, lease=LEASE)
    async with stalled.lock("s"):
        await anyio.sleep(LEASE + 0.1)  # the lease lapses (nobody extends it)
        postgres.sql(
            f"UPDATE {TABLE} SET lease_owner = 'someone-else', "
            "lease_expires = now() + interval '5 seconds'"
        )
    row = _row(postgres)
    assert row is not None
    assert row["owner"] == "someone-else"
    assert row["left"].total_seconds() > 4


async def test_a_save_without_the_lease_is_not_fenced(postgres: PostgresServer) -> None:
    """A save made outside `lock` (a login, the CLI copying a session in) is a plain write,
    whoever holds the lease, and leaves the lease as it was."""
    async with PostgresStorage(postgres.url).lock("s"):
        await PostgresStorage(postgres.url).save("s", _token("outside"))
        row = _row(postgres)
        assert row is not None
        assert row["owner"] is not None
    assert _stored(postgres) == "outside"


async def test_an_abandoned_acquire_releases_what_it_took(postgres: PostgresServer) -> None:
    """An acquire whose caller stopped waiting (a timeout, a cancellation) while its statement
    was still on the way gives the lease back as soon as the statement returns: the attempt
    never holds the session for a lease period."""
    storage = PostgresStorage(postgres.url, lease=60)
    await storage.save("s", _token("at-1"))
    lease = _Lease("s", "abandoned-owner")
    lease.abandoned.set()  # the caller gave up before the statement's answer arrived
    taken = await storage._call(lambda c: storage._try_acquire(c, lease), "lock", "s")
    assert taken is False
    row = _row(postgres)
    assert row is not None
    assert row["owner"] is None
    with anyio.fail_after(5):
        async with PostgresStorage(postgres.url, lock_timeout=1).lock("s"):
            pass


async def test_a_holder_sigstopped_past_its_lease_is_fenced(postgres: PostgresServer) -> None:
    """A real process holding the lease is stopped (SIGSTOP) for longer than its lease: another
    takes the lease and stores a newer session; when the stopped process resumes, its save is
    refused (LockLost) and the newer session stays."""
    command = [sys.executable, "-m", "tests._postgres_holder", postgres.url, "s", str(LEASE)]
    async with await anyio.open_process(
        command, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE
    ) as holder:
        assert holder.stdin is not None
        assert holder.stdout is not None
        lines = BufferedByteReceiveStream(holder.stdout)
        with anyio.fail_after(20):
            assert await lines.receive_until(b"\n", 100) == b"held"
        holder.send_signal(signal.SIGSTOP)
        other = PostgresStorage(postgres.url, lease=5, lock_timeout=5)
        try:
            with anyio.fail_after(10):
                async with other.lock("s"):  # once the stopped holder's lease has lapsed
                    await other.save("s", _token("newer"))
        finally:
            holder.send_signal(signal.SIGCONT)
        await holder.stdin.send(b"save\n")
        with anyio.fail_after(20):
            assert await lines.receive_until(b"\n", 100) == b"LockLost"
            assert await holder.wait() == 0
    assert _stored(postgres) == "newer"
    await other.aclose()


# -- connections and failures ----------------------------------------------------------------


def _backends(server: PostgresServer) -> set[int]:
    return {pid for (pid,) in server.sql("SELECT pid FROM pg_stat_activity")}


async def test_connections_are_kept_open_and_closed_by_aclose(postgres: PostgresServer) -> None:
    """A storage keeps its connection between calls (a renewal does not pay for a connection
    each time) and `aclose` closes it."""
    storage = PostgresStorage(postgres.url)
    for index in range(5):
        await storage.save("s", _token(f"at-{index}"))
        await storage.load("s")
    (conn,) = storage._connections._idle  # one connection served every call
    pid = conn.info.backend_pid
    assert pid in _backends(postgres)
    await storage.aclose()
    assert conn.closed
    # The server ends a backend moments after its client leaves: wait for that, bounded.
    deadline = time.monotonic() + 5
    while pid in _backends(postgres) and time.monotonic() < deadline:  # noqa: ASYNC110
        await anyio.sleep(0.01)
    assert pid not in _backends(postgres)


async def test_calls_go_on_after_the_server_restarts(
    start_postgres: Callable[..., PostgresServer],
) -> None:
    """A server restart (a clean one, then a crash) breaks the open connection; the next call
    opens a new one and succeeds, and the session committed before the crash is there."""
    server = start_postgres()
    storage = PostgresStorage(server.url, timeout=2)
    await storage.save("s", _token("before"))
    server.stop()
    server.start()
    loaded = await storage.load("s")
    assert loaded is not None
    assert loaded.access_token.get_secret_value() == "before"
    async with storage.lock("s"):
        await storage.save("s", _token("committed"))
    server.crash()
    server.start()
    loaded = await storage.load("s")
    assert loaded is not None
    assert loaded.access_token.get_secret_value() == "committed"
    await storage.aclose()


async def test_an_unreachable_server_is_one_clear_error_with_the_password_masked() -> None:
    """Nothing listening: load, save and lock each raise one StorageError that names the session
    and the store, with the URL's password masked in it and in the storage's repr."""
    url = f"postgresql://app:s3cret-pw@127.0.0.1:{free_port()}/db"
    storage = PostgresStorage(url, timeout=1)
    masked = f"postgresql://app:***@127.0.0.1:{url.rsplit(':', 1)[1]}"
    assert "s3cret-pw" not in repr(storage)
    assert storage.url == masked
    with pytest.raises(StorageError) as read:
        await storage.load("s")
    with pytest.raises(StorageError) as locked:
        async with storage.lock("s"):
            pytest.fail("locked an unreachable store")
    for info, action in ((read, "read"), (locked, "lock")):
        message = str(info.value)
        assert message.startswith(f"cannot {action} session 's' in {masked}: ")
        assert "s3cret-pw" not in message
        assert info.value.__cause__ is None or "s3cret-pw" not in str(info.value.__cause__)


def test_urls_and_arguments() -> None:
    """`storage_from_url` names a PostgresStorage for postgresql:// and postgres:// URLs; other
    URLs, bad table names and non-positive durations are ConfigurationErrors (URL masked)."""
    for scheme in ("postgresql", "postgres"):
        storage = storage_from_url(f"{scheme}://app:pw@db.example:5432/tokens?sslmode=verify-full")
        assert isinstance(storage, PostgresStorage)
        assert storage.url == f"{scheme}://app:***@db.example:5432/tokens?sslmode=verify-full"
    in_query = PostgresStorage("postgresql:///tokens?host=/run/pg&user=app&password=p%40ss")
    assert in_query.url == "postgresql:///tokens?host=/run/pg&user=app&password=***"
    # A user name alone is masked too, as in every storage URL: it may be a password.
    assert PostgresStorage("postgresql://app@db.example/t").url == "postgresql://***@db.example/t"
    with pytest.raises(ConfigurationError, match="not a usable PostgreSQL URL") as info:
        PostgresStorage("postgresql://app:s3cret-pw@db.example/t?no_such_parameter=1")
    assert "s3cret-pw" not in str(info.value)
    with pytest.raises(ConfigurationError, match="is not a PostgreSQL URL") as info:
        PostgresStorage("mysql://app:pw@db.example/tokens")
    assert "pw@" not in str(info.value)
    assert "***@db.example" in str(info.value)
    for table in ("Sessions", "1abc", "a-b", "s; drop table x", "x" * 49):
        with pytest.raises(ConfigurationError, match="table"):
            PostgresStorage("postgresql://db.example/tokens", table=table)
    for name in ("lease", "lock_timeout", "timeout"):
        with pytest.raises(ConfigurationError, match=name):
            PostgresStorage("postgresql://db.example/tokens", **{name: 0})


async def test_without_psycopg_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without psycopg, PostgresStorage is a ConfigurationError saying which extra to install."""
    monkeypatch.setitem(sys.modules, "psycopg", None)
    with pytest.raises(ConfigurationError, match=re.escape("[postgres]")):
        PostgresStorage("postgresql://127.0.0.1/db")


def test_planet_async_imports_without_psycopg() -> None:
    """`import planet_async` works where psycopg cannot be imported."""
    script = """
import sys
sys.modules["psycopg"] = None
import planet_async
from planet_async import ConfigurationError, PostgresStorage
try:
    PostgresStorage("postgresql://127.0.0.1/db")
except ConfigurationError as exc:
    print(exc)
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "PostgresStorage needs the postgres extra" in done.stdout


# -- deletion notices (LISTEN/NOTIFY) --------------------------------------------------------


async def _next(names: Any) -> str:
    with anyio.fail_after(10):  # a guard against a hang; a notice comes in milliseconds
        return str(await names.__anext__())


async def test_a_deletion_reaches_a_watcher_on_another_storage(postgres: PostgresServer) -> None:
    """A delete on one storage is told to a watcher on another (its own connection), and only
    deletions of its own table: another app's table on the same database, and a session name
    too long for a NOTIFY payload (deleted all the same), are not announced to it."""
    one, two = PostgresStorage(postgres.url), PostgresStorage(postgres.url)
    other_app = PostgresStorage(postgres.url, table="other_app")
    await one.save("lee", _token("lee"))
    too_long, longest = "x" * 8000, "é" * 3999 + "y"  # bytes: 8000 and 7999 (the limit)
    await one.save(too_long, _token("long"))
    async with two.watch_deletions() as names:
        await other_app.delete("lee")
        await one.delete(too_long)
        await one.delete("lee")
        assert await _next(names) == "lee"
        assert _stored(postgres, too_long) is None
        await one.delete(longest)
        assert await _next(names) == longest
        await one.delete("never-stored")  # told as well, as Redis does: a hint, not a fact
        assert await _next(names) == "never-stored"
    postgres.sql("DROP TABLE other_app, other_app_schema")
    for storage in (one, two, other_app):
        await storage.aclose()


async def test_a_watch_ends_when_left_or_cancelled_and_closes_its_connection(
    postgres: PostgresServer,
) -> None:
    """Leaving a watch, or cancelling a task waiting in it, returns at once (the worker thread
    is abandoned), and the listening connection is closed when its wait ends."""
    storage = PostgresStorage(postgres.url)
    listening = "SELECT pid FROM pg_stat_activity WHERE query LIKE 'LISTEN %'"
    for leave in ("cancel", "leave"):
        with anyio.CancelScope() as scope:
            async with storage.watch_deletions() as names:
                (pid,) = postgres.sql(listening)
                if leave == "cancel":
                    scope.cancel()
                    await names.__anext__()
        assert scope.cancelled_caught is (leave == "cancel")
        deadline = time.monotonic() + 10
        while postgres.sql(listening) and time.monotonic() < deadline:  # noqa: ASYNC110
            await anyio.sleep(0.05)
        assert pid not in postgres.sql(listening)
        assert pid not in _backends(postgres)
    await storage.aclose()


async def test_a_watch_breaks_with_the_server_and_listens_again_after_a_restart(
    start_postgres: Callable[..., PostgresServer],
) -> None:
    """A server restart ends a watch with a StorageError (notices sent meanwhile are missed, so
    the watcher must know); a new watch hears deletions again. An unreachable server is a
    StorageError when the watch starts, its password masked."""
    server = start_postgres()
    url = server.url.replace("postgres@", "postgres:s3cret-pw@")
    watcher, deleter = PostgresStorage(url, timeout=2), PostgresStorage(url, timeout=2)
    async with watcher.watch_deletions() as names:
        server.stop()
        with anyio.fail_after(10), pytest.raises(StorageError) as broke:
            await names.__anext__()
    assert "s3cret-pw" not in str(broke.value)
    assert str(broke.value).startswith(f"cannot watch deletions of session '*' in {watcher.url}")
    with pytest.raises(StorageError) as down:
        async with watcher.watch_deletions():
            pytest.fail("watched a stopped server")
    assert "s3cret-pw" not in str(down.value)
    server.start()
    async with watcher.watch_deletions() as names:
        await deleter.delete("s")
        assert await _next(names) == "s"
    await watcher.aclose()
    await deleter.aclose()


async def test_a_watch_outlives_the_servers_idle_session_timeout(
    start_postgres: Callable[..., PostgresServer],
) -> None:
    """A server that ends idle sessions (idle_session_timeout) does not end a watch, which is
    idle by design; the watcher's connection has TCP keepalives unless the URL sets its own.
    (The time passing is itself what is tested.)"""
    server = start_postgres("idle_session_timeout=200ms")
    watcher, deleter = PostgresStorage(server.url), PostgresStorage(server.url)
    async with watcher.watch_deletions() as names:
        await anyio.sleep(0.6)
        await deleter.delete("s")
        assert await _next(names) == "s"
    listener = PostgresStorage(server.url)._listen()
    own = PostgresStorage(f"{server.url}?keepalives_idle=7")._listen()
    try:
        assert listener.info.get_parameters()["keepalives_idle"] == "30"
        assert own.info.get_parameters()["keepalives_idle"] == "7"
    finally:
        listener.close()
        own.close()
    await watcher.aclose()
    await deleter.aclose()
