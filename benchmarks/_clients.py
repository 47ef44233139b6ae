"""What the per-client benchmarks share: the API process, static headers the libraries' own way,
and a long-lived token for them.

The clients themselves are opened by the download demo's helper (`examples/_clients.py`), so the
benchmarks measure the demo's clients, configured as the demo configures them.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

import httpx

from examples._clients import CLIENTS as CLIENTS
from examples._clients import Client as Client
from examples._clients import adapter as adapter
from examples._clients import open_client as open_client
from examples.download_demo import DemoApi

from ._contenders import CLIENT_ID, CLIENT_SECRET, StaticHeader


class ApiProcess(DemoApi):
    """An API server in a process of its own, `benchmarks/_fast_api.py` or the demo's
    `examples/_demo_api.py`: the demo's launcher, as a context manager."""

    def __init__(self, module: str, issuer: str, latency_ms: float, timeout: float = 30.0) -> None:
        super().__init__(issuer, latency_ms, timeout, module=module)

    def __enter__(self) -> ApiProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def long_lived_token(issuer: str) -> str:
    """An access token from the peer's client credentials grant (the peer's current lifetime)."""
    response = httpx.post(
        f"{issuer}/token",
        data={"grant_type": "client_credentials"},
        auth=(CLIENT_ID, CLIENT_SECRET),
        trust_env=False,
    )
    response.raise_for_status()
    return str(response.json()["access_token"])


def static_auth(client: str, header: str) -> Any:
    """A fixed `Authorization` header, set the way `client` sets auth: nothing else happens."""
    if client == "httpx":
        return StaticHeader(header)
    if client == "httpx2":
        import httpx2

        class StaticHeader2(httpx2.Auth):
            async def async_auth_flow(
                self, request: httpx2.Request
            ) -> AsyncGenerator[httpx2.Request, httpx2.Response]:
                request.headers["Authorization"] = header
                yield request

        return StaticHeader2()
    if client == "aiohttp":
        import aiohttp

        async def static_header(
            request: aiohttp.ClientRequest,
            handler: Callable[[aiohttp.ClientRequest], Awaitable[aiohttp.ClientResponse]],
        ) -> aiohttp.ClientResponse:
            request.headers["Authorization"] = header
            return await handler(request)

        return static_header
    raise ValueError(client)
