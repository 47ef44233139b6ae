"""Per-request overhead: sequential requests with a valid token, as a ratio to a static header.

Every contender holds a valid token (the peer's tokens live an hour here) and sends requests one
after another through `httpx.AsyncClient` to an `httpx.MockTransport`, so the request itself is as
cheap as httpx allows and the auth layer's share is as visible as it can be.

This machine is shared and its speed drifts by several percent within seconds, so the contenders
take turns in many short blocks (the order rotating each round), and each block's time per request
is divided by the static header's in the same round; the table gives the median of those ratios
and their interquartile range. Time is measured twice: as the CPU time of the thread running the
event loop (the work done, which other processes on the machine do not inflate; nothing here waits
for I/O) and as wall-clock time (what a user would see, noisier).
"""

from __future__ import annotations

import gc
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass, field

import anyio
import httpx

from ._common import (
    API_URL,
    Context,
    median,
    ok,
    quartiles,
    ratio,
    table,
    unauthorized,
    write_results,
)
from ._contenders import NAMES, OPENERS, Setup

TTL = 3600
WARMUP = 500
BLOCK = 250


def _api(request: httpx.Request) -> httpx.Response:
    return ok() if "authorization" in request.headers else unauthorized()


async def _block(client: httpx.AsyncClient, requests: int) -> tuple[float, float, int]:
    """CPU and wall seconds per request over `requests` sequential requests; failures."""
    failures = 0
    gc.collect()
    wall, cpu = time.perf_counter(), time.thread_time()
    for _ in range(requests):
        response = await client.get(API_URL)
        failures += response.status_code != 200
    cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
    return cpu / requests, wall / requests, failures


@dataclass
class Timings:
    """Seconds per request of each block, by contender; failed requests; token requests."""

    cpu: dict[str, list[float]] = field(default_factory=lambda: {name: [] for name in NAMES})
    wall: dict[str, list[float]] = field(default_factory=lambda: {name: [] for name in NAMES})
    failures: dict[str, int] = field(default_factory=lambda: dict.fromkeys(NAMES, 0))
    token_requests: int = 0


async def _measure(ctx: Context, rounds: int) -> Timings:
    ctx.configure_peer(ttl=TTL, token_delay_ms=0)
    setup = Setup(ctx.peer.issuer, ctx.home, TTL)
    timings = Timings()
    async with AsyncExitStack() as stack:
        clients = {
            name: await stack.enter_async_context(OPENERS[name](setup, httpx.MockTransport(_api)))
            for name in NAMES
        }
        for name in NAMES:
            timings.failures[name] += (await _block(clients[name], WARMUP))[2]
        ctx.peer.reset()
        for round_ in range(rounds):
            shift = round_ % len(NAMES)
            for name in NAMES[shift:] + NAMES[:shift]:
                cpu, wall, failed = await _block(clients[name], BLOCK)
                timings.cpu[name].append(cpu)
                timings.wall[name].append(wall)
                timings.failures[name] += failed
    timings.token_requests = ctx.token_requests()
    return timings


def _ratios(times: dict[str, list[float]], name: str) -> list[float]:
    return [mine / base for mine, base in zip(times[name], times["static header"], strict=True)]


def run(ctx: Context) -> None:
    rounds = ctx.scaled(96, 8)
    measured = anyio.run(_measure, ctx, rounds)
    cpu, wall, failures = measured.cpu, measured.wall, measured.failures
    rows = []
    summary = {}
    for name in NAMES:
        cpu_ratios, wall_ratios = _ratios(cpu, name), _ratios(wall, name)
        cpu_iqr, wall_iqr = quartiles(cpu_ratios), quartiles(wall_ratios)
        summary[name] = {
            "cpu_us_per_request": median(cpu[name]) * 1e6,
            "cpu_ratio": median(cpu_ratios),
            "cpu_ratio_iqr": cpu_iqr,
            "wall_us_per_request": median(wall[name]) * 1e6,
            "wall_ratio": median(wall_ratios),
            "wall_ratio_iqr": wall_iqr,
            "requests": len(cpu[name]) * BLOCK,
            "failures": failures[name],
            "cpu_ratios": cpu_ratios,
            "wall_ratios": wall_ratios,
        }
        rows.append(
            [
                name,
                f"{median(cpu[name]) * 1e6:.1f}",
                ratio(median(cpu_ratios), 3),
                f"{cpu_iqr[0]:.3f}-{cpu_iqr[1]:.3f}",
                f"{median(wall[name]) * 1e6:.1f}",
                ratio(median(wall_ratios), 3),
                f"{wall_iqr[0]:.3f}-{wall_iqr[1]:.3f}",
                f"{len(cpu[name]) * BLOCK:,}",
                failures[name],
            ]
        )
    ctx.show(
        table(
            f"Per-request overhead: {rounds} rounds of {BLOCK} sequential requests per contender",
            [
                "contender",
                "CPU us/request",
                "CPU ratio",
                "CPU ratio IQR",
                "wall us/request",
                "wall ratio",
                "wall ratio IQR",
                "requests",
                "failures",
            ],
            rows,
            note=(
                "Ratio: time per request over the static header's in the same round; median and "
                "interquartile range over the rounds. CPU: the event loop thread's CPU time. "
                f"Token requests while measuring: {measured.token_requests}. "
                "Target: planet_async <= 1.02x."
            ),
        )
    )
    write_results(
        ctx,
        "overhead",
        {
            "parameters": {"rounds": rounds, "block": BLOCK, "warmup": WARMUP, "ttl": TTL},
            "token_requests_while_measuring": measured.token_requests,
            "contenders": summary,
        },
    )
