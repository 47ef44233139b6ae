"""Log a user in with the local browser; the session is a `planet` CLI profile on disk.

The client is saved to ~/.planet/my-browser-app/auth_client.json and the session to
~/.planet/my-browser-app/token.json, where the CLI finds them too
(`planet-async --profile my-browser-app auth status`). Only the first run opens the browser;
later runs use or renew the saved session.
"""

import anyio
import httpx
from _settings import ALLOWED_ORIGINS, API_URL, CLIENT_ID, ISSUER, SCOPES

from planet_async import PlanetAuth
from planet_async.profiles import AuthClientConfig, PlanetHome

PROFILE = "my-browser-app"


async def main() -> None:
    home = PlanetHome()  # ~/.planet.json and ~/.planet/
    if home.read_auth_client(PROFILE) is None:
        redirect_uri = "http://127.0.0.1/callback"  # as registered; any port on loopback
        config = AuthClientConfig.user(
            CLIENT_ID, auth_server=ISSUER, scopes=SCOPES, redirect_uri=redirect_uri
        )
        home.write_auth_client(PROFILE, config)
    auth = PlanetAuth.from_profile(PROFILE, allowed_origins=ALLOWED_ORIGINS)
    await auth.ensure_initialized()  # a browser login, only if there is no session to renew
    async with httpx.AsyncClient(auth=auth) as client:
        response = await client.get(API_URL)
        print(response.status_code)


anyio.run(main)
