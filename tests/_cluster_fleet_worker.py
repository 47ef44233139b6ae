"""One worker process of tests/test_redis_cluster_fleet.py: a `SessionPool` holding every user
of the fleet, over a Redis Cluster.

``python -m tests._cluster_fleet_worker ISSUER CLUSTER_URL SECONDS RATE --backend B USER...``
builds a `SessionPool` of the peer's confidential ``web-app`` over a `RedisStorage` on the
``redis+cluster://`` URL (entered: one cluster client for the process's storage calls, as a
long-running service has), prints ``ready``, waits for ``go`` on stdin, then for SECONDS seconds
sends about RATE requests a second (from `TASKS` tasks, each paced on its own, so that a request
that waits for a renewal holds back only its own task) to a stand-in API that verifies each
token (signature, issuer, audience, expiry) and checks that its ``sub`` is the user the request
was for. The users are requested in rounds, each round every one of USERS once, in an order the
process draws at random once (so a process comes back to a user once a round). It prints one
JSON line:

    {"requests": n, "rejected": n, "wrong_user": n,
     "tokens": {user: {sha256 of token: wall-clock time first sent}},
     "requested": {user: [wall-clock time of each request sent]},
     "failed": [[user, wall-clock time sent, time it failed, "ExceptionType: message"], ...],
     "refused": [[user, time the API refused its token, the token's exp, whether the API would
                  have taken it a second before its exp], ...],
     "obtained": {user: [[sha256 of a token a refresh grant gave, wall-clock time it came]]}}

A watchdog ends the process if something hangs (SECONDS + 90 s after it starts).
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import logging
import os
import random
import sys
import threading
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run by path: make `tests` and `planet_async` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import anyio
import httpx

from planet_async import (
    AuthorizationServer,
    AuthServerUnavailable,
    RedisStorage,
    StorageError,
)
from planet_async.web import SessionPool
from tests._fleet import jwt_claims
from tests._helpers import API, VerifyingApi
from tests._pool_fleet_worker import TimedTransport
from tests._web_login import web_client

TASKS = 8  # request tasks per process


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def run(
    issuer: str, url: str, seconds: float, rate: float, users: list[str]
) -> dict[str, Any]:
    api = VerifyingApi(issuer)
    tokens: dict[str, dict[str, float]] = {user: {} for user in users}
    requested: dict[str, list[float]] = {user: [] for user in users}
    failed: list[list[Any]] = []
    refused: list[list[Any]] = []
    counts = {"requests": 0, "rejected": 0, "wrong_user": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        token = request.headers["authorization"].removeprefix("Bearer ")
        user = request.url.params["as"]
        if jwt_claims(token)["sub"] != user:
            counts["wrong_user"] += 1
        tokens[user].setdefault(_digest(token), round(time.time(), 3))
        response = api.handler(request)
        if response.status_code == 401:
            # Why: would the API have taken it a second before its `exp`?
            now, exp = time.time(), int(jwt_claims(token)["exp"])
            api.clock = lambda: exp - 1
            valid_before_exp = api.verify(token)
            api.clock = time.time
            refused.append([user, now, exp, valid_before_exp])
        return response

    transport = TimedTransport()
    server = AuthorizationServer(issuer, transport=transport)
    # Rounds in one random order of this process's own: each user comes back once a round.
    order = random.Random().sample(users, len(users))
    turn = itertools.count()

    def next_user() -> str:
        return order[next(turn) % len(order)]

    async with (
        RedisStorage(url) as storage,  # one cluster client for the process's storage calls
        SessionPool(server, web_client(), storage) as pool,
        httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client,
    ):
        # Discovered now, not by 16 processes' first renewals at once. 16 processes starting on
        # two cores can starve one past the request's timeout: a few attempts, bounded.
        for attempt in range(5):
            try:
                await server.metadata()
                break
            except AuthServerUnavailable:
                if attempt == 4:
                    raise
        print("ready", flush=True)
        await anyio.to_thread.run_sync(sys.stdin.readline)
        start = anyio.current_time()
        deadline = start + seconds
        interval = TASKS / rate  # each task's pace

        async def load(offset: float) -> None:
            next_at = start + offset
            while next_at < deadline:
                now = anyio.current_time()
                # Pacing a load generator, not synchronisation: the fleet shares only the store.
                await anyio.sleep(max(0.0, next_at - now))
                user = next_user()
                counts["requests"] += 1
                sent = round(time.time(), 3)
                requested[user].append(sent)
                try:
                    response = await client.get(f"{API}/x?as={user}", auth=pool.auth(user))
                except Exception as exc:
                    # The library's own private subclasses count as what they are.
                    kind = "StorageError" if isinstance(exc, StorageError) else type(exc).__name__
                    text = f"{kind}: {str(exc)[:300]}"
                    failed.append([user, sent, time.time(), text])
                    print(f"{sent} {user}: request failed: {exc!r}", file=sys.stderr, flush=True)
                else:
                    if response.status_code != 200:
                        counts["rejected"] += 1
                        print(f"{user}: HTTP {response.status_code}", file=sys.stderr, flush=True)
                next_at = max(next_at + interval, anyio.current_time())

        async with anyio.create_task_group() as tasks:
            for index in range(TASKS):
                tasks.start_soon(load, index * interval / TASKS)
    return {
        **counts,
        "tokens": tokens,
        "requested": requested,
        "failed": failed,
        "refused": refused,
        "obtained": transport.obtained,
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests._cluster_fleet_worker")
    parser.add_argument("issuer")
    parser.add_argument("url", help="a redis+cluster:// URL")
    parser.add_argument("seconds", type=float)
    parser.add_argument("rate", type=float, help="requests a second, about")
    parser.add_argument("users", nargs="+")
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    args = parser.parse_args()
    # The library's warnings (a failed save, a lease taken over) go to the worker's log.
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="%(created).3f %(levelname)s %(message)s"
    )
    timer = threading.Timer(args.seconds + 90.0, lambda: os._exit(3))
    timer.daemon = True
    timer.start()
    report = anyio.run(
        run, args.issuer, args.url, args.seconds, args.rate, args.users, backend=args.backend
    )
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
