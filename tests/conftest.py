from __future__ import annotations

import gc
import os
import shutil
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from planet_async import _oauth
from tests._peer import Peer, make_client_keys
from tests._postgres import PostgresServer
from tests._redis import RedisServer, TLSFiles
from tests._redis_topologies import ClusterGroup, SentinelGroup

DEFAULT_TTL = 60


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Every test gets its own HOME and no PL_* variables from the developer's shell."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("USERPROFILE", str(home))
    for name in list(os.environ):
        if name.startswith("PL_"):
            monkeypatch.delenv(name)
    return home


@pytest.fixture(autouse=True)
def _fresh_discovery_cache() -> Iterator[None]:
    _oauth._metadata_cache.clear()
    yield
    _oauth._metadata_cache.clear()


@pytest.fixture(scope="session")
def chromium_path() -> str:
    """Debian's Chromium (or $PLANET_ASYNC_CHROMIUM); in CI its absence is a failure."""
    path = os.environ.get("PLANET_ASYNC_CHROMIUM") or shutil.which("chromium")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is required in CI: `python3 tools/nox.py -s tests` installs it")
        pytest.skip("chromium not installed; browser login tests skipped")
    return path


@pytest.fixture(scope="session")
def client_keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Path]]:
    """An RSA and an EC private key for private_key_jwt, and the JWKS the peer trusts."""
    return make_client_keys(tmp_path_factory.mktemp("client-keys"))


@pytest.fixture(scope="session")
def peer_server(client_keys: tuple[Path, dict[str, Path]]) -> Iterator[Peer]:
    """One real oidc-provider authorization server on 127.0.0.1 for the whole session."""
    jwks, _ = client_keys
    server = Peer.start(
        env={"AT_TTL": str(DEFAULT_TTL), "PKJWT_JWKS": str(jwks), "JWKS_AS_JSON": "1"}
    )
    yield server
    server.stop()


@pytest.fixture
def peer(peer_server: Peer) -> Iterator[Peer]:
    """The session's peer with zeroed counters, no token delay and the default lifetime."""
    peer_server.reset()
    peer_server.set_token_delay(0)
    peer_server.set_access_token_ttl(DEFAULT_TTL)
    peer_server.set_refresh_expires_in(0)
    yield peer_server
    peer_server.set_token_delay(0)
    peer_server.set_access_token_ttl(DEFAULT_TTL)
    peer_server.set_refresh_expires_in(0)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One real redis-server on a free loopback port for the whole session."""
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture
def redis(redis_server: RedisServer) -> RedisServer:
    """The session's redis-server, emptied."""
    redis_server.flush()
    return redis_server


@pytest.fixture
def start_redis() -> Iterator[Callable[..., RedisServer]]:
    """Start redis-servers of the test's own (to stop, pause or configure); stopped after it.

    Call it with more `redis-server` arguments, and `tls=TLSFiles(...)` for a TLS-only server.
    """
    servers: list[RedisServer] = []

    def start(*extra: str, tls: TLSFiles | None = None) -> RedisServer:
        servers.append(RedisServer(*extra, tls=tls))
        return servers[-1].start()

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One real PostgreSQL server on a free loopback port for the whole session."""
    server = PostgresServer().start()
    yield server
    server.destroy()


@pytest.fixture
def postgres(postgres_server: PostgresServer) -> PostgresServer:
    """The session's PostgreSQL, without the tables PostgresStorage creates."""
    postgres_server.sql("DROP TABLE IF EXISTS planet_async_sessions, planet_async_sessions_schema")
    return postgres_server


@pytest.fixture
def start_postgres() -> Iterator[Callable[..., PostgresServer]]:
    """Start PostgreSQL servers of the test's own (to restart, crash or pause); destroyed after
    it. Call it with server settings (``"fsync=off"``)."""
    servers: list[PostgresServer] = []

    def start(*settings: str) -> PostgresServer:
        servers.append(PostgresServer(*settings))
        return servers[-1].start()

    yield start
    for server in servers:
        server.destroy()


@pytest.fixture(scope="session")
def redis_sentinel_group() -> Iterator[SentinelGroup]:
    """One primary, two replicas and three sentinels for the whole session."""
    group = SentinelGroup().start()
    yield group
    group.stop()


@pytest.fixture
def redis_sentinel(redis_sentinel_group: SentinelGroup) -> Iterator[SentinelGroup]:
    """The session's Sentinel group, emptied (a test that fails it over starts its own).

    coredis (6.9) leaves a connection's memory streams unclosed behind some of the connections
    a Sentinel or Cluster client makes; they warn when collected, and are ignored here.
    """
    redis_sentinel_group.server_on(redis_sentinel_group.primary_port()).flush()
    with _coredis_leaves_streams_unclosed():
        yield redis_sentinel_group


@pytest.fixture(scope="module")
def redis_sentinel_failed_over_group() -> Iterator[SentinelGroup]:
    """One primary, one replica and three sentinels, failed over once: the replica was promoted
    and has no replica of its own (the old primary stays down), for the module's tests."""
    group = SentinelGroup(replicas=1).start()
    try:
        group.wait_for_failover(group.kill_primary().port)
        yield group
    finally:
        group.stop()


@pytest.fixture
def redis_sentinel_without_replicas(
    redis_sentinel_failed_over_group: SentinelGroup,
) -> Iterator[SentinelGroup]:
    """A Sentinel group whose primary has no replica (see above), emptied."""
    group = redis_sentinel_failed_over_group
    group.server_on(group.primary_port()).flush()
    with _coredis_leaves_streams_unclosed():
        yield group


@pytest.fixture(scope="session")
def redis_cluster_group() -> Iterator[ClusterGroup]:
    """A Redis Cluster of three primaries with a replica each, for the whole session."""
    group = ClusterGroup().start()
    yield group
    group.stop()


@pytest.fixture
def redis_cluster(redis_cluster_group: ClusterGroup) -> Iterator[ClusterGroup]:
    """The session's Redis Cluster, emptied (a test that kills a node starts its own)."""
    redis_cluster_group.flush()
    with _coredis_leaves_streams_unclosed():
        yield redis_cluster_group


@contextmanager
def _coredis_leaves_streams_unclosed() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Unclosed <MemoryObject", ResourceWarning)
        yield
        gc.collect()


@pytest.fixture
def start_redis_topology() -> Iterator[Callable[..., SentinelGroup | ClusterGroup]]:
    """Start a Sentinel group (``"sentinel"``) or a Cluster (``"cluster"``) of the test's own,
    to fail over; stopped after it."""
    groups: list[SentinelGroup | ClusterGroup] = []

    def start(kind: str, **options: Any) -> SentinelGroup | ClusterGroup:
        groups.append(SentinelGroup(**options) if kind == "sentinel" else ClusterGroup())
        return groups[-1].start()

    with _coredis_leaves_streams_unclosed():
        yield start
    for group in groups:
        group.stop()


@pytest.fixture
def redis_connections_fail() -> Iterator[None]:
    """For a test whose Redis connections fail on purpose (a closed port, a stopped server).

    coredis (6.9) leaves a connection's memory streams unclosed when the connection cannot be
    made, and they warn when collected. Such a test ignores that one warning, and collects them
    when it ends, so that they do not warn in the next test.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Unclosed <MemoryObject", ResourceWarning)
        yield
        gc.collect()
