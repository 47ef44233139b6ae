"""One replica of a web service under load, for tests/test_session_pool_redis.py.

``python -m tests._pool_fleet_worker ISSUER REDIS_URL KEY_HEX SECONDS CONCURRENCY USER...`` builds
a `SessionPool` on an encrypted `RedisStorage` (entered, so that renewals share one connection
to Redis, as a long-running replica's would), prints ``ready``, waits for ``go`` on stdin, then
for SECONDS seconds sends requests (CONCURRENCY at a time) to a stand-in API that verifies each
token (signature, issuer, audience, expiry) and checks that its ``sub`` is the user the request
was for. The users are requested in rounds, each round every one of USERS once in a fresh random
order, so that each user gets its share of the requests. It prints one JSON line:

    {"requests": n, "errors": n, "rejected": n, "wrong_user": n,
     "tokens": {user: {sha256 of token: iat}},
     "requested": {user: [wall-clock time of each request]},
     "grants": [seconds each refresh token request to the server took],
     "obtained": {user: [[sha256 of a token a refresh grant gave, wall-clock time it came]]}}

A watchdog ends the process if something hangs (SECONDS + 90 s after it starts).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import sys
import threading
import time
from pathlib import Path

if __package__ in (None, ""):  # run by path: make `tests` and `planet_async` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import anyio
import httpx

from planet_async import (
    AuthorizationServer,
    EncryptedStorage,
    HttpRequest,
    HttpResponse,
    HttpxTransport,
    RedisStorage,
)
from planet_async.web import SessionPool
from tests._fleet import jwt_claims
from tests._helpers import API, VerifyingApi
from tests._web_login import web_client

PAUSE = 0.02  # seconds between one task's requests


class TimedTransport:
    """The library's transport, noting each refresh grant: how long the request took, and the
    token it gave (whose user, its digest, and when it arrived: the manager puts it in use at
    once, with no await between)."""

    def __init__(self) -> None:
        self._inner = HttpxTransport()
        self.refresh_seconds: list[float] = []
        self.obtained: dict[str, list[tuple[str, float]]] = {}

    async def send(self, request: HttpRequest, *, timeout: float) -> HttpResponse:
        started = time.monotonic()
        response = await self._inner.send(request, timeout=timeout)
        if request.form is not None and request.form.get("grant_type") == "refresh_token":
            self.refresh_seconds.append(round(time.monotonic() - started, 4))
            if response.status_code == 200:
                token = json.loads(response.content)["access_token"]
                digest = hashlib.sha256(token.encode()).hexdigest()
                user = jwt_claims(token)["sub"]
                self.obtained.setdefault(user, []).append((digest, time.time()))
        return response


async def main(
    issuer: str, redis_url: str, key: bytes, seconds: float, concurrency: int, users: list[str]
) -> None:
    api = VerifyingApi(issuer)
    tokens: dict[str, dict[str, int]] = {user: {} for user in users}
    requested: dict[str, list[float]] = {user: [] for user in users}
    counts = {"requests": 0, "errors": 0, "rejected": 0, "wrong_user": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        token = request.headers["authorization"].removeprefix("Bearer ")
        claims = jwt_claims(token)
        user = request.url.params["as"]
        if claims["sub"] != user:
            counts["wrong_user"] += 1
        digest = hashlib.sha256(token.encode()).hexdigest()
        tokens[user][digest] = int(claims["iat"])
        return api.handler(request)

    transport = TimedTransport()
    server = AuthorizationServer(issuer, transport=transport)
    rng = random.Random()
    order: list[str] = []  # what is left of this round, in a random order

    def next_user() -> str:
        if not order:
            order.extend(users)
            rng.shuffle(order)
        return order.pop()

    async with (
        RedisStorage(redis_url) as redis,  # one connection for the replica's renewals
        SessionPool(server, web_client(), EncryptedStorage(redis, {"k": key})) as pool,
        httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client,
    ):
        print("ready", flush=True)
        await anyio.to_thread.run_sync(sys.stdin.readline)
        deadline = time.monotonic() + seconds

        async def load() -> None:
            while time.monotonic() < deadline:
                user = next_user()
                counts["requests"] += 1
                requested[user].append(round(time.time(), 3))
                try:
                    response = await client.get(f"{API}/x?as={user}", auth=pool.auth(user))
                except Exception as exc:
                    counts["errors"] += 1
                    print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
                else:
                    counts["rejected"] += response.status_code != 200
                await anyio.sleep(PAUSE)

        async with anyio.create_task_group() as tasks:
            for _ in range(concurrency):
                tasks.start_soon(load)
    report = {**counts, "tokens": tokens, "requested": requested}
    report |= {"grants": transport.refresh_seconds, "obtained": transport.obtained}
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    issuer, redis_url, key_hex, seconds, concurrency, *users = sys.argv[1:]
    timer = threading.Timer(float(seconds) + 90.0, lambda: os._exit(3))
    timer.daemon = True
    timer.start()
    anyio.run(
        main, issuer, redis_url, bytes.fromhex(key_hex), float(seconds), int(concurrency), users
    )
