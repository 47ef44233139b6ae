"""One process of a fleet sharing one session; `processes.py` starts sixteen of them.

``python -m benchmarks._fleet CONTENDER SCENARIO ISSUER HOME PROFILE SECONDS INTERVAL_MS
[--redis URL]``

The session is on disk, in HOME's ``.planet``; planet_async keeps it in Redis instead when given
``--redis`` (`RedisStorage`, with PROFILE as the session's name).

It sets up its client (imports, the peer's signing keys), prints ``ready``, waits for ``go`` on
stdin so the fleet starts at one moment, then sends a request every INTERVAL_MS milliseconds for
SECONDS seconds to a stand-in API that checks each bearer token as a resource server would
(signature, issuer, audience, expiry). It ends with one JSON line:

    {"requests": n, "failures": n, "rejected": n, "errors": {...}, "tokens": [...],
     "renewals": n, "began": t, "ended": t}

`tokens` are fingerprints of the access tokens the API accepted from this process (the first 12
hex digits of their SHA-256), `renewals` the token requests the process made itself where the
client can tell (planet_async), `began` and `ended` the epoch times of its first and last request.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from pydantic import SecretStr

from ._common import API_URL, bearer, ok, start_watchdog, unauthorized
from ._contenders import (
    CLIENT_ID,
    CLIENT_SECRET,
    Route,
    Setup,
    authlib_client_class,
    quiet_incumbent,
)
from ._login import USER_CLIENT_ID

AUDIENCE = "https://api.planet.com/"
_GRACE = 60.0  # seconds the watchdog allows beyond the run


def fingerprint(token: str) -> str:
    """Names a token in a report without revealing it."""
    return hashlib.sha256(token.encode()).hexdigest()[:12]


class ResourceServer:
    """The stand-in API: accepts only unexpired tokens the peer signed for the API."""

    def __init__(self, issuer: str) -> None:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(f"{issuer}/jwks", timeout=10) as response:
            self._keys = KeySet.import_key_set(json.loads(response.read()))
        self._issuer = issuer
        self.rejected = 0
        self.tokens: set[str] = set()  # fingerprints

    def _valid(self, token: str) -> bool:
        try:
            claims = jwt.decode(token, self._keys).claims
            jwt.JWTClaimsRegistry(
                now=int(time.time()),
                iss={"essential": True, "value": self._issuer},
                aud={"essential": True, "value": AUDIENCE},
                exp={"essential": True},
            ).validate(claims)
        except (JoseError, ValueError):
            return False
        return True

    def handle(self, request: httpx.Request) -> httpx.Response:
        token = bearer(request)
        if token is None or not self._valid(token):
            self.rejected += 1
            return unauthorized()
        self.tokens.add(fingerprint(token))
        return ok()


@asynccontextmanager
async def _planet_async(args: argparse.Namespace, api: httpx.MockTransport) -> AsyncIterator[Any]:
    import planet_async as pa

    server = pa.AuthorizationServer(args.issuer)
    grant: pa.Grant
    if args.scenario == "user":
        grant = pa.RefreshTokenGrant(server, pa.PublicClient(client_id=USER_CLIENT_ID))
    else:
        grant = pa.ClientCredentialsGrant(
            server,
            pa.ClientSecretBasic(client_id=CLIENT_ID, client_secret=SecretStr(CLIENT_SECRET)),
        )
    storage: pa.Storage
    if args.redis:
        storage = pa.RedisStorage(args.redis)
    else:
        storage = pa.FileStorage(Path(args.home) / ".planet")
    manager = pa.TokenManager(grant, storage=storage, session=args.profile)
    http = httpx.AsyncClient(auth=pa.PlanetAuth(manager), transport=Route(api))
    async with http as client, manager:
        yield client, manager


@asynccontextmanager
async def _incumbent(args: argparse.Namespace, api: httpx.MockTransport) -> AsyncIterator[Any]:
    import planet

    quiet_incumbent()
    auth = planet.Auth.from_profile(args.profile)
    async with httpx.AsyncClient(auth=auth, transport=Route(api)) as client:
        yield client, None


@asynccontextmanager
async def _authlib(args: argparse.Namespace, api: httpx.MockTransport) -> AsyncIterator[Any]:
    """authlib has no shared session: each process starts from the file and writes back to it."""
    path = Path(args.home) / ".planet" / args.profile / "token.json"
    stored = json.loads(path.read_text())
    token = {**stored, "expires_at": stored["_exp"]}

    async def save(new: dict[str, Any], **_: Any) -> None:
        data = {**new, "_iat": int(time.time()), "_exp": int(new["expires_at"])}
        await anyio.to_thread.run_sync(path.write_text, json.dumps(data))

    options: dict[str, Any]
    if args.scenario == "user":
        options = {"client_id": USER_CLIENT_ID, "token_endpoint_auth_method": "none"}
    else:
        options = {
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "token_endpoint_auth_method": "client_secret_basic",
            "grant_type": "client_credentials",
        }
    client = authlib_client_class()(
        token_endpoint=f"{args.issuer}/token",
        token=token,
        update_token=save,
        leeway=Setup(args.issuer, Path(args.home), args.ttl).leeway,
        transport=Route(api),
        **options,
    )
    async with client:
        yield client, None


CLIENTS = {"planet_async": _planet_async, "incumbent": _incumbent, "authlib": _authlib}


async def _run(args: argparse.Namespace, server: ResourceServer) -> dict[str, Any]:
    errors: Counter[str] = Counter()
    requests = failures = 0
    interval = args.interval_ms / 1000
    async with CLIENTS[args.contender](args, httpx.MockTransport(server.handle)) as opened:
        client, manager = opened
        began = time.time()
        deadline = anyio.current_time() + args.seconds
        next_at = anyio.current_time()
        while next_at < deadline:
            requests += 1
            try:
                response = await client.get(API_URL)
            except Exception as exc:
                failures += 1
                errors[type(exc).__name__] += 1
            else:
                if response.status_code != 200:
                    failures += 1
                    errors[f"HTTP {response.status_code}"] += 1
            # Pacing a load generator: the fleet shares nothing but the session file.
            now = anyio.current_time()
            next_at = max(next_at + interval, now)
            await anyio.sleep(next_at - now)
    return {
        "requests": requests,
        "failures": failures,
        "rejected": server.rejected,
        "errors": dict(errors),
        "tokens": sorted(server.tokens),
        "renewals": manager.renewals if manager is not None else None,
        "began": began,
        "ended": time.time(),
    }


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks._fleet", description=__doc__)
    parser.add_argument("contender", choices=sorted(CLIENTS))
    parser.add_argument("scenario", choices=["m2m", "user"])
    parser.add_argument("issuer")
    parser.add_argument("home", help="the HOME whose .planet holds the shared session")
    parser.add_argument("profile", help="the session (planet profile) name")
    parser.add_argument("seconds", type=float)
    parser.add_argument("interval_ms", type=float)
    parser.add_argument("--ttl", type=float, default=5.0, help="access token lifetime, seconds")
    parser.add_argument("--redis", help="planet_async only: keep the session in this Redis")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    start_watchdog(args.seconds + _GRACE, "fleet process")
    server = ResourceServer(args.issuer)
    if args.contender == "incumbent":
        import planet  # noqa: F401 - its import takes a while: before "ready", not after "go"
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return 2
    print(json.dumps(anyio.run(_run, args, server)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
