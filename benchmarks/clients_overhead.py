"""Per-request overhead on each client: planet_async's adapter against a static header set the same
library's way, for httpx, httpx2 and aiohttp, and the sync clients requests and httpx.Client.

aiohttp has no mock transport, so every client here talks to the same real server: the clients
benchmarks' aiohttp.web API (`_fast_api.py`, in its own process) on 127.0.0.1, answering
``GET /ping`` at once after checking the token (each distinct token verified once, then trusted
until its expiry). The static headers are an `httpx.Auth` and an `httpx2.Auth` that set one
header, and an aiohttp client middleware that does only ``request.headers[...] = header``: the
same hook the adapter uses on each library, doing the least it can.

Each contender (client x adapter or static) holds a valid token (the peer's tokens live an hour
here) and sends requests one after another on one keep-alive connection. As in `overhead.py`,
the contenders take turns in short blocks, the order rotating each round, and each block's time
per request is divided by the static header's of the same client in the same round; the table
gives the median ratio and its interquartile range, for the CPU time of the event loop's thread
(the work done in this process: the server's is not counted) and for wall-clock time. The sync
clients send from that same thread, blocking it: their static headers are a `requests` auth and
an `httpx.Auth` with a sync flow, each setting one header.
"""

from __future__ import annotations

import gc
import time
from collections.abc import AsyncIterator, Generator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import anyio

from planet_async import TokenManager

from ._clients import (
    CLIENTS,
    ApiProcess,
    Client,
    adapter,
    long_lived_token,
    open_client,
    static_auth,
)
from ._common import Context, median, quartiles, ratio, table, write_results
from ._contenders import CLIENT_ID, CLIENT_SECRET

TTL = 3600
WARMUP = 300
BLOCK = 25  # short blocks, many rounds: this shared machine's load comes in bursts
MODES = ("static header", "planet_async")
SYNC_CLIENTS = ("requests", "httpx.Client")
CONTENDERS = [(name, mode) for name in (*CLIENTS, *SYNC_CLIENTS) for mode in MODES]


def _sync_static_auth(name: str, header: str) -> Any:
    if name == "requests":
        import requests.auth

        class StaticRequestsHeader(requests.auth.AuthBase):
            def __call__(self, request: Any) -> Any:
                request.headers["Authorization"] = header
                return request

        return StaticRequestsHeader()
    import httpx

    class StaticSyncHeader(httpx.Auth):
        def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, Any, None]:
            request.headers["Authorization"] = header
            yield request

    return StaticSyncHeader()


def _sync_adapter(name: str) -> Any:
    if name == "requests":
        from planet_async.requests import PlanetAuth

        return PlanetAuth
    from planet_async import PlanetAuth as HttpxAuth

    return HttpxAuth


@asynccontextmanager
async def _open_sync_client(name: str, auth: Any) -> AsyncIterator[Client]:
    """A sync client, sending from the calling thread (it blocks the loop: nothing else runs)."""
    if name == "requests":
        import requests

        with requests.Session() as session:
            session.auth = auth
            session.trust_env = False

            async def fetch(url: str) -> tuple[int, bytes]:
                response = session.get(url, timeout=10)
                return response.status_code, response.content

            yield Client(name, fetch, (requests.RequestException,))
        return
    import httpx

    with httpx.Client(auth=auth, trust_env=False, timeout=10) as client:

        async def fetch_httpx(url: str) -> tuple[int, bytes]:
            response = client.get(url)  # noqa: ASYNC212 - measured in the loop's thread
            return response.status_code, response.content

        yield Client(name, fetch_httpx, (httpx.HTTPError,))


async def _block(client: Client, url: str, requests: int) -> tuple[float, float, int]:
    """CPU and wall seconds per request over `requests` sequential requests; failures."""
    failures = 0
    gc.collect()
    wall, cpu = time.perf_counter(), time.thread_time()
    for _ in range(requests):
        status, _ = await client.fetch(url)
        failures += status != 200
    cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
    return cpu / requests, wall / requests, failures


async def _measure(ctx: Context, api: ApiProcess, token: str, rounds: int) -> dict[str, Any]:
    url = f"{api.url}/ping"
    cpu: dict[tuple[str, str], list[float]] = {c: [] for c in CONTENDERS}
    wall: dict[tuple[str, str], list[float]] = {c: [] for c in CONTENDERS}
    failures = dict.fromkeys(CONTENDERS, 0)
    async with AsyncExitStack() as stack:
        clients: dict[tuple[str, str], Client] = {}
        for name, mode in CONTENDERS:
            if name in SYNC_CLIENTS:
                if mode == "static header":
                    auth = _sync_static_auth(name, f"Bearer {token}")
                else:
                    auth = _sync_adapter(name).from_client_credentials(
                        CLIENT_ID, CLIENT_SECRET, issuer=ctx.peer.issuer, allowed_origins=[api.url]
                    )
                    auth.header_sync()  # the first token, on the renewal loop
                clients[name, mode] = await stack.enter_async_context(_open_sync_client(name, auth))
                continue
            if mode == "static header":
                auth = static_auth(name, f"Bearer {token}")
            else:
                auth = adapter(name).from_client_credentials(
                    CLIENT_ID, CLIENT_SECRET, issuer=ctx.peer.issuer, allowed_origins=[api.url]
                )
                assert isinstance(auth.manager, TokenManager)
                await stack.enter_async_context(auth.manager)
            clients[name, mode] = await stack.enter_async_context(open_client(name, auth, 1))
        for contender, client in clients.items():
            failures[contender] += (await _block(client, url, WARMUP))[2]
        ctx.peer.reset()
        for round_ in range(rounds):
            shift = round_ % len(CONTENDERS)
            for contender in CONTENDERS[shift:] + CONTENDERS[:shift]:
                block_cpu, block_wall, failed = await _block(clients[contender], url, BLOCK)
                cpu[contender].append(block_cpu)
                wall[contender].append(block_wall)
                failures[contender] += failed
    return {
        "cpu": cpu,
        "wall": wall,
        "failures": failures,
        "token_requests": ctx.token_requests(),
    }


def run(ctx: Context) -> None:
    rounds = ctx.scaled(384, 24)
    ctx.configure_peer(ttl=TTL, token_delay_ms=0)
    token = long_lived_token(ctx.peer.issuer)
    with ApiProcess("benchmarks._fast_api", ctx.peer.issuer, 0) as api:
        measured = anyio.run(_measure, ctx, api, token, rounds)
        api_stats = api.stats()
    cpu, wall, failures = measured["cpu"], measured["wall"], measured["failures"]
    rows = []
    summary: dict[str, Any] = {}
    for name, mode in CONTENDERS:
        base = (name, "static header")
        cpu_ratios = [a / b for a, b in zip(cpu[name, mode], cpu[base], strict=True)]
        wall_ratios = [a / b for a, b in zip(wall[name, mode], wall[base], strict=True)]
        cpu_iqr, wall_iqr = quartiles(cpu_ratios), quartiles(wall_ratios)
        summary[f"{name}, {mode}"] = {
            "cpu_us_per_request": median(cpu[name, mode]) * 1e6,
            "cpu_ratio": median(cpu_ratios),
            "cpu_ratio_iqr": cpu_iqr,
            "wall_us_per_request": median(wall[name, mode]) * 1e6,
            "wall_ratio": median(wall_ratios),
            "wall_ratio_iqr": wall_iqr,
            "requests": len(cpu[name, mode]) * BLOCK,
            "failures": failures[name, mode],
            "cpu_ratios": cpu_ratios,
            "wall_ratios": wall_ratios,
        }
        rows.append(
            [
                name,
                mode,
                f"{median(cpu[name, mode]) * 1e6:.1f}",
                ratio(median(cpu_ratios), 3),
                f"{cpu_iqr[0]:.3f}-{cpu_iqr[1]:.3f}",
                f"{median(wall[name, mode]) * 1e6:.1f}",
                ratio(median(wall_ratios), 3),
                f"{wall_iqr[0]:.3f}-{wall_iqr[1]:.3f}",
                f"{len(cpu[name, mode]) * BLOCK:,}",
                failures[name, mode],
            ]
        )
    ctx.show(
        table(
            f"Per-request overhead per client: {rounds} rounds of {BLOCK} sequential requests "
            "per contender, real loopback server",
            [
                "client",
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
                "Ratio: time per request over the same client's static header in the same round; "
                "median and interquartile range over the rounds. CPU: the event loop thread's CPU "
                "time (the server runs in another process). Token requests while measuring: "
                f"{measured['token_requests']}; requests the API rejected: "
                f"{api_stats['rejected']}. Target: planet_async <= 1.02x on every client."
            ),
        )
    )
    write_results(
        ctx,
        "clients_overhead",
        {
            "parameters": {
                "rounds": rounds,
                "block": BLOCK,
                "warmup": WARMUP,
                "ttl": TTL,
                "server": "benchmarks/_fast_api.py GET /ping on 127.0.0.1, one connection",
            },
            "token_requests_while_measuring": measured["token_requests"],
            "api_counters": api_stats,
            "contenders": summary,
        },
    )
