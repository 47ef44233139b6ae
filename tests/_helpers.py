"""Test doubles shared by the tests: a settable clock, a JWT-verifying API, token responses."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import httpx
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

API = "https://api.planet.com"


class FakeClock:
    """Wall-clock seconds that move only when a test says so."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def token_response(
    access_token: str = "at-1", expires_in: int | None = 3600, **extra: Any
) -> httpx.Response:
    body: dict[str, Any] = {"access_token": access_token, "token_type": "Bearer", **extra}
    if expires_in is not None:
        body["expires_in"] = expires_in
    return httpx.Response(200, json=body)


class VerifyingApi:
    """A stand-in Planet API that accepts only access tokens the peer signed, for its audience.

    Use its `handler` with `httpx.MockTransport`: it checks signature (JWKS), issuer, audience and
    expiry like a resource server would, and counts what it saw.
    """

    def __init__(self, issuer: str, audience: str = "https://api.planet.com/") -> None:
        with urllib.request.urlopen(f"{issuer}/jwks", timeout=10) as response:
            self._keys = KeySet.import_key_set(json.loads(response.read()))
        self._issuer = issuer
        self._audience = audience
        self.accepted = 0
        self.rejected = 0
        self.tokens: set[str] = set()
        self.clock: Callable[[], float] = time.time

    def verify(self, token: str) -> bool:
        try:
            claims = jwt.decode(token, self._keys).claims
        except (JoseError, ValueError):
            return False
        registry = jwt.JWTClaimsRegistry(
            now=int(self.clock()),
            iss={"essential": True, "value": self._issuer},
            aud={"essential": True, "value": self._audience},
            exp={"essential": True},
        )
        try:
            registry.validate(claims)
        except JoseError:
            return False
        return True

    def handler(self, request: httpx.Request) -> httpx.Response:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not self.verify(token):
            self.rejected += 1
            return httpx.Response(401, json={"error": "unauthorized"})
        self.accepted += 1
        self.tokens.add(token)
        return httpx.Response(200, json={"ok": True})
