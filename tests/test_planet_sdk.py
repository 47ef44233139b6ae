"""The Planet SDK's session: `planet_session` recovers from a revoked token, `planet.Session`
alone does not. Runs the real `planet` package's DataClient against the real authorization server
and a local API that checks tokens and revokes one on demand (asyncio only: planet.Session runs
its own asyncio machinery)."""

from __future__ import annotations

from collections.abc import Iterator

import planet  # type: ignore[import-untyped]
import planet.exceptions  # type: ignore[import-untyped]
import pytest

from planet_async import PlanetAuth
from planet_async.planet_sdk import planet_session
from tests._api import API_KEY, RevocableApi
from tests._helpers import VerifyingApi
from tests._peer import Peer

pytestmark = pytest.mark.anyio

ASYNCIO_ONLY = pytest.mark.parametrize("anyio_backend", ["asyncio"])

ITEM = "/data/v1/item-types/PSScene/items/20250101_000000_00_0000"


@pytest.fixture(scope="module")
def module_api(peer_server: Peer) -> Iterator[RevocableApi]:
    api = RevocableApi(VerifyingApi(peer_server.issuer).verify)
    yield api
    api.close()


@pytest.fixture
def api(module_api: RevocableApi, peer: Peer) -> RevocableApi:
    module_api.reset()
    return module_api


def _auth(peer: Peer, api: RevocableApi) -> PlanetAuth:
    return PlanetAuth.from_client_credentials(
        "service-basic", "service-basic-secret", issuer=peer.issuer, allowed_origins=[api.origin]
    )


async def _get_item_twice_revoking_between(session: planet.Session, api: RevocableApi) -> dict:
    client = planet.DataClient(session, base_url=f"{api.origin}/data/v1")
    first = await client.get_item("PSScene", "20250101_000000_00_0000")
    api.revoke(first["authorization"])
    return await client.get_item("PSScene", "20250101_000000_00_0000")


@ASYNCIO_ONLY
async def test_planet_session_retries_the_call_that_got_a_401(
    peer: Peer, api: RevocableApi
) -> None:
    """After the API revokes the token, the same DataClient call succeeds: one renewal, one
    resend, and the SDK never sees the 401."""
    async with planet_session(_auth(peer, api)) as session:
        item = await _get_item_twice_revoking_between(session, api)
    assert item["path"] == ITEM
    assert api.statuses(ITEM) == [200, 401, 200]
    assert peer.grants("client_credentials") == 2


@ASYNCIO_ONLY
async def test_plain_planet_session_loses_the_401_handling(peer: Peer, api: RevocableApi) -> None:
    """Without the helper, the SDK's response hook raises on the 401 before the auth flow sees
    it (what `planet_session` exists for)."""
    async with planet.Session(auth=_auth(peer, api)) as session:
        with pytest.raises(planet.exceptions.InvalidAPIKey):
            await _get_item_twice_revoking_between(session, api)
    assert api.statuses(ITEM) == [200, 401]
    assert peer.grants("client_credentials") == 1


@ASYNCIO_ONLY
async def test_api_key_401_reaches_the_sdk_unchanged(api: RevocableApi) -> None:
    """An API key cannot be renewed: its 401 is the SDK's InvalidAPIKey, sent once."""
    auth = PlanetAuth.from_api_key("PLAKnot-the-key0123", allowed_origins=[api.origin])
    async with planet_session(auth) as session:
        client = planet.DataClient(session, base_url=f"{api.origin}/data/v1")
        with pytest.raises(planet.exceptions.InvalidAPIKey):
            await client.get_item("PSScene", "20250101_000000_00_0000")
    assert api.statuses(ITEM) == [401]
    good = PlanetAuth.from_api_key(API_KEY, allowed_origins=[api.origin])
    async with planet_session(good) as session:
        client = planet.DataClient(session, base_url=f"{api.origin}/data/v1")
        assert (await client.get_item("PSScene", "x"))["authorization"] == f"api-key {API_KEY}"


def test_sync_planet_client_recovers_too(peer: Peer, api: RevocableApi) -> None:
    """The SDK's sync client (`planet.Planet`, on a loop thread of its own) gets the same
    recovery."""
    session = planet_session(_auth(peer, api))
    pl = planet.Planet(session=session, base_url=api.origin)
    try:
        first = pl.data.get_item("PSScene", "20250101_000000_00_0000")
        api.revoke(first["authorization"])
        second = pl.data.get_item("PSScene", "20250101_000000_00_0000")
    finally:
        # planet.Planet has no close(); its session's client lives on the SDK's loop thread.
        session._call_sync(session.aclose())
    assert second["authorization"] != first["authorization"]
    assert api.statuses(ITEM) == [200, 401, 200]
    assert peer.grants("client_credentials") == 2
