"""A local API for the adapter tests: it checks tokens, can revoke one, and records every request.

It runs in a thread on 127.0.0.1 (a real HTTP server, so every client library talks to it over a
socket) and serves:

    /open/...           200 to anyone (a redirect target that is not allowlisted)
    /always-401         401 to anyone
    /redirect?to=URL    302 to URL
    /users/SUB/...      as below, and 403 unless the token's `sub` is SUB (a user's own data)
    anything else       200 if the Authorization header holds a token the peer signed and
                        the test did not revoke, or the API key; 401 otherwise

A 200 echoes what arrived: ``{"path", "authorization", "body", "sub"}`` (`sub`: the token's).
"""

from __future__ import annotations

import http.server
import json
import threading
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from planet_async._jwt import read_claims_unverified

API_KEY = "PLAKadapters0123456789"


@dataclass(frozen=True)
class Hit:
    path: str
    authorization: str | None
    body: bytes
    status: int


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    # The standard library listens with a backlog of 5: 64 threads connecting at once (the sync
    # adapters' tests) overflow it, and the kernel drops connections the client then retries
    # after a second or more.
    request_queue_size = 128


class RevocableApi:
    """The server; `verify` decides whether a bearer token is genuine (the peer's signature)."""

    def __init__(self, verify: Callable[[str], bool]) -> None:
        self._verify = verify
        self.revoked: set[str] = set()
        self.hits: list[Hit] = []
        self._lock = threading.Lock()
        api = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                self._serve()

            def do_POST(self) -> None:
                self._serve()

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() != "chunked":
                    length = int(self.headers.get("Content-Length") or 0)
                    return self.rfile.read(length) if length else b""
                chunks = []
                while size := int(self.rfile.readline().split(b";")[0], 16):
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                self.rfile.readline()  # the empty line after the last chunk (no trailers sent)
                return b"".join(chunks)

            def _serve(self) -> None:
                body = self._body()
                url = urllib.parse.urlsplit(self.path)
                auth = self.headers.get("Authorization")
                status, headers, payload = api._answer(url, auth, body)
                with api._lock:
                    api.hits.append(Hit(url.path, auth, body, status))
                data = json.dumps(payload).encode()
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = _Server(("127.0.0.1", 0), Handler)
        self.origin = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def _answer(
        self, url: urllib.parse.SplitResult, auth: str | None, body: bytes
    ) -> tuple[int, dict[str, str], dict[str, Any]]:
        if url.path == "/redirect":
            target = urllib.parse.parse_qs(url.query)["to"][0]
            return 302, {"Location": target}, {}
        echo = {"path": url.path, "authorization": auth, "body": body.decode()}
        if url.path.startswith("/open/"):
            return 200, {}, echo
        if url.path != "/always-401" and self._accepts(auth):
            # The signature was verified just now; the claims are read from the same token.
            claims = read_claims_unverified((auth or "").partition(" ")[2]) or {}
            echo["sub"] = claims.get("sub")
            owner = (
                urllib.parse.unquote(url.path.split("/")[2])
                if url.path.startswith("/users/")
                else None
            )
            if owner is not None and claims.get("sub") != owner:
                return 403, {}, {"error": "forbidden", "sub": claims.get("sub"), "owner": owner}
            return 200, {}, echo
        return 401, {"WWW-Authenticate": 'Bearer error="invalid_token"'}, {"error": "unauthorized"}

    def _accepts(self, auth: str | None) -> bool:
        scheme, _, credential = (auth or "").partition(" ")
        if scheme == "api-key":
            return credential == API_KEY
        with self._lock:
            revoked = credential in self.revoked
        return scheme.lower() == "bearer" and not revoked and self._verify(credential)

    def revoke(self, authorization: str) -> None:
        """Refuse this token from now on (as the API does when a token is revoked)."""
        with self._lock:
            self.revoked.add(authorization.partition(" ")[2])

    def reset(self) -> None:
        with self._lock:
            self.revoked.clear()
            self.hits.clear()

    def statuses(self, path: str) -> list[int]:
        with self._lock:
            return [hit.status for hit in self.hits if hit.path == path]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
