"""A small stand-in for a Planet API, for `download_demo.py`: it serves files to valid tokens only.

It runs in a process of its own, on 127.0.0.1 and an ephemeral port, and behaves like a resource
server: it fetches the authorization server's JWKS once, then verifies the bearer token of every
request (RS256 signature, `iss`, `aud`, `exp`) and answers 401 when anything is wrong.

    GET /files/<n>   the n-th file: 4-64 KiB of pseudo-random bytes, the same every time
                     (`file_content(n)`), so the client can check what it received.
    GET /__stats     counters, unauthenticated: accepted, rejected (by reason), distinct tokens.

Run it as ``python examples/_demo_api.py --issuer http://127.0.0.1:<port>``: it prints one JSON
line ``{"url": ...}`` once it listens, and exits when its stdin closes (when the demo that
started it goes away, however it goes).
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import http.server
import json
import os
import random
import re
import sys
import threading
import time
import urllib.request
from typing import Any

from joserfc import jwt
from joserfc.errors import ExpiredTokenError, JoseError
from joserfc.jwk import KeySet

AUDIENCE = "https://api.planet.com/"
LEEWAY = 1
"""Seconds of leeway on `exp`. JWT times are whole seconds and `iat` is rounded down, so a token
can be up to a second younger than its claims say; one second absorbs that and nothing more."""

MIN_SIZE = 4 * 1024
MAX_SIZE = 64 * 1024
_FILE_PATH = re.compile(r"/files/(\d{1,9})")
# loopback only: never route through an *_proxy from the environment
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def file_content(n: int) -> bytes:
    """The n-th file's bytes: 4-64 KiB, pseudo-random, determined by `n` alone."""
    rng = random.Random(n)  # noqa: S311 - test data, not secrets
    return rng.randbytes(rng.randint(MIN_SIZE, MAX_SIZE))


class TokenVerifier:
    """Checks bearer tokens the way a resource server does, and counts the outcomes."""

    def __init__(self, issuer: str, audience: str = AUDIENCE) -> None:
        with _NO_PROXY.open(f"{issuer}/.well-known/openid-configuration", timeout=10) as resp:
            jwks_uri = json.loads(resp.read())["jwks_uri"]
        with _NO_PROXY.open(jwks_uri, timeout=10) as resp:
            self._keys = KeySet.import_key_set(json.loads(resp.read()))
        self._issuer = issuer
        self._audience = audience
        self._lock = threading.Lock()
        self.accepted = 0
        self.rejected: collections.Counter[str] = collections.Counter()
        self._tokens: set[bytes] = set()
        self.bytes_served = 0

    def check(self, authorization: str | None) -> str | None:
        """None if the header carries a valid token, else why not (a short reason)."""
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return self._reject("no bearer token")
        try:
            claims = jwt.decode(token, self._keys, algorithms=["RS256"]).claims
        except (JoseError, ValueError):
            return self._reject("bad signature or malformed")
        registry = jwt.JWTClaimsRegistry(
            now=int(time.time()),
            leeway=LEEWAY,
            iss={"essential": True, "value": self._issuer},
            aud={"essential": True, "value": self._audience},
            exp={"essential": True},
        )
        try:
            registry.validate(claims)
        except ExpiredTokenError:
            return self._reject("expired")
        except JoseError as exc:
            return self._reject(f"claim {getattr(exc, 'claim', '?')}: {exc.error}")
        digest = hashlib.sha256(token.encode()).digest()
        with self._lock:
            self.accepted += 1
            self._tokens.add(digest)
        return None

    def _reject(self, reason: str) -> str:
        with self._lock:
            self.rejected[reason] += 1
        return reason

    def served(self, size: int) -> None:
        with self._lock:
            self.bytes_served += size

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "accepted": self.accepted,
                "rejected": sum(self.rejected.values()),
                "rejected_by_reason": dict(self.rejected),
                "distinct_tokens": len(self._tokens),
                "bytes_served": self.bytes_served,
            }


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: one connection per client worker
    disable_nagle_algorithm = True  # headers and body go out in two writes: don't hold the second
    server: _Server

    def do_GET(self) -> None:
        if self.path == "/__stats":
            self._send(200, json.dumps(self.server.verifier.stats()).encode(), "application/json")
            return
        match = _FILE_PATH.fullmatch(self.path)
        if match is None:
            self._send(404, b'{"error":"not_found"}', "application/json")
            return
        reason = self.server.verifier.check(self.headers.get("Authorization"))
        if reason is not None:
            body = json.dumps({"error": "invalid_token", "reason": reason}).encode()
            self._send(401, body, "application/json", {"WWW-Authenticate": "Bearer"})
            return
        if self.server.latency > 0:
            time.sleep(self.server.latency)  # the time a real API takes to find the file
        content = file_content(int(match.group(1)))
        self._send(200, content, "application/octet-stream")
        self.server.verifier.served(len(content))

    def _send(
        self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # thousands of requests: the counters tell the story


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # the client opens all its connections at once

    def __init__(self, verifier: TokenVerifier, latency: float) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.verifier = verifier
        self.latency = latency

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            return  # the client went away mid-request (a cancelled download): not our problem
        super().handle_error(request, client_address)


def _exit_when_stdin_closes(server: _Server) -> None:
    sys.stdin.buffer.read()
    server.shutdown()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--issuer", required=True, help="the authorization server's issuer URL")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="added to every file")
    args = parser.parse_args(argv)

    server = _Server(TokenVerifier(args.issuer), args.latency_ms / 1000)
    port = server.server_address[1]
    print(json.dumps({"url": f"http://127.0.0.1:{port}", "pid": os.getpid()}), flush=True)
    threading.Thread(target=_exit_when_stdin_closes, args=(server,), daemon=True).start()
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass  # the demo stops us; a Ctrl-C reaches us too and needs no traceback
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
