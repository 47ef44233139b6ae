"""A program whose session directory it cannot write, for tests/test_readonly_storage.py.

The test runs it where file permissions bind it (root writes anywhere), from the repository root::

    python -m tests._readonly_worker BACKEND CASE ISSUER ROOT SESSION

and reads one JSON line from its stdout. Cases:

- ``m2m`` and ``refresh``: the session's directory is read-only and has no lock file; ask for a
  header once, with a client credentials or a refresh token grant.
- ``user``: the user session's directory is read-only but its lock file exists, so the lock works
  and every save fails. Renew twice (each time the peer rotates the refresh token), make the
  directory writable again (the program owns it), and renew a third time, which saves.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import anyio

from planet_async import (
    AuthorizationServer,
    ClientCredentialsGrant,
    ClientSecretBasic,
    FileStorage,
    PlanetAuthError,
    PublicClient,
    RefreshTokenGrant,
    TokenManager,
)


async def _header(issuer: str, root: Path, session: str, grant_type: str) -> dict[str, Any]:
    server = AuthorizationServer(issuer)
    if grant_type == "m2m":
        client = ClientSecretBasic(client_id="service-basic", client_secret="service-basic-secret")
        grant: ClientCredentialsGrant | RefreshTokenGrant = ClientCredentialsGrant(server, client)
    else:
        grant = RefreshTokenGrant(server, PublicClient(client_id="native-app"))
    manager = TokenManager(grant, storage=FileStorage(root), session=session)
    try:
        header = await manager.header()
    except PlanetAuthError as exc:
        return {"error": type(exc).__name__, "message": str(exc), "renewals": manager.renewals}
    return {"header": header, "renewals": manager.renewals}


async def _user(issuer: str, root: Path, session: str) -> dict[str, Any]:
    grant = RefreshTokenGrant(AuthorizationServer(issuer), PublicClient(client_id="native-app"))
    storage = FileStorage(root)
    manager = TokenManager(grant, storage=storage, session=session)
    stored: list[str | None] = []
    headers = []
    for attempt in range(3):
        if attempt == 2:
            os.chmod(storage.session_dir(session), 0o700)
        token = await manager.renew()
        headers.append(await manager.header())
        assert headers[-1] == f"Bearer {token.access_token.get_secret_value()}"
        on_disk = await storage.load(session)
        stored.append(on_disk.access_token.get_secret_value() if on_disk else None)
    return {"headers": headers, "stored": stored, "renewals": manager.renewals}


def main() -> None:
    backend, case, issuer, root, session = sys.argv[1:6]
    if case == "user":
        result = anyio.run(_user, issuer, Path(root), session, backend=backend)
    else:
        result = anyio.run(_header, issuer, Path(root), session, case, backend=backend)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
