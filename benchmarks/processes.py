"""Processes: sixteen processes sharing one session across several token lifetimes.

Two sessions: M2M (client credentials) and a user session from a device-code login whose refresh
tokens rotate (the peer revokes the whole grant when an old refresh token is used again). Each
contender gets a fresh session in a fresh HOME, in the `planet` CLI's layout
(``~/.planet/<profile>/token.json``), or in Redis, then sixteen processes (`_fleet.py`) use it at
once, each sending a request every 20 ms to an API that verifies every token. Tokens live 5 s and
the token endpoint takes 300 ms, as a remote one would. One fleet runs at a time.

- planet_async, FileStorage: a `TokenManager` over `FileStorage(~/.planet)` with the profile as
  session, renewing under the file lock (client credentials, or `RefreshTokenGrant`).
- planet_async, RedisStorage: the same over `RedisStorage(url)`, a real redis-server on loopback,
  renewing under its lease.
- incumbent: `planet.Auth.from_profile(<profile>)` with ``auth_client.json`` beside the token.
- authlib: `AsyncOAuth2Client` starting from the shared token file and writing renewed tokens back
  (its `update_token` hook); it has no notion of a shared session. The static header has no
  session to share and is left out.

A renewal is one generation of the session's token: the most distinct tokens any one process
used, less the one it started with. Target: one token request per renewal, no `invalid_grant`,
no failed request.

Beside the fleets, the time one renewal spends in its storage is measured directly: a
`TokenManager`'s forced renewal with a token request answered in memory at once (lock, load,
the renewing mark on lease storages, the conditional save, release), for MemoryStorage, FileStorage,
RedisStorage (one node; Sentinel and Cluster, waiting for one replica on every save) and
PostgresStorage, on asyncio and trio. Target: each shared storage adds under
5 ms to a renewal on loopback.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import anyio
from pydantic import SecretStr

import planet_async
from tests._postgres import PostgresServer
from tests._redis import RedisServer
from tests._redis_topologies import ClusterGroup, SentinelGroup

from ._common import Context, median, ms, percentile, table, write_results
from ._contenders import Setup, incumbent_profile
from ._fleet import fingerprint
from ._login import USER_CLIENT_ID, USER_SCOPES, client_credentials, device_login, planet_token_file

PROCESSES = 16
INTERVAL_MS = 20
TTL = 5
TOKEN_DELAY_MS = 300
# name in the table: (the `_fleet.py` contender, whether its session is kept in Redis)
CONTENDERS = {
    "planet_async, RedisStorage": ("planet_async", True),
    "planet_async, FileStorage": ("planet_async", False),
    "incumbent": ("incumbent", False),
    "authlib": ("authlib", False),
}
SCENARIOS = {"m2m": "client_credentials", "user": "refresh_token"}
ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT = 60.0


class Fleet:
    """Sixteen processes of one contender sharing one session of one kind, in a fresh HOME (and
    in Redis, if `redis_url` is given)."""

    def __init__(
        self,
        ctx: Context,
        scenario: str,
        name: str,
        seconds: float,
        redis_url: str | None = None,
    ) -> None:
        self.ctx = ctx
        self.scenario = scenario
        self.name = name
        self.contender, in_redis = CONTENDERS[name]
        self.redis_url = redis_url if in_redis else None
        self.seconds = seconds
        self.home = Path(tempfile.mkdtemp(prefix=f"fleet-{scenario}-", dir=ctx.home))
        self.profile = f"fleet-{scenario}"
        self.first_token = ""
        command = [
            sys.executable,
            "-m",
            "benchmarks._fleet",
            self.contender,
            scenario,
            ctx.peer.issuer,
            str(self.home),
            self.profile,
            str(seconds),
            str(INTERVAL_MS),
            "--ttl",
            str(TTL),
            *(["--redis", self.redis_url] if self.redis_url else []),
        ]
        env = {**os.environ, "HOME": str(self.home), "USERPROFILE": str(self.home)}
        self._logs = [(self.home / f"process-{i}.log").open("w") for i in range(PROCESSES)]
        self._processes = [
            subprocess.Popen(
                command,
                cwd=ROOT,
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )
            for log in self._logs
        ]

    def wait_ready(self) -> None:
        # Each process's watchdog bounds these reads.
        for process in self._processes:
            assert process.stdout is not None
            if process.stdout.readline().strip() != "ready":
                raise self._failure("did not start")

    def create_session(self) -> None:
        """Log in (or get an M2M token) and store the session where the contender keeps it.

        Done once the processes are ready, so that they start with a fresh token.
        """
        issuer = self.ctx.peer.issuer
        if self.scenario == "user":
            response, received = device_login(issuer)
        else:
            response, received = client_credentials(issuer)
        self.first_token = fingerprint(response["access_token"])
        if self.contender == "planet_async":
            storage: planet_async.Storage
            if self.redis_url:
                storage = planet_async.RedisStorage(self.redis_url)
            else:
                storage = planet_async.FileStorage(self.home / ".planet")
            token = planet_async.TokenSet.from_response(response, received_at=received)
            anyio.run(storage.save, self.profile, token)
            return
        client: dict[str, object] | None = None
        if self.scenario == "user":
            client = {
                "client_type": "oidc_device_code",
                "auth_server": issuer,
                "token_endpoint": f"{issuer}/token",
                "client_id": USER_CLIENT_ID,
                "audiences": ["https://api.planet.com/"],
                "scopes": list(USER_SCOPES),
            }
        setup = Setup(issuer, self.home, TTL)
        directory = incumbent_profile(setup, self.profile, client=client)
        (directory / "token.json").write_text(json.dumps(planet_token_file(response, received)))

    def go(self) -> None:
        for process in self._processes:
            assert process.stdin is not None
            process.stdin.write("go\n")
            process.stdin.flush()

    def reports(self) -> list[dict[str, Any]]:
        reports = []
        for process in self._processes:
            out, _ = process.communicate(timeout=self.seconds + START_TIMEOUT)
            lines = out.strip().splitlines()
            if process.returncode != 0 or not lines:
                raise self._failure("failed")
            reports.append(json.loads(lines[-1]))
        return reports

    def _failure(self, what: str) -> RuntimeError:
        for log in self._logs:
            log.flush()
        tails = [Path(log.name).read_text()[-2000:] for log in self._logs]
        tail = next((t for t in tails if t.strip()), "(no output)")
        return RuntimeError(f"a {self.name} {self.scenario} fleet process {what}:\n{tail}")

    def close(self) -> None:
        for process in self._processes:
            if process.poll() is None:
                process.kill()
                process.wait()
        for log in self._logs:
            log.close()


def _summary(fleet: Fleet, reports: list[dict[str, Any]]) -> dict[str, Any]:
    grant_type = SCENARIOS[fleet.scenario]
    errors = {k: v for k, v in fleet.ctx.peer.errors().items() if k.startswith(f"{grant_type}:")}
    token_requests = fleet.ctx.token_requests(grant_type)
    # Generations of the session's token that one process went through (not counting the one
    # the session started with): one renewal each.
    renewals = max(len(set(report["tokens"]) - {fleet.first_token}) for report in reports)
    seconds = max(r["ended"] for r in reports) - min(r["began"] for r in reports)
    return {
        "scenario": fleet.scenario,
        "contender": fleet.name,
        "seconds": seconds,
        "token_lifetimes": seconds / TTL,
        "token_requests": token_requests,
        "renewals": renewals,
        "token_requests_per_renewal": token_requests / renewals if renewals > 0 else None,
        "invalid_grant": errors.get(f"{grant_type}:invalid_grant", 0),
        "token_errors": errors,
        "requests": sum(report["requests"] for report in reports),
        "failures": sum(report["failures"] for report in reports),
        "errors": _merge(report["errors"] for report in reports),
        "processes": reports,
    }


def _one_fleet(
    ctx: Context, scenario: str, name: str, seconds: float, redis_url: str
) -> dict[str, Any]:
    """One fleet of sixteen processes, alone on the machine and at the peer."""
    fleet = Fleet(ctx, scenario, name, seconds, redis_url)
    try:
        fleet.wait_ready()
        fleet.create_session()
        ctx.peer.reset()
        fleet.go()
        reports = fleet.reports()
    finally:
        fleet.close()
    return _summary(fleet, reports)


def _merge(counts: Iterable[dict[str, int]]) -> dict[str, int]:
    merged: Counter[str] = Counter()
    for count in counts:
        merged.update(count)
    return dict(merged)


# -- what a renewal spends in its storage ------------------------------------------------------

STORAGES = (
    "MemoryStorage",
    "FileStorage",
    "RedisStorage",
    "RedisStorage, entered",
    "RedisStorage, Sentinel (WAIT 1), entered",
    "RedisStorage, Cluster (WAIT 1), entered",
    "PostgresStorage",
)
BACKENDS = ("asyncio", "trio")


def _storage(kind: str, urls: dict[str, str], home: Path) -> planet_async.Storage:
    if kind.startswith("RedisStorage, Sentinel"):
        return planet_async.RedisStorage(urls["sentinel"])
    if kind.startswith("RedisStorage, Cluster"):
        return planet_async.RedisStorage(urls["cluster"])
    if kind.startswith("RedisStorage"):
        return planet_async.RedisStorage(urls["redis"])
    if kind == "PostgresStorage":
        return planet_async.PostgresStorage(urls["postgres"])
    if kind == "FileStorage":
        return planet_async.FileStorage(Path(tempfile.mkdtemp(prefix="renewal-", dir=home)))
    return planet_async.MemoryStorage()


class _InstantGrant:
    """A refresh grant answered in memory at once: `TokenManager.renew()` then times everything
    a renewal does but its token request."""

    renews_without_lock = False
    description = "an instant refresh (benchmark)"

    def __init__(self) -> None:
        self.issued = 0

    async def renew(
        self, current: planet_async.TokenSet | None, *, clock: Any
    ) -> planet_async.TokenSet:
        self.issued += 1
        now = clock()
        return planet_async.TokenSet(
            access_token=SecretStr(f"bench-access-token-{self.issued}"),
            issued_at=now,
            expires_at=now + 3600,
            refresh_token=SecretStr(f"bench-refresh-token-{self.issued}"),
        )


async def _renewals(
    storage: planet_async.Storage, iterations: int, *, entered: bool = False
) -> list[float]:
    """Seconds each of `iterations` forced renewals of a `TokenManager` over `storage` took, with
    a token request that costs nothing: the storage's part of a renewal, as the manager uses it
    (take the lock, load and compare generations, mark a lease storage's session as being
    renewed, save the new token if no newer one is stored, release the lock)."""
    if entered:  # `async with storage:` keeps one connection for the event loop (Redis)
        async with storage:  # type: ignore[attr-defined]
            return await _renewals(storage, iterations)
    manager = planet_async.TokenManager(
        _InstantGrant(), storage=storage, session="renewal", off_loop=False
    )
    await manager.renew()  # a first renewal, not measured: directories, imports, connections
    samples = []
    for _ in range(iterations):
        started = time.perf_counter()
        await manager.renew()
        samples.append(time.perf_counter() - started)
    return samples


def _renewal_latency(ctx: Context, urls: dict[str, str]) -> list[dict[str, Any]]:
    """Each storage on each backend, in rounds that take turns, so drift hits all alike."""
    rounds, per_round = ctx.scaled(10, 2), ctx.scaled(50, 25)
    samples: dict[tuple[str, str], list[float]] = {
        (kind, backend): [] for kind in STORAGES for backend in BACKENDS
    }
    for _ in range(rounds):
        for (kind, backend), collected in samples.items():
            storage = _storage(kind, urls, ctx.home)
            entered = kind.endswith("entered")
            collected += anyio.run(
                functools.partial(_renewals, storage, per_round, entered=entered), backend=backend
            )
    memory = {backend: median(samples["MemoryStorage", backend]) for backend in BACKENDS}
    return [
        {
            "storage": kind,
            "backend": backend,
            "iterations": len(values),
            "median": median(values),
            "p99": percentile(values, 99),
            "max": max(values),
            "added": median(values) - memory[backend],
            "samples": values,
        }
        for (kind, backend), values in samples.items()
    ]


def _latency_table(rows: list[dict[str, Any]]) -> str:
    def added(row: dict[str, Any]) -> str:
        return "-" if row["storage"] == "MemoryStorage" else f"+{ms(row['added'], 2)}"

    cells: list[list[object]] = [
        [
            row["storage"],
            row["backend"],
            ms(row["median"], 2),
            ms(row["p99"], 2),
            ms(row["max"], 2),
            added(row),
            f"{row['iterations']:,}",
        ]
        for row in rows
    ]
    return table(
        "Renewal latency: what one renewal spends in its storage (a TokenManager's renewal "
        "with an instant token request)",
        [
            "storage",
            "backend",
            "median, ms",
            "p99, ms",
            "max, ms",
            "added over MemoryStorage, ms",
            "renewals",
        ],
        cells,
        note=(
            "Each renewal is a TokenManager's `renew()` whose token request is answered in "
            "memory at once: it takes the session's lock, loads the session and compares "
            "generations, marks a lease storage's session as being renewed (a conditional "
            "save), saves the new token if no newer one is stored, and releases the lock; "
            "Redis is a "
            "redis-server on loopback (Sentinel: 1 primary, 2 replicas, 3 sentinels; Cluster: 3 "
            "primaries with a replica each; both WAIT for 1 replica on every save), "
            "PostgreSQL a postgresql-15 server on loopback with its "
            "default durability (fsync on, synchronous_commit on: each save waits for its WAL "
            "flush). Added: the median over MemoryStorage's on the same backend. Target: each "
            "shared storage adds under 5 ms."
        ),
    )


def run(ctx: Context) -> None:
    seconds = ctx.scaled(16, 6)
    fleets = []
    redis = RedisServer().start()
    postgres = PostgresServer()
    sentinel = SentinelGroup()
    cluster = ClusterGroup()
    try:
        postgres.start()
        sentinel.start()
        cluster.start()
        urls = {
            "redis": redis.url,
            "postgres": postgres.url,
            "sentinel": sentinel.url,
            "cluster": cluster.url,
        }
        latency = _renewal_latency(ctx, urls)  # first, while nothing else runs
        ctx.show(_latency_table(latency))
        ctx.configure_peer(ttl=TTL, token_delay_ms=TOKEN_DELAY_MS)
        for scenario in SCENARIOS:
            for name in CONTENDERS:
                fleets.append(_one_fleet(ctx, scenario, name, seconds, redis.url))
    finally:
        ctx.configure_peer(ttl=3600, token_delay_ms=0)
        redis.stop()
        postgres.destroy()
        sentinel.stop()
        cluster.stop()
    rows = []
    for fleet in fleets:
        per_renewal = fleet["token_requests_per_renewal"]
        rows.append(
            [
                "M2M" if fleet["scenario"] == "m2m" else "user (rotating refresh tokens)",
                fleet["contender"],
                fleet["token_requests"],
                fleet["renewals"],
                "n/a" if per_renewal is None else f"{per_renewal:.2f}",
                fleet["invalid_grant"],
                f"{fleet['failures']:,} of {fleet['requests']:,}",
            ]
        )
    ctx.show(
        table(
            f"Processes: {PROCESSES} processes sharing one session for {seconds} s, tokens live "
            f"{TTL} s, token endpoint +{TOKEN_DELAY_MS} ms, one fleet at a time",
            [
                "session",
                "contender",
                "token requests",
                "renewals",
                "token requests per renewal",
                "invalid_grant",
                "failed requests",
            ],
            rows,
            note=(
                "Token requests (answered or refused) and invalid_grant as counted by the "
                "peer. Renewals: the most "
                "distinct tokens one process used, less its first. Failed requests: raised, or "
                "not 200 from an API that verifies each token. Target: 1 token request per "
                "renewal, 0 invalid_grant, 0 failed."
            ),
        )
    )
    write_results(
        ctx,
        "processes",
        {
            "parameters": {
                "processes": PROCESSES,
                "interval_ms": INTERVAL_MS,
                "ttl": TTL,
                "token_delay_ms": TOKEN_DELAY_MS,
                "seconds": seconds,
            },
            "fleets": fleets,
            "renewal_latency": latency,
        },
    )
