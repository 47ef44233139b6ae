"""One Sentinel failover under rotation, killed at a chosen point around a renewal: shared by
tests/test_redis_failover_fleet.py and benchmarks/failover.py.

One primary, two replicas and three sentinels (tests/_redis_topologies.py); a user logs in
(`device_login_saved`); eight worker processes (tests/_worker.py, half asyncio, half trio) share
the session, with 8 s access tokens and refresh tokens the peer rotates (and revokes the grant if
an old one comes back). The peer answers each refresh after `TOKEN_DELAY_MS`, so that the first
renewal's token request leaves a window that can be aimed at. The first renewal is watched on the
servers themselves (plain ``GET`` of the stored session):

1. its *renewing mark* (the rotation is about to spend the login's refresh token) appears on the
   primary;
2. its *save* (the rotated token set) appears on the primary;
3. the save reaches both replicas, and ``WAIT 1`` returns.

A `KillPoint` SIGKILLs the primary at one of three kinds of point, each made on purpose:

- ``before-save``: `offset` seconds after the mark is seen on the primary, while the token
  request is in flight (offsets stay below `TOKEN_DELAY_MS`); the primary still holds the login's
  token set when it is killed.
- ``unacknowledged``: once both replicas hold the mark, both are SIGSTOPped; the save reaches the
  primary, whose ``WAIT 1`` cannot be answered; the primary is killed `offset` seconds after the
  save is seen on it (below 1 s: the saver's ``WAIT`` still blocks; above: it timed out and the
  saver kept the token unsaved), then the replicas are resumed. The replica promoted has the mark
  but not the save.
- ``after-wait``: `offset` seconds after both replicas hold the save.

`run_failover` returns a `FailoverResult`; `landed` is the kind the kill was seen to land on (what
the primary, and the replicas, held just before it), which the callers compare with the kind
aimed at.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from planet_async import (
    AuthorizationServer,
    PublicClient,
    RedisStorage,
    RefreshTokenGrant,
    Storage,
    TokenManager,
    TokenSet,
)
from tests._fleet import Fleet, jwt_claims
from tests._peer import Peer
from tests._redis import RedisServer
from tests._redis_topologies import SentinelGroup

WORKERS = ("asyncio", "trio") * 4
TTL = 8  # seconds an access token lives
SECONDS = 24.0  # each worker's run
INTERVAL_MS = 150  # between one worker's requests
TOKEN_DELAY_MS = 600  # the peer's delay before answering a token request
KEY = "planet_async:{user}:token"
RENEWING = "_planet_async_renewing"  # the renewing mark's member of a stored token set
POLL = 0.005

Login = Callable[[str, Storage, str], Awaitable[TokenSet]]
"""Logs `native-app` in at an issuer and saves the session: (issuer, storage, session)."""

BEFORE_SAVE = "before-save"
UNACKNOWLEDGED = "unacknowledged"
AFTER_WAIT = "after-wait"
KINDS = (BEFORE_SAVE, UNACKNOWLEDGED, AFTER_WAIT)


@dataclass(frozen=True)
class KillPoint:
    kind: str
    offset: float  # seconds after the kind's starting event (see the module's docstring)

    @property
    def id(self) -> str:
        return f"{self.kind}+{self.offset:.2f}s"


KILL_POINTS = (
    *(KillPoint(BEFORE_SAVE, o) for o in (0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4)),
    *(KillPoint(UNACKNOWLEDGED, o) for o in (0.0, 0.1, 0.25, 0.5, 0.75, 1.5, 2.5)),
    *(KillPoint(AFTER_WAIT, o) for o in (0.0, 0.1, 0.3, 0.6, 1.0, 2.0)),
)
"""The 20 kill points: 7 before the save, 7 between the save and its acknowledgement, 6 after."""

QUICK_KILL_POINTS = (
    KillPoint(BEFORE_SAVE, 0.1),
    KillPoint(UNACKNOWLEDGED, 0.25),
    KillPoint(AFTER_WAIT, 0.1),
)
"""One of each kind."""


@dataclass
class FailoverResult:
    point: KillPoint
    landed: str  # the kind the kill landed on, as the servers showed it just before
    failover_seconds: float  # from the SIGKILL until every sentinel names the new primary
    token_requests: int  # refresh requests the peer received, answered or refused
    renewal_points: int  # distinct tokens the workers used, less the login's
    renewals: int  # renewals the workers counted
    invalid_grant: int
    peer_errors: dict[str, int]
    failed: list[int]  # failed requests per worker
    rejected: list[int]  # tokens the API refused per worker
    without_token: float  # the worst worker's seconds from a failed request to the next success
    without_token_after_failover: float  # the part of it after the new primary was named
    stored_is_last: bool  # storage holds the last token the workers used
    stored_renews: bool  # the stored refresh token still gets a token at the end
    failures: list[str] = field(default_factory=list)  # each failed request's stderr line
    dead_port: int = 0
    outages: list[list[list[float]]] = field(default_factory=list)  # per worker, from the kill
    named_after: float = 0.0  # seconds from the kill until the new primary was named

    def row(self) -> dict[str, Any]:
        return {
            "kill_point": self.point.id,
            "kind": self.point.kind,
            "landed": self.landed,
            "renewal_points": self.renewal_points,
            "token_requests": self.token_requests,
            "invalid_grant": self.invalid_grant,
            "failed_requests": sum(self.failed),
            "failed_per_worker": self.failed,
            "rejected": sum(self.rejected),
            "without_token": round(self.without_token, 2),
            "without_token_after_failover": round(self.without_token_after_failover, 2),
            "failover_seconds": round(self.failover_seconds, 2),
            "stored_renews": self.stored_renews,
        }


def _stored(server: RedisServer) -> dict[str, Any] | None:
    raw = server.call("GET", KEY)
    return None if raw is None else dict(json.loads(raw))


def _wait(check: Any, what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} within {timeout:g} s")
        time.sleep(POLL)


def _kill(group: SentinelGroup, point: KillPoint, first: str) -> tuple[str, int]:
    """Wait for the first renewal and SIGKILL the primary at `point`; returns where the kill
    landed and the dead primary's port."""
    primary = group.server_on(group.primary_port())
    replicas = [s for s in group.servers if s is not primary]

    def marked(server: RedisServer) -> bool:
        value = _stored(server)
        return value is not None and value["access_token"] == first and RENEWING in value

    def saved(server: RedisServer) -> bool:
        value = _stored(server)
        return value is not None and value["access_token"] != first

    paused = False
    try:
        if point.kind == AFTER_WAIT:
            _wait(lambda: all(saved(r) for r in replicas), "no rotation reached both replicas")
            time.sleep(point.offset)
            landed = AFTER_WAIT if all(saved(r) for r in replicas) else "?"
        elif point.kind == BEFORE_SAVE:
            _wait(lambda: marked(primary), "no renewal began")
            time.sleep(point.offset)
            landed = BEFORE_SAVE if not saved(primary) else "?"
        else:
            _wait(lambda: all(marked(r) for r in replicas), "no renewal's mark reached both")
            # The mark's own WAIT is answered by the replicas' ACK, a loopback round trip
            # after they have it; the token request takes TOKEN_DELAY_MS.
            time.sleep(0.05)
            for replica in replicas:
                replica.pause()
            paused = True
            if saved(primary):
                landed = "?"  # the save came before the pause: it may be acknowledged
            else:
                _wait(lambda: saved(primary), "no rotation reached the primary", 5)
                time.sleep(point.offset)
                landed = UNACKNOWLEDGED
        primary.kill()
    finally:
        if paused:
            for replica in replicas:
                replica.resume()
    return landed, primary.port


def _without(outages: list[list[float]], since: float = 0.0) -> float:
    return sum(max(0.0, end - max(start, since)) for start, end in outages)


def run_failover(
    peer: Peer,
    point: KillPoint,
    logs: Path,
    group: SentinelGroup | None = None,
    login: Login | None = None,
) -> FailoverResult:
    """One run: start a Sentinel group (unless given one, started and unused), log in (with
    `login`; by default tests/_browser.py's `device_login_saved`), start the fleet, kill the
    primary at `point`, and gather what happened."""
    if login is None:
        from tests._browser import device_login_saved  # Playwright: the tests' environment

        login = device_login_saved
    own = group is None
    if group is None:
        group = SentinelGroup().start()
    try:
        return _run(peer, point, logs, group, login)
    finally:
        if own:
            group.stop()


def _run(
    peer: Peer, point: KillPoint, logs: Path, group: SentinelGroup, login: Login
) -> FailoverResult:
    logs.mkdir(parents=True, exist_ok=True)
    peer.set_access_token_ttl(TTL)
    peer.set_token_delay(0)
    peer.reset()
    worker_args = [peer.issuer, group.url, "user", str(SECONDS), str(INTERVAL_MS), "--user"]
    try:
        with Fleet(worker_args, WORKERS, logs) as fleet:
            token = anyio.run(login, peer.issuer, RedisStorage(group.url), "user")
            first = token.access_token.get_secret_value()
            peer.set_token_delay(TOKEN_DELAY_MS)
            peer.reset()  # the login's grant is not a renewal's
            fleet.go()
            landed, dead = _kill(group, point, first)
            killed = time.monotonic()
            killed_at = time.time()
            group.wait_for_failover(dead)
            failover = time.monotonic() - killed
            named_at = time.time()
            reports = fleet.reports(timeout=SECONDS + 60)
            failures = [
                line
                for index in range(len(WORKERS))
                for line in fleet.stderr(index, whole=True).splitlines()
                if "request failed" in line or "HTTP " in line
            ]
    finally:
        peer.set_token_delay(0)
    errors = peer.errors()
    refused = sum(n for key, n in errors.items() if key.startswith("refresh_token:"))
    token_requests = peer.grants("refresh_token") + refused
    claims = {token: jwt_claims(token) for report in reports for token, _ in report["tokens"]}
    issued = sorted(claims, key=lambda token: claims[token]["iat"])
    stored = anyio.run(RedisStorage(group.url).load, "user")
    stored_is_last = stored is not None and stored.access_token.get_secret_value() == issued[-1]
    return FailoverResult(
        point=point,
        landed=landed,
        failover_seconds=failover,
        token_requests=token_requests,
        renewal_points=len(issued) - 1,
        renewals=sum(report["renewals"] for report in reports),
        invalid_grant=sum(n for key, n in errors.items() if key.endswith(":invalid_grant")),
        peer_errors=errors,
        failed=[report["errors"] for report in reports],
        rejected=[report["rejected"] for report in reports],
        without_token=max(_without(report["outages"]) for report in reports),
        without_token_after_failover=max(
            _without(report["outages"], named_at) for report in reports
        ),
        stored_is_last=stored_is_last,
        stored_renews=anyio.run(_renews, peer.issuer, group.url),
        failures=failures,
        dead_port=dead,
        outages=[
            [[round(start - killed_at, 2), round(end - killed_at, 2)] for start, end in outages]
            for outages in (report["outages"] for report in reports)
        ],
        named_after=named_at - killed_at,
    )


async def _renews(issuer: str, url: str) -> bool:
    """Whether the stored session's refresh token still gets a token (spends it once)."""
    grant = RefreshTokenGrant(AuthorizationServer(issuer), PublicClient(client_id="native-app"))
    manager = TokenManager(grant, storage=RedisStorage(url), session="user")
    try:
        await manager.renew()
    except Exception:
        return False
    return True
