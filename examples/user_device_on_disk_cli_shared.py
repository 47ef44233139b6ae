"""Log a user in with a device code; the session is a `planet` CLI profile on disk.

The client is saved to ~/.planet/my-device-app/auth_client.json and the session to
~/.planet/my-device-app/token.json, where the CLI finds them too
(`planet-async --profile my-device-app auth status`). Only the first run asks the user to log
in; later runs use or renew the saved session.
"""

import anyio
import httpx
from _settings import ALLOWED_ORIGINS, API_URL, CLIENT_ID, ISSUER, SCOPES

from planet_async import PlanetAuth
from planet_async.profiles import AuthClientConfig, PlanetHome

PROFILE = "my-device-app"


async def main() -> None:
    home = PlanetHome()  # ~/.planet.json and ~/.planet/
    if home.read_auth_client(PROFILE) is None:
        home.write_auth_client(
            PROFILE, AuthClientConfig.user(CLIENT_ID, auth_server=ISSUER, scopes=SCOPES)
        )
    auth = PlanetAuth.from_profile(PROFILE, allowed_origins=ALLOWED_ORIGINS)
    # A device login (the URL and code are printed), only if there is no session to renew.
    await auth.ensure_initialized(allow_open_browser=False)
    async with httpx.AsyncClient(auth=auth) as client:
        response = await client.get(API_URL)
        print(response.status_code)


anyio.run(main)
