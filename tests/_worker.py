"""One program of a fleet sharing a session, for tests/test_cross_process.py (client
credentials) and tests/test_rotation_processes.py (``--user``: a user session renewed with its
refresh token, which the peer rotates on every use) on a FileStorage, and for
tests/test_redis_fleet.py and tests/test_postgres_fleet.py (both) on a RedisStorage or a
PostgresStorage: STORAGE is a directory, a Redis URL or a PostgreSQL URL.

Run it from the repository root (``python -m tests._worker ...``) or by path. It builds its
`PlanetAuth`, prints ``ready``, waits for a ``go`` line on stdin so that a fleet starts at one
moment, then sends a request every INTERVAL_MS milliseconds for SECONDS seconds to a stand-in API
that verifies each bearer token against the peer's JWKS when it arrives (signature, issuer,
audience, expiry). Finally it prints one JSON line:

    {"renewals": n, "tokens": [[token, first_used], ...], "requests": n, "errors": n,
     "rejected": n, "outages": [[first_failed, next_succeeded], ...]}

`tokens` are the distinct access tokens the API received, with the wall-clock time each was first
sent, in order of first use; `errors` counts requests that raised or did not end in 200,
`rejected` the tokens the API refused, `outages` the wall-clock spans from a failed request to the
next one that succeeded (or to the end of the run). A watchdog ends the process if the parent
never says go or something hangs. With ``PLANET_ASYNC_TEST_WORKER_LOG=1`` in its environment it
also logs planet_async's records (DEBUG and up, each with its wall-clock time) to stderr, and the
claims of each token the API refused, to see after a fleet run what each process did when.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
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
    FileStorage,
    PlanetAuth,
    PostgresStorage,
    PublicClient,
    RedisStorage,
    RefreshTokenGrant,
    Storage,
    TokenManager,
)
from tests._fleet import jwt_claims
from tests._helpers import API, VerifyingApi

_GRACE = 30.0  # seconds the watchdog allows beyond the run itself
_LOG = "PLANET_ASYNC_TEST_WORKER_LOG"


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests._worker", description=__doc__)
    parser.add_argument("issuer", help="the authorization server (the test peer)")
    parser.add_argument(
        "storage",
        help="where the fleet's session is: a FileStorage root, a RedisStorage URL (redis://...) "
        "or a PostgresStorage URL (postgresql://...)",
    )
    parser.add_argument("session", help="the session name in that storage")
    parser.add_argument("seconds", type=float, help="how long to send requests")
    parser.add_argument("interval_ms", type=float, help="milliseconds between requests")
    parser.add_argument(
        "--user", action="store_true", help="a user session of the public client `--client-id`"
    )
    parser.add_argument("--client-id", help="default: service-basic, or native-app with --user")
    parser.add_argument("--client-secret", default="service-basic-secret")
    parser.add_argument(
        "--auth-method",
        choices=["client_secret_basic", "client_secret_post"],
        default="client_secret_basic",
    )
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    return parser.parse_args(argv)


def _start_watchdog(seconds: float) -> None:
    def expire() -> None:
        print(f"worker {os.getpid()}: watchdog expired after {seconds:g} s", file=sys.stderr)
        sys.stderr.flush()
        os._exit(3)

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()


async def _run(
    auth: PlanetAuth, api: VerifyingApi, seconds: float, interval: float
) -> dict[str, Any]:
    first_used: dict[str, float] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        token = request.headers.get("authorization", "").partition(" ")[2]
        first_used.setdefault(token, time.time())
        return api.handler(request)

    requests = errors = 0
    outages: list[list[float]] = []
    failed_since: float | None = None
    async with httpx.AsyncClient(auth=auth, transport=httpx.MockTransport(handler)) as client:
        start = anyio.current_time()
        deadline = start + seconds
        next_at = start
        while next_at < deadline:
            requests += 1
            sent = time.time()
            try:
                response = await client.get(f"{API}/data/v1/searches")
            except Exception as exc:
                failed = True
                print(f"worker {os.getpid()}: request failed: {exc!r}", file=sys.stderr)
            else:
                failed = response.status_code != 200
                if failed:
                    print(f"worker {os.getpid()}: HTTP {response.status_code}", file=sys.stderr)
                    if response.status_code == 401 and os.environ.get(_LOG):
                        token = response.request.headers.get("authorization", "").partition(" ")[2]
                        claims = jwt_claims(token)
                        print(
                            f"worker {os.getpid()}: the API refused a token (iat "
                            f"{claims.get('iat')}, exp {claims.get('exp')}) sent at {sent:.3f}, "
                            f"answered at {time.time():.3f}",
                            file=sys.stderr,
                        )
            if failed:
                errors += 1
                if failed_since is None:
                    failed_since = sent
            elif failed_since is not None:
                outages.append([failed_since, time.time()])
                failed_since = None
            # Pacing a load generator, not synchronisation: the fleet shares only the storage.
            now = anyio.current_time()
            next_at = max(next_at + interval, now)
            await anyio.sleep(next_at - now)
    if failed_since is not None:
        outages.append([failed_since, time.time()])
    assert auth.manager is not None
    return {
        "renewals": auth.manager.renewals,
        "tokens": list(first_used.items()),  # dicts keep insertion order: order of first use
        "requests": requests,
        "errors": errors,
        "rejected": api.rejected,
        "outages": outages,
    }


def _storage(where: str) -> Storage:
    if where.startswith(("redis://", "rediss://", "unix://", "redis+", "rediss+")):
        return RedisStorage(where)
    if where.startswith("postgresql://"):
        return PostgresStorage(where)
    return FileStorage(where)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if os.environ.get(_LOG):
        logging.basicConfig(format="%(created).3f %(name)s %(levelname)s %(message)s")
        logging.getLogger("planet_async").setLevel(logging.DEBUG)
    _start_watchdog(args.seconds + _GRACE)
    api = VerifyingApi(args.issuer)  # fetches the JWKS now, before the fleet starts
    storage = _storage(args.storage)
    if args.user:
        client = PublicClient(client_id=args.client_id or "native-app")
        grant = RefreshTokenGrant(AuthorizationServer(args.issuer), client)
        auth = PlanetAuth(TokenManager(grant, storage=storage, session=args.session))
    else:
        auth = PlanetAuth.from_client_credentials(
            args.client_id or "service-basic",
            args.client_secret,
            auth_method=args.auth_method,
            issuer=args.issuer,
            storage=storage,
            session=args.session,
        )
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        print(f"worker {os.getpid()}: no go line on stdin", file=sys.stderr)
        return 2
    report: dict[str, Any] = anyio.run(
        _run, auth, api, args.seconds, args.interval_ms / 1000, backend=args.backend
    )
    print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
