"""What the per-client benchmarks share: the API process, static headers the libraries' own way,
and a long-lived token for them.

The clients themselves are opened by the download demo's helper (`examples/_clients.py`), so the
benchmarks measure the demo's clients, configured as the demo configures them.
"""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import urllib.request
from collections.abc import AsyncGenerator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

from examples._clients import CLIENTS as CLIENTS
from examples._clients import Client as Client
from examples._clients import adapter as adapter
from examples._clients import open_client as open_client

from ._contenders import CLIENT_ID, CLIENT_SECRET, StaticHeader

ROOT = Path(__file__).resolve().parents[1]
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class ApiProcess:
    """An API server in a process of its own: `benchmarks/_fast_api.py` or the demo's
    `examples/_demo_api.py` (same command line, same first line, same ``/__stats``)."""

    def __init__(self, module: str, issuer: str, latency_ms: float, timeout: float = 30.0) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", module, "--issuer", issuer, "--latency-ms", str(latency_ms)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        lines: queue.Queue[bytes] = queue.Queue(maxsize=1)
        threading.Thread(
            target=lambda: lines.put(self._proc.stdout.readline()),  # type: ignore[union-attr]
            daemon=True,
        ).start()
        try:
            self.url = str(json.loads(lines.get(timeout=timeout))["url"])
        except (queue.Empty, ValueError, KeyError) as exc:
            self.stop()
            raise RuntimeError(f"{module} did not start") from exc

    def stats(self) -> dict[str, Any]:
        with _NO_PROXY.open(f"{self.url}/__stats", timeout=10) as response:
            return dict(json.loads(response.read()))

    def stop(self) -> None:
        proc = self._proc
        if proc.poll() is None:
            assert proc.stdin is not None
            proc.stdin.close()  # it exits when its stdin closes
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()

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
