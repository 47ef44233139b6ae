"""Log a user in with the local browser; the session lives in memory only.

`login_with_browser` opens the default browser (Python's `webbrowser`, which honours $BROWSER) at
the authorization server, and takes the redirect back on a one-shot listener on 127.0.0.1: the
OAuth2 authorization code flow with PKCE. Nothing is saved, so every run logs in again.
"""

import anyio
import httpx
from _settings import ALLOWED_ORIGINS, API_URL, CLIENT_ID, ISSUER, SCOPES

from planet_async import PlanetAuth


async def main() -> None:
    auth = PlanetAuth.for_user(
        CLIENT_ID, issuer=ISSUER, scopes=SCOPES, allowed_origins=ALLOWED_ORIGINS
    )
    await auth.login_with_browser()
    async with httpx.AsyncClient(auth=auth) as client:
        response = await client.get(API_URL)
        print(response.status_code)


anyio.run(main)
