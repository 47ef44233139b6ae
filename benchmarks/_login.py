"""First tokens from the test peer: a scripted device-code login, and a client credentials grant.

The device flow's user step runs against the peer's development login pages with a cookie jar,
as a person in a browser would: enter the code, confirm, sign in (any name and password), consent.
"""

from __future__ import annotations

import re
import time
from typing import Any

import anyio
import httpx

import planet_async as pa

from ._contenders import CLIENT_ID, CLIENT_SECRET

DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
USER_CLIENT_ID = "native-app"
USER_SCOPES = ("openid", "offline_access")

_FORM = re.compile(r"<form\b.*?</form>", re.DOTALL)
_ACTION = re.compile(r'\baction="([^"]+)"')
_HIDDEN = re.compile(r'<input[^>]*\bname="([^"]+)"[^>]*\bvalue="([^"]*)"')


def _submit_forms(client: httpx.Client, page: httpx.Response, user: str) -> httpx.Response:
    """Submit each page's form (with the sign-in filled in) until a page has none."""
    for _ in range(6):
        form = _FORM.search(page.text)
        if form is None:
            return page
        fields = dict(_HIDDEN.findall(form.group(0)))
        if 'name="login"' in form.group(0):
            fields.update(login=user, password="any")  # the peer's dev login takes any
        action = _ACTION.search(form.group(0))
        assert action is not None, "a login page form without an action"
        page = client.post(action.group(1), data=fields)
        page.raise_for_status()
    raise RuntimeError("the device login pages did not finish within six forms")


def device_login(issuer: str, *, user: str = "bench") -> tuple[dict[str, Any], float]:
    """Log `user` in with the device flow; return the token response and when it arrived."""
    with httpx.Client(base_url=issuer, follow_redirects=True, timeout=10, trust_env=False) as c:
        started = c.post(
            "/device/auth", data={"client_id": USER_CLIENT_ID, "scope": " ".join(USER_SCOPES)}
        )
        started.raise_for_status()
        device = started.json()
        entry = c.get("/device")
        xsrf = re.search(r'name="xsrf" value="([^"]+)"', entry.text)
        assert xsrf is not None, "the device code entry page has no xsrf field"
        confirm = c.post("/device", data={"xsrf": xsrf.group(1), "user_code": device["user_code"]})
        _submit_forms(c, confirm, user)
        token = c.post(
            "/token",
            data={
                "grant_type": DEVICE_CODE_GRANT,
                "device_code": device["device_code"],
                "client_id": USER_CLIENT_ID,
            },
        )
        received = time.time()
        token.raise_for_status()
        body: dict[str, Any] = token.json()
    if "refresh_token" not in body:
        raise RuntimeError("the device login gave no refresh token")
    return body, received


def client_credentials(issuer: str) -> tuple[dict[str, Any], float]:
    """One client credentials token for the benchmarks' M2M client, and when it arrived."""
    response = httpx.post(
        f"{issuer}/token",
        data={"grant_type": "client_credentials"},
        auth=(CLIENT_ID, CLIENT_SECRET),
        timeout=10,
        trust_env=False,
    )
    received = time.time()
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body, received


def planet_token_file(response: dict[str, Any], received: float) -> dict[str, Any]:
    """The `token.json` the `planet` CLI writes: the token response plus `_iat` and `_exp`."""
    return {
        **response,
        "_iat": int(received),
        "_exp": int(received + float(response["expires_in"])),
    }


async def device_login_saved(issuer: str, storage: pa.Storage, session: str) -> pa.TokenSet:
    """A device-code login over HTTP, saved to `storage` as `session` as a login saves it
    (the tests' own, in tests/_browser.py, imports Playwright, which the bench session does not
    install)."""
    response, received = await anyio.to_thread.run_sync(device_login, issuer)
    token = pa.TokenSet.from_response(response, received_at=received)
    grant = pa.RefreshTokenGrant(
        pa.AuthorizationServer(issuer), pa.PublicClient(client_id=USER_CLIENT_ID)
    )
    await pa.TokenManager(grant, storage=storage, session=session).set_token(token)
    return token
