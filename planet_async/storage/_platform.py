"""The platform split for file storage: advisory locks and directory syncs.

POSIX uses `fcntl.flock`; Windows uses `msvcrt.locking` on the lock file's first byte. Both are
tried without blocking, so a waiting task polls from the event loop and stays cancellable.
"""

from __future__ import annotations

import os
import sys

__all__ = ["fsync_directory", "try_lock", "unlock"]

if sys.platform == "win32":
    import msvcrt

    def try_lock(fd: int) -> bool:
        os.lseek(fd, 0, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True

    def unlock(fd: int) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)

    def fsync_directory(path: str) -> None:
        # Windows cannot open a directory for fsync; os.replace is durable enough there.
        return None

else:
    import fcntl

    def try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)

    def fsync_directory(path: str) -> None:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
