"""Access APIs as a service account (OAuth2 client credentials); the session is in memory.

A token is fetched at the first request and renewed ahead of its expiry, which suits a process
that runs for hours. Programs that run often and briefly should save the session instead
(m2m_on_disk_cli_shared.py), or the authorization server may throttle them.
"""

import os

import anyio
import httpx
from _settings import ALLOWED_ORIGINS, API_URL, M2M_ISSUER

from planet_async import PlanetAuth


async def main() -> None:
    auth = PlanetAuth.from_client_credentials(
        os.environ["PL_AUTH_CLIENT_ID"],
        os.environ["PL_AUTH_CLIENT_SECRET"],
        issuer=M2M_ISSUER,
        allowed_origins=ALLOWED_ORIGINS,
    )
    async with httpx.AsyncClient(auth=auth) as client:
        response = await client.get(API_URL)
        print(response.status_code)


anyio.run(main)
