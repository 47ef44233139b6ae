"""Access APIs with a Planet API key from the file older versions of the SDK wrote.

That file is ~/.planet.json holding `{"key": "PLAK..."}`.
"""

import anyio
import httpx
from _settings import ALLOWED_ORIGINS, API_URL

from planet_async import PlanetAuth


async def main() -> None:
    auth = PlanetAuth.from_api_key_file("~/.planet.json", allowed_origins=ALLOWED_ORIGINS)
    async with httpx.AsyncClient(auth=auth) as client:
        response = await client.get(API_URL)
        print(response.status_code)


anyio.run(main)
