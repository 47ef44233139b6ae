"""Access APIs as a service account; the session is kept in the application's own storage.

Any object with the four methods of `planet_async.Storage` can keep sessions; this one is the
SQLite storage in sqlite_storage.py, beside this file. Its token is reused until it expires, by
later runs and by other processes sharing the database, which renew it once between them.
"""

import os

import anyio
import httpx
from _settings import ALLOWED_ORIGINS, API_URL, M2M_ISSUER
from sqlite_storage import SQLiteStorage

from planet_async import PlanetAuth


async def main() -> None:
    auth = PlanetAuth.from_client_credentials(
        os.environ["PL_AUTH_CLIENT_ID"],
        os.environ["PL_AUTH_CLIENT_SECRET"],
        issuer=M2M_ISSUER,
        storage=SQLiteStorage("~/.cache/my-app/sessions.db"),
        session="my-service-account",
        allowed_origins=ALLOWED_ORIGINS,
    )
    async with httpx.AsyncClient(auth=auth) as client:
        response = await client.get(API_URL)
        print(response.status_code)


anyio.run(main)
