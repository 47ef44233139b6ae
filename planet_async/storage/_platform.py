"""The platform split for file storage: advisory locks, directory syncs, opening without links.

POSIX uses `fcntl.flock`; Windows uses `msvcrt.locking` on the lock file's first byte. Both are
tried without blocking, so a waiting task polls from the event loop and stays cancellable.
POSIX refuses to open a symbolic link with `O_NOFOLLOW`; Windows has no such flag, so the path is
checked just before it is opened.
"""

from __future__ import annotations

import errno
import os
import sys

__all__ = ["fsync_directory", "open_no_follow", "try_lock", "unlock"]

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

    def open_no_follow(path: str, flags: int, mode: int) -> int:
        """`os.open`, failing with ELOOP when `path` is a symbolic link."""
        if os.path.islink(path):
            raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path)
        return os.open(path, flags, mode)

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

    def open_no_follow(path: str, flags: int, mode: int) -> int:
        """`os.open`, failing (ELOOP on Linux and macOS) when `path` is a symbolic link."""
        return os.open(path, flags | os.O_NOFOLLOW, mode)
