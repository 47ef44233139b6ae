"""A service account's requests through httpx2, httpx's maintained continuation.

`planet_async.httpx2.PlanetAuth` is the twin of `planet_async.PlanetAuth` for httpx2's own types,
with the same constructors and guarantees. Needs the httpx2 extra (``python3 -m pip install
'.[httpx2]'`` in a clone of the repository).
"""

import os

import anyio
import httpx2
from _settings import ALLOWED_ORIGINS, API_URL, M2M_ISSUER

from planet_async.httpx2 import PlanetAuth


async def main() -> None:
    auth = PlanetAuth.from_client_credentials(
        os.environ["PL_AUTH_CLIENT_ID"],
        os.environ["PL_AUTH_CLIENT_SECRET"],
        issuer=M2M_ISSUER,
        allowed_origins=ALLOWED_ORIGINS,
    )
    async with httpx2.AsyncClient(auth=auth) as client:
        response = await client.get(API_URL)
        print(response.status_code)


anyio.run(main)
