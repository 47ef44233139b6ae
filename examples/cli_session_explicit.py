"""Use the session the `planet` CLI manages, saying which one, and stop if nobody logged in.

The session is chosen as the CLI chooses it: PL_AUTH_PROFILE, PL_AUTH_CLIENT_ID with
PL_AUTH_CLIENT_SECRET, or PL_AUTH_API_KEY from the environment, then the same keys in
~/.planet.json, then the built-in `planet-user` profile.
"""

import sys

import anyio
import httpx
from _settings import ALLOWED_ORIGINS, API_URL

from planet_async import PlanetAuth


async def main() -> None:
    auth = PlanetAuth.from_user_default_session(allowed_origins=ALLOWED_ORIGINS)
    if auth.source is not None:
        print(f"Using {auth.source.describe()}")
    if not await auth.is_initialized():
        sys.exit("Not logged in: run `planet auth login` first.")
    async with httpx.AsyncClient(auth=auth) as client:
        response = await client.get(API_URL)
        print(response.status_code)


anyio.run(main)
