"""Eight processes share a rotating user session through Redis Sentinel while its primary dies.

One primary, two replicas and three sentinels (tests/_redis_topologies.py); eight worker
processes (tests/_worker.py, half asyncio, half trio) renew one user session whose refresh
tokens the peer rotates, revoking the grant if an old one comes back. Right after the first
rotation's save has reached the primary, the primary is SIGKILLed; the sentinels promote a
replica. The saves wait for one replica (`WAIT 1`, the default on a Sentinel URL), so the rotated
refresh token is on the replica that takes over. Requests made while the sentinels still name
the dead primary (about 2 s) by a worker whose token ran out then fail: a user session waits for
its store; every request after that is sent with a valid token.

The second test runs the same fleet (tests/_failover_run.py) at 20 kill points around the first
renewal, each kind made on purpose: 7 before the rotation's save reaches the primary (while its
token request is in flight), 7 after the save while both replicas are SIGSTOPped so that its
``WAIT`` cannot be answered (the promoted replica then has the renewal's mark, not its save), 6
after ``WAIT``. Every one keeps to one token request per renewal point: no exception was needed.

The third runs the stalled kill point (unacknowledged, 2.5 s) on a group with one replica, so that
the new primary has no replica for the rest of the run: saves count without one, and the fleet
renews on (before, each refused save left its lease to lapse, and no renewal got through).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from planet_async import RedisStorage
from tests._browser import device_login_saved
from tests._failover_run import KILL_POINTS, UNACKNOWLEDGED, KillPoint, run_failover
from tests._fleet import Fleet
from tests._peer import Peer
from tests.test_redis_fleet import _issued

pytestmark = [pytest.mark.peer, pytest.mark.fleet, pytest.mark.slow, pytest.mark.timeout(180)]

WORKERS = ("asyncio", "trio") * 4
TTL = 8  # seconds an access token lives
SECONDS = 24.0
INTERVAL_MS = 150
KEY = "planet_async:{user}:token"


def _stored_access(group: Any) -> str | None:
    raw = group.server_on(group.primary_port()).call("GET", KEY)
    return None if raw is None else json.loads(raw)["access_token"]


def test_a_rotating_session_survives_a_sentinel_failover(
    peer: Peer, start_redis_topology: Any, tmp_path: Path
) -> None:
    """The primary dies right after a rotation's save: no invalid_grant, one refresh per renewal
    point, and the stored refresh token still works at the end."""
    group = start_redis_topology("sentinel")
    peer.set_access_token_ttl(TTL)
    logs = tmp_path / "logs"
    logs.mkdir()
    url = group.url  # saves wait for one replica of the two (the default)
    worker_args = [peer.issuer, url, "user", str(SECONDS), str(INTERVAL_MS), "--user"]
    with Fleet(worker_args, WORKERS, logs) as fleet:
        login = anyio.run(device_login_saved, peer.issuer, RedisStorage(group.url), "user")
        first = login.access_token.get_secret_value()
        fleet.go()
        deadline = time.monotonic() + 15
        while _stored_access(group) == first and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _stored_access(group) != first, "no rotation was saved"
        killed = time.monotonic()
        old = group.kill_primary().port
        group.wait_for_failover(old)
        failover = time.monotonic() - killed
        reports = fleet.reports(timeout=SECONDS + 60)
    refreshes = peer.grants("refresh_token")
    issued, _ = _issued(reports)
    errors = [report["errors"] for report in reports]
    print(
        f"\nSentinel failover: primary killed after the first rotation, new primary named "
        f"{failover:.1f} s later; {refreshes} refreshes, {len(issued)} tokens used, peer errors "
        f"{peer.errors() or 'none'}, failed requests per worker {errors}"
    )
    assert peer.errors() == {}  # no refresh token was spent twice: no invalid_grant
    # Requests fail while the sentinels still name the dead primary: first while they have not
    # seen it down (the connection fails), then while they see it down and have not named
    # another (no primary: a failover is under way). A worker whose token ran out then waits for
    # the store, as a user session must. A process that finds a renewal's
    # mark on the new primary (its save was lost with the old one) waits for the result until
    # the renewing process, which kept the token in memory, writes it back over the marked copy
    # (a higher generation replaces it). No refresh token is spent twice.
    failures = [
        line
        for index in range(len(WORKERS))
        for line in fleet.stderr(index, whole=True).splitlines()
        if "request failed" in line or "HTTP " in line
    ]
    assert len(failures) == sum(errors)
    dead, down = f"127.0.0.1:{old}", "the sentinels see the primary of 'mymaster' down"
    waiting = "another process is renewing it"
    assert all(dead in line or down in line or waiting in line for line in failures), failures[:3]
    print(
        f"failed requests: {sum(dead in line for line in failures)} naming the dead primary, "
        f"{sum(down in line for line in failures)} while the sentinels saw it down, "
        f"{sum(waiting in line for line in failures)} waiting for a renewal's result"
    )
    assert refreshes == len(issued) - 1 == sum(report["renewals"] for report in reports)
    stored = anyio.run(RedisStorage(group.url).load, "user")
    assert stored is not None
    assert stored.access_token.get_secret_value() == issued[-1]


@pytest.mark.parametrize("point", KILL_POINTS, ids=lambda point: point.id)
def test_a_rotating_session_survives_a_failover_at_each_kill_point(
    peer: Peer, start_redis_topology: Any, tmp_path: Path, point: KillPoint
) -> None:
    """The primary dies at one of 20 points around the first renewal (tests/_failover_run.py):
    before the rotation's save reaches it, after the save while the replicas cannot acknowledge
    it, or after they did. In every run: the kill landed where it was aimed, no invalid_grant, one
    token request per renewal point, no request sent with a token the API refuses, and the stored
    session is the last one used and still renews."""
    result = run_failover(peer, point, tmp_path / "logs", start_redis_topology("sentinel"))
    print(f"\n{point.id}: {result.row()}; peer errors {result.peer_errors or 'none'}")
    print(f"new primary named {result.named_after:.2f} s after the kill; outages {result.outages}")
    for line in sorted({line.partition(": ")[2] for line in result.failures}):
        print(f"  {sum(line in f for f in result.failures)} x {line[:300]}")
    assert result.landed == point.kind
    assert result.peer_errors == {}
    assert result.invalid_grant == 0
    assert result.token_requests == result.renewal_points == result.renewals
    assert result.rejected == [0] * len(WORKERS)
    assert len(result.failures) == sum(result.failed)
    assert result.stored_is_last
    assert result.stored_renews


def test_a_rotating_session_survives_a_failover_that_leaves_no_replica(
    peer: Peer, start_redis_topology: Any, tmp_path: Path
) -> None:
    """The kill point of the 14 s stall (unacknowledged, 2.5 s after the save), on a group with
    one replica: the replica promoted has none of its own for the rest of the run, as after a
    failover whose other replica has not followed the new primary yet. The saves (the renewing
    mark is one) count without a replica's acknowledgement (the default `replicas`), and a save
    that did wait releases its lease: the fleet renews on. Before, every renewal's mark was
    refused and each refusal left its lease to lapse: no renewal until a replica came back."""
    group = start_redis_topology("sentinel", replicas=1)
    point = KillPoint(UNACKNOWLEDGED, 2.5)
    result = run_failover(peer, point, tmp_path / "logs", group)
    print(f"\n{point.id}, one replica: {result.row()}; peer errors {result.peer_errors or 'none'}")
    print(f"new primary named {result.named_after:.2f} s after the kill; outages {result.outages}")
    assert result.landed == point.kind
    assert result.peer_errors == {}
    assert result.token_requests == result.renewal_points == result.renewals
    # The first renewal came before the kill: the fleet renewed after the failover too.
    assert result.renewal_points > 1
    assert result.rejected == [0] * len(WORKERS)
    assert len(result.failures) == sum(result.failed)
    assert result.stored_is_last
    assert result.stored_renews
