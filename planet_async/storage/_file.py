"""Storage in files: atomic, private, locked across processes, and off the event loop."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio

from .._errors import ConfigurationError, StorageError
from .._models import TokenSet
from ._atomic import make_private_dirs, write_json_atomic
from ._platform import try_lock, unlock

__all__ = ["FileStorage"]

logger = logging.getLogger(__name__)

_TOKEN_FILE = "token.json"
_LOCK_FILE = "token.json.lock"


class FileStorage:
    """Keeps each session's tokens in ``<root>/<session>/token.json``, the `planet` CLI's layout.

    Writes go to a temporary file in the same directory (mode 0600), are flushed to disk and then
    renamed over the old file, so a reader, or a crash, never sees half a file. Directories are
    created 0700. A file that cannot be parsed is moved aside (``token.json.corrupt-<time>``) with a
    warning naming it, and the session is treated as absent. The cross-process lock is an advisory
    lock on ``token.json.lock`` beside the token file. All file I/O runs in worker threads.

    Args:
        root: The directory holding one sub-directory per session (`planet` uses ``~/.planet``).
        lock_timeout: Seconds to wait for another process's lock before raising `StorageError`.
    """

    def __init__(self, root: str | os.PathLike[str], *, lock_timeout: float = 60.0) -> None:
        self.root = Path(root).expanduser()
        self.lock_timeout = lock_timeout

    def __repr__(self) -> str:
        return f"FileStorage({str(self.root)!r})"

    def session_dir(self, session: str) -> Path:
        """The directory of a session; profile names are lower-cased as the `planet` CLI does.

        Raises:
            ConfigurationError: The name is empty or would leave the root directory.
        """
        name = session.lower()
        if not name or name in {".", ".."} or "/" in name or "\\" in name or os.sep in name:
            raise ConfigurationError(f"{session!r} cannot be a session (profile) name")
        return self.root / name

    async def load(self, session: str) -> TokenSet | None:
        return await anyio.to_thread.run_sync(self._load, self.session_dir(session) / _TOKEN_FILE)

    async def save(self, session: str, token: TokenSet) -> None:
        data = token.to_json_dict()
        await anyio.to_thread.run_sync(self._save, self.session_dir(session), data)

    async def delete(self, session: str) -> None:
        path = self.session_dir(session) / _TOKEN_FILE
        await anyio.to_thread.run_sync(lambda: path.unlink(missing_ok=True))

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
        make_private_dirs(self.root, directory)
        try:
            return os.open(directory / _LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StorageError(f"cannot open the lock file in {directory}: {exc.strerror}") from exc

    def _load(self, path: Path) -> TokenSet | None:
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StorageError(f"cannot read {path}: {exc.strerror}") from exc
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            data = None
        if not isinstance(data, dict):
            self._move_aside(path)
            return None
        try:
            return TokenSet.from_json_dict(data)
        except ValueError as exc:
            # Valid JSON we do not understand (another tool's format?): never destroy it.
            raise StorageError(
                f"{path} holds no usable OAuth token ({exc}); "
                "log in again to replace it, or move it away"
            ) from None

    @staticmethod
    def _move_aside(path: Path) -> None:
        stamp = time.strftime("%Y%m%dT%H%M%S")
        aside = path.with_name(f"{path.name}.corrupt-{stamp}-{os.getpid()}")
        try:
            os.replace(path, aside)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise StorageError(f"{path} is corrupt and could not be moved aside: {exc}") from exc
        logger.warning(
            "session file %s was corrupt (not a JSON object); moved it to %s and treating the "
            "session as absent",
            path,
            aside,
        )

    def _save(self, directory: Path, data: dict[str, object]) -> None:
        make_private_dirs(self.root, directory)
        write_json_atomic(directory / _TOKEN_FILE, data)
