"""The HTTP clients the download demo can use: httpx, httpx2 or aiohttp, one way to fetch a file.

Each client gets the planet_async adapter made for it (`planet_async.PlanetAuth`,
`planet_async.httpx2.PlanetAuth`, `planet_async.aiohttp.PlanetAuthMiddleware`), or any other auth
of that library's own kind (the benchmarks pass a static header), and a connection pool as large
as the number of workers. Only the client chosen is imported: httpx2 and aiohttp are extras
(``python3 -m pip install '.[httpx2,aiohttp]'`` in the clone); aiohttp runs on asyncio.
"""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

CLIENTS = ("httpx", "httpx2", "aiohttp")
ASYNCIO_ONLY = frozenset({"aiohttp"})

_ADAPTERS = {
    "httpx": ("planet_async", "PlanetAuth"),
    "httpx2": ("planet_async.httpx2", "PlanetAuth"),
    "aiohttp": ("planet_async.aiohttp", "PlanetAuthMiddleware"),
}


def adapter(client: str) -> Any:
    """planet_async's adapter class for `client`; `MissingExtra` if its extra is not installed."""
    module, name = _ADAPTERS[client]
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class Client:
    """An open client: `fetch(url)` gives the response's status and body; `errors` are the
    exceptions a request through this library raises when the transfer itself fails."""

    name: str
    fetch: Callable[[str], Awaitable[tuple[int, bytes]]]
    errors: tuple[type[BaseException], ...]


@asynccontextmanager
async def open_client(
    name: str, auth: Any, connections: int, *, timeout: float = 10.0
) -> AsyncIterator[Client]:
    """Open client `name` with `auth` (an httpx or httpx2 `Auth`, or an aiohttp middleware)."""
    if name == "aiohttp":
        async with _aiohttp(auth, connections, timeout) as client:
            yield client
        return
    httpx_like = importlib.import_module(name)  # httpx and httpx2 share this API
    limits = httpx_like.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx_like.AsyncClient(
        auth=auth,
        limits=limits,
        timeout=timeout,
        trust_env=False,  # loopback only, whatever proxies the environment names
    ) as session:

        async def fetch(url: str) -> tuple[int, bytes]:
            response = await session.get(url)
            return response.status_code, response.content

        yield Client(name, fetch, (httpx_like.HTTPError,))


@asynccontextmanager
async def _aiohttp(middleware: Any, connections: int, timeout: float) -> AsyncIterator[Client]:
    import aiohttp

    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=connections),
        middlewares=(middleware,),
        timeout=aiohttp.ClientTimeout(total=timeout),
    ) as session:

        async def fetch(url: str) -> tuple[int, bytes]:
            async with session.get(url) as response:
                return response.status, await response.read()

        yield Client("aiohttp", fetch, (aiohttp.ClientError, TimeoutError))
