"""A store's bad day: how long callers go without a valid token, and what it costs the server.

One process holds an M2M session and a user session (rotating refresh tokens) in a real
redis-server, with 6 s access tokens, and asks both for a header every 20 ms (each manager in
``async with``, so renewals ahead run in the background). Each scenario is run on wall-clock time:

- down at start: Redis is stopped before the managers exist; 4 s.
- down mid-run: Redis stops while both tokens are valid, for two token lifetimes (12 s), split
  into the part while the tokens are still handed out (to their hard threshold, 0.6 s before
  expiry) and the rest.
- back up: Redis starts again after the 12 s; until both sessions have a valid token.
- paused past a lease: Redis is SIGSTOPped just before the tokens' renewal ahead is due, for 3 s
  (lease 2 s, Redis timeout 1 s), over their hard threshold; until 3 s after it resumes.

"Seconds without a valid token" adds up the time from each failed call to the next call that
succeeded, and the wait of every call that took longer than 10 ms. Token requests are counted at
the peer.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import anyio

import planet_async as pa
from tests._redis import RedisServer

from ._common import Context, table, write_results
from ._login import device_login_saved

TTL = 6
CALL_EVERY = 0.02
LEASE = 2.0
TIMEOUT = 1.0


@dataclass
class Caller:
    """Asks one manager for a header every `CALL_EVERY` seconds and adds up the time without
    one: from a failed call to the next call that succeeds, and every call that had to wait."""

    manager: pa.TokenManager
    without: float = 0.0
    failed_since: float | None = None
    errors: list[str] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return self.failed_since is None

    def take(self) -> float:
        """The time without a token so far, counted from zero again."""
        now = time.monotonic()
        without = self.without
        if self.failed_since is not None:
            without += now - self.failed_since
            self.failed_since = now
        self.without = 0.0
        return without

    async def run(self) -> None:
        while True:
            started = time.monotonic()
            try:
                await self.manager.header()
            except pa.PlanetAuthError as exc:
                self.errors.append(type(exc).__name__)
                if self.failed_since is None:
                    self.failed_since = started
            else:
                now = time.monotonic()
                if self.failed_since is not None:
                    self.without += now - self.failed_since
                    self.failed_since = None
                elif now - started > 0.01:
                    self.without += now - started
            await anyio.sleep(CALL_EVERY)


def _requests(ctx: Context) -> dict[str, int]:
    return {
        "m2m": ctx.token_requests("client_credentials"),
        "user": ctx.token_requests("refresh_token"),
    }


async def _scenarios(ctx: Context) -> list[dict[str, Any]]:
    server = RedisServer("--appendonly", "yes", "--appendfsync", "always").start()
    rows: list[dict[str, Any]] = []
    try:
        url = server.url
        issuer = ctx.peer.issuer
        m2m_grant = pa.ClientCredentialsGrant(
            pa.AuthorizationServer(issuer),
            pa.ClientSecretBasic(client_id="service-basic", client_secret="service-basic-secret"),
        )
        user_grant = pa.RefreshTokenGrant(
            pa.AuthorizationServer(issuer), pa.PublicClient(client_id="native-app")
        )
        await device_login_saved(issuer, pa.RedisStorage(url), "user")

        def managers() -> tuple[pa.TokenManager, pa.TokenManager]:
            def storage() -> pa.RedisStorage:
                return pa.RedisStorage(url, lease=LEASE, timeout=TIMEOUT)

            return (
                pa.TokenManager(m2m_grant, storage=storage(), session="m2m"),
                pa.TokenManager(user_grant, storage=storage(), session="user"),
            )

        def record(name: str, callers: tuple[Caller, Caller], seconds: float) -> None:
            requests = _requests(ctx)
            rows.append(
                {
                    "scenario": name,
                    "seconds": round(seconds, 2),
                    "m2m_without": round(callers[0].take(), 2),
                    "m2m_requests": requests["m2m"],
                    "user_without": round(callers[1].take(), 2),
                    "user_requests": requests["user"],
                    "invalid_grant": sum(
                        n for k, n in ctx.peer.errors().items() if k.endswith(":invalid_grant")
                    ),
                    "user_errors": sorted(set(callers[1].errors)),
                }
            )
            for caller in callers:
                caller.errors = []
            ctx.peer.reset()

        async def until_valid(callers: tuple[Caller, Caller], limit: float) -> float:
            began = time.monotonic()
            await anyio.sleep(CALL_EVERY * 2)  # every caller has asked once
            while not all(c.valid for c in callers) and time.monotonic() - began < limit:  # noqa: ASYNC110 - polls what the callers saw
                await anyio.sleep(CALL_EVERY)
            return time.monotonic() - began

        # -- down at start, then back up ---------------------------------------------------
        server.stop()
        ctx.peer.reset()
        m2m, user = managers()
        callers = (Caller(m2m), Caller(user))
        async with m2m, user, anyio.create_task_group() as tg:
            for caller in callers:
                tg.start_soon(caller.run)
            await anyio.sleep(4)
            record("down at start (4 s)", callers, 4)
            server.start()
            record("back up after a start without it", callers, await until_valid(callers, 20))
            tg.cancel_scope.cancel()

        # -- down mid-run: valid, then expired; back up -------------------------------------
        m2m, user = managers()
        callers = (Caller(m2m), Caller(user))
        async with m2m, user, anyio.create_task_group() as tg:
            for caller in callers:
                tg.start_soon(caller.run)
            await until_valid(callers, 20)
            ctx.peer.reset()
            for caller in callers:
                caller.take()
            server.stop()
            stopped = time.monotonic()
            # Until the first hard threshold: the expiry less a tenth of the lifetime (0.6 s).
            left = min(m.expires_in() or 0.0 for m in (m2m, user)) - TTL / 10
            await anyio.sleep(max(left, 0.0))
            record(f"down mid-run, token valid ({left:.1f} s)", callers, left)
            await anyio.sleep(2 * TTL - (time.monotonic() - stopped))
            record(f"down mid-run, token expired ({2 * TTL - left:.1f} s)", callers, 2 * TTL - left)
            server.start()
            record("back up after a mid-run outage", callers, await until_valid(callers, 20))
            tg.cancel_scope.cancel()

        # -- paused past a lease -----------------------------------------------------------
        m2m, user = managers()
        callers = (Caller(m2m), Caller(user))
        async with m2m, user, anyio.create_task_group() as tg:
            for caller in callers:
                tg.start_soon(caller.run)
            await until_valid(callers, 20)
            await user.renew()
            await m2m.renew()
            # Renewal ahead starts at 65-75% of the lifetime (3.9-4.5 s), callers wait from the
            # hard threshold (5.4 s): the pause covers both.
            await anyio.sleep(TTL * 0.65 - 0.2)
            ctx.peer.reset()
            for caller in callers:
                caller.take()
            began = time.monotonic()
            server.pause()
            await anyio.sleep(LEASE + 1)
            server.resume()
            await anyio.sleep(3)
            record(
                f"paused {LEASE + 1:g} s past a {LEASE:g} s lease",
                callers,
                time.monotonic() - began,
            )
            tg.cancel_scope.cancel()
    finally:
        server.stop()
    return rows


def run(ctx: Context) -> None:
    ctx.configure_peer(ttl=TTL, token_delay_ms=0)
    try:
        rows = anyio.run(_scenarios, ctx)
    finally:
        ctx.configure_peer(ttl=3600, token_delay_ms=0)
    ctx.show(
        table(
            f"Store outages: Redis down or paused, one process, {TTL} s tokens, a call every "
            f"{CALL_EVERY * 1000:g} ms per session",
            [
                "scenario",
                "window, s",
                "M2M: s without a token",
                "M2M: token requests",
                "user: s without a token",
                "user: refresh requests",
                "invalid_grant",
            ],
            [
                [
                    r["scenario"],
                    f"{r['seconds']:.2f}",
                    f"{r['m2m_without']:.2f}",
                    r["m2m_requests"],
                    f"{r['user_without']:.2f}",
                    r["user_requests"],
                    r["invalid_grant"],
                ]
                for r in rows
            ],
            note=(
                f"Redis timeout {TIMEOUT:g} s, lease {LEASE:g} s. Token requests as the peer "
                "counted them, answered or refused. A user session spends no refresh token "
                "while Redis cannot coordinate it; it raises StorageError instead."
            ),
        )
    )
    write_results(ctx, "store_outage", {"parameters": {"ttl": TTL, "lease": LEASE}, "rows": rows})
