"""A fleet of worker processes renews 100 user sessions through a Redis Cluster whose primary
dies mid-run.

A Cluster of 3 primaries with a replica each (tests/_redis_topologies.py: ``redis-cli --cluster
create --cluster-replicas 1``, ``cluster-node-timeout 1000``). 100 users log in at the peer over
HTTP (the authorization code flow of its confidential ``web-app``, tests/_web_login.py), each
stored under its own session name (`SessionPool.key`), so their hash tags spread them over the
slots of every primary. 16 worker processes (tests/_cluster_fleet_worker.py, half asyncio, half
trio) each hold all 100 users in a `SessionPool` (the library's object for many users' sessions
in one process: a `TokenManager` per user, one task group, renewals in the background) over one
`RedisStorage` on the ``redis+cluster://`` URL, and send requests for them for 24 s to an API
that verifies every token. Access tokens live 8 s and the peer rotates refresh tokens (and
revokes the whole grant if a spent one comes back), so every session passes several renewal
points, each made once by one process under the session's lease, stored with ``WAIT 1``, and
adopted by the 15 others from the store.

A third of the way in, the primary named first in the URL (of those that are primaries) is
SIGKILLed: its replica takes over its slots (`ClusterGroup.wait_for_takeover`), and 4 s later
the killed node is started again and rejoins as that replica's replica (`ClusterGroup.rejoin`),
as an operator or an orchestrator restarts a lost node. Until it has, the promoted replica has
no replica. With the default `replicas` (the CI-sized run) its saves count without ``WAIT``
(one WARNING; README: "Durable saves"), so its sessions renew on it. The 100-session run gives
``?replicas=1``, which requires a replica always: there a renewal of one of its sessions stores
nothing and spends nothing (the renewing mark's own save is refused first; Redis has written
the mark all the same, and the renewal takes it away again and releases its lease), until the
node is back. Either way a save refused around the kill keeps the new token in memory, and it
is written back over the older stored copy (generations).

What must hold, counted per session at the provider (the peer's ``/__stats``):

- **No `invalid_grant`, no session lost**: the peer refused no token request (a spent refresh
  token sent again would be refused, and would revoke the grant), and after the run each of the
  100 sessions loads from the cluster as the newest token a grant gave for it, and renews once
  more with its stored refresh token.
- **One token request per renewal point.** A renewal point is one renewed token of the session
  that the fleet used (or that is stored at the end); each must come from exactly one token
  request (a renewal made twice for one point would also spend a refresh token twice). The
  window reasoning of tests/test_session_pool_redis.py: a pool's manager renews
  once its token's soft threshold passes, 0.65 to 0.75 of the lifetime after the token's
  `issued_at`; the process that renewed has `issued_at` as the moment the answer reached it,
  the others read the token from the store, whose format keeps whole seconds (up to 1 s
  earlier). So a session's next grant comes at least 0.65 * 8 - 1 = 4.2 s after the one before,
  on the provider's clock; two processes renewing for one point would make two grants moments
  apart. Each process comes back to each session every 8 s or so (12 requests a second for 100
  users), the 16 together every half second or so, and a token stays the session's newest for
  4.2 s at least, so every token a grant gave is used: grants == renewal points, exactly.
- **Every request carries a valid token**, its own user's, before, during and after the
  failover: the API (which checks signature, issuer, audience and expiry) refused none, but for
  the peer's rounding of `exp` to whole seconds (`EXP_ROUNDING`: a token refused had expired
  less than a second before, and would have been taken a second earlier; seen once in about
  ten runs, for one request of about 3,800).
- **Failed requests only in the takeover window.** A user session is never renewed without the
  store (its rotating refresh token must not be spent twice), so a request fails
  (`StorageError`) only when its session's token has run out while the store cannot help. For
  the killed primary's sessions: from the kill until the node has rejoined at the latest (the
  bound holds for `replicas=1` given too, where no save counts before), plus what it takes then
  to make the renewals held back: the process holding one
  (a mark it stored, or a token it obtained and could not save) comes back to that session at
  its next request and after its wait on the failed store (at most 2 s), and a process waiting
  on it retries within 2 s more. For every other session only because the cluster was down:
  Redis Cluster's default (``cluster-require-full-coverage yes``) refuses every slot while one
  is uncovered, from the moment the nodes mark the primary failed until its replica has taken
  over (``CLUSTERDOWN``), and a renewal whose save it refused is written back the same way,
  from the takeover on. Either way a call made before the outage ended can take the storage's
  timeout (5 s) to fail, and the manager answers from that failure for its store backoff (at
  most 2 s) without trying again. No request fails before the kill, and none sent after those
  windows fails.

The logins take longer than a token lives, so before `go` each session is renewed once (one
after the other, by the test): the fleet starts with every token fresh and the renewal points
spread, instead of all 100 sessions expired at once in 16 processes.

Figures printed: run time, takeover and rejoin seconds, grants, failed requests, grants per
session.
"""

from __future__ import annotations

import collections
import hashlib
import itertools
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest

from planet_async import AuthorizationServer, RedisStorage, RefreshTokenGrant, TokenManager
from planet_async.web import SessionPool
from tests._fleet import Fleet, jwt_claims
from tests._peer import Peer
from tests._redis_topologies import ClusterGroup
from tests._web_login import web_client, web_login

pytestmark = [pytest.mark.peer, pytest.mark.fleet, pytest.mark.serial]

TTL = 8  # seconds an access token lives at the peer
SHORTEST_PERIOD = 0.65 * TTL - 1  # 4.2 s between two grants of one session, at least
STORE_RETRY_CAP = 2.0  # the TokenManager's longest wait between attempts on a failed store
STORE_TIMEOUT = 5.0  # RedisStorage's default `timeout`: the longest one call to Redis takes
LOGINS_AT_ONCE = 12
WAITING = "another process is renewing it"  # a renewal whose result is not stored yet
# The peer writes a token's `exp` in whole seconds (the second it was issued in, plus the
# lifetime) while it announces `expires_in` as the whole lifetime, and the TokenManager takes
# the expiry from `expires_in` at receipt: a token can live up to a second less than the manager
# believes. Its margin before expiry is a tenth of the lifetime, 0.8 s for these 8 s tokens
# (30 s for Planet's hour-long ones), so a token can reach the API in the second after its `exp`.
EXP_ROUNDING = 1.0


@dataclass(frozen=True)
class Scale:
    processes: int
    sessions: int
    seconds: float  # each worker's run
    rate: float  # requests a second, per process
    min_renewals: int  # renewal points every session passes at least
    without_replica: float  # seconds the promoted replica runs alone before the node rejoins
    replicas: str = ""  # `?replicas=N` for the URL: saves then require N replicas, always


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _stored_key(session: str) -> str:
    return f"planet_async:{{{session}}}:token"


async def _log_in(issuer: str, url: str, users: list[str]) -> dict[str, str]:
    """Log every user in (a bounded number at once) and store their sessions; returns each
    user's session name."""
    server = AuthorizationServer(issuer)
    limiter = anyio.CapacityLimiter(LOGINS_AT_ONCE)
    async with RedisStorage(url) as storage, SessionPool(server, web_client(), storage) as pool:

        async def log_in(user: str) -> None:
            async with limiter:
                await pool.sign_in(user, await web_login(issuer, user, server))

        async with anyio.create_task_group() as tasks:
            for user in users:
                tasks.start_soon(log_in, user)
        return {user: pool.key(user) for user in users}


async def _warm_up(issuer: str, url: str, keys: dict[str, str]) -> dict[str, str]:
    """Renew every session once, one after the other, so that the fleet starts with every token
    fresh and their renewal points spread over the seconds this takes. The logins take longer
    than a token lives: without this, every session would need renewing at `go`, by 16
    processes at once. Returns the digest of each user's token then."""
    server = AuthorizationServer(issuer)
    fresh: dict[str, str] = {}
    async with RedisStorage(url) as storage:
        for user, key in keys.items():
            grant = RefreshTokenGrant(server, web_client())
            token = await TokenManager(grant, storage=storage, session=key).renew()
            fresh[user] = _digest(token.access_token.get_secret_value())
    return fresh


async def _after(issuer: str, url: str, keys: dict[str, str]) -> dict[str, tuple[str, str]]:
    """Each session as the cluster holds it after the run, renewed once more from there: user ->
    (digest of the stored access token, `sub` of the token the renewal gave)."""
    found: dict[str, tuple[str, str]] = {}
    server = AuthorizationServer(issuer)
    async with RedisStorage(url) as storage:
        for user, key in keys.items():
            stored = await storage.load(key)
            assert stored is not None, f"session of {user} lost"
            grant = RefreshTokenGrant(server, web_client())
            renewed = await TokenManager(grant, storage=storage, session=key).renew()
            found[user] = (
                _digest(stored.access_token.get_secret_value()),
                jwt_claims(renewed.access_token.get_secret_value())["sub"],
            )
    return found


def _run(peer: Peer, cluster: ClusterGroup, tmp_path: Path, scale: Scale) -> None:
    peer.set_access_token_ttl(TTL)
    users = [f"cluster-{i}" for i in range(scale.sessions)]
    logs = tmp_path / "logs"
    logs.mkdir()
    backends = ("asyncio", "trio") * (scale.processes // 2)
    url = cluster.url + (f"?replicas={scale.replicas}" if scale.replicas else "")
    args = [peer.issuer, url, str(scale.seconds), str(scale.rate), *users]
    # The topology asked for: 3 primaries, each with one replica in sync.
    roles = [node.call("INFO", "replication") for node in cluster.nodes]
    assert sum(b"role:master" in info for info in roles) == 3
    assert all(b"connected_slaves:1" in info for info in roles if b"role:master" in info)
    started = time.monotonic()
    with Fleet(args, backends, logs, module="tests._cluster_fleet_worker") as fleet:
        ready = time.monotonic() - started
        keys = anyio.run(_log_in, peer.issuer, url, users)
        logged_in = time.monotonic() - started - ready
        first = anyio.run(_warm_up, peer.issuer, url, keys)  # the fleet's first tokens
        warmed_up = time.monotonic() - started - ready - logged_in
        owner = {user: cluster.primary_of(_stored_key(keys[user])) for user in users}
        per_primary = collections.Counter(owner[user].port for user in users)
        primaries = [node for node in cluster.nodes if node.port in per_primary]
        victim = primaries[0]
        peer.reset()
        fleet.go()
        go = time.time()
        time.sleep(scale.seconds / 3)  # scheduling the fault a third of the way in
        killed = time.time()
        victim.kill()
        cluster.wait_for_takeover(victim)
        took_over = time.time()
        time.sleep(scale.without_replica)  # the lost node is restarted a while later
        cluster.rejoin(victim)
        rejoined = time.time()
        reports = fleet.reports(timeout=scale.seconds + 90)
        end = time.time()
    (logs / "reports.json").write_text(json.dumps(reports))  # for a failure's post-mortem
    lost_shard = {user for user in users if owner[user] is victim}
    granted = peer.refreshed()  # sub -> ms since the epoch of each refresh grant
    errors = peer.errors()

    tokens: dict[str, dict[str, float]] = {user: {} for user in users}
    obtained: dict[str, list[tuple[float, str]]] = {user: [] for user in users}
    for report in reports:
        for user in users:
            for digest, at in report["tokens"][user].items():
                tokens[user][digest] = min(at, tokens[user].get(digest, at))
            obtained[user] += [(at, digest) for digest, at in report["obtained"].get(user, [])]
    failed = [tuple(failure) for report in reports for failure in report["failed"]]
    refused = [tuple(each) for report in reports for each in report["refused"]]
    # The longest stretch, in one process, between two requests for one session.
    gap = max(
        (
            b - a
            for report in reports
            for times in report["requested"].values()
            for a, b in itertools.pairwise(sorted([go, *times, end]))
        ),
        default=end - go,
    )
    # The last moment a request can fail: the end of the outage, plus the time to recover from
    # it. A call made before an outage ended fails within the storage's timeout, and the
    # manager answers from that failure, without trying, for its store backoff (at most
    # STORE_RETRY_CAP). A renewal whose save failed keeps its token in memory: it is written
    # back at the next request of the process holding it (within `gap`) after its backoff, and
    # another process waiting on that renewal's mark retries within a backoff more. For the
    # killed primary's sessions the outage lasts until the node has rejoined; for another
    # primary's, while the cluster was down, until the takeover.
    recovery = STORE_TIMEOUT + gap + 2 * STORE_RETRY_CAP
    window_end = rejoined + recovery
    elsewhere_end = took_over + recovery

    grants = {user: granted.get(user, []) for user in users}
    spread = dict(sorted(collections.Counter(len(times) for times in grants.values()).items()))
    phases = collections.Counter(
        "before the takeover"
        if sent < took_over
        else "before the rejoin"
        if sent < rejoined
        else "after the rejoin"
        for _, sent, _, _ in failed
    )
    print(
        f"\nCluster fleet: {scale.processes} processes, {scale.sessions} sessions (per primary "
        f"{sorted(per_primary.values())}; {len(lost_shard)} on the killed one, "
        f"{'first' if victim is cluster.nodes[0] else 'not first'} in the URL); workers ready "
        f"in {ready:.1f} s, logins {logged_in:.1f} s, one renewal each {warmed_up:.1f} s; "
        f"run {end - go:.1f} s; killed "
        f"{killed - go:.1f} s in, replica took over {took_over - killed:.2f} s after, node "
        f"rejoined {rejoined - killed:.2f} s after; {sum(r['requests'] for r in reports)} "
        f"requests, longest gap between one process's requests for a session {gap:.2f} s; "
        f"{sum(map(len, grants.values()))} refresh grants, per session {spread}; peer errors "
        f"{errors or 'none'}; {len(refused)} tokens refused by the API (expired less than "
        f"{EXP_ROUNDING:g} s before: the peer's rounding); {len(failed)} failed requests "
        f"({dict(phases)}), "
        f"{len({f[0] for f in failed})} sessions with one "
        f"({len({f[0] for f in failed} - lost_shard)} of other primaries), the last sent "
        f"{max((f[1] for f in failed), default=killed) - killed:.2f} s after the kill (bound: "
        f"{window_end - killed:.2f} s; {elsewhere_end - killed:.2f} s for other primaries')"
    )
    for text, count in collections.Counter(f[3] for f in failed).most_common(5):
        print(f"  {count} x {text}")

    after = anyio.run(_after, peer.issuer, url, keys)
    renewed_after = peer.grants("refresh_token") - sum(map(len, granted.values()))

    # No invalid_grant, nothing refused: no refresh token was sent twice.
    assert errors == {}
    # Every request carried its own user's token, valid but for the peer's rounding of `exp`
    # (see EXP_ROUNDING): a token the API refused had expired less than a second before, and
    # it would have taken it a second earlier.
    assert [r["wrong_user"] for r in reports] == [0] * scale.processes
    assert [len(r["refused"]) for r in reports] == [r["rejected"] for r in reports]
    assert all(valid and 0 <= at - exp < EXP_ROUNDING for _, at, exp, valid in refused), refused
    # The sessions are spread over every primary.
    assert len(per_primary) == 3, per_primary
    # One token request per renewal point, per session: every grant came from a worker, grants
    # of one session are at least the shortest period apart, and each grant's token is a
    # renewed token the fleet used or stored, one for one.
    assert set(granted) <= set(users)
    assert sum(map(len, obtained.values())) == sum(map(len, grants.values()))
    for user in users:
        times = grants[user]
        assert all(b - a >= round(SHORTEST_PERIOD * 1000) for a, b in itertools.pairwise(times)), (
            user,
            [b - a for a, b in itertools.pairwise(times)],
        )
        renewed = {digest for _, digest in obtained[user]}
        used = set(tokens[user]) | {after[user][0]}
        points = used - {first[user]}
        assert points == renewed, (user, len(points), len(renewed))
        assert len(times) == len(points) >= scale.min_renewals, (user, len(times), len(points))
    # No session lost: each is stored as its newest token, and renews once more from the store.
    for user in users:
        newest = max(obtained[user])[1]
        assert after[user] == (newest, user), user
    assert renewed_after == scale.sessions
    assert peer.errors() == {}
    # Failed requests: each a StorageError, in the takeover window. The killed primary's
    # sessions, until the shard takes durable saves again and the renewals held back are made
    # (`window_end`); another primary's sessions only for the cluster's being down (Redis's
    # default `cluster-require-full-coverage yes` refuses every slot while one is uncovered,
    # from the moment the nodes mark the primary failed until its replica has taken over): the
    # refusal itself, or a renewal whose save it refused and whose token is written back later
    # (`elsewhere_end`).
    assert all(text.startswith("StorageError: ") for *_, text in failed)
    assert all(killed <= failed_at for _, _, failed_at, _ in failed), killed
    assert all(sent <= window_end for _, sent, _, _ in failed), (
        killed,
        window_end,
        sorted(sent for _, sent, _, _ in failed)[-3:],
    )
    elsewhere = [(user, sent, text) for user, sent, _, text in failed if user not in lost_shard]
    assert all(
        sent <= elsewhere_end and ("ClusterDownError" in text or WAITING in text)
        for _, sent, text in elsewhere
    ), (took_over, elsewhere[:3])


@pytest.mark.slow  # one unexplained failure in 12 runs: kept out of CI until it is explained
@pytest.mark.timeout(120)
def test_a_small_fleet_keeps_every_session_through_a_cluster_failover(
    peer: Peer, start_redis_topology: Any, tmp_path: Path
) -> None:
    """A small size of the run below: 4 processes, 12 sessions, 16 s, a primary SIGKILLed 5 s
    in, the node back 2 s after the takeover."""
    scale = Scale(processes=4, sessions=12, seconds=16, rate=10, min_renewals=1, without_replica=2)
    _run(peer, start_redis_topology("cluster"), tmp_path, scale)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_sixteen_processes_keep_100_sessions_through_a_cluster_failover(
    peer: Peer, start_redis_topology: Any, tmp_path: Path
) -> None:
    """16 processes, 100 sessions, 24 s, a primary SIGKILLed 8 s in, the node back 4 s after
    the takeover (the module's docstring says what each assertion proves)."""
    scale = Scale(
        processes=16,
        sessions=100,
        seconds=24,
        rate=12,
        min_renewals=2,
        without_replica=4,
        replicas="1",
    )
    _run(peer, start_redis_topology("cluster"), tmp_path, scale)
