"""A process that takes a session's lease in PostgreSQL, then saves when told to.

It stands in for a worker that stalls in the middle of a renewal, for
tests/test_postgres_storage.py::

    python -m tests._postgres_holder URL SESSION LEASE

It prints ``held`` once it holds the lease (which it keeps extending while it runs), waits for a
line on stdin, then saves a token whose access token is ``stale`` under the lease and prints
``saved``, or ``LockLost`` when the save was refused.
"""

from __future__ import annotations

import sys

import anyio

from planet_async import LockLost, PostgresStorage, TokenSet


async def _hold(url: str, session: str, lease: float) -> None:
    storage = PostgresStorage(url, lease=lease)
    async with storage, storage.lock(session):
        print("held", flush=True)
        await anyio.to_thread.run_sync(sys.stdin.readline)
        token = TokenSet(access_token="stale", issued_at=100, expires_at=200)
        try:
            await storage.save(session, token)
        except LockLost:
            print("LockLost", flush=True)
        else:
            print("saved", flush=True)


def main() -> None:
    url, session, lease = sys.argv[1:4]
    anyio.run(_hold, url, session, float(lease))


if __name__ == "__main__":
    main()
