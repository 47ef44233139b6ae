"""Log a user in with a device code, from a machine without a browser; the session is in memory.

`login_with_device` prints a URL and a code; the user opens the URL on any device, signs in and
enters the code, while the program polls the authorization server until the login completes
(the OAuth2 device authorization grant). Nothing is saved, so every run logs in again.
"""

import anyio
import httpx
from _settings import ALLOWED_ORIGINS, API_URL, CLIENT_ID, DEVICE_INTERVAL, ISSUER, SCOPES

from planet_async import PlanetAuth


async def main() -> None:
    auth = PlanetAuth.for_user(
        CLIENT_ID,
        issuer=ISSUER,
        scopes=SCOPES,
        device_interval=DEVICE_INTERVAL,  # poll interval for servers that send none
        allowed_origins=ALLOWED_ORIGINS,
    )
    await auth.login_with_device()
    async with httpx.AsyncClient(auth=auth) as client:
        response = await client.get(API_URL)
        print(response.status_code)


anyio.run(main)
