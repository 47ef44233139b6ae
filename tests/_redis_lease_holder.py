"""A process that takes a session's lease in Redis and holds it until it is killed.

It stands in for a worker killed in the middle of a renewal, for tests/test_redis_failures.py::

    python -m tests._redis_lease_holder URL SESSION LEASE

It prints ``held`` once it holds the lease (which it keeps extending, as a live holder does), and
then waits forever.
"""

from __future__ import annotations

import sys

import anyio

from planet_async import RedisStorage


async def _hold(url: str, session: str, lease: float) -> None:
    async with RedisStorage(url, lease=lease).lock(session):
        print("held", flush=True)
        await anyio.sleep_forever()


def main() -> None:
    url, session, lease = sys.argv[1:4]
    anyio.run(_hold, url, session, float(lease))


if __name__ == "__main__":
    main()
