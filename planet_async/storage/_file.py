"""Storage in files: atomic, private, locked across processes, and off the event loop."""

from __future__ import annotations

import errno
import logging
import os
import time
import unicodedata
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio

from .._errors import ConfigurationError, StorageError
from .._models import TokenSet
from ._atomic import make_private_dirs, refuse_symlink, write_json_atomic
from ._generations import may_replace
from ._platform import open_no_follow, try_lock, unlock
from ._stored import json_object, stored_token

__all__ = ["FileStorage", "name_problem"]

logger = logging.getLogger(__name__)

_TOKEN_FILE = "token.json"
_LOCK_FILE = "token.json.lock"
_MAX_NAME_BYTES = 255  # the longest file name Linux, macOS and Windows file systems take


def name_problem(name: str) -> str | None:
    """Why `name` cannot name a session's directory, or None when it can."""
    if not name or name in {".", ".."}:
        return "it is empty" if not name else "it is . or .."
    if "/" in name or "\\" in name or os.sep in name:
        return "it contains a path separator"
    if any(unicodedata.category(char) == "Cc" for char in name):
        return "it contains a control character (NUL, newline, ...)"
    try:
        encoded = name.encode()
    except UnicodeEncodeError:
        return "it is not valid Unicode text"
    if len(encoded) > _MAX_NAME_BYTES:
        return f"it is longer than {_MAX_NAME_BYTES} bytes"
    return None


def _identity(status: os.stat_result) -> tuple[int, int]:
    """Which file this is: every save writes a new one, so a replaced file has another."""
    return status.st_dev, status.st_ino


class FileStorage:
    """Keeps each session's tokens in ``<root>/<session>/token.json``, the `planet` CLI's layout.

    Writes go to a temporary file in the same directory (mode 0600), are flushed to disk and then
    renamed over the old file, so a reader, or a crash, never sees half a file. Directories are
    created 0700. A file that cannot be parsed is moved aside (``token.json.corrupt-<time>``) with a
    warning naming it, and the session is treated as absent. The cross-process lock is an advisory
    lock on ``token.json.lock`` beside the token file. All file I/O runs in worker threads.

    Symbolic links are not followed out of the root: a session directory, or a lock file, that is
    a link raises `StorageError` (the root itself may be a link).

    Args:
        root: The directory holding one sub-directory per session (`planet` uses ``~/.planet``).
        lock_timeout: Seconds to wait for another process's lock before raising `StorageError`.
    """

    lock_can_lapse = False
    """An advisory file lock is held until released (or its holder's process ends)."""

    def __init__(self, root: str | os.PathLike[str], *, lock_timeout: float = 60.0) -> None:
        self.root = Path(root).expanduser()
        self.lock_timeout = lock_timeout

    def __repr__(self) -> str:
        return f"FileStorage({str(self.root)!r})"

    def watch_deletions(self) -> None:
        """None: files cannot tell another process that a session was deleted."""
        return None

    def session_dir(self, session: str) -> Path:
        """The directory of a session; profile names are lower-cased as the `planet` CLI does.

        Raises:
            ConfigurationError: The name is empty, would leave the root directory, or cannot be a
                file name (control characters, too long).
        """
        name = session.lower()
        problem = name_problem(name)
        if problem is not None:
            raise ConfigurationError(f"{session!r} cannot be a session (profile) name: {problem}")
        return self.root / name

    async def load(self, session: str) -> TokenSet | None:
        return await anyio.to_thread.run_sync(self._load, self.session_dir(session) / _TOKEN_FILE)

    async def save(self, session: str, token: TokenSet) -> None:
        data = token.to_json_dict()
        await anyio.to_thread.run_sync(self._save, self.session_dir(session), data)

    async def save_if_newer(self, session: str, token: TokenSet) -> bool:
        """Load, check and save, under the session's file lock, which the caller holds (the
        `planet` CLI takes no lock: a file it writes meanwhile is the one race left, and the
        TokenManager's re-read after an ``invalid_grant`` covers it)."""
        if not may_replace(token, await self.load(session)):
            return False
        await self.save(session, token)
        return True

    async def delete(self, session: str) -> None:
        await anyio.to_thread.run_sync(self._delete, self.session_dir(session))

    @asynccontextmanager
    async def lock(self, session: str) -> AsyncIterator[None]:
        directory = self.session_dir(session)
        fd = await anyio.to_thread.run_sync(self._open_lock_file, directory)
        try:
            await self._acquire(fd, directory / _LOCK_FILE)
            try:
                yield
            finally:
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(unlock, fd)
        finally:
            os.close(fd)

    async def _acquire(self, fd: int, path: Path) -> None:
        deadline = time.monotonic() + self.lock_timeout
        delay = 0.002
        while not await anyio.to_thread.run_sync(try_lock, fd):
            if time.monotonic() >= deadline:
                raise StorageError(
                    f"timed out after {self.lock_timeout:g} s waiting for the lock {path}; "
                    "another process holds it (if none is running, delete the file)"
                )
            await anyio.sleep(delay)
            delay = min(delay * 2, 0.05)

    # -- blocking parts, run in worker threads ------------------------------------------------

    def _open_lock_file(self, directory: Path) -> int:
        refuse_symlink(directory)
        make_private_dirs(self.root, directory)
        path = directory / _LOCK_FILE
        try:
            return open_no_follow(str(path), os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            if exc.errno == errno.ELOOP or path.is_symlink():
                raise StorageError(
                    f"the lock file {path} is a symbolic link; planet_async does not follow it "
                    "(it could create a file anywhere): remove the link"
                ) from exc
            raise StorageError(f"cannot open the lock file in {directory}: {exc.strerror}") from exc

    def _load(self, path: Path) -> TokenSet | None:
        refuse_symlink(path.parent)
        for _ in range(3):  # a file replaced by another corrupt one twice over: absent
            try:
                with open(path, "rb") as file:
                    raw = file.read()
                    identity = _identity(os.fstat(file.fileno()))
            except FileNotFoundError:
                return None
            except OSError as exc:
                raise StorageError(f"cannot read {path}: {exc.strerror}") from exc
            data = json_object(raw)
            if data is not None:
                break
            if not self._move_aside(path, identity):
                continue  # moved by another reader, or replaced meanwhile: read again
            return None
        else:
            return None
        # Valid JSON we do not understand (another tool's format?): never destroy it.
        return stored_token(data, str(path), "log in again to replace it, or move it away")

    @staticmethod
    def _move_aside(path: Path, identity: tuple[int, int]) -> bool:
        """Move the corrupt file read (`identity`) aside; False if it was no longer there.

        There is no compare-and-rename of files, so the file is renamed and then checked: if
        the one renamed is not the one read (a writer replaced it meanwhile; every save is a new
        file), it is linked back unless an even newer file took its place, which then wins.
        """
        stamp = time.strftime("%Y%m%dT%H%M%S")
        aside = path.with_name(f"{path.name}.corrupt-{stamp}-{os.getpid()}-{os.urandom(3).hex()}")
        try:
            os.replace(path, aside)
        except FileNotFoundError:
            return False  # another reader moved it aside
        except OSError as exc:
            raise StorageError(f"{path} is corrupt and could not be moved aside: {exc}") from exc
        if _identity(os.stat(aside)) != identity:
            try:
                os.link(aside, path)  # back, but never over a file written since
            except FileExistsError:
                pass  # an even newer file took its place: that one is the session's
            except OSError:
                # No hard links on this file system: put it back unless a newer file is there.
                if not path.exists():
                    os.replace(aside, path)
                    return False
            os.unlink(aside)
            return False
        logger.warning(
            "session file %s was corrupt (not a JSON object); moved it to %s and treating the "
            "session as absent",
            path,
            aside,
        )
        return True

    def _save(self, directory: Path, data: dict[str, object]) -> None:
        refuse_symlink(directory)
        make_private_dirs(self.root, directory)
        write_json_atomic(directory / _TOKEN_FILE, data)

    @staticmethod
    def _delete(directory: Path) -> None:
        refuse_symlink(directory)
        path = directory / _TOKEN_FILE
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot delete {path}: {exc.strerror}") from exc
