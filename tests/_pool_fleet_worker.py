"""One replica of a web service under load, for tests/test_session_pool_redis.py.

``python -m tests._pool_fleet_worker ISSUER REDIS_URL KEY_HEX SECONDS USER...`` builds a
`SessionPool` on an encrypted `RedisStorage`, prints ``ready``, waits for ``go`` on stdin, then
for SECONDS seconds sends requests for users picked at random among USERS (4 at a time) to a
stand-in API that verifies each token (signature, issuer, audience, expiry) and checks that its
``sub`` is the user the request was for. It prints one JSON line:

    {"requests": n, "errors": n, "rejected": n, "wrong_user": n,
     "tokens": {user: {sha256 of token: iat}}}

A watchdog ends the process if something hangs.
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

from planet_async import AuthorizationServer, EncryptedStorage, RedisStorage
from planet_async.web import SessionPool
from tests._fleet import jwt_claims
from tests._helpers import API, VerifyingApi
from tests._web_login import web_client

CONCURRENCY = 4
PAUSE = 0.02  # seconds between one task's requests


async def main(issuer: str, redis_url: str, key: bytes, seconds: float, users: list[str]) -> None:
    api = VerifyingApi(issuer)
    tokens: dict[str, dict[str, int]] = {user: {} for user in users}
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

    storage = EncryptedStorage(RedisStorage(redis_url), {"k": key})
    rng = random.Random()
    async with (
        SessionPool(AuthorizationServer(issuer), web_client(), storage) as pool,
        httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client,
    ):
        print("ready", flush=True)
        await anyio.to_thread.run_sync(sys.stdin.readline)
        deadline = time.monotonic() + seconds

        async def load() -> None:
            while time.monotonic() < deadline:
                user = rng.choice(users)
                counts["requests"] += 1
                try:
                    response = await client.get(f"{API}/x?as={user}", auth=pool.auth(user))
                except Exception as exc:
                    counts["errors"] += 1
                    print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
                else:
                    counts["rejected"] += response.status_code != 200
                await anyio.sleep(PAUSE)

        async with anyio.create_task_group() as tasks:
            for _ in range(CONCURRENCY):
                tasks.start_soon(load)
    print(json.dumps({**counts, "tokens": tokens}), flush=True)


if __name__ == "__main__":
    timer = threading.Timer(120.0, lambda: os._exit(3))
    timer.daemon = True
    timer.start()
    issuer, redis_url, key_hex, seconds, *users = sys.argv[1:]
    anyio.run(main, issuer, redis_url, bytes.fromhex(key_hex), float(seconds), users)
