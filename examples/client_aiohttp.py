"""A service account's requests through aiohttp: the session as a client middleware.

aiohttp suits jobs with hundreds of concurrent downloads (see "Which client?" in the README).
The middleware has the same constructors as `PlanetAuth`; it sets the header on Planet's origins
only, on every hop of a redirect, and renews and resends once when the API answers 401.
Needs the aiohttp extra (``python3 -m pip install '.[aiohttp]'`` in a clone of the repository);
aiohttp runs on asyncio.
"""

import asyncio
import os

import aiohttp
from _settings import ALLOWED_ORIGINS, API_URL, M2M_ISSUER

from planet_async.aiohttp import PlanetAuthMiddleware


async def main() -> None:
    auth = PlanetAuthMiddleware.from_client_credentials(
        os.environ["PL_AUTH_CLIENT_ID"],
        os.environ["PL_AUTH_CLIENT_SECRET"],
        issuer=M2M_ISSUER,
        allowed_origins=ALLOWED_ORIGINS,
    )
    async with (
        auth.manager,
        aiohttp.ClientSession(middlewares=(auth,)) as session,
        session.get(API_URL) as response,
    ):
        print(response.status)


asyncio.run(main())
