"""Access APIs as a service account; the session is a `planet` CLI profile on disk.

The first run saves the client, secret included, to
~/.planet/my-service-account/auth_client.json (readable by you only), from PL_AUTH_CLIENT_ID and
PL_AUTH_CLIENT_SECRET. Its token is saved beside it in token.json and reused until it expires,
by later runs and by the CLI (`planet-async --profile my-service-account auth status`).
"""

import os

import anyio
import httpx
from _settings import ALLOWED_ORIGINS, API_URL, M2M_ISSUER

from planet_async import PlanetAuth
from planet_async.profiles import AuthClientConfig, PlanetHome

PROFILE = "my-service-account"


async def main() -> None:
    home = PlanetHome()  # ~/.planet.json and ~/.planet/
    if home.read_auth_client(PROFILE) is None:
        config = AuthClientConfig.m2m(
            os.environ["PL_AUTH_CLIENT_ID"],
            os.environ["PL_AUTH_CLIENT_SECRET"],
            auth_server=M2M_ISSUER,
        )
        home.write_auth_client(PROFILE, config)
    auth = PlanetAuth.from_profile(PROFILE, allowed_origins=ALLOWED_ORIGINS)
    async with httpx.AsyncClient(auth=auth) as client:
        response = await client.get(API_URL)
        print(response.status_code)


anyio.run(main)
