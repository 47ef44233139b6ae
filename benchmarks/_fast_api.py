"""The clients benchmarks' API: the demo API's contract on an aiohttp.web server, fast enough to
tell the clients apart.

The demo's API (`examples/_demo_api.py`) is a threading `http.server` that verifies the RS256
signature of every request; on two cores it serves far fewer files per second than aiohttp can
fetch, so it would cap every client alike. This one runs on one asyncio loop and verifies each
distinct token once (signature, issuer, audience, expiry: the demo API's `TokenVerifier`), then
keeps the verdict until the token's `exp` (with the same one-second leeway): a token it has not
seen, or one past its expiry, is checked in full again, so an expired or forged token is still
rejected and counted.

    GET /files/<n>   the demo's file n (`file_content`), after --latency-ms; FILES distinct files
                     (n is taken modulo FILES), prepared at start so that serving costs no CPU
    GET /ping        a small JSON body, authenticated, no latency (the overhead benchmark)
    GET /__stats     the verifier's counters, unauthenticated

    python -m benchmarks._fast_api --issuer URL [--latency-ms 25]

prints one JSON line ``{"url": ...}`` once it listens, and exits when its stdin closes.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import sys
import time

from aiohttp import web

from examples._demo_api import LEEWAY, TokenVerifier, file_content

FILES = 256
_PING = b'{"ok":true}'


class CachingVerifier(TokenVerifier):
    """`TokenVerifier` that checks each distinct token once and trusts it until its `exp`."""

    def __init__(self, issuer: str) -> None:
        super().__init__(issuer)
        self._verdicts: dict[str, int] = {}  # token -> exp, for tokens verified in full

    def check(self, authorization: str | None) -> str | None:
        _, _, token = (authorization or "").partition(" ")
        exp = self._verdicts.get(token)
        if exp is not None and time.time() <= exp + LEEWAY:
            with self._lock:
                self.accepted += 1
            return None
        self._verdicts.pop(token, None)
        reason = super().check(authorization)
        if reason is None:  # verified: its exp is now known to be genuine
            self._verdicts[token] = _exp(token)
        return reason


def _exp(token: str) -> int:
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return int(claims["exp"])


def _app(verifier: CachingVerifier, latency: float) -> web.Application:
    files = [file_content(n) for n in range(FILES)]
    unauthorized = {"WWW-Authenticate": "Bearer"}

    def reject(reason: str) -> web.Response:
        body = json.dumps({"error": "invalid_token", "reason": reason}).encode()
        return web.Response(
            status=401, body=body, content_type="application/json", headers=unauthorized
        )

    async def serve_file(request: web.Request) -> web.Response:
        reason = verifier.check(request.headers.get("Authorization"))
        if reason is not None:
            return reject(reason)
        if latency > 0:
            await asyncio.sleep(latency)  # the time a real API takes to find the file
        content = files[int(request.match_info["n"]) % FILES]
        verifier.served(len(content))
        return web.Response(body=content, content_type="application/octet-stream")

    async def ping(request: web.Request) -> web.Response:
        reason = verifier.check(request.headers.get("Authorization"))
        if reason is not None:
            return reject(reason)
        return web.Response(body=_PING, content_type="application/json")

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(verifier.stats())

    app = web.Application()
    app.router.add_get(r"/files/{n:\d{1,9}}", serve_file)
    app.router.add_get("/ping", ping)
    app.router.add_get("/__stats", stats)
    return app


async def _serve(issuer: str, latency: float) -> None:
    verifier = await asyncio.to_thread(CachingVerifier, issuer)
    runner = web.AppRunner(_app(verifier, latency), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
    await site.start()
    port = runner.addresses[0][1]
    print(json.dumps({"url": f"http://127.0.0.1:{port}", "pid": os.getpid()}), flush=True)
    try:
        await asyncio.to_thread(sys.stdin.buffer.read)  # until the benchmark goes away
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--issuer", required=True, help="the authorization server's issuer URL")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="added to every file")
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args.issuer, args.latency_ms / 1000))
    return 0


if __name__ == "__main__":
    sys.exit(main())
