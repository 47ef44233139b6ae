"""Sentinel failover under rotation: the primary SIGKILLed at points around a renewal.

One primary, two replicas, three sentinels; eight worker processes (half asyncio, half trio)
share one user session with 8 s access tokens and rotating refresh tokens; the peer answers a
refresh after 600 ms. The primary is killed around the first renewal: before its save reaches
the primary, after the save while both replicas are stopped (SIGSTOP) so that ``WAIT`` cannot be
answered, or after both replicas have it (tests/_failover_run.py, shared with
tests/test_redis_failover_fleet.py). Full run: the 20 kill points; ``--quick``: one of each kind.

"Seconds without a valid token" is the worst worker's time from a failed request to its next
successful one, in all and after the sentinels named the new primary.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from tests._failover_run import KILL_POINTS, QUICK_KILL_POINTS, TTL, FailoverResult, run_failover

from ._common import Context, table, write_results
from ._login import device_login_saved


def run(ctx: Context) -> None:
    points = QUICK_KILL_POINTS if ctx.quick else KILL_POINTS
    results: list[FailoverResult] = []
    try:
        with tempfile.TemporaryDirectory(prefix="planet-failover-") as logs:
            for point in points:
                result = run_failover(
                    ctx.peer, point, Path(logs) / point.id, login=device_login_saved
                )
                print(f"{point.id}: {result.row()}", flush=True)
                results.append(result)
    finally:
        ctx.configure_peer(ttl=3600, token_delay_ms=0)
    rows = [result.row() for result in results]
    ctx.show(
        table(
            f"Sentinel failover under rotation: 8 processes, {TTL} s tokens, the primary "
            "SIGKILLed around the first renewal",
            [
                "kill point",
                "kind (landed)",
                "renewal points",
                "token requests",
                "invalid_grant",
                "failed requests",
                "s without a valid token (after failover)",
                "failover, s",
            ],
            [
                [
                    r["kill_point"],
                    r["kind"] if r["landed"] == r["kind"] else f"{r['kind']} ({r['landed']})",
                    r["renewal_points"],
                    r["token_requests"],
                    r["invalid_grant"],
                    r["failed_requests"],
                    f"{r['without_token']:.2f} ({r['without_token_after_failover']:.2f})",
                    f"{r['failover_seconds']:.2f}",
                ]
                for r in rows
            ],
            note=(
                "Kill point: the kind and the seconds after its starting event (the renewing mark "
                "on the primary; the save on the primary, replicas stopped; the save on both "
                "replicas). Token requests: refreshes the peer received, answered or refused; "
                "renewal points: distinct tokens the workers used, less the login's. Failover: "
                "from the SIGKILL until every sentinel names the new primary."
            ),
        )
    )
    write_results(ctx, "failover", {"parameters": {"ttl": TTL, "workers": 8}, "rows": rows})
