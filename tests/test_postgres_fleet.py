"""Sixteen processes on two "machines" share one session through PostgreSQL and renew it once
per expiry, also across a crash and restart of the server.

The fleets of tests/test_redis_fleet.py (its reasoning, bounds and checks, imported from there)
with a PostgresStorage URL as the workers' storage: sixteen worker processes, half on asyncio and
half on trio, in two groups of eight with a HOME of their own each, send requests for a while to
an API that verifies every token, with access tokens that live TTL seconds. The M2M session
starts empty; the user session is logged in once and its refresh tokens rotate (the peer revokes
the grant if an old one is presented again). In the user fleet's run the server crashes
(immediate shutdown, SIGQUIT) and restarts as soon as every worker has read the login's token
(before the first renewal is due): every worker's open connection breaks, and every later call
must open a new one.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from planet_async import (
    AuthorizationServer,
    PostgresStorage,
    PublicClient,
    RefreshTokenGrant,
    TokenManager,
    TokenSet,
)
from tests._browser import device_login_saved
from tests._fleet import Fleet
from tests._helpers import VerifyingApi
from tests._peer import Peer
from tests._postgres import PostgresServer
from tests.test_redis_fleet import (
    DEVICE_CODE_GRANT,
    INTERVAL_MS,
    MAX_LEAD,
    MAX_M2M_RENEWALS,
    MAX_USER_RENEWALS,
    MIN_RENEWALS,
    SECONDS,
    TTL,
    _check_workers,
    _describe,
    _issued,
    _machines,
)

pytestmark = [pytest.mark.peer, pytest.mark.fleet, pytest.mark.slow, pytest.mark.timeout(180)]

WORKERS = 16


def _wait_until_every_worker_loaded(server: PostgresServer, timeout: float = 30.0) -> float:
    """Wait until each worker has read the session once (its connection's last statement was a
    load, and it is idle again), so that every worker holds the login's token; the seconds
    waited."""
    started = time.perf_counter()
    deadline = started + timeout
    while time.perf_counter() < deadline:
        (loaded,) = server.sql(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' "
            "AND state = 'idle' AND query LIKE 'SELECT token FROM%%'"
        )[0]
        if loaded >= WORKERS:
            return time.perf_counter() - started
        time.sleep(0.02)
    raise AssertionError(f"the workers did not all read the session within {timeout:g} s")


def test_m2m_fleet_renews_once_per_expiry(
    peer: Peer, postgres: PostgresServer, tmp_path: Path
) -> None:
    """Sixteen processes on two machines sharing an M2M session in PostgreSQL make one token
    request per renewal point (the first token included) and send every request with a valid
    token."""
    peer.set_access_token_ttl(TTL)
    backends, envs, homes = _machines(tmp_path)
    logs = tmp_path / "logs"
    logs.mkdir()

    started = time.perf_counter()
    worker_args = [peer.issuer, postgres.url, "fleet", str(SECONDS), str(INTERVAL_MS)]
    with Fleet(worker_args, backends, logs, envs) as fleet:
        ready = time.perf_counter() - started
        fleet.go()  # release them together, with no session stored yet (nor any table)
        reports = fleet.reports(timeout=SECONDS + 30)
    grants = peer.grants("client_credentials")
    issued, claims = _issued(reports)
    print(
        f"\nM2M on PostgreSQL: {_describe(reports, issued, claims)}; {grants} token requests at "
        f"the peer; workers ready in {ready:.1f} s, {time.perf_counter() - started:.1f} s in all"
    )

    _check_workers(fleet, reports, issued, homes)
    assert peer.errors() == {}
    assert grants == len(issued) == sum(report["renewals"] for report in reports)
    assert 1 + MIN_RENEWALS <= grants <= 1 + MAX_M2M_RENEWALS, grants
    gaps = [claims[b]["iat"] - claims[a]["iat"] for a, b in itertools.pairwise(issued)]
    assert all(gap >= TTL / 2 for gap in gaps), gaps
    stored = anyio.run(PostgresStorage(postgres.url).load, "fleet")
    assert stored is not None
    assert stored.access_token.get_secret_value() == issued[-1]


async def _come_back_later(issuer: str, url: str) -> tuple[TokenSet, TokenSet, TokenSet, int]:
    """The session as a program would find it an hour later: what was stored, the token it
    renews to, what is stored after that, and how many token requests it made."""
    async with PostgresStorage(url) as storage:
        before = await storage.load("user")
        assert before is not None
        grant = RefreshTokenGrant(AuthorizationServer(issuer), PublicClient(client_id="native-app"))
        manager = TokenManager(
            grant, storage=storage, session="user", clock=lambda: time.time() + 3600
        )
        token = await manager.token()
        after = await storage.load("user")
        assert after is not None
        return before, token, after, manager.renewals


async def _login(issuer: str, url: str) -> TokenSet:
    async with PostgresStorage(url) as storage:
        return await device_login_saved(issuer, storage, "user")


def test_user_fleet_shares_a_rotating_refresh_token_across_a_server_crash(
    peer: Peer, start_postgres: Callable[..., PostgresServer], tmp_path: Path
) -> None:
    """Sixteen processes sharing one user session in PostgreSQL, whose server crashes and
    restarts a moment after they start, make exactly one refresh per renewal point, each with
    the newest refresh token: no invalid_grant, every request sent with a valid token, and the
    stored refresh token still works at the end."""
    # fsync=off: the server skips syncing its whole data directory before crash recovery (3 s
    # here); a crashed process loses nothing the kernel already has.
    server = start_postgres("fsync=off")
    peer.set_access_token_ttl(TTL)
    backends, envs, homes = _machines(tmp_path)
    logs = tmp_path / "logs"
    logs.mkdir()

    started = time.perf_counter()
    worker_args = [peer.issuer, server.url, "user", str(SECONDS), str(INTERVAL_MS), "--user"]
    with Fleet(worker_args, backends, logs, envs) as fleet:
        ready = time.perf_counter() - started
        login = anyio.run(_login, peer.issuer, server.url)
        fleet.go()  # release them together, with a fresh login stored
        lead = time.time() - login.issued_at
        waited = _wait_until_every_worker_loaded(server)
        crashed = time.perf_counter()
        server.crash()
        server.start()
        down = time.perf_counter() - crashed
        reports = fleet.reports(timeout=SECONDS + 30)
    refreshes = peer.grants("refresh_token")
    errors = peer.errors()
    issued, claims = _issued(reports)
    print(
        f"\nuser on PostgreSQL: {_describe(reports, issued, claims)}; {refreshes} refreshes at "
        f"the peer, peer errors {errors or 'none'}; login {lead:.2f} s before go; server down "
        f"{down:.2f} s from {waited:.2f} s after go; workers ready in {ready:.1f} s, "
        f"{time.perf_counter() - started:.1f} s in all"
    )

    assert lead < MAX_LEAD, lead
    _check_workers(fleet, reports, issued, homes)
    assert errors == {}
    assert peer.grants(DEVICE_CODE_GRANT) == 1
    assert refreshes == len(issued) - 1 == sum(report["renewals"] for report in reports)
    assert issued[0] == login.access_token.get_secret_value()
    assert MIN_RENEWALS <= refreshes <= MAX_USER_RENEWALS, refreshes
    gaps = [claims[b]["iat"] - claims[a]["iat"] for a, b in itertools.pairwise(issued)]
    assert all(gap >= TTL / 2 for gap in gaps), gaps

    before, token, after, requests = anyio.run(_come_back_later, peer.issuer, server.url)
    assert before.access_token.get_secret_value() == issued[-1]
    assert requests == 1
    assert peer.grants("refresh_token") == refreshes + 1
    assert peer.errors() == {}
    assert not token.same_refresh_token(before)
    assert after.same_refresh_token(token)
    assert VerifyingApi(peer.issuer).verify(token.access_token.get_secret_value())
