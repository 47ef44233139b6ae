"""The `planet` CLI's files: ``~/.planet.json`` and ``~/.planet/<profile>/``.

Read leniently (unknown keys are kept), written exactly as `planet` writes them: atomically,
0600, sorted keys, two-space indents, no trailing newline, no null values.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import os
from pathlib import Path
from typing import Any

from .._errors import ConfigurationError
from ..storage._atomic import make_private_dirs, refuse_symlink, write_json_atomic
from ..storage._file import FileStorage, name_problem
from ..storage._url import without_password
from ._clients import BUILTIN_PROFILES, AuthClientConfig

__all__ = ["PlanetHome", "normalize_profile_name"]

CONFIG_FILE = ".planet.json"
PROFILES_DIR = ".planet"
AUTH_CLIENT_FILE = "auth_client.json"
STORAGE_FILE = "planet_async_storage.json"
"""Beside a profile's ``auth_client.json``: where its session is stored when not in the CLI's
files (a Redis URL without its password), so that later commands find it."""
SOPS_AUTH_CLIENT_FILE = "auth_client.sops.json"


def normalize_profile_name(name: str) -> str:
    """Profile names are case-insensitive, as in `planet`: lower-cased, no path separators.

    Raises:
        ConfigurationError: The name is empty, contains a path separator or a control character,
            or is too long for a directory name.
    """
    normal = name.strip().lower()
    problem = name_problem(normal)
    if problem is not None:
        raise ConfigurationError(f"{name!r} cannot be a profile name: {problem}")
    return normal


class PlanetHome:
    """The `planet` CLI's state under one home directory (the user's, by default).

    Every method here does blocking file I/O: call them from a worker thread in async code.
    Methods that write or delete refuse a profile directory that is a symbolic link
    (`StorageError`), as `FileStorage` does.

    Args:
        home: The directory holding ``.planet.json`` and ``.planet/``; ``~`` by default.
    """

    def __init__(self, home: str | os.PathLike[str] | None = None) -> None:
        self.home = Path(home).expanduser() if home is not None else Path.home()

    def __repr__(self) -> str:
        return f"PlanetHome({str(self.home)!r})"

    @property
    def config_file(self) -> Path:
        return self.home / CONFIG_FILE

    @property
    def profiles_dir(self) -> Path:
        return self.home / PROFILES_DIR

    def profile_dir(self, profile: str) -> Path:
        return self.profiles_dir / normalize_profile_name(profile)

    def storage(self) -> FileStorage:
        """The token storage the CLI shares: ``~/.planet/<profile>/token.json``."""
        return FileStorage(self.profiles_dir)

    # -- ~/.planet.json ------------------------------------------------------------------------

    def read_config(self) -> dict[str, Any]:
        """The contents of ``~/.planet.json``; empty if there is none.

        Raises:
            ConfigurationError: The file exists but is not a JSON object.
        """
        data = _read_json(self.config_file)
        return data if data is not None else {}

    def write_config(self, data: dict[str, Any]) -> None:
        make_private_dirs(self.home)
        write_json_atomic(self.config_file, _without_nulls(data))

    def set_default_profile(self, profile: str) -> None:
        """Make `profile` the default, as ``planet auth profile use`` does; other keys stay."""
        data = self.read_config()
        data["PL_AUTH_PROFILE"] = normalize_profile_name(profile)
        self.write_config(data)

    # -- profiles ------------------------------------------------------------------------------

    def list_profiles(self) -> list[str]:
        """Profiles on disk (directories with an ``auth_client.json``), then the built-in ones."""
        found: list[str] = []
        if self.profiles_dir.is_dir():
            found = [
                child.name for child in sorted(self.profiles_dir.iterdir()) if _is_profile(child)
            ]
        return found + [name for name in BUILTIN_PROFILES if name not in found]

    def closest_profile(self, name: str) -> str | None:
        """The profile (on disk or built in) whose name is closest to `name`, for a "did you
        mean" after a typo (``planet-usr``); None when none is close, or none can be listed."""
        try:
            names = self.list_profiles()
        except OSError:
            return None
        close = difflib.get_close_matches(name.strip().lower(), names, n=1, cutoff=0.75)
        return close[0] if close else None

    def read_auth_client(self, profile: str) -> AuthClientConfig | None:
        """A profile's client configuration: from its ``auth_client.json``, or built in.

        Returns None when no such profile exists.

        Raises:
            ConfigurationError: The file is unreadable, invalid, or encrypted with sops.
        """
        directory = self.profile_dir(profile)
        if (directory / SOPS_AUTH_CLIENT_FILE).is_file() and not (
            directory / AUTH_CLIENT_FILE
        ).is_file():
            raise ConfigurationError(
                f"profile {profile!r} is encrypted with sops ({directory / SOPS_AUTH_CLIENT_FILE});"
                " planet_async does not decrypt sops files: decrypt it to auth_client.json, or "
                "use another profile"
            )
        data = _read_json(directory / AUTH_CLIENT_FILE)
        if data is None:
            return BUILTIN_PROFILES.get(normalize_profile_name(profile))
        try:
            return AuthClientConfig.model_validate(data)
        except ValueError:
            raise ConfigurationError(
                f"{directory / AUTH_CLIENT_FILE} is not a valid auth client configuration "
                "(it needs at least a client_type); fix or remove it"
            ) from None

    def write_auth_client(self, profile: str, config: AuthClientConfig) -> None:
        directory = self.profile_dir(profile)
        refuse_symlink(directory)
        make_private_dirs(self.home, self.profiles_dir, directory)
        write_json_atomic(directory / AUTH_CLIENT_FILE, config.to_json_dict())

    def delete_profile(self, profile: str) -> None:
        """Remove a profile's files (client configuration, tokens, lock) and its directory.

        Raises:
            StorageError: The profile's directory is a symbolic link.
        """
        directory = self.profile_dir(profile)
        refuse_symlink(directory)
        for name in (AUTH_CLIENT_FILE, "token.json", "token.json.lock", STORAGE_FILE):
            (directory / name).unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # not empty: something else lives there; leave it
            directory.rmdir()

    def remembered_storage(self, profile: str) -> tuple[str, bool] | None:
        """Where the profile's session was stored, if not in these files: its storage URL
        (without a password) and whether that URL needs a password given again."""
        data = _read_json(self.profile_dir(profile) / STORAGE_FILE)
        if data is None or not isinstance(data.get("url"), str):
            return None
        return data["url"], bool(data.get("password"))

    def remember_storage(self, profile: str, url: str | None) -> None:
        """Remember the storage URL the profile's session is kept in (None: these files). The
        password is never written: it is given again (``--storage``, ``PLANET_ASYNC_STORAGE``)
        when the session is used."""
        directory = self.profile_dir(profile)
        refuse_symlink(directory)
        path = directory / STORAGE_FILE
        if url is None:
            path.unlink(missing_ok=True)
            return
        plain, password = without_password(url)
        make_private_dirs(self.home, self.profiles_dir, directory)
        write_json_atomic(path, {"url": plain, "password": password})

    def read_token_file(self, profile: str) -> dict[str, Any] | None:
        """A profile's raw ``token.json`` (for API keys; OAuth tokens go through FileStorage)."""
        return _read_json(self.profile_dir(profile) / "token.json")

    def write_token_file(self, profile: str, data: dict[str, Any]) -> None:
        directory = self.profile_dir(profile)
        refuse_symlink(directory)
        make_private_dirs(self.home, self.profiles_dir, directory)
        write_json_atomic(directory / "token.json", _without_nulls(data))

    def delete_token_file(self, profile: str) -> bool:
        """Remove a profile's ``token.json``; returns whether there was one."""
        directory = self.profile_dir(profile)
        refuse_symlink(directory)
        try:
            (directory / "token.json").unlink()
        except FileNotFoundError:
            return False
        return True


def _is_profile(directory: Path) -> bool:
    return (directory / AUTH_CLIENT_FILE).is_file() or (directory / SOPS_AUTH_CLIENT_FILE).is_file()


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigurationError(f"cannot read {path}: {exc.strerror}") from exc
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: nested too deep to parse
        data = None
    if not isinstance(data, dict):
        raise ConfigurationError(f"{path} is not a JSON object; fix or remove it")
    return data


def _without_nulls(data: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in data.items() if value is not None}
