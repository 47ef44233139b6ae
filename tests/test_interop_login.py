"""User logins against the real authorization server, approved in a real headless Chromium.

The peer (oidc-provider on 127.0.0.1) signs the user in on its dev pages, which tests/_browser.py
clicks through in Chromium like a user would. The session is then used against a stand-in API
that verifies the peer's signatures, and renewed with its refresh token, which the peer rotates.
One Chromium serves the whole module; each login gets a fresh cookie jar.
"""

from __future__ import annotations

import base64
import concurrent.futures
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpx
import pytest

from planet_async import (
    USER_SCOPES,
    AuthorizationServer,
    DeviceAuthorization,
    DeviceFlowState,
    FileStorage,
    PlanetAuth,
    PublicClient,
    RefreshTokenGrant,
    TokenManager,
    UserLogin,
)
from tests._browser import STEP_TIMEOUT, Chromium, PageSeen, approve_device_over_http
from tests._helpers import API, FakeClock, VerifyingApi
from tests._peer import Peer

pytestmark = pytest.mark.anyio

CLIENT_ID = "native-app"
SCOPES = ("openid", "offline_access")  # the peer does not know `planet` (and ignores it)
DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
PENDING = f"{DEVICE_CODE_GRANT}:authorization_pending"  # a poll before the user approved
DEFAULT_TTL = 60  # the peer fixture's access token lifetime
LOGIN_TTL = 2  # short enough to wait for: the API still accepts such a token for >= 1 s


@pytest.fixture(scope="module")
def browser(chromium_path: str) -> Iterator[Chromium]:
    chromium = Chromium.launch(chromium_path)
    print(f"\nChromium launched in {chromium.launch_seconds:.2f} s")
    try:
        yield chromium
    finally:
        chromium.close()


def _session_with_clock(issuer: str, clock: FakeClock) -> PlanetAuth:
    """What `PlanetAuth.for_user` builds, with the manager's clock injected."""
    server = AuthorizationServer(issuer)
    client = PublicClient(client_id=CLIENT_ID)
    manager = TokenManager(RefreshTokenGrant(server, client), session=CLIENT_ID, clock=clock)
    auth = PlanetAuth(manager)
    auth.user = UserLogin(manager, server, client, scopes=SCOPES, device_interval=0.5)
    return auth


async def _seen(job: concurrent.futures.Future[PageSeen]) -> PageSeen:
    return await anyio.to_thread.run_sync(job.result, 2 * STEP_TIMEOUT)


def _claims(token: str) -> dict[str, Any]:
    """A JWT's payload, read without verifying it."""
    payload = token.split(".")[1]
    claims: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return claims


async def test_device_login_in_chromium_then_renewal(peer: Peer, browser: Chromium) -> None:
    """A device login approved in Chromium gives a session the API accepts; at expiry it renews
    once with the refresh token, keeps the rotated one, and the API accepts the new token."""
    clock = FakeClock(start=time.time())
    auth = _session_with_clock(peer.issuer, clock)
    assert auth.manager is not None
    api = VerifyingApi(peer.issuer)
    approvals: list[concurrent.futures.Future[PageSeen]] = []

    def show(pending: DeviceAuthorization) -> None:
        assert pending.verification_uri_complete is not None
        approvals.append(browser.approve_device(pending.verification_uri_complete, login="alice"))

    started = time.perf_counter()
    login = await auth.login_with_device(show=show)
    wall = time.perf_counter() - started
    assert len(approvals) == 1
    seen = await _seen(approvals[0])
    assert seen.title == "Sign-in Success"
    assert login.refresh_token is not None
    assert _claims(login.access_token.get_secret_value())["sub"] == "alice"

    async with httpx.AsyncClient(auth=auth, transport=httpx.MockTransport(api.handler)) as client:
        for _ in range(3):
            assert (await client.get(f"{API}/data/v1/searches")).status_code == 200
        assert peer.grants("refresh_token") == 0
        clock.advance(DEFAULT_TTL + 1)  # past expiry as far as the manager knows
        for _ in range(3):
            assert (await client.get(f"{API}/data/v1/searches")).status_code == 200

    renewed = await auth.manager.token()
    assert peer.grants(DEVICE_CODE_GRANT) == 1
    assert peer.grants("refresh_token") == 1
    assert api.tokens == {
        login.access_token.get_secret_value(),
        renewed.access_token.get_secret_value(),
    }
    assert api.rejected == 0
    assert renewed.refresh_token is not None
    assert not renewed.same_refresh_token(login)
    stored = await auth.manager.storage.load(CLIENT_ID)
    assert stored is not None
    assert stored.same_refresh_token(renewed)
    assert set(peer.errors()) <= {PENDING}  # only polls before the user had approved
    print(
        f"\ndevice login: {wall:.2f} s wall (user's part in Chromium {seen.seconds:.2f} s, "
        f"polling every 0.5 s)"
    )


async def test_device_flow_step_by_step(peer: Peer, browser: Chromium) -> None:
    """The device flow's steps move it NEW -> AWAITING_USER -> COMPLETE, and `save` makes the
    result the session's (not initialized before, initialized and accepted after)."""
    auth = PlanetAuth.for_user(CLIENT_ID, issuer=peer.issuer, scopes=SCOPES, device_interval=0.5)
    assert auth.user is not None
    api = VerifyingApi(peer.issuer)
    flow = auth.user.device_flow()
    states = [flow.state]

    pending = await flow.start()
    states.append(flow.state)
    assert pending.verification_uri_complete is not None
    assert pending.user_code in pending.verification_uri_complete
    approval = browser.approve_device(pending.verification_uri_complete, login="bob")
    token = await flow.complete(pending)
    states.append(flow.state)
    assert states == [
        DeviceFlowState.NEW,
        DeviceFlowState.AWAITING_USER,
        DeviceFlowState.COMPLETE,
    ]
    assert (await _seen(approval)).title == "Sign-in Success"

    assert not await auth.is_initialized()
    await auth.user.save(token)
    assert await auth.is_initialized()
    async with httpx.AsyncClient(auth=auth, transport=httpx.MockTransport(api.handler)) as client:
        assert (await client.get(f"{API}/data/v1/searches")).status_code == 200
    assert api.tokens == {token.access_token.get_secret_value()}
    assert _claims(token.access_token.get_secret_value())["sub"] == "bob"
    assert peer.grants(DEVICE_CODE_GRANT) == 1
    assert peer.grants("refresh_token") == 0


async def test_browser_login_in_chromium_then_silent_renewal_from_storage(
    peer: Peer, browser: Chromium, tmp_path: Path
) -> None:
    """A browser login in Chromium comes back to the loopback listener, which shows success; the
    session is saved with its refresh token, and a new PlanetAuth over the same files uses it
    without a login and renews it silently once its access token has expired."""
    peer.set_access_token_ttl(LOGIN_TTL)
    root = tmp_path / "planet"
    auth = PlanetAuth.for_user(
        CLIENT_ID, issuer=peer.issuer, scopes=SCOPES, storage=FileStorage(root), session="user"
    )
    api = VerifyingApi(peer.issuer)
    logins: list[concurrent.futures.Future[PageSeen]] = []

    def open_browser(url: str) -> bool:
        logins.append(browser.log_in(url, login="carol"))
        return True  # at once: the listener must be serving while the browser comes back

    started = time.perf_counter()
    login = await auth.login_with_browser(open_browser=open_browser, timeout=2 * STEP_TIMEOUT)
    wall = time.perf_counter() - started
    async with httpx.AsyncClient(auth=auth, transport=httpx.MockTransport(api.handler)) as client:
        assert (await client.get(f"{API}/data/v1/searches")).status_code == 200  # token is fresh
    assert len(logins) == 1
    seen = await _seen(logins[0])
    callback = urlsplit(seen.url)
    assert (callback.hostname, callback.path) == ("127.0.0.1", "/callback")
    assert seen.title == "Logged in"
    assert "You can close this tab" in seen.text
    assert login.refresh_token is not None
    assert _claims(login.access_token.get_secret_value())["sub"] == "carol"

    # The program ends. Its access token, saved in the file, expires on the real clock: nothing
    # else can age a token another PlanetAuth will read from disk.
    peer.set_access_token_ttl(DEFAULT_TTL)
    stored = await FileStorage(root).load("user")
    assert stored is not None
    assert stored.same_refresh_token(login)
    assert stored.expires_at is not None
    await anyio.sleep(max(0.0, stored.expires_at - time.time()))

    again = PlanetAuth.for_user(
        CLIENT_ID, issuer=peer.issuer, scopes=SCOPES, storage=FileStorage(root), session="user"
    )
    assert await again.is_initialized()

    def must_not_open(url: str) -> bool:
        raise AssertionError("the stored refresh token should have been enough")

    await again.ensure_initialized(open_browser=must_not_open)
    async with httpx.AsyncClient(auth=again, transport=httpx.MockTransport(api.handler)) as client:
        assert (await client.get(f"{API}/data/v1/searches")).status_code == 200

    newest = await FileStorage(root).load("user")
    assert newest is not None
    assert newest.refresh_token is not None
    assert not newest.same_refresh_token(login)  # rotated, and the new one saved
    assert api.tokens == {
        login.access_token.get_secret_value(),
        newest.access_token.get_secret_value(),
    }
    assert api.rejected == 0
    assert peer.grants("authorization_code") == 1
    assert peer.grants("refresh_token") == 1
    assert peer.errors() == {}
    print(
        f"\nbrowser login: {wall:.2f} s wall (user's part in Chromium {seen.seconds:.2f} s, "
        f"from the authorization URL to the listener's page)"
    )


async def test_default_scopes_work_with_a_server_that_does_not_know_planet(peer: Peer) -> None:
    """The default scopes (planet, offline_access) get a renewable session from a server that
    does not define `planet`: it ignores the unknown scope rather than refusing the login."""
    auth = PlanetAuth.for_user(CLIENT_ID, issuer=peer.issuer, device_interval=0.1)
    assert auth.user is not None
    assert auth.manager is not None
    flow = auth.user.device_flow()
    assert flow.scopes == USER_SCOPES
    pending = await flow.start()
    assert pending.verification_uri_complete is not None
    await anyio.to_thread.run_sync(approve_device_over_http, pending.verification_uri_complete)
    token = await flow.complete(pending)
    assert token.refresh_token is not None
    await auth.user.save(token)

    renewed = await auth.manager.renew()
    assert not renewed.same_access_token(token)
    assert not renewed.same_refresh_token(token)
    assert peer.grants(DEVICE_CODE_GRANT) == 1
    assert peer.grants("refresh_token") == 1
    assert peer.errors() == {}
