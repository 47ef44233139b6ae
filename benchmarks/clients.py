"""The download job on each client: httpx, httpx2 and aiohttp, with planet_async's adapter and
with a static header, at 16, 64 and 256 concurrent downloads.

The job is the download demo's: tokens from the test peer (client credentials, living TTL
seconds), an API in its own process that verifies every request's token and serves each file
after LATENCY_MS, a fixed pool of workers on one asyncio loop, every file's bytes checked. Each
run lasts DURATION seconds (workers stop taking files then; requests in flight finish), long
enough for the adapter's token to be renewed ahead more than once. The static header carries a
token of the same peer that outlives the run, so the API verifies it as it verifies ours.

Runs take turns: for each number of downloads and each repetition, every client runs with the
adapter and with the static header, back to back (which goes first alternating), so that what
the rest of the machine does falls on both alike. The client, the API and the peer share this
machine's cores.

Before that, one run measures the demo's own API (`examples/_demo_api.py`, a threading server
that verifies the RS256 signature of every request) with aiohttp and a static header at the
highest concurrency: the ceiling that made this benchmark use `_fast_api.py` instead.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import anyio

from planet_async import PlanetAuthError, TokenManager

from ._clients import (
    CLIENTS,
    ApiProcess,
    Client,
    adapter,
    long_lived_token,
    open_client,
    static_auth,
)
from ._common import RESULTS, Context, median, percentile, ratio, table, write_results
from ._contenders import CLIENT_ID, CLIENT_SECRET
from ._fast_api import FILES

CONCURRENCY = (16, 64, 256)
DOCS_CHART = RESULTS.parent.parent / "docs" / "assets" / "clients.png"
TTL = 3
LATENCY_MS = 25.0
REQUEST_TIMEOUT = 60.0  # httpx's pool at 256 downloads makes requests wait seconds
MODES = ("planet_async", "static header")


@dataclass
class Run:
    """One run of the job: one client, one mode, one number of concurrent downloads."""

    client: str
    mode: str
    concurrency: int
    files: int
    failed: int
    seconds: float
    files_per_s: float
    p50: float
    p99: float
    started: float  # perf_counter when the first worker started
    rejected: int  # by the API, during the run
    renewals: int | None = None  # token requests the peer counted during the run
    periods: float | None = None  # the run's length in refresh-ahead periods
    waited: int | None = None  # requests that found no valid token and waited for a renewal
    longest_wait: float | None = None  # seconds, the longest of those waits


async def _job(client: Client, url: str, concurrency: int, duration: float) -> dict[str, Any]:
    from examples._demo_api import file_content

    expected = [file_content(n) for n in range(FILES)]
    latencies: list[float] = []
    done = failed = 0
    counter = 0
    started = time.perf_counter()
    deadline = started + duration

    async def worker() -> None:
        nonlocal done, failed, counter
        while time.perf_counter() < deadline:
            n, counter = counter % FILES, counter + 1
            sent = time.perf_counter()
            try:
                status, body = await client.fetch(f"{url}/files/{n}")
            except (*client.errors, PlanetAuthError):
                failed += 1
                continue
            finally:
                latencies.append(time.perf_counter() - sent)
            if status == 200 and body == expected[n]:
                done += 1
            else:
                failed += 1

    async with anyio.create_task_group() as workers:
        for _ in range(concurrency):
            workers.start_soon(worker)
    seconds = time.perf_counter() - started
    return {
        "started": started,
        "files": done,
        "failed": failed,
        "seconds": seconds,
        "files_per_s": done / seconds,
        "p50": percentile(latencies, 50),
        "p99": percentile(latencies, 99),
    }


@dataclass(frozen=True)
class Setup:
    """Where the runs get tokens and files: the peer, the API, the static header's token."""

    ctx: Context
    api: ApiProcess
    static_token: str


async def _run(setup: Setup, name: str, mode: str, concurrency: int, duration: float) -> Run:
    ctx, api = setup.ctx, setup.api
    rejected_before = api.stats()["rejected"]
    if mode == "static header":
        auth = static_auth(name, f"Bearer {setup.static_token}")
        async with open_client(name, auth, concurrency, timeout=REQUEST_TIMEOUT) as client:
            job = await _job(client, api.url, concurrency, duration)
        return Run(
            name, mode, concurrency, rejected=api.stats()["rejected"] - rejected_before, **job
        )
    auth = adapter(name).from_client_credentials(
        CLIENT_ID, CLIENT_SECRET, issuer=ctx.peer.issuer, allowed_origins=[api.url]
    )
    manager = auth.manager
    assert isinstance(manager, TokenManager)
    async with manager:
        await manager.header()  # the first token, before the clock starts
        waits = _count_waits(manager)
        before = ctx.token_requests()
        first_token = time.perf_counter()
        async with open_client(name, auth, concurrency, timeout=REQUEST_TIMEOUT) as client:
            job = await _job(client, api.url, concurrency, duration)
        renewals = ctx.token_requests() - before
    # The manager renews ahead once a token is this far into its life (jittered per manager).
    # Counted up to the moment workers stop taking files: requests still in flight then were
    # sent with a header already, and start no renewal (unless the API rejects one).
    period = manager._soft_fraction * TTL
    periods = (duration + job["started"] - first_token) / period
    rejected = api.stats()["rejected"] - rejected_before
    return Run(
        name,
        mode,
        concurrency,
        rejected=rejected,
        renewals=renewals,
        periods=periods,
        waited=len(waits),
        longest_wait=max(waits, default=0.0),
        **job,
    )


def _count_waits(manager: TokenManager) -> list[float]:
    """Time every call of `manager.header()` from now on: the adapters call it only when
    `header_nowait()` has no valid token to give (past the hard threshold, the renewal still in
    flight), so each is a request waiting for a renewal."""
    waits: list[float] = []
    header = manager.header

    async def timed() -> str:
        began = time.perf_counter()
        try:
            return await header()
        finally:
            waits.append(time.perf_counter() - began)

    manager.header = timed  # type: ignore[method-assign]
    return waits


async def _measure(setup: Setup, reps: int, duration: float) -> list[Run]:
    runs: list[Run] = []
    for concurrency in CONCURRENCY:
        for rep in range(reps):
            for name in CLIENTS:
                for mode in MODES if rep % 2 == 0 else MODES[::-1]:
                    run = await _run(setup, name, mode, concurrency, duration)
                    runs.append(run)
                    print(
                        f"  {name:7} {mode:13} {concurrency:3} downloads: "
                        f"{run.files_per_s:6.0f} files/s, p99 {run.p99 * 1000:6.0f} ms, "
                        f"renewals {run.renewals}, waited {run.waited}, rejected {run.rejected}, "
                        f"failed {run.failed}",
                        flush=True,
                    )
    return runs


async def _ceiling(setup: Setup, duration: float) -> Run:
    return await _run(setup, "aiohttp", "static header", max(CONCURRENCY), duration)


def _cells(runs: list[Run]) -> dict[tuple[str, int], dict[str, list[Run]]]:
    cells: dict[tuple[str, int], dict[str, list[Run]]] = {}
    for run in runs:
        cells.setdefault((run.client, run.concurrency), {m: [] for m in MODES})[run.mode].append(
            run
        )
    return cells


def _chart(runs: list[Run], path: Any) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = _cells(runs)
    figure, (rate_axis, p99_axis) = plt.subplots(1, 2, figsize=(12, 4.5))
    colours = {"httpx": "tab:red", "httpx2": "tab:orange", "aiohttp": "tab:blue"}
    for name in CLIENTS:
        for mode, style in zip(MODES, ("-", ":"), strict=True):
            rates = [median([r.files_per_s for r in cells[name, c][mode]]) for c in CONCURRENCY]
            p99s = [median([r.p99 * 1000 for r in cells[name, c][mode]]) for c in CONCURRENCY]
            label = f"{name}, {mode}"
            rate_axis.plot(CONCURRENCY, rates, style, marker="o", color=colours[name], label=label)
            p99_axis.plot(CONCURRENCY, p99s, style, marker="o", color=colours[name], label=label)
    for axis in (rate_axis, p99_axis):
        axis.set_xscale("log", base=2)
        axis.set_xticks(CONCURRENCY, [str(c) for c in CONCURRENCY])
        axis.set_xlabel("concurrent downloads")
        axis.grid(alpha=0.3)
    rate_axis.set_ylabel("files/s (median of runs)")
    p99_axis.set_ylabel("p99 latency, ms (log)")
    p99_axis.set_yscale("log")
    rate_axis.legend(fontsize=8)
    figure.suptitle(
        f"Download job per client: files after {LATENCY_MS:g} ms, tokens living {TTL} s; "
        "solid: planet_async, dotted: static header"
    )
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def run(ctx: Context) -> None:
    reps = ctx.scaled(3, 1)
    duration = ctx.scaled(5, 3)
    ctx.configure_peer(ttl=3600, token_delay_ms=0)
    token = long_lived_token(ctx.peer.issuer)
    ctx.configure_peer(ttl=TTL, token_delay_ms=0)

    with ApiProcess("examples._demo_api", ctx.peer.issuer, LATENCY_MS) as demo_api:
        demo_ceiling = anyio.run(_ceiling, Setup(ctx, demo_api, token), duration)
    with ApiProcess("benchmarks._fast_api", ctx.peer.issuer, LATENCY_MS) as api:
        fast_ceiling = anyio.run(_ceiling, Setup(ctx, api, token), duration)
        runs = anyio.run(_measure, Setup(ctx, api, token), reps, duration)
        api_stats = api.stats()

    cells = _cells(runs)
    rows = []
    summary: dict[str, Any] = {}
    for concurrency in CONCURRENCY:
        for name in CLIENTS:
            ours, static = (
                cells[name, concurrency]["planet_async"],
                cells[name, concurrency]["static header"],
            )
            ours_rate = median([r.files_per_s for r in ours])
            static_rate = median([r.files_per_s for r in static])
            renewals = sum(r.renewals or 0 for r in ours)
            waited = sum(r.waited or 0 for r in ours)
            longest = max(r.longest_wait or 0.0 for r in ours)
            periods = sum(r.periods or 0.0 for r in ours)
            expected = sum(math.floor(r.periods or 0.0) for r in ours)
            cell = {
                "adapter_files_per_s": ours_rate,
                "static_files_per_s": static_rate,
                "ratio": ours_rate / static_rate,
                "adapter_p99_ms": median([r.p99 for r in ours]) * 1000,
                "static_p99_ms": median([r.p99 for r in static]) * 1000,
                "renewals": renewals,
                "refresh_periods": periods,
                "whole_periods": expected,
                "requests_waiting_for_renewal": waited,
                "longest_wait_ms": longest * 1000,
                "rejected_adapter": sum(r.rejected for r in ours),
                "rejected_static": sum(r.rejected for r in static),
                "failed_adapter": sum(r.failed for r in ours),
                "failed_static": sum(r.failed for r in static),
            }
            summary[f"{name}@{concurrency}"] = cell
            rows.append(
                [
                    concurrency,
                    name,
                    f"{ours_rate:,.0f}",
                    f"{static_rate:,.0f}",
                    ratio(cell["ratio"], 3),
                    f"{cell['adapter_p99_ms']:,.0f}",
                    f"{cell['static_p99_ms']:,.0f}",
                    f"{renewals} / {periods:.1f} ({expected})",
                    f"{waited:,} ({longest * 1000:,.0f} ms)",
                    f"{cell['rejected_adapter']} / {cell['rejected_static']}",
                    f"{cell['failed_adapter']} / {cell['failed_static']}",
                ]
            )
    ctx.show(
        table(
            f"Download job per client: {duration} s runs, {reps} per cell and mode, files after "
            f"{LATENCY_MS:g} ms, tokens living {TTL} s",
            [
                "downloads",
                "client",
                "planet_async files/s",
                "static files/s",
                "ratio",
                "p99 ms (ours)",
                "p99 ms (static)",
                "renewals / refresh periods (whole)",
                "waited for a renewal (longest)",
                "rejected (ours / static)",
                "failed (ours / static)",
            ],
            rows,
            note=(
                "files/s and p99: median over the runs. Ratio: planet_async's files/s over the "
                "static header's, same client, same run order (target >= 0.95). Renewals: token "
                "requests the peer counted during planet_async's runs (after the first token); "
                "refresh periods: from the first token to when workers stop taking files, "
                "over the manager's refresh-ahead period (its soft threshold, 65-75% of the "
                "lifetime), whole periods in brackets (one renewal per period: renewals equal "
                "whole periods). Waited: requests of planet_async's runs that found no valid "
                "token and waited for a renewal in flight, and the longest wait. "
                "Rejected: 401s counted by the API. "
                f"API ceiling, aiohttp with a static header at {max(CONCURRENCY)} downloads: "
                f"{demo_ceiling.files_per_s:,.0f} files/s from the demo's threading API "
                f"(examples/_demo_api.py), {fast_ceiling.files_per_s:,.0f} from this "
                "benchmark's aiohttp.web API (benchmarks/_fast_api.py)."
            ),
        )
    )
    chart = ctx.results / "clients.png"
    ctx.results.mkdir(parents=True, exist_ok=True)
    _chart(runs, chart)
    print(f"chart: {chart.relative_to(RESULTS.parent)}", flush=True)
    if not ctx.quick:  # the documentation site shows the latest full run's chart
        shutil.copyfile(chart, DOCS_CHART)
    write_results(
        ctx,
        "clients",
        {
            "parameters": {
                "concurrency": list(CONCURRENCY),
                "clients": list(CLIENTS),
                "repetitions": reps,
                "run_seconds": duration,
                "ttl": TTL,
                "latency_ms": LATENCY_MS,
                "distinct_files": FILES,
                "api": "benchmarks/_fast_api.py (aiohttp.web, each distinct token verified once)",
            },
            "api_ceiling": {
                "demo_api": asdict(demo_ceiling),
                "fast_api": asdict(fast_ceiling),
            },
            "api_counters": api_stats,
            "cells": summary,
            "runs": [asdict(r) for r in runs],
        },
    )


# -- the renewal's wall time on a busy loop ----------------------------------------------------

RENEWAL_CONCURRENCY = 256
RENEWAL_CLIENT = "httpx2"
PROBE_INTERVAL = 0.25  # seconds between the idle process's token requests
IDLE_CONCURRENCY = 1
"""The idle loop's job: one download at a time, so that renewals start as in the busy job (from
the per-request path, past the refresh-ahead threshold, every 2.4 s) on a loop that otherwise
waits."""
SERVERS_NICE = -10  # the servers' priority in the second pass (0 is everyone's default)
ROOT = Path(__file__).resolve().parent.parent
PASSES = {
    "same priority": 0,
    f"servers first (nice {SERVERS_NICE})": SERVERS_NICE,
}
"""The renewal figure runs twice: the client, the API and the authorization server sharing the
cores as equals; then with the two servers scheduled first, as servers on machines of their own
would answer whatever the client's machine is doing."""
TRANSPORTS = {
    "caller's loop": (False, False, False),
    "request on the renewal loop": (True, False, False),
    "request and adoption on the renewal loop": (False, True, False),
    "same, request sent by the helper process": (False, True, True),
}
"""Where a renewal's token request runs: on the caller's loop; sent from the renewal loop
(`HttpxTransport(off_loop=True)`), its answer handed back to the caller's loop; made, and its
token put in use, on the renewal loop (`TokenManager(off_loop=True)`), storage still on the
caller's loop; the same, with the request handed from the renewal loop to the helper process,
which sends it (`HttpxTransport(helper_process=True)`; the library's default)."""


async def _helper_ready() -> None:
    """Start the helper process (a program's second renewal would), and wait (at most 30 s)
    until it is ready."""
    from planet_async._helper import helper

    helper().start()
    with anyio.fail_after(30):
        while not helper().ready:  # noqa: ASYNC110 - the helper has no event to wait on
            await anyio.sleep(0.05)


def _time_helper(exchanges: list[float]) -> None:
    """From now on, add to `exchanges` the seconds each request given to the helper process
    took, from being written to its answer being read (on the helper's reading thread)."""
    from planet_async._helper import helper

    program = helper()
    submit = type(program).submit  # not a wrapper of an earlier call's

    def timed(request: Any, timeout: float, answer: Any) -> Any:
        began = time.perf_counter()

        def timed_answer(outcome: Any) -> None:
            exchanges.append(time.perf_counter() - began)
            answer(outcome)

        return submit(program, request, timeout, timed_answer)

    program.submit = timed  # type: ignore[method-assign]


def _auth_with(setup: Setup, off_loop: tuple[bool, bool, bool]) -> tuple[Any, list[float]]:
    """The adapter, and the list of seconds each of its token requests took, from the request
    being sent (on whichever loop sends it) until the answer was read: the authorization
    server's share of a renewal, with the sending loop's waits."""
    from planet_async import (
        AuthorizationServer,
        ClientCredentialsGrant,
        ClientSecretBasic,
        HttpxTransport,
    )

    transport_off_loop, manager_off_loop, helper_process = off_loop
    transport = HttpxTransport(off_loop=transport_off_loop, helper_process=helper_process)
    exchanges: list[float] = []
    send = transport._send_here

    async def timed(request: Any, timeout: float) -> Any:
        began = time.perf_counter()
        try:
            return await send(request, timeout)
        finally:
            if request.method == "POST":
                exchanges.append(time.perf_counter() - began)

    # On the instance: the transport stays exactly an HttpxTransport, which the manager checks
    # before it makes token requests on the renewal loop.
    transport._send_here = timed  # type: ignore[method-assign]
    if helper_process:
        _time_helper(exchanges)
    server = AuthorizationServer(setup.ctx.peer.issuer, transport=transport)
    client = ClientSecretBasic(client_id=CLIENT_ID, client_secret=CLIENT_SECRET)
    manager = TokenManager(
        ClientCredentialsGrant(server, client), session=CLIENT_ID, off_loop=manager_off_loop
    )
    return adapter(RENEWAL_CLIENT)(manager, allowed_origins=[setup.api.url]), exchanges


async def _back_to_back(setup: Setup, off_loop: tuple[bool, bool, bool], count: int) -> list[float]:
    """Wall time of `count` calls of `renew()` in a row, on a loop with nothing else to do."""
    auth, _ = _auth_with(setup, off_loop)
    manager = auth.manager
    await manager.renew()  # discovery, and the first connection's costs, out of the way
    if off_loop[2]:
        await _helper_ready()
    times = []
    for _ in range(count):
        began = time.perf_counter()
        await manager.renew()
        times.append(time.perf_counter() - began)
    return times


def _time_renewals(manager: TokenManager) -> tuple[list[float], list[float]]:
    """From now on, for each renewal of `manager`: seconds from its start until its token
    serves (adopted in memory, `fresh_header()` hands it out) and until it is done (saved,
    waiters released: the manager's `renewal_succeeded` event)."""
    adopted: list[float] = []
    done: list[float] = []
    started: list[float] = []
    install = manager._install

    def timed_install(token: Any) -> str:
        if started:
            adopted.append(time.perf_counter() - started.pop())
        return install(token)

    def on_event(event: Any) -> None:
        if event.kind == "renewal_started":
            started[:] = [time.perf_counter()]
        elif event.kind == "renewal_succeeded" and event.duration is not None:
            done.append(event.duration)

    manager._install = timed_install  # type: ignore[method-assign]
    manager.add_listener(on_event)
    return adopted, done


async def _job_renewals(
    setup: Setup, off_loop: tuple[bool, bool, bool], duration: float, concurrency: int
) -> tuple[Run, list[float], list[float], list[float], list[float]]:
    """The download job at `concurrency` with the adapter, `_time_renewals` of every renewal
    made during it, the time of their token requests, and that of the token requests an idle
    process of its own made meanwhile (`_token_probe`)."""
    auth, exchanges = _auth_with(setup, off_loop)
    manager = auth.manager
    async with manager:
        await manager.header()
        exchanges.clear()
        adopted, done = _time_renewals(manager)
        probe = _start_probe(setup, duration)
        try:
            async with open_client(
                RENEWAL_CLIENT, auth, concurrency, timeout=REQUEST_TIMEOUT
            ) as client:
                job = await _job(client, setup.api.url, concurrency, duration)
        finally:
            out, _ = await anyio.to_thread.run_sync(
                lambda: probe.communicate(timeout=duration + 30)
            )
    run = Run(RENEWAL_CLIENT, "planet_async", concurrency, rejected=0, **job)
    return run, adopted, done, exchanges, json.loads(out)


def _start_probe(setup: Setup, duration: float) -> subprocess.Popen[str]:
    """`benchmarks._token_probe` for `duration` seconds: a token request every PROBE_INTERVAL."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "benchmarks._token_probe",
            f"{setup.ctx.peer.issuer}/token",
            CLIENT_ID,
            CLIENT_SECRET,
            str(PROBE_INTERVAL),
            str(duration),
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )


@contextlib.contextmanager
def _servers_first(setup: Setup, nice: int) -> Iterator[bool]:
    """Give the authorization server and the API this scheduling priority (`nice`, lower is
    sooner) for a while: on 2 cores they otherwise wait for CPU behind the busy client, as
    servers on machines of their own never do. Yields whether that was allowed (root, or
    CAP_SYS_NICE, is needed to lower it)."""
    pids = [setup.ctx.peer._proc.pid, setup.api._proc.pid]  # type: ignore[union-attr]
    try:
        for pid in pids:
            os.setpriority(os.PRIO_PROCESS, pid, nice)
    except PermissionError:
        yield False
        return
    try:
        yield True
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.setpriority(os.PRIO_PROCESS, pid, 0)


async def _renewal_figure(
    setup: Setup, reps: int, duration: float, idle_count: int
) -> dict[str, Any]:
    found: dict[str, Any] = {
        name: {
            f"{phase}_{figure}": []
            for phase in ("idle", "busy")
            for figure in ("adopted", "done", "request", "probe")
        }
        | {"back_to_back": [], "files_per_s": []}
        for name in TRANSPORTS
    }
    static: list[float] = []
    for rep in range(reps):
        shift = rep % len(TRANSPORTS)
        order = list(TRANSPORTS)[shift:] + list(TRANSPORTS)[:shift]
        for name in order:
            cells = found[name]
            cells["back_to_back"] += await _back_to_back(setup, TRANSPORTS[name], idle_count)
            for phase, concurrency in (("idle", IDLE_CONCURRENCY), ("busy", RENEWAL_CONCURRENCY)):
                run, adopted, done, requests, probe = await _job_renewals(
                    setup, TRANSPORTS[name], duration, concurrency
                )
                cells[f"{phase}_adopted"] += adopted
                cells[f"{phase}_done"] += done
                cells[f"{phase}_request"] += requests
                cells[f"{phase}_probe"] += probe
                print(
                    f"  {name:41} {phase}: {run.files_per_s:6.0f} files/s, renewals serving "
                    f"after {', '.join(f'{d * 1000:.0f}' for d in adopted)} ms, done after "
                    f"{', '.join(f'{d * 1000:.0f}' for d in done)} ms",
                    flush=True,
                )
                if phase == "busy":
                    cells["files_per_s"].append(run.files_per_s)
        # The probe runs here too: the static job meets the same load as the others.
        static_probe = _start_probe(setup, duration)
        try:
            static_run = await _run(
                setup, RENEWAL_CLIENT, "static header", RENEWAL_CONCURRENCY, duration
            )
        finally:
            await anyio.to_thread.run_sync(static_probe.communicate, None, duration + 30)
        static.append(static_run.files_per_s)
        print(f"  static header: {static_run.files_per_s:6.0f} files/s", flush=True)
    found["static_files_per_s"] = static
    return found


def ms_or_dash(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def run_renewal(ctx: Context) -> None:
    """The renewal's wall time while RENEWAL_CONCURRENCY httpx2 downloads run, against the same
    renewal on an idle loop, with the token request made on the caller's loop or on the renewal
    loop; and the job's files/s against the static header's. Twice: see PASSES."""
    reps = ctx.scaled(3, 1)
    duration = ctx.scaled(10, 3)  # about 4 renewals per run with 3 s tokens
    idle_count = ctx.scaled(20, 10)
    ctx.configure_peer(ttl=3600, token_delay_ms=0)
    token = long_lived_token(ctx.peer.issuer)
    ctx.configure_peer(ttl=TTL, token_delay_ms=0)
    passes: dict[str, Any] = {}
    with ApiProcess("benchmarks._fast_api", ctx.peer.issuer, LATENCY_MS) as api:
        setup = Setup(ctx, api, token)
        for title, nice in PASSES.items():
            with _servers_first(setup, nice) as allowed:
                if not allowed:
                    print(f"  {title}: skipped (lowering a nice value needs root)", flush=True)
                    continue
                print(f"  {title}:", flush=True)
                found = anyio.run(_renewal_figure, setup, reps, duration, idle_count)
            passes[title] = _renewal_table(ctx, title, found, duration, reps)
    write_results(
        ctx,
        "clients_renewal",
        {
            "parameters": {
                "client": RENEWAL_CLIENT,
                "concurrency": RENEWAL_CONCURRENCY,
                "repetitions": reps,
                "run_seconds": duration,
                "ttl": TTL,
                "latency_ms": LATENCY_MS,
            },
            "servers_nice": PASSES,
            "passes": passes,
        },
    )


def _renewal_table(
    ctx: Context, title: str, found: dict[str, Any], duration: float, reps: int
) -> dict[str, Any]:
    """Show one pass's table; return its cells, and the raw figures."""
    static_rate = median(found["static_files_per_s"])
    rows = []
    summary: dict[str, Any] = {"static_files_per_s": static_rate}

    def median_ms(values: list[float]) -> float | None:
        return median(values) * 1000 if values else None

    def over(a: list[float], b: list[float]) -> float | None:
        return median(a) / median(b) if a and b else None

    for name in TRANSPORTS:
        cells = found[name]
        idle, busy = cells["idle_adopted"], cells["busy_adopted"]
        rate = median(cells["files_per_s"])
        cell = {
            "idle_median_ms": median_ms(idle),
            "busy_median_ms": median_ms(busy),
            "busy_max_ms": max(busy) * 1000 if busy else None,
            "busy_over_idle": over(busy, idle),
            "back_to_back_median_ms": median_ms(cells["back_to_back"]),
            "busy_over_back_to_back": over(busy, cells["back_to_back"]),
            "idle_request_median_ms": median_ms(cells["idle_request"]),
            "busy_request_median_ms": median_ms(cells["busy_request"]),
            "idle_probe_median_ms": median_ms(cells["idle_probe"]),
            "busy_probe_median_ms": median_ms(cells["busy_probe"]),
            "probe_busy_over_idle": over(cells["busy_probe"], cells["idle_probe"]),
            "busy_done_median_ms": median_ms(cells["busy_done"]),
            "idle_renewals_measured": len(idle),
            "renewals_measured": len(busy),
            "files_per_s": rate,
            "files_ratio": rate / static_rate,
        }
        summary[name] = cell
        rows.append(
            [
                name,
                ms_or_dash(cell["idle_median_ms"]),
                ms_or_dash(cell["busy_median_ms"]),
                ms_or_dash(cell["busy_max_ms"]),
                ratio(cell["busy_over_idle"], 1),
                f"{ms_or_dash(cell['back_to_back_median_ms'])} "
                f"({ratio(cell['busy_over_back_to_back'], 1)})",
                f"{ms_or_dash(cell['idle_request_median_ms'])} / "
                f"{ms_or_dash(cell['busy_request_median_ms'])}",
                f"{ms_or_dash(cell['idle_probe_median_ms'])} / "
                f"{ms_or_dash(cell['busy_probe_median_ms'])} "
                f"({ratio(cell['probe_busy_over_idle'], 1)})",
                ms_or_dash(cell["busy_done_median_ms"]),
                f"{len(idle)} / {len(busy)}",
                f"{rate:,.0f}",
                ratio(cell["files_ratio"], 3),
            ]
        )
    ctx.show(
        table(
            f"Renewal on a busy loop, {title}: {RENEWAL_CLIENT}, {RENEWAL_CONCURRENCY} downloads, "
            f"{duration} s runs x {reps}, tokens living {TTL} s",
            [
                "token request made on",
                "idle loop, median ms",
                "busy loop, median ms",
                "busy, max ms",
                "busy / idle",
                "renew() back to back, idle, ms (busy / it)",
                "token request alone, idle / busy, ms",
                "same request from an idle process, idle / busy, ms",
                "busy, until done, median ms",
                "renewals, idle / busy",
                "files/s",
                "vs static header",
            ],
            rows,
            note=(
                "Wall time of a renewal from its start until its token serves (adopted in "
                f"memory), during the download job at {RENEWAL_CONCURRENCY} concurrent "
                f"downloads (busy) and at {IDLE_CONCURRENCY} (idle: the same renewals, started "
                "the same way, on a loop that otherwise waits); target: busy within 2x of "
                "idle. Back to back: `manager.renew()` in a loop with nothing else running, the "
                "figure earlier rounds compared with (it runs hot: no renewal waits for a CPU "
                "to wake). Until done: until saved and its waiters released (the manager's "
                "`renewal_succeeded` event). Token request alone: from sending the token "
                "request until its answer was read, on the loop that sends it (median): the "
                "authorization server's share, with that loop's waits. From an idle process: "
                f"the same request every {PROBE_INTERVAL} s from a process doing nothing else, "
                "during the idle and the busy jobs: what the server takes under this machine's "
                "load, with no loop of ours in the way. files/s: median over the busy runs; "
                f"the static header's median is {static_rate:,.0f} (target >= 0.95x)."
            ),
        )
    )
    return {"cells": summary, "raw": found}
