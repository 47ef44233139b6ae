"""Log users of the peer's confidential `web-app` in without a browser, for pool tests.

The authorization code flow runs as a web service runs it (`AuthorizationCodeFlow` with
`ClientSecretBasic`); the user's part (sign in, consent) is posted over plain HTTP to the peer's dev
pages, and the redirect to ``https://app.example/callback`` is caught, never fetched.
"""

from __future__ import annotations

from urllib.parse import urljoin

import anyio
import httpx
from pydantic import SecretStr

from planet_async import AuthorizationCodeFlow, AuthorizationServer, ClientSecretBasic, TokenSet
from tests._browser import PASSWORD, STEP_TIMEOUT, _Forms

WEB_APP = "web-app"
WEB_APP_SECRET = "web-app-secret"
REDIRECT_URI = "https://app.example/callback"


def web_client() -> ClientSecretBasic:
    return ClientSecretBasic(client_id=WEB_APP, client_secret=SecretStr(WEB_APP_SECRET))


def _user_part(authorization_url: str, login: str, max_steps: int = 12) -> str:
    """Sign in as `login` and consent; returns the URL the browser was sent back to."""
    with httpx.Client(timeout=STEP_TIMEOUT, trust_env=False) as http:
        response = http.get(authorization_url)
        for _ in range(max_steps):
            if response.is_redirect:
                location = urljoin(str(response.url), response.headers["location"])
                if location.startswith(REDIRECT_URI):
                    return location
                response = http.get(location)
                continue
            response.raise_for_status()
            parser = _Forms()
            parser.feed(response.text)
            assert len(parser.forms) == 1, f"expected one form at {response.url}"
            form = parser.forms[0]
            data = dict(form.fields)
            if "login" in data:
                data.update(login=login, password=PASSWORD)
            response = http.post(urljoin(str(response.url), form.action), data=data)
    raise AssertionError(f"no redirect to {REDIRECT_URI} after {max_steps} steps")


async def web_login(issuer: str, login: str, server: AuthorizationServer | None = None) -> TokenSet:
    """A token set of `web-app` for the peer user `login` (its `sub`), with a refresh token.

    Logging many users in, pass one `server` for all of them: it fetches the provider's metadata
    and keys once instead of once per login."""
    flow = AuthorizationCodeFlow(
        server or AuthorizationServer(issuer),
        web_client(),
        redirect_uri=REDIRECT_URI,
        scopes=("openid", "offline_access"),
    )
    pending = await flow.start()
    url = await anyio.to_thread.run_sync(_user_part, pending.authorization_url, login)
    token = await flow.finish(pending, url)
    assert token.refresh_token is not None
    return token
