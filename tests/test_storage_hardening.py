"""FileStorage on hostile or broken files: deep nesting, wrong types, odd names, planted links.

Every case ends in the documented outcome (a corrupt file moved aside, a StorageError or a
ConfigurationError that names the path or the problem), never in a raw RecursionError,
OverflowError or OSError, and nothing is created or deleted outside the storage's root.
"""

from __future__ import annotations

import base64
import json
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from planet_async import ConfigurationError, FileStorage, StorageError, TokenSet

pytestmark = pytest.mark.anyio

SECRET = "at-Never-Shown"


def _token(access: str = "at-1") -> TokenSet:
    return TokenSet.from_response(
        {"access_token": access, "expires_in": 3600, "refresh_token": "rt-1"},
        received_at=1_800_000_000.0,
    )


def _token_file(root: Path, content: bytes, session: str = "default") -> Path:
    path = root / session / "token.json"
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    return path


def _jwt_with_payload(payload: bytes) -> str:
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")

    return ".".join([b64(b'{"alg": "none"}'), b64(payload), "c2ln"])


# -- deep nesting ----------------------------------------------------------------------------------

DEPTH = 100_000


@pytest.mark.parametrize(
    "content",
    [
        b"[" * DEPTH,
        b"[" * DEPTH + b"]" * DEPTH,
        b'{"a":' * DEPTH + b"1" + b"}" * DEPTH,
        b'{"access_token": "at-1", "extra": ' + b"[" * DEPTH + b"]" * DEPTH + b"}",
    ],
    ids=["open-lists", "closed-lists", "dicts", "inside-a-token"],
)
async def test_deeply_nested_token_file_is_moved_aside(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, content: bytes
) -> None:
    """JSON nested too deep to parse is corrupt like any other: moved aside with a warning,
    and the session is absent (it raised RecursionError)."""
    path = _token_file(tmp_path, content)
    with caplog.at_level(logging.WARNING, logger="planet_async"):
        assert await FileStorage(tmp_path).load("default") is None
    (aside,) = path.parent.glob("token.json.corrupt-*")
    assert aside.read_bytes() == content
    assert not path.exists()
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert str(path) in warning.getMessage()


async def test_access_token_with_a_deeply_nested_jwt_payload_loads_without_expiry(
    tmp_path: Path,
) -> None:
    """A token whose JWT payload is nested too deep has no readable `exp`: it loads as an
    opaque token with an unknown expiry (reading the payload raised RecursionError)."""
    access = _jwt_with_payload(b"[" * 5000)
    _token_file(tmp_path, json.dumps({"access_token": access}).encode())
    token = await FileStorage(tmp_path).load("default")
    assert token is not None
    assert token.access_token.get_secret_value() == access
    assert token.expires_at is None


# -- values of the wrong type or size --------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        {"access_token": 123},
        {"access_token": None, "refresh_token": SECRET},
        {"access_token": SECRET, "token_type": 5},
        {"access_token": SECRET, "_iat": 1000, "expires_in": "soon"},
        {"access_token": SECRET, "_iat": 1000, "expires_in": [3600]},
        {"access_token": SECRET, "_iat": 1000, "expires_in": "NaN"},
        {"access_token": SECRET, "_iat": 1000, "expires_in": "²"},
        {"access_token": SECRET, "_iat": 1000, "expires_in": 10**400},
        {"access_token": SECRET, "_iat": 1000, "expires_in": "9" * 5000},
        {"access_token": SECRET, "_iat": 1.7e308, "expires_in": 1e308},
    ],
    ids=[
        "token-number",
        "token-null",
        "type-number",
        "expires-word",
        "expires-list",
        "expires-nan",
        "expires-superscript",
        "expires-huge-int",
        "expires-huge-digits",
        "expiry-overflows",
    ],
)
async def test_token_file_with_unusable_values_is_a_storage_error(
    tmp_path: Path, data: dict[str, Any]
) -> None:
    """A JSON object whose values have the wrong type or cannot be a time raises StorageError
    naming the file, never quoting the token, and leaves the file as it was (it raised
    OverflowError, or loaded an infinite expiry that could not be saved again)."""
    content = json.dumps(data).encode()
    path = _token_file(tmp_path, content)
    with pytest.raises(StorageError, match="holds no usable OAuth token") as info:
        await FileStorage(tmp_path).load("default")
    assert str(path) in str(info.value)
    assert SECRET not in str(info.value)
    assert path.read_bytes() == content


@pytest.mark.parametrize(
    "data",
    [
        {"access_token": "at-1", "_iat": 10**400},
        {"access_token": "at-1", "_iat": 1000, "_exp": 10**400},
        {"access_token": _jwt_with_payload(b'{"iat": 1e999, "exp": 1' + b"0" * 400 + b"}")},
    ],
    ids=["iat", "exp", "jwt-claims"],
)
async def test_times_too_large_for_a_float_are_ignored(
    tmp_path: Path, data: dict[str, Any]
) -> None:
    """`_iat`, `_exp` and JWT claims too large for a float are ignored like missing ones, and
    the token saves again (they raised OverflowError)."""
    _token_file(tmp_path, json.dumps(data).encode())
    storage = FileStorage(tmp_path)
    token = await storage.load("default")
    assert token is not None
    assert token.expires_at is None
    await storage.save("default", token)


# -- session names ---------------------------------------------------------------------------------

BAD_NAMES = {
    "nul": ("a\x00b", "control character"),
    "newline": ("a\nb", "control character"),
    "escape": ("a\x1b[31mb", "control character"),
    "delete": ("a\x7f", "control character"),
    "c1": ("a\x85b", "control character"),
    "surrogate": ("a\ud800b", "not valid Unicode"),
    "too-long": ("x" * 256, "longer than 255 bytes"),
}


@pytest.mark.parametrize(("name", "problem"), BAD_NAMES.values(), ids=BAD_NAMES.keys())
async def test_session_names_that_cannot_be_file_names_are_refused(
    tmp_path: Path, name: str, problem: str
) -> None:
    """Names with control characters, lone surrogates or more than 255 bytes raise a
    ConfigurationError naming the problem from every method, and create nothing (they raised
    ValueError "embedded null byte", UnicodeEncodeError or OSError, or made odd directories)."""
    storage = FileStorage(tmp_path / "root")
    with pytest.raises(ConfigurationError, match=problem):
        await storage.load(name)
    with pytest.raises(ConfigurationError, match=problem):
        await storage.save(name, _token())
    with pytest.raises(ConfigurationError, match=problem):
        await storage.delete(name)
    with pytest.raises(ConfigurationError, match=problem):
        async with storage.lock(name):
            pytest.fail("locked an unusable session name")
    assert not (tmp_path / "root").exists()


async def test_a_name_of_255_bytes_is_still_a_session(tmp_path: Path) -> None:
    """The length limit is the file system's: a 255-byte name works end to end."""
    storage = FileStorage(tmp_path)
    name = "é" * 127 + "x"  # 255 bytes in UTF-8
    await storage.save(name, _token())
    assert await storage.load(name) == _token()


# -- symbolic links --------------------------------------------------------------------------------


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory beside the storage's root, where nothing may be written through a link."""
    path = tmp_path / "outside"
    path.mkdir()
    return path


async def test_symlink_at_the_lock_file_is_refused(tmp_path: Path, outside: Path) -> None:
    """A link planted at token.json.lock is not followed: StorageError naming the path and the
    link, and the link's target is never created (O_CREAT followed it)."""
    root = tmp_path / "root"
    (root / "default").mkdir(parents=True)
    lock_path = root / "default" / "token.json.lock"
    target = outside / "created-through-the-link"
    lock_path.symlink_to(target)

    with pytest.raises(StorageError, match="symbolic link") as info:
        async with FileStorage(root).lock("default"):
            pytest.fail("locked through a symbolic link")
    assert str(lock_path) in str(info.value)
    assert not target.exists()
    assert os.listdir(outside) == []


async def test_symlink_at_the_lock_file_is_refused_even_inside_the_root(tmp_path: Path) -> None:
    """A link at token.json.lock to a file inside the root is refused too: the rule is "no link",
    not "no link outside"."""
    root = tmp_path / "root"
    (root / "default").mkdir(parents=True)
    (root / "default" / "token.json.lock").symlink_to(root / "default" / "elsewhere")
    with pytest.raises(StorageError, match="symbolic link"):
        async with FileStorage(root).lock("default"):
            pytest.fail("locked through a symbolic link")
    assert not (root / "default" / "elsewhere").exists()


async def test_symlinked_session_directory_is_refused(tmp_path: Path, outside: Path) -> None:
    """A session directory that is a link is refused by load, save, delete and lock with a
    StorageError naming it; nothing is written, locked or deleted in the link's target."""
    root = tmp_path / "root"
    root.mkdir()
    (root / "default").symlink_to(outside, target_is_directory=True)
    theirs = json.dumps(_token("at-theirs").to_json_dict()).encode()
    (outside / "token.json").write_bytes(theirs)
    storage = FileStorage(root)

    attempts: list[Callable[[], Awaitable[object]]] = [
        lambda: storage.load("default"),
        lambda: storage.save("default", _token()),
        lambda: storage.delete("default"),
    ]
    for attempt in attempts:
        with pytest.raises(StorageError, match="symbolic link") as info:
            await attempt()
        assert str(root / "default") in str(info.value)
    with pytest.raises(StorageError, match="symbolic link"):
        async with storage.lock("default"):
            pytest.fail("locked through a symbolic link")

    assert os.listdir(outside) == ["token.json"]
    assert (outside / "token.json").read_bytes() == theirs


async def test_root_may_be_a_symlink(tmp_path: Path) -> None:
    """The root itself (like a ~/.planet kept elsewhere) may be a link: sessions work under it."""
    real = tmp_path / "real-root"
    real.mkdir()
    (tmp_path / "root").symlink_to(real, target_is_directory=True)
    storage = FileStorage(tmp_path / "root")
    async with storage.lock("default"):
        await storage.save("default", _token())
    assert await storage.load("default") == _token()
    assert sorted(os.listdir(real / "default")) == ["token.json", "token.json.lock"]
