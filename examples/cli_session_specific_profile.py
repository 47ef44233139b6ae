"""Use one named session of the `planet` CLI, whichever profile is the default.

Create the profile once in a shell, e.g. `planet-async auth login --profile my-cli-profile`; it
lives in ~/.planet/my-cli-profile/, shared with the CLI.
"""

import anyio
import httpx
from _settings import ALLOWED_ORIGINS, API_URL

from planet_async import PlanetAuth

PROFILE = "my-cli-profile"


async def main() -> None:
    auth = PlanetAuth.from_profile(PROFILE, allowed_origins=ALLOWED_ORIGINS)
    async with httpx.AsyncClient(auth=auth) as client:
        response = await client.get(API_URL)
        print(response.status_code)


anyio.run(main)
