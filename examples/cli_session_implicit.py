"""Use the session the `planet` CLI manages: whatever `planet auth login` set up.

Log in once in a shell (`planet auth login`, or `planet-async auth login`); programs like this
one then share that session with the CLI through ~/.planet.json and ~/.planet/: a token renewed
by either is saved for both.
"""

import anyio
import httpx
from _settings import ALLOWED_ORIGINS, API_URL

from planet_async import PlanetAuth


async def main() -> None:
    auth = PlanetAuth.from_user_default_session(allowed_origins=ALLOWED_ORIGINS)
    async with httpx.AsyncClient(auth=auth) as client:
        response = await client.get(API_URL)
        print(response.status_code)


anyio.run(main)
