"""Session directories the program cannot write, on real files, against the real peer.

Root writes anywhere, so when the tests run as root (as in CI) the program runs without the
capabilities that bypass file permissions (``setpriv`` drops CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
and CAP_FOWNER from its bounding set): it stays uid 0, owner of the files, and the mode bits bind
it like any user. Run as another user, the tests need no such step.

- A read-only directory without a lock file: the stored token serves while it is valid; after
  that a user session gives `StorageError` and requests nothing, and an M2M session renews in
  this process, uncoordinated.
- A read-only directory whose lock file exists, so every save fails: a user session with
  rotating refresh tokens renews from memory, each time with the newest refresh token, and is
  saved as soon as the directory is writable again. The peer revokes the whole grant if a refresh
  token is ever used twice, so zero errors at the peer is the proof.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest

from planet_async import (
    AuthorizationServer,
    FileStorage,
    PublicClient,
    RefreshTokenGrant,
    TokenManager,
    TokenSet,
)
from tests._browser import device_login_saved
from tests._helpers import VerifyingApi
from tests._peer import Peer

SESSION = "readonly"
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(params=["asyncio", "trio"])
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def unprivileged_root(tmp_path: Path) -> Path:
    """An empty storage root, for a program that file permissions bind."""
    if os.geteuid() == 0 and shutil.which("setpriv") is None:
        if os.environ.get("CI"):
            pytest.fail("setpriv (util-linux) is needed to run without root's file powers")
        pytest.skip("running as root without setpriv")
    root = tmp_path / "planet"
    root.mkdir()
    return root


def _make_read_only(root: Path, *, lock_file: bool) -> Path:
    """Make the session directory read-only (with a lock file in it, if asked)."""
    directory = root / SESSION
    if lock_file:
        (directory / "token.json.lock").touch(mode=0o600)
    directory.chmod(0o500)
    return directory


def _run_worker(backend: str, case: str, issuer: str, root: Path) -> dict:
    command = [sys.executable, "-m", "tests._readonly_worker", backend, case, issuer, str(root)]
    command.append(SESSION)
    if os.geteuid() == 0:
        command = ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner", *command]
    env = {**os.environ, "HOME": str(root.parent), "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def _store(root: Path, token: TokenSet) -> None:
    anyio.run(FileStorage(root).save, SESSION, token)


@pytest.mark.parametrize("grant", ["m2m", "refresh"])
def test_read_only_directory_without_a_lock_file_valid_token(
    peer: Peer, unprivileged_root: Path, backend: str, grant: str
) -> None:
    """A valid stored token serves without the lock: no token is requested, no file created."""
    issued = time.time() - 10
    stored = TokenSet(
        access_token="stored-token", issued_at=issued, expires_at=issued + 3600, refresh_token="r"
    )
    _store(unprivileged_root, stored)
    directory = _make_read_only(unprivileged_root, lock_file=False)
    result = _run_worker(backend, grant, peer.issuer, unprivileged_root)
    assert result == {"header": "Bearer stored-token", "renewals": 0}
    assert peer.grants("client_credentials") == peer.grants("refresh_token") == 0
    assert sorted(p.name for p in directory.iterdir()) == ["token.json"]


def test_read_only_directory_without_a_lock_file_expired_token(
    peer: Peer, unprivileged_root: Path, backend: str
) -> None:
    """Once the stored token has expired, a user session is a `StorageError` with no token
    requested (a refresh token is never spent without the lock), while an M2M session renews in
    this process, uncoordinated, and keeps the token in memory."""
    issued = time.time() - 4000
    stored = TokenSet(
        access_token="stored-token", issued_at=issued, expires_at=issued + 3600, refresh_token="r"
    )
    _store(unprivileged_root, stored)
    directory = _make_read_only(unprivileged_root, lock_file=False)
    user = _run_worker(backend, "refresh", peer.issuer, unprivileged_root)
    assert user["error"] == "StorageError", user
    assert "Permission denied" in user["message"]
    assert user["renewals"] == 0
    assert peer.grants("refresh_token") == 0
    m2m = _run_worker(backend, "m2m", peer.issuer, unprivileged_root)
    assert m2m["renewals"] == 1
    assert peer.grants("client_credentials") == 1
    assert VerifyingApi(peer.issuer).verify(m2m["header"].removeprefix("Bearer "))
    assert sorted(p.name for p in directory.iterdir()) == ["token.json"]


async def _renew_later(issuer: str, root: Path) -> TokenSet:
    grant = RefreshTokenGrant(AuthorizationServer(issuer), PublicClient(client_id="native-app"))
    return await TokenManager(grant, storage=FileStorage(root), session=SESSION).renew()


def test_rotating_session_survives_saves_that_fail(
    peer: Peer, unprivileged_root: Path, backend: str
) -> None:
    """Every save fails, yet each renewal uses the newest refresh token (no `invalid_grant`, the
    grant is never revoked), and the session is saved once the directory is writable."""
    login = anyio.run(device_login_saved, peer.issuer, FileStorage(unprivileged_root), SESSION)
    _make_read_only(unprivileged_root, lock_file=True)
    peer.reset()
    result = _run_worker(backend, "user", peer.issuer, unprivileged_root)
    headers = result["headers"]
    assert len(set(headers)) == 3
    assert result["renewals"] == 3
    login_token = login.access_token.get_secret_value()
    assert result["stored"] == [login_token, login_token, headers[2].removeprefix("Bearer ")]
    assert peer.grants("refresh_token") == 3
    assert peer.errors() == {}
    # A later program renews with what was saved: the session is alive.
    renewed = anyio.run(_renew_later, peer.issuer, unprivileged_root)
    assert peer.errors() == {}
    assert VerifyingApi(peer.issuer).verify(renewed.access_token.get_secret_value())
