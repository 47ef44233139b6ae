"""The Planet SDK's clients with a planet_async session, recovering from a revoked token.

`planet_session` builds the SDK's `planet.Session` so that a 401 from Planet's API renews the
token and retries the call once; a plain ``planet.Session(auth=...)`` would raise
`InvalidAPIKey` until the token's normal renewal. Needs the ``planet`` package.
"""

import asyncio
import os

from _settings import ALLOWED_ORIGINS, API_URL, M2M_ISSUER

from planet_async import PlanetAuth
from planet_async.planet_sdk import planet_session


async def main() -> None:
    auth = PlanetAuth.from_client_credentials(
        os.environ["PL_AUTH_CLIENT_ID"],
        os.environ["PL_AUTH_CLIENT_SECRET"],
        issuer=M2M_ISSUER,
        allowed_origins=ALLOWED_ORIGINS,
    )
    async with planet_session(auth) as session:
        # Any SDK client takes the session, e.g. planet.DataClient(session).
        response = await session.request(method="GET", url=API_URL)
        print(response.status_code)


asyncio.run(main())
