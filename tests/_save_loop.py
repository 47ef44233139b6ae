"""A process for test_crash_safety that forks savers for the test to kill with SIGKILL.

Run as ``python -m tests._save_loop ROOT``. It imports everything once; then for each line
``go RUN`` on stdin it forks a child that prints ``started PID`` and saves token sets into ROOT
with FileStorage as fast as it can, forever. When the test has killed that child, this process
reaps it and prints ``reaped PID STATUS``. Forking spares each saver the interpreter's start-up,
so the test can afford many kills.
"""

from __future__ import annotations

import os
import sys

import anyio
from pydantic import SecretStr

from planet_async import FileStorage, TokenSet

# Payload sizes, cycled, so that some writes take a while and sizes change from one to the next.
_PAD_SIZES = (0, 700, 40_000, 300_000, 1_200_000, 5)


def written_token(run: int, i: int) -> TokenSet:
    """The `i`-th token set the saver of `run` writes; its access token is ``at-RUN-I``."""
    return TokenSet(
        access_token=SecretStr(f"at-{run}-{i}"),
        issued_at=1_800_000_000 + i,
        expires_at=1_800_003_600 + i,
        refresh_token=SecretStr(f"rt-{run}-{i}"),
        scope="openid",
        extra={"pad": chr(ord("a") + i % 26) * _PAD_SIZES[(run + i) % len(_PAD_SIZES)]},
    )


async def _save_forever(root: str, run: int) -> None:
    storage = FileStorage(root)
    print(f"started {os.getpid()}", flush=True)
    i = 0
    while True:
        await storage.save("default", written_token(run, i))
        i += 1


def main() -> None:
    root = sys.argv[1]
    while line := sys.stdin.readline():
        run = int(line.split()[1])
        pid = os.fork()
        if pid == 0:
            try:
                anyio.run(_save_forever, root, run)
            finally:
                os._exit(1)
        _, status = os.waitpid(pid, 0)
        print(f"reaped {pid} {status}", flush=True)


if __name__ == "__main__":
    main()
