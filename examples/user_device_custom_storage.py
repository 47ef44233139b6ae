"""Log a user in with a device code; the session is kept in the application's own storage.

Any object with the four methods of `planet_async.Storage` can keep sessions; this one is the
SQLite storage in sqlite_storage.py, beside this file. Only the first run asks the user to log
in; later runs use or renew the saved session.
"""

import anyio
import httpx
from _settings import ALLOWED_ORIGINS, API_URL, CLIENT_ID, DEVICE_INTERVAL, ISSUER, SCOPES
from sqlite_storage import SQLiteStorage

from planet_async import PlanetAuth


async def main() -> None:
    auth = PlanetAuth.for_user(
        CLIENT_ID,
        issuer=ISSUER,
        scopes=SCOPES,
        storage=SQLiteStorage("~/.cache/my-app/sessions.db"),
        session="my-device-login",
        device_interval=DEVICE_INTERVAL,  # poll interval for servers that send none
        allowed_origins=ALLOWED_ORIGINS,
    )
    # A device login (the URL and code are printed), only if there is no session to renew.
    await auth.ensure_initialized(allow_open_browser=False)
    async with httpx.AsyncClient(auth=auth) as client:
        response = await client.get(API_URL)
        print(response.status_code)


anyio.run(main)
