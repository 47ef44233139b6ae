"""Renewal storm: N requests at once, all at expiry, with a slow token endpoint.

Every contender starts with an expired token and sends N concurrent requests while a 1 ms ticker
watches the event loop; the token endpoint answers after 300 ms. Reported per contender:

- token requests the peer answered (target: one);
- (a) the worst ticker lag while the renewal is in flight and every request waits for it: from
  the moment the last request started to the moment the first one reached the API with the new
  token. If the auth layer kept the loop from even starting the other requests before the token
  arrived (a blocking renewal), the window runs from the first request's start instead: the loop
  was stopped for the whole round trip. Target: under 5 ms.
- (b) the worst ticker lag over the whole storm, divided by the static header's worst lag on the
  same N requests in the same repetition; median over the repetitions. A burst of N ready tasks
  stalls the loop by itself, so only the ratio says what the auth layer adds. Target: <= 1.05x.

Each contender first runs one small unrecorded storm (imports, discovery and loading the CA bundle
happen once per program, not per renewal), and the cyclic garbage collector is paused during each
storm (see `_collector_paused`).
"""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import anyio
import httpx

from ._common import (
    API_URL,
    Context,
    Ticker,
    median,
    ms,
    ok,
    quartiles,
    ratio,
    table,
    write_results,
)
from ._contenders import NAMES, OPENERS, Setup

TOKEN_DELAY_MS = 300
TTL = 3600
STORM_TIMEOUT = 120.0  # seconds; no storm here comes near it


@dataclass
class Storm:
    """What one storm did."""

    token_requests: int
    failures: int
    duration: float
    worst_lag: float  # over the whole storm
    renewal_lag: float | None  # (a); None for the static header, which never renews
    renewal_window: float | None  # how long (a) was measured over
    renewal_ticks: int | None  # how many ticks ran in that window


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector for one storm; collect before and after.

    With 10,000 requests alive its full collections take up to 100 ms or more and land at random
    moments, in any contender's storm and in the static header's alike; they would drown what the
    auth layers themselves do. Reference counting still frees memory as usual.
    """
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.collect()


async def _storm(ctx: Context, name: str, setup: Setup, requests: int) -> Storm:
    first_api: float | None = None
    first_start: float | None = None
    last_start = 0.0
    failures = 0

    def api(request: httpx.Request) -> httpx.Response:
        nonlocal first_api
        if first_api is None:
            first_api = time.perf_counter()
        return ok()

    async def one(client: httpx.AsyncClient) -> None:
        nonlocal first_start, last_start, failures
        last_start = time.perf_counter()
        if first_start is None:
            first_start = last_start
        try:
            response = await client.get(API_URL)
        except Exception:
            failures += 1
        else:
            failures += response.status_code != 200

    ticker = Ticker()
    ctx.peer.reset()
    opened = OPENERS[name](setup, httpx.MockTransport(api), expired=True)
    async with opened as client, anyio.create_task_group() as watch:
        await watch.start(ticker.run)
        await anyio.sleep(0.05)  # the ticker is ticking
        with _collector_paused():
            began = time.perf_counter()
            with anyio.fail_after(STORM_TIMEOUT):
                async with anyio.create_task_group() as storm:
                    for _ in range(requests):
                        storm.start_soon(one, client)
            ended = time.perf_counter()
        watch.cancel_scope.cancel()
    token_requests = ctx.token_requests()
    renewal_lag = renewal_window = renewal_ticks = None
    if name != "static header" and first_api is not None and first_start is not None:
        waiting_from = last_start if last_start < first_api else first_start
        renewal_lag = ticker.worst_lag(waiting_from, first_api)
        renewal_window = first_api - waiting_from
        renewal_ticks = ticker.count(waiting_from, first_api)
    return Storm(
        token_requests=token_requests,
        failures=failures,
        duration=ended - began,
        worst_lag=ticker.worst_lag(began, ended),
        renewal_lag=renewal_lag,
        renewal_window=renewal_window,
        renewal_ticks=renewal_ticks,
    )


async def _repetitions(ctx: Context, requests: int, repetitions: int) -> dict[str, list[Storm]]:
    setup = Setup(ctx.peer.issuer, ctx.home, TTL)
    storms: dict[str, list[Storm]] = {name: [] for name in NAMES}
    for name in NAMES:
        # One unrecorded storm each first: one-time costs (imports, discovery, loading the CA
        # bundle) belong to a program's start, not to its renewals.
        await _storm(ctx, name, setup, min(requests, 100))
    for repetition in range(repetitions):
        # The static header runs first in every repetition (it is the yardstick); the others
        # take turns being the one right after it.
        shift = repetition % (len(NAMES) - 1)
        others = NAMES[1:][shift:] + NAMES[1:][:shift]
        for name in (NAMES[0], *others):
            storms[name].append(await _storm(ctx, name, setup, requests))
    return storms


def _spread(values: list[int]) -> str:
    return str(values[0]) if min(values) == max(values) else f"{min(values)}-{max(values)}"


def _report(ctx: Context, requests: int, storms: dict[str, list[Storm]]) -> dict[str, object]:
    static_lags = [s.worst_lag for s in storms["static header"]]
    rows = []
    summary: dict[str, object] = {}
    for name in NAMES:
        runs = storms[name]
        ratios = [s.worst_lag / base for s, base in zip(runs, static_lags, strict=True)]
        low, high = quartiles(ratios)
        renewal = [s.renewal_lag for s in runs if s.renewal_lag is not None]
        windows = [s.renewal_window for s in runs if s.renewal_window is not None]
        summary[name] = {
            "runs": [asdict(s) for s in runs],
            "median_ratio_to_static": median(ratios),
            "ratio_p25": low,
            "ratio_p75": high,
        }
        rows.append(
            [
                name,
                _spread([s.token_requests for s in runs]),
                f"{ms(median(renewal))} ({ms(max(renewal))})" if renewal else "n/a",
                ms(median(windows), 0) if windows else "n/a",
                ms(median([s.worst_lag for s in runs]), 0),
                f"{ratio(median(ratios))} ({low:.2f}-{high:.2f})",
                ms(median([s.duration for s in runs]), 0),
                sum(s.failures for s in runs),
            ]
        )
    ctx.show(
        table(
            f"Renewal storm: {requests:,} concurrent requests at expiry, token endpoint +"
            f"{TOKEN_DELAY_MS} ms, {len(static_lags)} repetitions",
            [
                "contender",
                "token requests",
                "(a) lag renewing, ms: median (max)",
                "(a) window, ms",
                "storm worst lag, ms",
                "(b) ratio to static (IQR)",
                "storm duration, ms",
                "failures",
            ],
            rows,
            note=(
                "Token requests: per storm, answered or refused, as counted by the peer. (a): "
                "worst 1 ms-ticker lag while every request waits for the renewal (target < 5 ms). "
                "(b): the storm's worst lag over the static header's in the same repetition "
                "(target <= 1.05x). Medians over the repetitions."
            ),
        )
    )
    return summary


def run(ctx: Context) -> None:
    repetitions = ctx.scaled(5, 1)
    sizes = (1_000, 10_000)
    ctx.configure_peer(ttl=TTL, token_delay_ms=TOKEN_DELAY_MS)
    results: dict[str, object] = {}
    try:
        for requests in sizes:
            began = time.perf_counter()
            storms = anyio.run(_repetitions, ctx, requests, repetitions)
            results[str(requests)] = _report(ctx, requests, storms)
            print(f"(N = {requests:,}: {time.perf_counter() - began:.1f} s)", flush=True)
    finally:
        ctx.configure_peer(ttl=TTL, token_delay_ms=0)
    write_results(
        ctx,
        "storm",
        {
            "parameters": {
                "sizes": sizes,
                "repetitions": repetitions,
                "token_delay_ms": TOKEN_DELAY_MS,
                "ticker_interval_ms": 1,
            },
            "sizes": results,
        },
    )
