"""RedisStorage on replicated Redis: Sentinel and Cluster URLs, and losing a node.

Real redis-servers on loopback (tests/_redis_topologies.py): one primary, two replicas and three
sentinels; a Cluster of three primaries with a replica each. The storage contract itself runs on
both in tests/test_storage.py. Here: the URL forms, and what survives a SIGKILLed primary.

Replication on loopback catches up in about a millisecond, so these tests show that the storage
follows the failover (it finds the new primary, the sessions are there, the lease and the fenced
save work on it); they do not show that a save is durable when the replicas fall behind.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from typing import Any

import anyio
import pytest

from planet_async import (
    AuthorizationServer,
    ConfigurationError,
    LockLost,
    PublicClient,
    RedisStorage,
    RefreshTokenGrant,
    StorageError,
    TokenManager,
    TokenSet,
)
from planet_async.storage import storage_from_url
from planet_async.storage._redis import _split_topology, _take_replicas
from tests._browser import device_login_saved
from tests._helpers import FakeClock
from tests._peer import Peer
from tests._redis import free_port

pytestmark = pytest.mark.anyio

SESSIONS = 100
EXPIRED = 61  # seconds: past the peer's access token lifetime


def _token(access: str) -> TokenSet:
    return TokenSet(
        access_token=access, issued_at=100, expires_at=200, refresh_token=f"rt-{access}"
    )


def _access(token: TokenSet | None) -> str | None:
    return None if token is None else token.access_token.get_secret_value()


@pytest.mark.parametrize(
    ("url", "single", "kind", "hosts", "service", "db"),
    [
        (
            "redis+sentinel://s1:26380,s2,[::1]:26381/mymaster/2",
            "redis://s1:26380/2",
            "sentinel",
            (("s1", 26380), ("s2", 26379), ("::1", 26381)),
            "mymaster",
            2,
        ),
        (
            "redis+sentinel://:pw@s1/my%20primary?retention=1h",
            "redis://:pw@s1?retention=1h",
            "sentinel",
            (("s1", 26379),),
            "my primary",
            0,
        ),
        (
            "redis+sentinel://s1/mymaster?replicas=2&retention=1h",
            "redis://s1?retention=1h",
            "sentinel",
            (("s1", 26379),),
            "mymaster",
            0,
        ),
        (
            "redis+cluster://app:pw@n1:7000,n2:7001,n3",
            "redis://app:pw@n1:7000",
            "cluster",
            (("n1", 7000), ("n2", 7001), ("n3", 6379)),
            "",
            0,
        ),
        (
            "rediss+cluster://n1:7000/0?ssl_ca_certs=/ca.pem",
            "rediss://n1:7000?ssl_ca_certs=/ca.pem",
            "cluster",
            (("n1", 7000),),
            "",
            0,
        ),
    ],
)
def test_url_forms(
    url: str, single: str, kind: str, hosts: tuple[Any, ...], service: str, db: int
) -> None:
    """A Sentinel URL names its sentinels (26379 by default), the primary's name and a database;
    a Cluster URL names nodes to discover it from (6379 by default); the first host, with the
    credentials and options, is what coredis reads."""
    found, topology = _split_topology(url)
    assert _take_replicas(found)[0] == single
    assert (topology.kind, topology.hosts, topology.service, topology.db) == (
        kind,
        hosts,
        service,
        db,
    )


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("redis+sentinel://s1,s2", "/service"),
        ("redis+sentinel://s1/a/b/c", "/service"),
        ("redis+sentinel://s1/mymaster/x", "database is a number"),
        ("redis+cluster://n1/3", "only database 0"),
        ("redis+cluster://n1,,n2", "host[:port]"),
        ("redis+cluster://n1:99999", "host[:port]"),
        ("redis+cluster://app:s3cret-pw@n1,:7000", "host[:port]"),
    ],
)
def test_bad_urls_are_refused_where_given(url: str, problem: str) -> None:
    """A host list or path that cannot be read is a ConfigurationError at construction (and
    from PLANET_ASYNC_STORAGE's reader), never quoting the password."""
    for make in (RedisStorage, storage_from_url):
        with pytest.raises(ConfigurationError, match=re.escape(problem)) as info:
            make(url)
        assert "s3cret-pw" not in str(info.value)


def test_replicas_a_save_waits_for() -> None:
    """A save waits for one replica on Sentinel and Cluster URLs and for none on one node, unless
    `replicas=` (or ``?replicas=N`` in the URL) says otherwise."""
    assert RedisStorage("redis+sentinel://s1/mymaster").replicas == 1
    assert RedisStorage("redis+cluster://n1:7000").replicas == 1
    assert RedisStorage("redis://h/0").replicas == 0
    assert RedisStorage("redis://h/0", replicas=2).replicas == 2
    assert RedisStorage("redis+sentinel://s1/mymaster?replicas=2").replicas == 2
    assert RedisStorage("redis://h/0?replicas=0&retention=1h").replicas == 0
    with pytest.raises(ConfigurationError, match="replicas="):
        RedisStorage("redis://h/0?replicas=all")


def test_storage_from_url_and_masking() -> None:
    """Every replicated form is a RedisStorage from a URL, with its password masked."""
    for url, masked in [
        ("redis+sentinel://:s3cret@s1,s2/mymaster", "redis+sentinel://:***@s1,s2/mymaster"),
        ("redis+cluster://app:s3cret@n1:7000,n2", "redis+cluster://app:***@n1:7000,n2"),
        ("rediss+cluster://n1:7000", "rediss+cluster://n1:7000"),
    ]:
        storage = storage_from_url(url)
        assert isinstance(storage, RedisStorage)
        assert storage.url == masked
        assert "s3cret" not in repr(storage)


@pytest.mark.fleet
@pytest.mark.slow
async def test_sentinel_failover_keeps_the_session(
    start_redis_topology: Callable[..., Any],
) -> None:
    """With the primary SIGKILLed, the storage finds the primary the sentinels promote: the
    session saved before is there, and the lease and fenced save work on the new primary."""
    group = start_redis_topology("sentinel")
    storage = RedisStorage(group.url, timeout=2, lock_timeout=10)
    async with storage.lock("s"):
        await storage.save("s", _token("before"))
    old = group.kill_primary().port
    new = group.wait_for_failover(old)
    assert new != old
    assert _access(await storage.load("s")) == "before"
    async with storage.lock("s"):
        await storage.save("s", _token("after"))
    assert _access(await storage.load("s")) == "after"
    assert group.server_on(new).call("EXISTS", "planet_async:{s}:token") == 1


@pytest.mark.parametrize("topology", ["redis_sentinel", "redis_cluster"])
async def test_a_deletion_reaches_watchers_on_a_replicated_store(
    topology: str, request: pytest.FixtureRequest
) -> None:
    """`watch_deletions` on a Sentinel URL listens on the primary the sentinels name, where
    `delete` publishes, and on a Cluster URL through the cluster's own client: a watcher hears
    the deletion. (On Sentinel it subscribed on the first sentinel, taken for a plain node, and
    heard none.)"""
    storage = RedisStorage(request.getfixturevalue(topology).url, timeout=2)
    async with storage.watch_deletions() as deletions:
        await storage.save("one", _token("v1"))
        await storage.delete("one")
        with anyio.fail_after(10):  # a guard against a hang
            assert await anext(deletions) == "one"


async def test_a_sentinel_storage_without_a_primary_is_a_storage_error(
    start_redis_topology: Callable[..., Any],
) -> None:
    """Sentinels that name no reachable primary (all data nodes down): one StorageError naming
    the session and the store, within the timeout; nothing hangs."""
    group = start_redis_topology("sentinel")
    for server in group.servers:
        server.kill()
    storage = RedisStorage(group.url, timeout=1, lock_timeout=2)
    with anyio.fail_after(20), pytest.raises(StorageError, match="session 's'"):
        await storage.load("s")


def test_sentinel_credentials_in_the_url() -> None:
    """The sentinels' own password and user come from ``sentinel_password`` and
    ``sentinel_username`` (percent-decoded), not from the user information (the data nodes'),
    and are not passed on to coredis; they are masked wherever the URL is shown; a URL without
    sentinels, or with a user but no password, is refused without quoting them."""
    url = "redis+sentinel://:data-s3cret@s1/mymaster?sentinel_username=watch&sentinel_password=s%2Fnt-s3cret&replicas=0"
    single, topology = _split_topology(url)
    assert _take_replicas(single)[0] == "redis://:data-s3cret@s1"
    assert (topology.sentinel_username, topology.sentinel_password) == ("watch", "s/nt-s3cret")
    assert "s3cret" not in repr(topology)
    storage = RedisStorage(url)
    assert storage.url == (
        "redis+sentinel://:***@s1/mymaster?sentinel_username=watch&sentinel_password=***&replicas=0"
    )
    assert "s3cret" not in repr(storage)
    for bad, problem in [
        ("redis+cluster://n1?sentinel_password=s3cret", "belong to redis+sentinel"),
        ("redis+sentinel://s1/mymaster?sentinel_username=watch", "needs a sentinel_password"),
        ("redis+sentinel://s1/mymaster?sentinel_password=", "empty sentinel credential"),
    ]:
        with pytest.raises(ConfigurationError, match=re.escape(problem)) as info:
            storage_from_url(bad)
        assert "s3cret" not in str(info.value)


async def test_sentinels_with_a_password_of_their_own(
    start_redis_topology: Callable[..., Any],
) -> None:
    """Sentinels that require a password (``requirepass`` on the sentinel), other than the data
    node's: the URL's ``sentinel_password`` reaches them, its user information the primary, and
    a session saves and loads; a wrong sentinel password is one StorageError, no password of
    either kind quoted in it."""
    group = start_redis_topology(
        "sentinel", replicas=0, sentinels=1, password="data-s3cret", sentinel_password="s3nt"
    )
    (port,) = group.sentinel_ports
    base = f"redis+sentinel://:data-s3cret@127.0.0.1:{port}/{group.NAME}/0?replicas=0"
    storage = RedisStorage(f"{base}&sentinel_password=s3nt", timeout=2)
    async with storage.lock("s"):
        await storage.save("s", _token("through-sentinel"))
    assert _access(await storage.load("s")) == "through-sentinel"
    assert group.primary.call("EXISTS", "planet_async:{s}:token", auth=("default", "data-s3cret"))
    wrong = RedisStorage(f"{base}&sentinel_password=wr0ng-s3nt", timeout=2)
    with anyio.fail_after(20), pytest.raises(StorageError, match="session 's'") as info:
        await wrong.load("s")
    assert "AuthenticationFailureError" in str(info.value)  # the sentinel refused it
    for secret in ("data-s3cret", "wr0ng-s3nt", "s3nt"):
        assert secret not in str(info.value)


@pytest.mark.fleet
@pytest.mark.slow
async def test_cluster_keeps_every_session_when_a_primary_dies(
    start_redis_topology: Callable[..., Any],
) -> None:
    """A hundred sessions spread over the cluster's slots: a primary holding some of them is
    SIGKILLed, its replica takes over, and every session loads as it was saved; the promoted
    replica has no replica of its own: saves there count without one (the default `replicas`,
    with a WARNING), or are refused as not durable with `replicas=1` given, until the lost node
    rejoins as its replica; then every session is renewed (lease, fenced save, WAIT) again."""
    cluster = start_redis_topology("cluster")
    async with RedisStorage(cluster.url, timeout=2, lock_timeout=10) as storage:
        for index in range(SESSIONS):
            async with storage.lock(f"user-{index}"):
                await storage.save(f"user-{index}", _token(f"at-{index}"))
    owners = {cluster.primary_of(f"planet_async:{{user-{i}}}:token").port for i in range(SESSIONS)}
    assert len(owners) == 3  # the sessions are spread over every primary
    victim = cluster.primary_of("planet_async:{user-0}:token")
    victim.kill()
    cluster.wait_for_takeover(victim)
    storage = RedisStorage(cluster.url, timeout=2, lock_timeout=10)
    loaded = [_access(await storage.load(f"user-{i}")) for i in range(SESSIONS)]
    assert loaded == [f"at-{i}" for i in range(SESSIONS)]
    # The promoted replica has no replica of its own: no replica could acknowledge a save
    # there. By default it counts without one; required (replicas=1), it is refused.
    await storage.save("user-0", _token("unreplicated"))
    assert _access(await storage.load("user-0")) == "unreplicated"
    strict = RedisStorage(cluster.url, replicas=1, timeout=2)
    with pytest.raises(StorageError, match="fewer than 1 replica"):
        await strict.save("user-0", _token("not-durable"))
    cluster.rejoin(victim)
    async with storage:
        for index in range(SESSIONS):
            async with storage.lock(f"user-{index}"):
                await storage.save(f"user-{index}", _token(f"renewed-{index}"))
    loaded = [_access(await storage.load(f"user-{i}")) for i in range(SESSIONS)]
    assert loaded == [f"renewed-{i}" for i in range(SESSIONS)]


# -- durable saves: WAIT ---------------------------------------------------------------------


@pytest.mark.fleet
@pytest.mark.slow
@pytest.mark.parametrize("replicas", [0, 1])
async def test_wait_is_what_tells_a_save_from_one_a_failover_loses(
    start_redis_topology: Callable[..., Any], replicas: int
) -> None:
    """With the replicas held back (SIGSTOP, their links cut), a save is acknowledged by the
    primary alone; the
    primary is then SIGKILLed and a replica promoted. Without WAIT (replicas=0) the save was
    acknowledged and is lost: the new primary has the session before it. With WAIT (replicas=1)
    the same save is refused as not durable (a StorageError the TokenManager answers by keeping
    the token and saving it again), so nobody believes a session saved that is not."""
    group = start_redis_topology("sentinel")
    await RedisStorage(group.url, replicas=2, timeout=2).save("s", _token("v1"))  # on all
    storage = RedisStorage(group.url, replicas=replicas, replica_timeout=0.5, timeout=2)
    primary = group.server_on(group.primary_port())
    for replica in group.replicas:
        replica.pause()
    # A stopped replica's kernel would still buffer the replication stream for it (and it would
    # read it on resuming): cut the links too, so that nothing written now reaches a replica.
    assert primary.call("CLIENT", "KILL", "TYPE", "replica") == 2
    try:
        if replicas:
            with pytest.raises(StorageError, match=r"fewer than 1 replica\(s\) acknowledged"):
                await storage.save("s", _token("v2"))
        else:
            await storage.save("s", _token("v2"))
        assert _access(await storage.load("s")) == "v2"  # on the primary, either way
        old = group.kill_primary().port
    finally:
        for replica in group.replicas:
            replica.resume()
    group.wait_for_failover(old)
    assert _access(await storage.load("s")) == "v1"


@pytest.mark.fleet
@pytest.mark.slow
@pytest.mark.parametrize("replicas", [0, 1])
async def test_a_rotated_refresh_token_survives_a_failover_with_wait(
    peer: Peer, start_redis_topology: Callable[..., Any], replicas: int
) -> None:
    """A user session with rotating refresh tokens is renewed while the replicas are held back
    (between the renewal's mark and its save), then the primary dies and a replica takes over
    with the previous session. With WAIT the save was not acknowledged, the manager kept the new
    token as unsaved, writes it back over the older stored one at its next renewal and renews
    with it: no invalid_grant. Without WAIT the save was acknowledged by the dead primary alone;
    the new refresh token is then only in this process's memory, and generations save it: the
    promoted replica's copy is an older generation, so it is written back too, never spent.
    (A process that died with the primary would take it along: that is what WAIT is for.)"""
    group = start_redis_topology("sentinel")
    await device_login_saved(peer.issuer, RedisStorage(group.url, timeout=2), "user")
    peer.reset()
    primary = group.server_on(group.primary_port())

    class HoldingBackReplicas(RefreshTokenGrant):
        """Holds the replicas back just before its token request (after the renewal's mark
        reached them): the rotated token's save then reaches the primary alone."""

        holding = True

        async def renew(self, current: Any, *, clock: Callable[[], float]) -> Any:
            if self.holding:
                for replica in group.replicas:
                    replica.pause()
                primary.call("CLIENT", "KILL", "TYPE", "replica")
            return await super().renew(current, clock=clock)

    grant = HoldingBackReplicas(
        AuthorizationServer(peer.issuer), PublicClient(client_id="native-app")
    )
    storage = RedisStorage(group.url, replicas=replicas, replica_timeout=0.5, timeout=2)
    clock = FakeClock(start=time.time())
    manager = TokenManager(grant, storage=storage, session="user", clock=clock)
    login = await manager.header()
    clock.advance(EXPIRED)
    try:
        renewed = await manager.header()  # requests go on with it, saved or not
        assert renewed != login
        old = group.kill_primary().port
    finally:
        for replica in group.replicas:
            replica.resume()
    group.wait_for_failover(old)
    assert peer.grants("refresh_token") == 1

    clock.advance(EXPIRED)
    grant.holding = False
    again = await manager.header()
    assert again not in (login, renewed)
    assert peer.grants("refresh_token") == 2
    assert peer.errors() == {}
    stored = await storage.load("user")
    assert stored is not None
    assert f"Bearer {_access(stored)}" == again


# -- a lease that outlives its primary ---------------------------------------------------------


@pytest.mark.fleet
@pytest.mark.slow
async def test_a_lease_taken_on_a_lost_primary_does_not_hold_the_fleet_back(
    start_redis_topology: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    """A holder takes a 60 s lease and the primary dies (the lease has reached the replicas): on
    the promoted replica another process takes the lease over at once, not after 60 s, since
    the lease was stamped by a primary that is gone; the old holder's save is then refused."""
    group = start_redis_topology("sentinel")
    holder = RedisStorage(group.url, lease=60, timeout=2)
    waiter = RedisStorage(group.url, lease=60, timeout=2, lock_timeout=5)
    key = "planet_async:{s}:lock"
    async with holder.lock("s"):
        stamped = group.server_on(group.primary_port()).call("GET", key)
        for replica in group.replicas:
            deadline = time.monotonic() + 5
            while replica.call("GET", key) != stamped and time.monotonic() < deadline:  # noqa: ASYNC110
                await anyio.sleep(0.01)
            assert replica.call("GET", key) == stamped
        old = group.kill_primary().port
        group.wait_for_failover(old)
        with caplog.at_level("WARNING", logger="planet_async"):
            async with waiter.lock("s"):  # within lock_timeout (5 s), far less than the lease
                await waiter.save("s", _token("newer"))
        assert "took over a lease" in caplog.text
        with pytest.raises(LockLost):  # the lease is the waiter's now
            await holder.save("s", _token("stale"))
    assert _access(await waiter.load("s")) == "newer"


async def test_a_live_lease_on_the_same_primary_is_respected(
    redis_sentinel: Any,
) -> None:
    """Without a failover, the stamp matches: a waiter waits for a held lease as before."""
    holder = RedisStorage(redis_sentinel.url, lease=5)
    waiter = RedisStorage(redis_sentinel.url, lease=5, lock_timeout=0.3)
    async with holder.lock("s"):
        with pytest.raises(StorageError, match="timed out"):
            async with waiter.lock("s"):
                pytest.fail("entered a lease held on the same primary")


# -- a renewing mark refused as not durable ----------------------------------------------------


async def test_a_renewing_mark_refused_as_not_durable_holds_nobody_back(
    peer: Peer, redis: Any
) -> None:
    """A renewal whose renewing mark is refused as not durable (``WAIT`` unanswered, as on a
    Cluster shard whose replica was promoted and has none yet; here a single node asked for one
    replica) spends nothing, yet the primary stored the mark. The renewal takes the mark away
    again and releases its lease (Redis answered: the connection is fine), so another process
    renews at once with one token request, instead of waiting for the lease to lapse and then
    up to two minutes for a renewal that never happened (seen in the Cluster fleet:
    tests/test_redis_cluster_fleet.py)."""
    plain = RedisStorage(redis.url, timeout=2, lock_timeout=1)
    await device_login_saved(peer.issuer, plain, "user")
    peer.reset()
    clock = FakeClock(start=time.time() + EXPIRED)

    def manager(storage: RedisStorage) -> TokenManager:
        grant = RefreshTokenGrant(
            AuthorizationServer(peer.issuer), PublicClient(client_id="native-app")
        )
        return TokenManager(grant, storage=storage, session="user", clock=clock)

    not_durable = RedisStorage(redis.url, replicas=1, replica_timeout=0.2, timeout=2)
    with pytest.raises(StorageError, match="fewer than 1 replica"):
        await manager(not_durable).header()
    assert peer.grants("refresh_token") == 0
    stored = await plain.load("user")
    assert stored is not None
    assert "_planet_async_renewing" not in stored.extra
    assert redis.call("EXISTS", "planet_async:{user}:lock") == 0
    other = manager(plain)
    assert (await other.header()).startswith("Bearer ")
    assert (other.renewals, peer.grants("refresh_token"), peer.errors()) == (1, 1, {})


async def test_an_entered_storage_names_the_session_a_call_failed_for(redis: Any) -> None:
    """An entered `RedisStorage` runs every session's calls on one shared connection; a call
    that fails there names its own session (it named ``'*'``, the shared connection's)."""
    async with RedisStorage(redis.url, replicas=1, replica_timeout=0.2, timeout=2) as storage:
        with pytest.raises(StorageError, match="fewer than 1 replica") as caught:
            await storage.save("alice", _token("a"))
    assert "cannot save session 'alice' in redis://" in str(caught.value)


async def test_a_call_that_waits_holds_back_no_other_session(redis: Any) -> None:
    """An entered `RedisStorage` shares one client among all its sessions: a save that waits for
    a replica (``WAIT``, as after a failover took its shard's replica away) holds back no other
    session's call. They ran one at a time: in the Cluster fleet, leases of sessions on healthy
    primaries lapsed behind such saves, 1 s each."""
    outcome: list[str] = []
    async with RedisStorage(redis.url, replicas=1, replica_timeout=3, timeout=5) as storage:

        async def save() -> None:
            with pytest.raises(StorageError, match="fewer than 1 replica"):
                await storage.save("waiting", _token("w"))
            outcome.append("save refused")

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(save)
            with anyio.fail_after(5):  # a guard against a hang: the save is in WAIT at once
                while b"cmd=wait" not in redis.call("CLIENT", "LIST"):  # noqa: ASYNC110
                    await anyio.sleep(0.01)
            assert await storage.load("other") is None
            outcome.append("load answered")
    assert outcome == ["load answered", "save refused"]


# -- deletions heard on Sentinel and Cluster ---------------------------------------------------


async def test_deletions_are_heard_through_sentinel_and_cluster_urls(
    redis_sentinel: Any, redis_cluster: Any
) -> None:
    """`watch_deletions` hears a deletion on a Sentinel URL (it subscribed on the first
    sentinel, which no ``PUBLISH`` of the primary reaches: a `SessionPool` never heard a
    sign-out there) and on a Cluster URL, also when the first node the URL names is down (the
    Cluster fleet's killed primary was the first)."""
    closed = f"127.0.0.1:{free_port()}"
    cluster_hosts = redis_cluster.url.removeprefix("redis+cluster://")
    for url in (redis_sentinel.url, f"redis+cluster://{closed},{cluster_hosts}"):
        storage = RedisStorage(url, timeout=2)
        watch = storage.watch_deletions()
        assert watch is not None
        async with watch as deletions:
            await storage.save("gone", _token("a"))
            await storage.delete("gone")
            with anyio.fail_after(10):  # a guard against a hang; it comes in milliseconds
                assert await anext(deletions) == "gone"


# -- a primary left without replicas -----------------------------------------------------------


@pytest.mark.fleet
@pytest.mark.slow
async def test_a_save_no_replica_acknowledged_leaves_no_lease_behind(
    redis_sentinel_without_replicas: Any,
) -> None:
    """A save under the lease that its replicas did not acknowledge (``WAIT``; here `replicas=1`
    is required and the primary has none) is a StorageError, and the lease is released as
    usual: Redis answered, only the replicas did not. Left to lapse (60 s here), it held every
    other process back after a failover that left the primary without a replica."""
    group = redis_sentinel_without_replicas
    strict = RedisStorage(f"{group.url}?replicas=1", lease=60, replica_timeout=0.2, timeout=2)
    async with strict.lock("s"):
        with pytest.raises(StorageError, match=r"fewer than 1 replica\(s\) acknowledged"):
            await strict.save("s", _token("v1"))
    assert group.server_on(group.primary_port()).call("EXISTS", "planet_async:{s}:lock") == 0
    other = RedisStorage(group.url, lease=60, lock_timeout=0.5, timeout=2)
    async with other.lock("s"):  # at once: not after the 60 s lease
        await other.save("s", _token("v2"))
    assert _access(await other.load("s")) == "v2"


@pytest.mark.fleet
@pytest.mark.slow
async def test_by_default_a_primary_without_replicas_takes_saves(
    redis_sentinel_without_replicas: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """With the default `replicas` a save on a primary that has no replica online counts
    without one acknowledging it, with one WARNING for the episode (not one per save): no
    replica exists that could. With `replicas=1` given, the same save is refused."""
    group = redis_sentinel_without_replicas
    storage = RedisStorage(group.url, replica_timeout=0.2, timeout=2)
    with caplog.at_level("WARNING", logger="planet_async"):
        await storage.save("s", _token("v1"))
        async with storage.lock("s"):
            await storage.save("s", _token("v2"))
        assert await storage.save_if_newer("s", _token("v3"))  # no stamp: saved as it is
    assert _access(await storage.load("s")) == "v3"
    warnings = [r for r in caplog.records if "has no replica online" in r.getMessage()]
    assert len(warnings) == 1
    assert "s3cret" not in caplog.text
    strict = RedisStorage(group.url, replicas=1, replica_timeout=0.2, timeout=2)
    with pytest.raises(StorageError, match=r"fewer than 1 replica\(s\) acknowledged"):
        await strict.save("s", _token("v4"))


@pytest.mark.fleet
@pytest.mark.slow
async def test_a_rotating_session_renews_on_a_primary_without_replicas(
    peer: Peer, redis_sentinel_without_replicas: Any
) -> None:
    """Two processes share a user session with rotating refresh tokens on a primary left
    without replicas: one renews (its mark and its save are saves), the other adopts the stored
    result. One refresh, no invalid_grant, and the stored session is the renewed one. Had the
    saves waited for a replica, no renewal could have been marked, and both would be without a
    token once the login's expired."""
    group = redis_sentinel_without_replicas
    await device_login_saved(peer.issuer, RedisStorage(group.url, timeout=2), "user")
    peer.reset()
    clock = FakeClock(start=time.time())
    managers = [
        TokenManager(
            RefreshTokenGrant(
                AuthorizationServer(peer.issuer), PublicClient(client_id="native-app")
            ),
            storage=RedisStorage(group.url, replica_timeout=0.2, timeout=2),
            session="user",
            clock=clock,
        )
        for _ in range(2)
    ]
    login = [await manager.header() for manager in managers]
    assert login[0] == login[1]
    clock.advance(EXPIRED)
    renewed = await managers[0].header()
    assert renewed != login[0]
    assert await managers[1].header() == renewed
    assert peer.grants("refresh_token") == 1
    assert peer.errors() == {}
    stored = await RedisStorage(group.url).load("user")
    assert f"Bearer {_access(stored)}" == renewed


@pytest.mark.fleet
@pytest.mark.slow
async def test_saves_wait_for_a_replica_again_once_one_is_back(
    start_redis_topology: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    """A primary left without replicas takes saves unacknowledged (default `replicas`); once a
    replica is online again (the lost primary back, now replicating from the new one) saves
    wait for it: the next reaches it, and with it held back (SIGSTOP) a save is refused again."""
    group = start_redis_topology("sentinel", replicas=1)
    old = group.kill_primary()
    new = group.server_on(group.wait_for_failover(old.port))
    storage = RedisStorage(group.url)
    key = "planet_async:{s}:token"
    with caplog.at_level("INFO", logger="planet_async"):
        await storage.save("s", _token("alone"))
        assert "has no replica online" in caplog.text
        old.start()
        old.call("REPLICAOF", "127.0.0.1", str(new.port))
        deadline = time.monotonic() + 20
        while not (
            b"master_link_status:up" in old.call("INFO", "replication")
            and b"state=online" in new.call("INFO", "replication")
        ):
            assert time.monotonic() < deadline, "the old primary did not come back as a replica"
            await anyio.sleep(0.05)
        await storage.save("s", _token("replicated"))
        assert "a replica is online again" in caplog.text
        assert _access(TokenSet.from_json_dict(json.loads(old.call("GET", key)))) == "replicated"
        old.pause()
        try:
            with pytest.raises(StorageError, match=r"fewer than 1 replica\(s\) acknowledged"):
                await storage.save("s", _token("held back"))
        finally:
            old.resume()


@pytest.mark.fleet
@pytest.mark.slow
async def test_a_sentinel_that_sees_its_primary_down_is_passed_over(
    redis_sentinel_without_replicas: Any,
) -> None:
    """After a failover the first sentinel of the URL still names the lost primary, and sees it
    down (a sentinel cut off from the others: here one that knows only the lost primary). The
    storage asks the next sentinel instead and reaches the new primary at the first attempt, for
    a lease, a save and a read, on a connection per call and on one kept open (`async with`).
    (Taking the first sentinel's answer, it would try the lost primary on every call.) Given only
    that sentinel, a call fails at once: no primary while the sentinels see theirs down."""
    group = redis_sentinel_without_replicas
    lost = group.start_lost_sentinel(group.primary.port)  # the primary the fixture killed
    hosts = ",".join(f"127.0.0.1:{port}" for port in (lost, *group.sentinel_ports))
    url = f"redis+sentinel://{hosts}/{group.NAME}/0"
    storage = RedisStorage(url, timeout=2, lock_timeout=5)
    async with storage.lock("s"):
        await storage.save("s", _token("after"))
    assert _access(await storage.load("s")) == "after"
    new = group.server_on(group.primary_port())
    assert new is not group.primary
    assert new.call("EXISTS", "planet_async:{s}:token") == 1
    async with RedisStorage(url, timeout=2) as kept:
        assert _access(await kept.load("s")) == "after"
    alone = RedisStorage(f"redis+sentinel://127.0.0.1:{lost}/{group.NAME}/0", timeout=2)
    with pytest.raises(StorageError, match="see the primary of 'mymaster' down") as raised:
        await alone.load("s")
    assert f":{group.primary.port}" not in str(raised.value)


@pytest.mark.fleet
@pytest.mark.slow
async def test_a_sentinel_user_allowed_only_the_primary_address_is_followed(
    redis_sentinel_without_replicas: Any,
) -> None:
    """Sentinels whose ACL user may ask for the primary's address only (``SENTINEL
    GET-MASTER-ADDR-BY-NAME``, not ``SENTINEL MASTER`` and its flags): the storage takes that
    answer, as before, and reaches the primary."""
    group = redis_sentinel_without_replicas
    for port in group.sentinel_ports:
        reply = group.sentinel_call(
            port,
            *("ACL", "SETUSER", "asker", "on", ">asker-pw", "-@all", "+@connection"),
            "+sentinel|get-master-addr-by-name",
        )
        assert reply == "OK"
    url = f"{group.url}?sentinel_username=asker&sentinel_password=asker-pw"
    storage = RedisStorage(url, timeout=2)
    await storage.save("s", _token("asked"))
    assert _access(await storage.load("s")) == "asked"
    primary = group.server_on(group.primary_port())
    assert primary.call("EXISTS", "planet_async:{s}:token") == 1
