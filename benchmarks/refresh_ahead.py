"""Refresh-ahead: request latency under steady load while tokens expire and are renewed.

A download-job-like load: 16 workers, each sending one request after another to an API that takes
10 ms to answer, for about three token lifetimes (tokens live 5 s), with the token endpoint slowed
to 500 ms. Its twin runs the same load at the same time in a second process with a token that
outlives the run, so that whatever else the machine is doing hits both alike; the table compares
the two runs' latency percentiles. The static header's two processes both send a fixed header:
their ratio is the noise floor of the comparison.

planet_async runs twice: entered (``async with manager``, renewing in a background task) and not
entered (the first caller past the soft threshold renews in line while the others keep the
current token). A chart of every request's latency over time, with the moments a new token came
into use, goes to results/refresh_ahead.png.

``python -m benchmarks.refresh_ahead CONTENDER ISSUER HOME SECONDS TTL`` runs one process of a
pair: it gets its first token, prints ``ready``, waits for ``go``, runs the load, prints JSON.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx

from ._common import (
    API_URL,
    Context,
    bearer,
    ms,
    ok,
    percentile,
    ratio,
    start_watchdog,
    table,
    unauthorized,
    write_results,
)
from ._contenders import NAMES, NO_TASK_GROUP, OPENERS, Setup

WORKERS = 16
API_LATENCY = 0.010
TTL = 5
LONG_TTL = 3600
TOKEN_DELAY_MS = 500
CONTENDERS = ("static header", "planet_async", NO_TASK_GROUP, *NAMES[2:])
CHARTED = ("planet_async", NO_TASK_GROUP, "incumbent", "authlib")
ROOT = Path(__file__).resolve().parent.parent
_GRACE = 60.0


@dataclass
class Load:
    """One process's run: when each request started, how long it took, what else happened."""

    contender: str
    starts: list[float] = field(default_factory=list)  # seconds since the load began
    latencies: list[float] = field(default_factory=list)
    failures: int = 0
    new_tokens: list[float] = field(default_factory=list)  # when a new token was first used
    token_requests: int = 0

    def summary(self) -> dict[str, Any]:
        return {
            "requests": len(self.latencies),
            "p50": percentile(self.latencies, 50),
            "p99": percentile(self.latencies, 99),
            "p99_9": percentile(self.latencies, 99.9),
            "max": max(self.latencies),
            "failures": self.failures,
            "token_requests": self.token_requests,
            "new_tokens_at": self.new_tokens,
        }


# -- one process of a pair ----------------------------------------------------------------------


async def _load(name: str, setup: Setup, seconds: float) -> Load:
    result = Load(name)
    seen: set[str] = set()
    began = time.perf_counter()

    async def api(request: httpx.Request) -> httpx.Response:
        token = bearer(request)
        if token is None:
            return unauthorized()
        if token not in seen:
            seen.add(token)
            result.new_tokens.append(time.perf_counter() - began)
        await anyio.sleep(API_LATENCY)
        return ok()

    async def worker(client: httpx.AsyncClient, deadline: float) -> None:
        while (start := time.perf_counter()) < deadline:
            try:
                response = await client.get(API_URL)
            except Exception:
                result.failures += 1
                continue
            result.starts.append(start - began)
            result.latencies.append(time.perf_counter() - start)
            result.failures += response.status_code != 200

    async with OPENERS[name](setup, httpx.MockTransport(api)) as client:
        await client.get(API_URL)  # the first token, before the clock starts
        print("ready", flush=True)
        if (await anyio.to_thread.run_sync(sys.stdin.readline)).strip() != "go":
            raise SystemExit(2)
        seen.clear()
        result.new_tokens.clear()
        began = time.perf_counter()
        async with anyio.create_task_group() as workers:
            for _ in range(WORKERS):
                workers.start_soon(worker, client, began + seconds)
    result.new_tokens = result.new_tokens[1:]  # the token in use when the load began
    return result


def _worker(argv: list[str]) -> int:
    name, issuer, home, seconds, ttl = argv
    start_watchdog(float(seconds) + _GRACE, "refresh-ahead process")
    load = anyio.run(_load, name, Setup(issuer, Path(home), float(ttl)), float(seconds))
    print(
        json.dumps(
            {
                "starts": [round(s, 6) for s in load.starts],
                "latencies": [round(s, 6) for s in load.latencies],
                "failures": load.failures,
                "new_tokens": load.new_tokens,
            }
        ),
        flush=True,
    )
    return 0


# -- the pairs -----------------------------------------------------------------------------------


class _Process:
    def __init__(self, ctx: Context, name: str, seconds: float, ttl: int) -> None:
        self.name = name
        home = tempfile.mkdtemp(prefix="refresh-ahead-", dir=ctx.home)
        env = {**os.environ, "HOME": home, "USERPROFILE": home}
        command = [sys.executable, "-m", "benchmarks.refresh_ahead", name, ctx.peer.issuer, home]
        self._process = subprocess.Popen(
            [*command, str(seconds), str(ttl)],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self._timeout = seconds + _GRACE

    def wait_ready(self) -> None:
        assert self._process.stdout is not None
        if self._process.stdout.readline().strip() != "ready":  # the watchdog bounds this
            raise RuntimeError(f"a refresh-ahead process for {self.name} did not start")

    def go(self) -> None:
        assert self._process.stdin is not None
        self._process.stdin.write("go\n")
        self._process.stdin.flush()

    def result(self) -> Load:
        out, _ = self._process.communicate(timeout=self._timeout)
        if self._process.returncode != 0:
            raise RuntimeError(f"a refresh-ahead process for {self.name} failed")
        data = json.loads(out.strip().splitlines()[-1])
        return Load(
            self.name,
            starts=data["starts"],
            latencies=data["latencies"],
            failures=data["failures"],
            new_tokens=data["new_tokens"],
        )

    def kill(self) -> None:
        if self._process.poll() is None:
            self._process.kill()
            self._process.wait()


def _pair(ctx: Context, name: str, seconds: float) -> tuple[Load, Load]:
    """`name` with tokens renewing, beside its twin whose token outlives the run."""
    # The peer has one token lifetime at a time: each process gets its first token under its own.
    renewing_ttl = LONG_TTL if name == "static header" else TTL
    processes: list[_Process] = []
    try:
        for ttl in (LONG_TTL, renewing_ttl):
            ctx.configure_peer(ttl=ttl, token_delay_ms=TOKEN_DELAY_MS)
            processes.append(_Process(ctx, name, seconds, ttl))
            processes[-1].wait_ready()
        ctx.peer.reset()
        for process in processes:
            process.go()
        twin, renewing = (process.result() for process in processes)
    finally:
        for process in processes:
            process.kill()
    renewing.token_requests = ctx.token_requests()
    return renewing, twin


def _chart(pairs: dict[str, tuple[Load, Load]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(len(CHARTED), 1, figsize=(10, 3 * len(CHARTED)), sharex=True)
    for axis, name in zip(axes, CHARTED, strict=True):
        load, twin = pairs[name]
        axis.scatter(
            twin.starts,
            [lat * 1000 for lat in twin.latencies],
            s=2,
            alpha=0.25,
            color="tab:gray",
            label="twin: token never expires",
        )
        axis.scatter(
            load.starts,
            [lat * 1000 for lat in load.latencies],
            s=2,
            alpha=0.4,
            color="tab:blue",
            label="tokens renewing",
        )
        for index, moment in enumerate(load.new_tokens):
            axis.axvline(
                moment,
                color="tab:red",
                linestyle="--",
                linewidth=1,
                label="new token first used" if index == 0 else None,
            )
        axis.set_yscale("log")
        axis.set_ylabel("latency, ms")
        axis.set_title(
            f"{name}: p99 {ms(percentile(load.latencies, 99))} ms (twin "
            f"{ms(percentile(twin.latencies, 99))} ms), max {ms(max(load.latencies), 0)} ms, "
            f"{load.token_requests} token requests"
        )
        axis.legend(loc="upper left", fontsize="small", markerscale=4)
    axes[-1].set_xlabel("seconds since the load began")
    figure.suptitle(
        f"{WORKERS} workers, API {API_LATENCY * 1000:.0f} ms, tokens live {TTL} s, "
        f"token endpoint +{TOKEN_DELAY_MS} ms"
    )
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def run(ctx: Context) -> None:
    seconds = ctx.scaled(3 * TTL, 6)
    try:
        pairs = {name: _pair(ctx, name, seconds) for name in CONTENDERS}
    finally:
        ctx.configure_peer(ttl=LONG_TTL, token_delay_ms=0)
    rows = []
    for name, (load, twin) in pairs.items():
        p99, twin_p99 = percentile(load.latencies, 99), percentile(twin.latencies, 99)
        rows.append(
            [
                name,
                len(load.new_tokens) if name != "static header" else "n/a",
                f"{len(load.latencies):,}",
                ms(percentile(load.latencies, 50)),
                ms(p99),
                ms(percentile(load.latencies, 99.9)),
                ms(max(load.latencies)),
                ms(twin_p99),
                ms(max(twin.latencies)),
                ratio(p99 / twin_p99),
                load.token_requests,
                load.failures + twin.failures,
            ]
        )
    ctx.show(
        table(
            f"Refresh-ahead: {WORKERS} workers for {seconds} s, API {API_LATENCY * 1000:.0f} ms, "
            f"tokens live {TTL} s, token endpoint +{TOKEN_DELAY_MS} ms",
            [
                "contender",
                "renewals",
                "requests",
                "p50, ms",
                "p99, ms",
                "p99.9, ms",
                "max, ms",
                "twin p99, ms",
                "twin max, ms",
                "p99 vs twin",
                "token requests",
                "failures",
            ],
            rows,
            note=(
                "Latency of each request, from send to response, while tokens renew; the twin "
                "runs the same load at the same time in another process with a token that never "
                "expires. static header: both processes send a fixed header (the noise floor). "
                "Target: planet_async's p99 within 10% of its twin's. Chart: refresh_ahead.png."
            ),
        )
    )
    _chart(pairs, ctx.results / "refresh_ahead.png")
    write_results(
        ctx,
        "refresh_ahead",
        {
            "parameters": {
                "workers": WORKERS,
                "api_latency_ms": API_LATENCY * 1000,
                "ttl": TTL,
                "token_delay_ms": TOKEN_DELAY_MS,
                "seconds": seconds,
            },
            "contenders": {
                name: {"renewing": load.summary(), "twin": twin.summary()}
                for name, (load, twin) in pairs.items()
            },
            "chart": "refresh_ahead.png",
        },
    )


if __name__ == "__main__":
    sys.exit(_worker(sys.argv[1:]))
