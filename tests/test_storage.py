"""Session storage: the protocol's contract on every backend, and FileStorage's file handling."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import sqlite3
import stat
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from subprocess import PIPE
from typing import Any

import anyio
import httpx
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream
from pydantic import SecretStr

from planet_async import (
    AuthorizationServer,
    ClientCredentialsGrant,
    ClientSecretBasic,
    ConfigurationError,
    EncryptedStorage,
    FileStorage,
    HttpxTransport,
    MemoryStorage,
    PlanetAuth,
    PostgresStorage,
    RedisStorage,
    StorageError,
    TokenManager,
    TokenSet,
)
from planet_async.storage import Generation
from tests._helpers import API, FakeClock, token_response

pytestmark = pytest.mark.anyio

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _import_example(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(f"examples.{name}", EXAMPLES / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SQLiteStorage = _import_example("sqlite_storage").SQLiteStorage


def _token(access: str = "at-1", **changes: Any) -> TokenSet:
    fields: dict[str, Any] = {
        "access_token": SecretStr(access),
        "issued_at": 1_800_000_000.25,
        "expires_at": 1_800_003_600.75,
        "refresh_token": SecretStr(f"rt-for-{access}"),
        "scope": "openid offline_access",
        "extra": {"organization_id": 42, "claims": {"nested": ["a", "b"]}},
    }
    fields.update(changes)
    return TokenSet(**fields)


def _where(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a `kind` of storage keeps its sessions: a path, or the test Redis's URL."""
    kind = kind.removeprefix("encrypted-")
    if kind == "redis":
        return str(request.getfixturevalue("redis").url)
    if kind == "postgres":
        return str(request.getfixturevalue("postgres").url)
    if kind == "redis-sentinel":
        return str(request.getfixturevalue("redis_sentinel").url)
    if kind == "redis-cluster":
        return str(request.getfixturevalue("redis_cluster").url)
    return str(tmp_path / ("root" if kind == "file" else "tokens.db"))


def _make(kind: str, where: str, **options: Any) -> Any:
    if kind.startswith("encrypted-"):  # the wrapper, over a storage of each kind of lock
        return EncryptedStorage(_make(kind.removeprefix("encrypted-"), where, **options), _KEYS)
    if kind == "memory":
        return MemoryStorage()
    if kind == "file":
        return FileStorage(where, **options)
    if kind.startswith("redis"):
        return RedisStorage(where, **options)
    if kind == "postgres":
        return PostgresStorage(where, **options)
    return SQLiteStorage(where, **options)


_KEYS = {"test-key": b"k" * 32}


@pytest.fixture(
    params=[
        "memory",
        "file",
        "sqlite",
        "redis",
        "redis-sentinel",
        "redis-cluster",
        "postgres",
        "encrypted-file",
        "encrypted-redis",
    ]
)
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    return _make(request.param, _where(request.param, request, tmp_path))


@contextmanager
def _one_worker_thread() -> Iterator[None]:
    """Run worker-thread calls one at a time, first come first served.

    Then, when a thread call of ours returns, any call another task queued before it has
    finished: a way to wait for work in other threads without sleeping.
    """
    limiter = anyio.to_thread.current_default_thread_limiter()
    saved, limiter.total_tokens = limiter.total_tokens, 1
    try:
        yield
    finally:
        limiter.total_tokens = saved


# -- the protocol, on every backend -----------------------------------------------------------


async def test_load_missing_is_none(storage: Any) -> None:
    """A session never saved loads as None, not an error."""
    assert await storage.load("default") is None


async def test_round_trip(storage: Any) -> None:
    """What is saved loads back: tokens, expiry to the second, scope and extra keys."""
    token = _token()
    await storage.save("default", token)
    loaded = await storage.load("default")
    assert loaded is not None
    assert loaded.access_token.get_secret_value() == "at-1"
    assert loaded.refresh_token is not None
    assert loaded.refresh_token.get_secret_value() == "rt-for-at-1"
    assert loaded.token_type == "Bearer"
    assert loaded.expires_at is not None
    assert token.expires_at is not None
    assert int(loaded.expires_at) == int(token.expires_at)
    assert int(loaded.issued_at) == int(token.issued_at)
    assert loaded.scope == "openid offline_access"
    assert loaded.extra == {"organization_id": 42, "claims": {"nested": ["a", "b"]}}


async def test_save_replaces(storage: Any) -> None:
    """A second save replaces the first, including fields the new token lacks."""
    await storage.save("default", _token("at-1"))
    await storage.save("default", _token("at-2", refresh_token=None, extra={}))
    loaded = await storage.load("default")
    assert loaded is not None
    assert loaded.access_token.get_secret_value() == "at-2"
    assert loaded.refresh_token is None
    assert loaded.extra == {}


async def test_delete(storage: Any) -> None:
    """A deleted session loads as None; deleting it again, or one never saved, is fine."""
    await storage.save("default", _token())
    await storage.delete("default")
    assert await storage.load("default") is None
    await storage.delete("default")
    await storage.delete("never-saved")


async def test_sessions_are_independent(storage: Any) -> None:
    """Saving or deleting one session leaves another alone."""
    await storage.save("alpha", _token("at-alpha"))
    await storage.save("beta", _token("at-beta"))
    await storage.delete("alpha")
    assert await storage.load("alpha") is None
    beta = await storage.load("beta")
    assert beta is not None
    assert beta.access_token.get_secret_value() == "at-beta"


# -- generations: never adopt an older session, never overwrite a newer one ------------------


def _stamped(access: str, lineage: str, number: int, tag: str) -> TokenSet:
    return Generation(lineage, number, tag).on(_token(access))


@asynccontextmanager
async def _maybe_locked(storage: Any, session: str, locked: bool) -> AsyncIterator[None]:
    """Under the session's lock (the fenced path of a lease) or not."""
    if locked:
        async with storage.lock(session):
            yield
    else:
        yield


async def _stored_access(storage: Any) -> str | None:
    loaded = await storage.load("default")
    return None if loaded is None else loaded.access_token.get_secret_value()


@pytest.mark.parametrize("locked", [False, True], ids=["unlocked", "locked"])
async def test_a_newer_generation_overwrites_an_older_one(storage: Any, locked: bool) -> None:
    """Same login, higher number: the conditional save writes it, and it loads back with its
    stamp (nothing stored, or a copy without a stamp, is overwritten too)."""
    async with _maybe_locked(storage, "default", locked):
        assert await storage.save_if_newer("default", _stamped("at-2", "L", 2, "a")) is True
        assert await storage.save_if_newer("default", _stamped("at-3", "L", 3, "b")) is True
    loaded = await storage.load("default")
    assert loaded is not None
    assert loaded.access_token.get_secret_value() == "at-3"
    assert Generation.of(loaded) == Generation("L", 3, "b")
    await storage.save("default", _token("foreign"))  # the planet CLI's login: no stamp
    async with _maybe_locked(storage, "default", locked):
        assert await storage.save_if_newer("default", _stamped("at-4", "M", 1, "c")) is True
    assert await _stored_access(storage) == "at-4"


@pytest.mark.parametrize("locked", [False, True], ids=["unlocked", "locked"])
async def test_an_older_generation_never_overwrites_a_newer_one(storage: Any, locked: bool) -> None:
    """Same login, lower number, or a copy of another login: refused, the stored one stays,
    whatever the lock says."""
    await storage.save_if_newer("default", _stamped("at-5", "L", 5, "a"))
    async with _maybe_locked(storage, "default", locked):
        assert await storage.save_if_newer("default", _stamped("at-4", "L", 4, "b")) is False
        assert await storage.save_if_newer("default", _stamped("at-9", "M", 9, "c")) is False
    assert await _stored_access(storage) == "at-5"


@pytest.mark.parametrize("locked", [False, True], ids=["unlocked", "locked"])
async def test_equal_generations_with_different_tokens_keep_the_stored_one(
    storage: Any, locked: bool
) -> None:
    """Two token sets of one generation (two writers after a split): the first stored stays
    (the store arbitrates); the same token set again (a retried save, a mark) is written."""
    first = _stamped("at-6a", "L", 6, "first")
    await storage.save_if_newer("default", first)
    async with _maybe_locked(storage, "default", locked):
        assert await storage.save_if_newer("default", _stamped("at-6b", "L", 6, "other")) is False
        marked = first.model_copy(update={"extra": {**first.extra, "mark": 1}})
        assert await storage.save_if_newer("default", marked) is True
    loaded = await storage.load("default")
    assert loaded is not None
    assert loaded.access_token.get_secret_value() == "at-6a"
    assert loaded.extra.get("mark") == 1


async def test_lock_excludes_a_second_holder(storage: Any) -> None:
    """A second task does not enter a session's lock until the first holder has left it."""
    order: list[str] = []
    first_in = anyio.Event()
    release = anyio.Event()

    async def first() -> None:
        async with storage.lock("default"):
            order.append("first in")
            first_in.set()
            await release.wait()
            order.append("first out")

    async def second() -> None:
        await first_in.wait()
        async with storage.lock("default"):
            order.append("second in")

    with anyio.fail_after(10), _one_worker_thread():
        async with anyio.create_task_group() as tg:
            tg.start_soon(first)
            tg.start_soon(second)
            await first_in.wait()
            # Let the second task's attempts (run in worker threads) complete a few times.
            for _ in range(4):
                await anyio.wait_all_tasks_blocked()
                await anyio.to_thread.run_sync(lambda: None)
            await anyio.wait_all_tasks_blocked()
            assert order == ["first in"]
            release.set()
    assert order == ["first in", "first out", "second in"]


async def test_lock_does_not_block_another_session(storage: Any) -> None:
    """Holding one session's lock does not keep anyone out of another session's lock."""
    entered = False
    with anyio.fail_after(5):
        async with storage.lock("alpha"), storage.lock("beta"):
            entered = True
    assert entered


async def test_cancelled_waiter_leaves_the_lock_free(storage: Any) -> None:
    """A task cancelled while waiting for the lock leaves nothing behind: the lock frees up."""
    held = anyio.Event()
    release = anyio.Event()

    async def holder() -> None:
        async with storage.lock("default"):
            held.set()
            await release.wait()

    async def waiter() -> None:
        async with storage.lock("default"):
            pytest.fail("the waiter entered while the lock was held")

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(holder)
            await held.wait()
            async with anyio.create_task_group() as waiters:
                waiters.start_soon(waiter)
                await anyio.wait_all_tasks_blocked()
                waiters.cancel_scope.cancel()
            release.set()
        entered = False
        async with storage.lock("default"):
            entered = True
    assert entered


# -- across processes -------------------------------------------------------------------------

_HOLDER = """
import sys
import anyio
sys.path.insert(0, sys.argv[3])
from planet_async import FileStorage, PostgresStorage, RedisStorage
from sqlite_storage import SQLiteStorage

async def main():
    kind, where = sys.argv[1], sys.argv[2]
    make = {
        "file": FileStorage,
        "redis": RedisStorage,
        "postgres": PostgresStorage,
        "sqlite": SQLiteStorage,
    }[kind]
    storage = make(where)
    async with storage.lock("default"):
        print("locked", flush=True)
        await anyio.to_thread.run_sync(sys.stdin.readline)
    print("released", flush=True)

anyio.run(main)
"""


@pytest.mark.parametrize("kind", ["file", "sqlite", "redis", "postgres"])
async def test_lock_excludes_another_process(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """While another process holds the lock ours times out; once it releases, ours enters."""
    where = _where(kind, request, tmp_path)
    expected = (
        re.escape(str(Path(where) / "default" / "token.json.lock"))
        if kind == "file"
        else "session 'default'"
    )
    command = [sys.executable, "-c", _HOLDER, kind, where, str(EXAMPLES)]
    async with await anyio.open_process(command, stdin=PIPE, stdout=PIPE) as child:
        assert child.stdin is not None
        assert child.stdout is not None
        lines = BufferedByteReceiveStream(child.stdout)
        with anyio.fail_after(20):
            assert await lines.receive_until(b"\n", 100) == b"locked"

        impatient = _make(kind, where, lock_timeout=0.2)
        with pytest.raises(StorageError, match=expected):
            async with impatient.lock("default"):
                pytest.fail("entered a lock another process holds")

        await child.stdin.send(b"release\n")
        entered = False
        with anyio.fail_after(20):
            assert await lines.receive_until(b"\n", 100) == b"released"
            async with _make(kind, where, lock_timeout=10).lock("default"):
                entered = True
            assert await child.wait() == 0
    assert entered


# -- FileStorage ------------------------------------------------------------------------------


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_file_modes(tmp_path: Path) -> None:
    """The token file is 0600; the root and session directories are created 0700."""
    root = tmp_path / "root"
    await FileStorage(root).save("default", _token())
    assert _mode(root) == 0o700
    assert _mode(root / "default") == 0o700
    assert _mode(root / "default" / "token.json") == 0o600


async def test_file_format_is_the_planet_cli_layout(tmp_path: Path) -> None:
    """The file is sorted, two-space-indented JSON without a final newline, with CLI keys."""
    token = _token()
    await FileStorage(tmp_path).save("default", token)
    text = (tmp_path / "default" / "token.json").read_text()
    assert text == json.dumps(token.to_json_dict(), indent=2, sort_keys=True)
    assert not text.endswith("\n")
    data = json.loads(text)
    assert data["access_token"] == "at-1"
    assert data["token_type"] == "Bearer"
    assert data["_iat"] == 1_800_000_000
    assert data["_exp"] == 1_800_003_600
    assert data["expires_in"] == 3600


async def test_saves_leave_no_temporary_files(tmp_path: Path) -> None:
    """After many saves of varying size the session directory holds only token.json."""
    storage = FileStorage(tmp_path)
    for n in range(5):
        await storage.save("default", _token(f"at-{n}", extra={"pad": "x" * (10_000 * n)}))
    assert os.listdir(tmp_path / "default") == ["token.json"]


async def test_failed_save_keeps_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A save whose rename fails raises StorageError, removes its temp file, keeps the old."""
    storage = FileStorage(tmp_path)
    await storage.save("default", _token("at-old"))
    before = (tmp_path / "default" / "token.json").read_bytes()

    def refuse(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(StorageError, match="No space left on device"):
        await storage.save("default", _token("at-new"))
    monkeypatch.undo()
    assert os.listdir(tmp_path / "default") == ["token.json"]
    assert (tmp_path / "default" / "token.json").read_bytes() == before


@pytest.mark.parametrize(
    "content",
    [b'{"access_token": "at-1", "token_ty', b"\x00\xff\xfe garbage \x89PNG", b'["at-1"]'],
    ids=["truncated", "binary", "list"],
)
async def test_corrupt_file_is_moved_aside(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, content: bytes
) -> None:
    """A file that is not a JSON object is moved aside with a warning naming both paths."""
    path = tmp_path / "default" / "token.json"
    path.parent.mkdir()
    path.write_bytes(content)
    with caplog.at_level(logging.WARNING, logger="planet_async"):
        assert await FileStorage(tmp_path).load("default") is None
    assert not path.exists()
    (aside,) = path.parent.glob("token.json.corrupt-*")
    assert aside.read_bytes() == content
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert str(path) in warnings[0].getMessage()
    assert str(aside) in warnings[0].getMessage()


async def test_unknown_json_object_is_kept(tmp_path: Path) -> None:
    """A JSON object that is not a token raises StorageError and the file stays untouched."""
    path = tmp_path / "default" / "token.json"
    path.parent.mkdir()
    path.write_text('{"api_key": "PLAK-not-ours"}')
    with pytest.raises(StorageError, match=re.escape(str(path))) as info:
        await FileStorage(tmp_path).load("default")
    assert "PLAK-not-ours" not in str(info.value)
    assert path.read_text() == '{"api_key": "PLAK-not-ours"}'
    assert os.listdir(path.parent) == ["token.json"]


async def test_session_names_are_lower_cased(tmp_path: Path) -> None:
    """Session names map to lower-case directories, as `planet` profile names do."""
    storage = FileStorage(tmp_path / "root")
    await storage.save("MyProfile", _token())
    assert os.listdir(tmp_path / "root") == ["myprofile"]
    loaded = await storage.load("MYPROFILE")
    assert loaded is not None
    assert loaded.access_token.get_secret_value() == "at-1"


@pytest.mark.parametrize("name", ["", ".", "..", "../x", "a/b", "a\\b"])
async def test_unsafe_session_names_are_refused(tmp_path: Path, name: str) -> None:
    """Names that are empty or would leave the root are refused by every method."""
    storage = FileStorage(tmp_path / "root")
    with pytest.raises(ConfigurationError):
        await storage.load(name)
    with pytest.raises(ConfigurationError):
        await storage.save(name, _token())
    with pytest.raises(ConfigurationError):
        await storage.delete(name)
    with pytest.raises(ConfigurationError):
        async with storage.lock(name):
            pytest.fail("locked an unsafe session name")
    assert os.listdir(tmp_path) == ["home"]  # nothing created, inside the root or beside it


async def test_root_expands_the_home_directory(tmp_path: Path, clean_env: Path) -> None:
    """FileStorage("~/x") keeps its sessions under the user's home directory."""
    storage = FileStorage("~/planet")
    assert storage.root == clean_env / "planet"
    await storage.save("default", _token())
    assert (clean_env / "planet" / "default" / "token.json").is_file()


_FILE_EVENTS = frozenset({"open", "os.rename", "os.remove", "os.mkdir"})
_watched: list[tuple[str, list[tuple[str, int]]]] = []
_hook_installed = False


def _audit_hook(event: str, args: tuple[Any, ...]) -> None:
    # Audit hooks stay for the life of the process: be cheap, and never raise.
    if not _watched or event not in _FILE_EVENTS or not args:
        return
    target = args[0]
    if isinstance(target, (str, bytes, os.PathLike)):
        name = os.fsdecode(target)
        for prefix, events in _watched:
            if name.startswith(prefix):
                events.append((event, threading.get_ident()))


@contextmanager
def _file_events(directory: Path) -> Iterator[list[tuple[str, int]]]:
    """Record (event, thread id) of every open, rename, remove and mkdir under `directory`."""
    global _hook_installed
    if not _hook_installed:
        sys.addaudithook(_audit_hook)
        _hook_installed = True
    entry: tuple[str, list[tuple[str, int]]] = (str(directory), [])
    _watched.append(entry)
    try:
        yield entry[1]
    finally:
        _watched.remove(entry)


async def test_file_io_runs_off_the_event_loop(tmp_path: Path) -> None:
    """Every open, rename, remove and mkdir of FileStorage happens outside the loop's thread."""
    root = tmp_path / "root"
    storage = FileStorage(root)
    with _file_events(root) as events:
        await storage.save("default", _token())
        await storage.load("default")
        async with storage.lock("default"):
            pass
        await storage.delete("default")
    assert {event for event, _ in events} == _FILE_EVENTS
    loop_thread = threading.get_ident()
    assert [event for event, thread in events if thread == loop_thread] == []


async def test_manager_replaces_a_corrupt_session(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """With a corrupt file the manager gets one new token and never sends a bare request."""
    path = tmp_path / "default" / "token.json"
    path.parent.mkdir()
    path.write_bytes(b'{"access_token": "at-old", "refresh_tok')
    token_requests = 0

    def token_endpoint(request: httpx.Request) -> httpx.Response:
        nonlocal token_requests
        token_requests += 1
        return token_response("at-new")

    authorizations: list[str | None] = []

    def api(request: httpx.Request) -> httpx.Response:
        authorizations.append(request.headers.get("Authorization"))
        return httpx.Response(200, json={"ok": True})

    async with httpx.AsyncClient(transport=httpx.MockTransport(token_endpoint)) as auth_client:
        server = AuthorizationServer(
            token_endpoint="https://auth.test/token", transport=HttpxTransport(auth_client)
        )
        grant = ClientCredentialsGrant(
            server, ClientSecretBasic(client_id="svc", client_secret=SecretStr("svc-secret"))
        )
        manager = TokenManager(grant, storage=FileStorage(tmp_path), clock=FakeClock())
        auth = PlanetAuth(manager)
        async with httpx.AsyncClient(auth=auth, transport=httpx.MockTransport(api)) as client:
            with caplog.at_level(logging.WARNING, logger="planet_async"):
                response = await client.get(f"{API}/data/v1/searches")
    assert response.status_code == 200
    assert authorizations == ["Bearer at-new"]
    assert token_requests == 1
    assert len(list(path.parent.glob("token.json.corrupt-*"))) == 1
    assert "corrupt" in caplog.text
    stored = await FileStorage(tmp_path).load("default")
    assert stored is not None
    assert stored.access_token.get_secret_value() == "at-new"


# -- the SQLite example -----------------------------------------------------------------------


def _leases(path: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT session, owner FROM locks").fetchall()
    db.close()
    return rows


def _plant_lease(path: Path, owner: str, expires: float) -> None:
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("INSERT INTO locks VALUES ('default', ?, ?)", (owner, expires))
    finally:
        db.close()


async def test_sqlite_takes_over_an_expired_lease(tmp_path: Path) -> None:
    """A lease left by a crashed holder is taken over once expired, and released after use."""
    storage = SQLiteStorage(tmp_path / "tokens.db")
    await storage.load("default")  # creates the database
    _plant_lease(storage.path, "crashed-process", time.time() - 1)
    owners: list[list[tuple[str, str]]] = []
    with anyio.fail_after(5):
        async with storage.lock("default"):
            owners.append(_leases(storage.path))
    ((session, owner),) = owners[0]
    assert session == "default"
    assert owner != "crashed-process"
    assert _leases(storage.path) == []


async def test_sqlite_respects_a_live_lease(tmp_path: Path) -> None:
    """A live lease held by someone else makes lock() time out, and is left in place."""
    storage = SQLiteStorage(tmp_path / "tokens.db", lock_timeout=0.1)
    await storage.load("default")
    _plant_lease(storage.path, "other-process", time.time() + 3600)
    with pytest.raises(StorageError, match="session 'default'"):
        async with storage.lock("default"):
            pytest.fail("entered a lock someone else holds")
    assert _leases(storage.path) == [("default", "other-process")]


async def test_sqlite_database_is_private(tmp_path: Path) -> None:
    """The database file holding the tokens is created 0600."""
    storage = SQLiteStorage(tmp_path / "tokens.db")
    await storage.save("default", _token())
    assert _mode(storage.path) == 0o600


async def test_sqlite_bad_row_loads_as_none(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A row that is not a token set loads as None with a warning naming the session."""
    storage = SQLiteStorage(tmp_path / "tokens.db")
    await storage.save("default", _token())
    db = sqlite3.connect(storage.path, isolation_level=None)
    try:
        db.execute("UPDATE tokens SET token = '[1, 2]'")
    finally:
        db.close()
    with caplog.at_level(logging.WARNING):
        assert await storage.load("default") is None
    assert "'default'" in caplog.text


async def test_file_storage_removes_old_leftover_temp_files(tmp_path: Path) -> None:
    """Temp files of killed writers are removed once stale; a fresh one (a live writer) stays."""
    storage = FileStorage(tmp_path)
    directory = storage.session_dir("s")
    directory.mkdir(parents=True)
    old = directory / ".token.dead.tmp"
    fresh = directory / ".token.live.tmp"
    old.write_text("{")
    fresh.write_text("{")
    an_hour_ago = time.time() - 3600
    os.utime(old, (an_hour_ago, an_hour_ago))
    await storage.save("s", TokenSet(access_token="a", issued_at=0.0))
    assert not old.exists()
    assert fresh.exists()
