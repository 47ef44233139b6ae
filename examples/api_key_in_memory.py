"""Access APIs with a Planet API key, taken from the environment (PL_AUTH_API_KEY).

The key is sent as `Authorization: api-key <key>`, to api.planet.com only (services.sentinel-hub.com
does not accept API keys). API keys are to be retired: new programs should use OAuth2.
"""

import os

import anyio
import httpx
from _settings import ALLOWED_ORIGINS, API_URL

from planet_async import PlanetAuth


async def main() -> None:
    auth = PlanetAuth.from_api_key(os.environ["PL_AUTH_API_KEY"], allowed_origins=ALLOWED_ORIGINS)
    async with httpx.AsyncClient(auth=auth) as client:
        response = await client.get(API_URL)
        print(response.status_code)


anyio.run(main)
