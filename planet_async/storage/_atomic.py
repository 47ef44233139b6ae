"""Atomic, private JSON files: how every file planet_async writes reaches the disk (blocking)."""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from .._errors import StorageError
from ._platform import fsync_directory

__all__ = ["make_private_dirs", "refuse_symlink", "write_atomic", "write_json_atomic"]

_STALE_AFTER = 600.0


def make_private_dirs(*directories: Path) -> None:
    """Create each directory (0700) if it is missing.

    Raises:
        StorageError: A directory cannot be created.
    """
    for path in directories:
        if not path.is_dir():
            try:
                path.mkdir(mode=0o700, parents=True, exist_ok=True)
            except OSError as exc:
                raise StorageError(f"cannot create {path}: {exc.strerror}") from exc


def refuse_symlink(directory: Path) -> None:
    """Refuse a session's directory that is a symbolic link.

    Through a link, writing, locking and deleting would happen outside the storage's root (the
    root itself, like ``~/.planet``, may be a link).

    Raises:
        StorageError: `directory` is a symbolic link.
    """
    if directory.is_symlink():
        raise StorageError(
            f"{directory} is a symbolic link; planet_async keeps a session only in a real "
            "directory, so that nothing is written or deleted elsewhere through it: replace the "
            "link with a directory"
        )


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Replace `path` with `data` as JSON, so that readers see the old file or the new, never half.

    The layout is the `planet` CLI's: sorted keys, two-space indents, no trailing newline.

    Raises:
        StorageError: The file cannot be written.
    """
    write_atomic(path, json.dumps(data, indent=2, sort_keys=True).encode())


def write_atomic(path: Path, payload: bytes) -> None:
    """Replace `path` with `payload`, so that readers see the old file or the new, never half.

    The temporary file is created 0600 in the same directory, written, fsynced and renamed over
    `path`; then the directory is fsynced.

    Raises:
        StorageError: The file cannot be written.
    """
    directory = path.parent
    prefix = f".{path.stem}."
    try:
        fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=directory)
    except OSError as exc:
        raise StorageError(f"cannot write {path}: {exc.strerror}") from exc
    try:
        try:
            view = memoryview(payload)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise StorageError(f"cannot write {path}: {exc.strerror}") from exc
    fsync_directory(str(directory))
    _remove_stale_temp_files(directory, prefix)


def _remove_stale_temp_files(directory: Path, prefix: str) -> None:
    """Remove temporary files left by writers killed mid-write, once they are old.

    A live writer's file is seconds old at most; ten minutes leaves a wide margin for slow disks.
    """
    cutoff = time.time() - _STALE_AFTER
    for leftover in directory.glob(f"{prefix}*.tmp"):
        try:
            if leftover.stat().st_mtime < cutoff:
                leftover.unlink()
        except OSError:
            continue
