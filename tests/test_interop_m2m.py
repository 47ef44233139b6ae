"""Client credentials against the real authorization server (oidc-provider on 127.0.0.1)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from planet_async import (
    AuthorizationServer,
    ClientCredentialsGrant,
    ClientSecretBasic,
    ClientSecretPost,
    InvalidClientError,
    PlanetAuth,
    PrivateKeyJWT,
    TokenManager,
)
from tests._helpers import API, FakeClock, VerifyingApi
from tests._peer import Peer

pytestmark = pytest.mark.anyio


def _clients(keys: dict[str, Path]) -> dict[str, object]:
    return {
        "client_secret_basic": ClientSecretBasic(
            client_id="service-basic", client_secret="service-basic-secret"
        ),
        "client_secret_post": ClientSecretPost(
            client_id="service-post", client_secret="service-post-secret"
        ),
        "private_key_jwt RS256": PrivateKeyJWT(
            client_id="service-pkjwt", private_key=keys["rsa-1"].read_text(), key_id="rsa-1"
        ),
        "private_key_jwt ES256": PrivateKeyJWT(
            client_id="service-pkjwt", private_key=keys["ec-1"].read_text(), key_id="ec-1"
        ),
    }


@pytest.mark.parametrize(
    "method",
    [
        "client_secret_basic",
        "client_secret_post",
        "private_key_jwt RS256",
        "private_key_jwt ES256",
    ],
)
async def test_obtain_use_and_renew(peer: Peer, client_keys, method: str) -> None:
    """Each client authentication method gets a token the API accepts, and renews at expiry."""
    _, keys = client_keys
    clock = FakeClock(start=__import__("time").time())
    grant = ClientCredentialsGrant(AuthorizationServer(peer.issuer), _clients(keys)[method])
    manager = TokenManager(grant, clock=clock)
    api = VerifyingApi(peer.issuer)
    auth = PlanetAuth(manager)
    async with httpx.AsyncClient(auth=auth, transport=httpx.MockTransport(api.handler)) as client:
        for _ in range(5):
            assert (await client.get(f"{API}/data/v1/searches")).status_code == 200
        assert peer.grants("client_credentials") == 1
        clock.advance(61)  # past expiry as far as the manager knows: it must renew
        assert (await client.get(f"{API}/data/v1/searches")).status_code == 200
    assert peer.grants("client_credentials") == 2
    assert len(api.tokens) == 2
    assert api.rejected == 0


async def test_wrong_secret_is_a_typed_error(peer: Peer) -> None:
    """A refused client secret raises InvalidClientError naming the client, never the secret."""
    auth = PlanetAuth.from_client_credentials("service-basic", "not-the-secret", issuer=peer.issuer)
    async with httpx.AsyncClient(
        auth=auth, transport=httpx.MockTransport(lambda r: httpx.Response(200))
    ) as client:
        with pytest.raises(InvalidClientError) as info:
            await client.get(f"{API}/data/v1/searches")
    assert info.value.error == "invalid_client"
    assert "service-basic" in str(info.value)
    assert "not-the-secret" not in str(info.value)
    assert peer.errors() == {"client_credentials:invalid_client": 1}


async def test_discovery_finds_the_token_endpoint(peer: Peer) -> None:
    """Endpoints come from the issuer's OpenID configuration."""
    server = AuthorizationServer(peer.issuer)
    assert await server.endpoint("token_endpoint") == f"{peer.issuer}/token"
    metadata = await server.metadata()
    assert metadata.issuer == peer.issuer
