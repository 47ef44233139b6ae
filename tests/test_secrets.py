"""No secret in any log record, repr or exception text, with every logger at DEBUG."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest

from planet_async import (
    AuthorizationServer,
    ClientCredentialsGrant,
    ClientSecretBasic,
    ClientSecretPost,
    FileStorage,
    PlanetAuth,
    PlanetAuthError,
    PrivateKeyJWT,
    TokenManager,
)
from tests._helpers import API, FakeClock
from tests._peer import Peer

pytestmark = pytest.mark.anyio


async def test_no_secret_in_logs_reprs_or_errors(
    peer: Peer, client_keys, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """M2M with each client authentication, a refused secret, a 401 and an API key leak nothing."""
    caplog.set_level(logging.DEBUG)  # the root logger: ours, httpx's and httpcore's records
    _, keys = client_keys
    pem = keys["rsa-1"].read_text()
    seen_tokens: list[str] = []
    rejected_once: set[str] = set()

    def api(request: httpx.Request) -> httpx.Response:
        header = request.headers.get("authorization", "")
        seen_tokens.append(header.partition(" ")[2])
        if header not in rejected_once:  # each new token is refused once: exercises the 401 path
            rejected_once.add(header)
            return httpx.Response(401)
        return httpx.Response(200)

    clients = [
        ClientSecretBasic(client_id="service-basic", client_secret="service-basic-secret"),
        ClientSecretPost(client_id="service-post", client_secret="service-post-secret"),
        PrivateKeyJWT(client_id="service-pkjwt", private_key=pem, key_id="rsa-1"),
        ClientSecretBasic(client_id="service-basic", client_secret="wrong-secret-value"),
    ]
    objects: list[object] = []
    errors: list[BaseException] = []
    storage = FileStorage(tmp_path)
    for number, client in enumerate(clients):
        clock = FakeClock(start=__import__("time").time())
        grant = ClientCredentialsGrant(AuthorizationServer(peer.issuer), client)
        manager = TokenManager(grant, storage=storage, session=f"s{number}", clock=clock)
        auth = PlanetAuth(manager)
        async with httpx.AsyncClient(auth=auth, transport=httpx.MockTransport(api)) as http:
            try:
                await http.get(f"{API}/x")
                clock.advance(3600)
                await http.get(f"{API}/x")
            except PlanetAuthError as exc:
                errors.append(exc)
        objects += [client, grant, manager, auth, storage]
        if manager._current is not None:
            objects.append(manager._current.token)
    api_key_auth = PlanetAuth.from_api_key("PLAK-very-secret-key")
    async with httpx.AsyncClient(auth=api_key_auth, transport=httpx.MockTransport(api)) as http:
        await http.get(f"{API}/x")
    objects.append(api_key_auth)

    assert len(errors) == 1  # the wrong secret, and only that
    assert peer.grants("client_credentials") >= 6  # 3 clients x (first token + renewal after 401)
    secrets = {
        "service-basic-secret",
        "service-post-secret",
        "wrong-secret-value",
        "PLAK-very-secret-key",
        *(t for t in seen_tokens if t),
        *(line for line in pem.splitlines() if "-----" not in line),
    }
    assert len(secrets) > 10
    texts = [record.getMessage() for record in caplog.records]
    texts += [repr(o) for o in objects] + [str(o) for o in objects]
    texts += [str(e) for e in errors] + [repr(e) for e in errors]
    assert any("token_endpoint request" in t for t in texts), "DEBUG records were not captured"
    for text in texts:
        for secret in secrets:
            assert secret not in text
