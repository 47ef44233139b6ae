"""Event loops in several threads, each with its own PlanetAuth over one FileStorage."""

from __future__ import annotations

import threading
from pathlib import Path

import anyio
import httpx
import pytest

from planet_async import (
    AuthorizationServer,
    ClientCredentialsGrant,
    ClientSecretBasic,
    FileStorage,
    HttpxTransport,
    PlanetAuth,
    TokenManager,
)
from tests._helpers import API

THREADS = 8


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_threads_sharing_a_file_storage_renew_once(tmp_path: Path, backend: str) -> None:
    """8 threads, each running its own event loop and PlanetAuth, make one token request."""
    calls = 0
    calls_lock = threading.Lock()
    all_started = threading.Barrier(THREADS)
    headers: list[str] = []
    errors: list[BaseException] = []

    async def token_endpoint(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        with calls_lock:
            calls += 1
            number = calls
        await anyio.sleep(0.2)  # long enough that every other thread is waiting for the lock
        return httpx.Response(200, json={"access_token": f"at-{number}", "expires_in": 3600})

    async def one_thread() -> None:
        http = httpx.AsyncClient(transport=httpx.MockTransport(token_endpoint))
        server = AuthorizationServer(
            token_endpoint="https://auth.test/token", transport=HttpxTransport(http)
        )
        client = ClientSecretBasic(client_id="svc", client_secret="svc-secret")
        manager = TokenManager(
            ClientCredentialsGrant(server, client), storage=FileStorage(tmp_path), session="svc"
        )
        api = httpx.MockTransport(lambda r: httpx.Response(200, text=r.headers["authorization"]))
        async with httpx.AsyncClient(auth=PlanetAuth(manager), transport=api) as client_:
            all_started.wait(timeout=10)
            headers.append((await client_.get(f"{API}/x")).text)
        await http.aclose()

    def run() -> None:
        try:
            anyio.run(one_thread, backend=backend)
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    assert calls == 1
    assert headers == ["Bearer at-1"] * THREADS
