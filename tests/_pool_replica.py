"""One replica of a web service, for tests/test_session_pool_redis.py: a `SessionPool` on an
encrypted `RedisStorage`, in a process of its own.

``python -m tests._pool_replica ISSUER REDIS_URL KEY_HEX USER...`` holds USERS (signed in by the
parent), prints ``ready``, then waits for the pool to be told that one of them signed out on
another replica. It prints one JSON line: the storage key dropped, the wall-clock time it was
dropped, and what a request for each user then gets (``served`` or ``SessionExpired``). A
watchdog ends the process if nothing happens.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

if __package__ in (None, ""):  # run by path: make `tests` and `planet_async` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import anyio

from planet_async import AuthorizationServer, EncryptedStorage, RedisStorage, SessionExpired
from planet_async.web import SessionPool
from tests._web_login import web_client

WATCHDOG = 30.0


async def main(issuer: str, redis_url: str, key: bytes, users: list[str]) -> None:
    dropped: list[tuple[str, float]] = []
    seen = anyio.Event()

    def on_sign_out(session: str) -> None:
        dropped.append((session, time.time()))
        seen.set()

    storage = EncryptedStorage(RedisStorage(redis_url), {"k": key})
    async with SessionPool(
        AuthorizationServer(issuer), web_client(), storage, on_sign_out=on_sign_out
    ) as pool:
        for user in users:
            await pool.header(user)
        print("ready", flush=True)
        await seen.wait()
        outcome = {}
        for user in users:
            try:
                await pool.header(user)
            except SessionExpired:
                outcome[user] = "SessionExpired"
            else:
                outcome[user] = "served"
    session, at = dropped[0]
    print(json.dumps({"dropped": session, "at": at, "outcome": outcome}), flush=True)


if __name__ == "__main__":
    timer = threading.Timer(WATCHDOG, lambda: os._exit(3))
    timer.daemon = True
    timer.start()
    issuer, redis_url, key_hex, *users = sys.argv[1:]
    anyio.run(main, issuer, redis_url, bytes.fromhex(key_hex), users)
