"""Access APIs with a Planet API key kept as a `planet` CLI profile on disk.

The first run saves the key from PL_AUTH_API_KEY to ~/.planet/my-api-key/auth_client.json
(readable by you only); later runs, and the CLI (`planet-async --profile my-api-key auth
status`), find it there.
"""

import os

import anyio
import httpx
from _settings import ALLOWED_ORIGINS, API_URL

from planet_async import PlanetAuth
from planet_async.profiles import AuthClientConfig, PlanetHome

PROFILE = "my-api-key"


async def main() -> None:
    home = PlanetHome()  # ~/.planet.json and ~/.planet/
    if home.read_auth_client(PROFILE) is None:
        config = AuthClientConfig.static_api_key(os.environ["PL_AUTH_API_KEY"])
        home.write_auth_client(PROFILE, config)
    auth = PlanetAuth.from_profile(PROFILE, allowed_origins=ALLOWED_ORIGINS)
    async with httpx.AsyncClient(auth=auth) as client:
        response = await client.get(API_URL)
        print(response.status_code)


anyio.run(main)
