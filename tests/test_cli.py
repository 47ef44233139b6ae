"""The `planet-async` command as a user runs it: a subprocess, against the real peer.

Every test runs ``python -m planet_async.cli --home <tmp> ...`` without a shell and looks at
what a user sees (exit code, stdout, stderr) and at the files left in the home directory. The
authorization server is oidc-provider on 127.0.0.1 (tests/peer); a device login's user step runs
in headless Chromium when there is one, else over plain HTTP on the same dev pages. Each command
costs a Python start-up (about 0.4 s), so state a test only needs as a premise is written
in-process with the library.
"""

from __future__ import annotations

import concurrent.futures
import datetime
import json
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from planet_async import PlanetAuth, TokenSet
from planet_async.profiles import AuthClientConfig, PlanetHome, choose_session
from tests._browser import Chromium, approve_device_over_http
from tests._helpers import VerifyingApi
from tests._peer import Peer

CLIENT_ID = "service-basic"
CLIENT_SECRET = "service-basic-secret"
USER_CLIENT_ID = "native-app"
API_KEY = "PLAK0123456789abcdef-cli-test"
DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
TIMEOUT = 30.0  # seconds any one command may take; a hang fails the test instead of stalling

Approve = Callable[[str], "concurrent.futures.Future[Any]"]


class Cli:
    """Runs the command in a subprocess with one home directory, and keeps every output so a
    test can check that no secret leaked into any of them."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.outputs: list[tuple[list[str], str]] = []

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "planet_async.cli", "--home", str(self.home), *args]

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        return {**os.environ, "NO_PROXY": "127.0.0.1,localhost", **(extra or {})}

    def __call__(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        input: str | None = None,
        prints_token: bool = False,
        timeout: float = TIMEOUT,
    ) -> subprocess.CompletedProcess[str]:
        """Run one command; `prints_token` exempts its stdout (only) from the leak check."""
        result = subprocess.run(
            self.argv(*args),
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.env(env),
            cwd=self.home,
            input=input,
            stdin=subprocess.DEVNULL if input is None else None,
            check=False,
        )
        self.record(list(args), "" if prints_token else result.stdout, result.stderr)
        return result

    def record(self, args: list[str], *texts: str) -> None:
        self.outputs.extend((args, text) for text in texts)

    def leaks(self, *secrets: str) -> list[tuple[list[str], str]]:
        """The commands whose output contained one of `secrets` (or the client secret or the
        API key, always), each with the secret's first characters."""
        candidates = {CLIENT_SECRET, API_KEY, *secrets}
        return [
            (args, secret[:8])
            for args, text in self.outputs
            for secret in candidates
            if secret and secret in text
        ]


@pytest.fixture
def cli(clean_env: Path) -> Cli:
    return Cli(clean_env)


@pytest.fixture
def m2m(cli: Cli, peer: Peer) -> Cli:
    """`cli` with what `auth login` of the M2M client as profile `m2m` leaves behind,
    written in-process by the library (one grant)."""
    return with_m2m_profile(cli, peer)


def with_m2m_profile(cli: Cli, peer: Peer) -> Cli:
    """Write what `auth login` of the M2M client as profile `m2m` leaves behind (one grant)."""
    home = PlanetHome(cli.home)
    home.write_auth_client(
        "m2m", AuthClientConfig.m2m(CLIENT_ID, CLIENT_SECRET, auth_server=peer.issuer)
    )
    home.set_default_profile("m2m")
    auth = PlanetAuth.from_profile("m2m", home=cli.home)
    assert auth.manager is not None
    anyio.run(auth.manager.renew)
    assert peer.grants("client_credentials") == 1
    return cli


def _m2m_login(issuer: str, profile: str, secret: str = CLIENT_SECRET) -> list[str]:
    return [
        "--allow-loopback-http",
        *("auth", "login", "--client-id", CLIENT_ID, "--client-secret", secret),
        *("--issuer", issuer, "--profile", profile),
    ]


def _failed(result: subprocess.CompletedProcess[str], code: int) -> str:
    """The one line a failed command printed on stderr (and nothing on stdout)."""
    assert result.returncode == code, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("planet-async: error: ")
    assert result.stdout == ""
    return lines[0]


def _json(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert result.returncode == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def _token_file(home: Path, profile: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((home / ".planet" / profile / "token.json").read_text())
    return data


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- M2M: log in, inspect, use, renew, log out ----------------------------------------------------


def test_m2m_login_saves_a_private_profile_and_makes_it_the_default(cli: Cli, peer: Peer) -> None:
    """`auth login` with a client id and secret makes one grant and writes auth_client.json
    and token.json (0600, in 0700 directories) and PL_AUTH_PROFILE in ~/.planet.json."""
    result = cli(*_m2m_login(peer.issuer, "m2m"))

    assert result.returncode == 0, result.stderr
    assert result.stdout == "logged in as an M2M client: profile 'm2m' is now in use\n"
    assert result.stderr == ""
    assert peer.grants("client_credentials") == 1
    profile = cli.home / ".planet" / "m2m"
    for path in (profile / "auth_client.json", profile / "token.json", cli.home / ".planet.json"):
        assert _mode(path) == 0o600, path
    assert _mode(profile) == _mode(profile.parent) == 0o700
    config = json.loads((profile / "auth_client.json").read_text())
    assert config["client_type"] == "oidc_client_credentials_secret"
    assert (config["client_id"], config["client_secret"]) == (CLIENT_ID, CLIENT_SECRET)
    assert config["auth_server"] == peer.issuer
    assert json.loads((cli.home / ".planet.json").read_text()) == {"PL_AUTH_PROFILE": "m2m"}
    assert VerifyingApi(peer.issuer).verify(_token_file(cli.home, "m2m")["access_token"])


def _save_m2m_token(home: Path, expires_at: float | None) -> None:
    """A stored token for profile `m2m` that expires at `expires_at` (written in-process)."""
    token = TokenSet(access_token="at-status", issued_at=time.time() - 3600, expires_at=expires_at)
    anyio.run(PlanetHome(home).storage().save, "m2m", token)


@pytest.mark.parametrize(
    ("from_now", "says"),
    [(52 * 60 + 20, "in 52 min"), (-180, "expired 3 min ago"), (None, None)],
    ids=["valid", "expired", "no-expiry"],
)
def test_status_says_when_the_token_expires_in_local_time(
    cli: Cli, from_now: float | None, says: str | None
) -> None:
    """`auth status` prints the expiry in the local time zone ($TZ here) and how long is left
    (or how long ago it ran out); `--json` keeps the epoch number and the seconds."""
    home = PlanetHome(cli.home)
    home.write_auth_client(
        "m2m", AuthClientConfig.m2m(CLIENT_ID, CLIENT_SECRET, auth_server="https://auth.test/")
    )
    expires_at = None if from_now is None else round(time.time() + from_now)
    _save_m2m_token(cli.home, expires_at)
    paris = {"TZ": "CET-1"}  # POSIX: named CET, one hour east of UTC, no summer time

    text = cli("--profile", "m2m", "auth", "status", env=paris)
    data = _json(cli("--profile", "m2m", "--json", "auth", "status", env=paris))

    assert text.returncode == 0, text.stderr
    lines = dict(line.split(": ", 1) for line in text.stdout.splitlines())
    assert "expires_at" not in lines
    assert "expires_in" not in lines
    assert data["expires_at"] == expires_at
    if expires_at is None:
        assert lines["expires"].startswith("unknown")
        assert data["expires_in"] is None
        return
    cet = datetime.timezone(datetime.timedelta(hours=1))
    stamp = datetime.datetime.fromtimestamp(expires_at, cet).strftime("%Y-%m-%d %H:%M:%S")
    assert lines["expires"] == f"{stamp} CET ({says})"
    assert abs(data["expires_in"] - from_now) <= 30  # the seconds, as before


@pytest.mark.parametrize(
    ("seconds", "said"),
    [
        (0, "0 s"),
        (42.4, "42 s"),
        (89, "89 s"),
        (90, "2 min"),
        (52 * 60 + 10, "52 min"),
        (89 * 60, "89 min"),
        (90 * 60, "1 h 30 min"),
        (3 * 3600, "3 h"),
        (47 * 3600 + 59 * 60, "47 h 59 min"),
        (48 * 3600, "2 days"),
        (30 * 86400, "30 days"),
    ],
)
def test_durations_read_as_people_say_them(seconds: float, said: str) -> None:
    """How long is left is said in the largest unit that keeps it exact enough."""
    from planet_async.cli._main import _duration

    assert _duration(seconds) == said


def test_m2m_status_human_and_json(m2m: Cli, peer: Peer) -> None:
    """`auth status` names the profile, its kind, where the choice came from (.planet.json) and
    a positive expiry, in text and in JSON, without any secret and without a grant."""
    text = m2m("auth", "status")
    data = _json(m2m("--json", "auth", "status"))

    assert text.returncode == 0, text.stderr
    assert text.stderr == ""
    lines = dict(line.split(": ", 1) for line in text.stdout.splitlines())
    assert lines["profile"] == "m2m"
    assert lines["kind"] == "m2m"
    assert lines["logged_in"] == "True"
    assert lines["source"] == f"{m2m.home / '.planet.json'} (PL_AUTH_PROFILE)"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \S+ \(in \d+ s\)", lines["expires"])
    assert "expires_at" not in lines
    assert data["profile"] == "m2m"
    assert data["kind"] == "m2m"
    assert data["logged_in"] is True
    assert data["has_refresh_token"] is False
    assert data["source"] == lines["source"]
    assert 0 < data["expires_in"] <= 60
    assert m2m.leaks(_token_file(m2m.home, "m2m")["access_token"]) == []
    assert peer.grants("client_credentials") == 1


def test_print_access_token_reuses_a_fresh_token_and_refresh_renews(m2m: Cli, peer: Peer) -> None:
    """`auth print-access-token` prints the stored JWT, which the peer signed, without asking
    the server while it is fresh; `auth refresh` asks exactly once and the printed token
    changes."""
    stored = _token_file(m2m.home, "m2m")["access_token"]
    first = m2m("--allow-loopback-http", "auth", "print-access-token", prints_token=True)
    assert peer.grants("client_credentials") == 1
    refreshed = m2m("--allow-loopback-http", "auth", "refresh", "--json")
    assert peer.grants("client_credentials") == 2
    second = m2m("--allow-loopback-http", "auth", "print-access-token", prints_token=True)

    assert (first.returncode, refreshed.returncode, second.returncode) == (0, 0, 0)
    assert first.stderr == refreshed.stderr == second.stderr == ""
    assert first.stdout == f"{stored}\n"
    assert json.loads(refreshed.stdout).keys() == {"refreshed", "expires_at"}
    token = second.stdout.strip()
    assert second.stdout == f"{token}\n"
    assert token != stored
    assert token == _token_file(m2m.home, "m2m")["access_token"]
    api = VerifyingApi(peer.issuer)
    assert api.verify(stored)
    assert api.verify(token)
    assert peer.grants("client_credentials") == 2
    assert m2m.leaks(stored, token) == []


def test_m2m_logout_deletes_the_token_and_keeps_the_client(m2m: Cli, peer: Peer) -> None:
    """`auth logout` deletes token.json and ~/.planet.json stops naming the profile; the M2M
    profile stays, and `auth status` on it says logged_in false with exit code 0 (the client
    can log itself in again)."""
    old = _token_file(m2m.home, "m2m")["access_token"]
    out = m2m("--allow-loopback-http", "auth", "logout")
    status = _json(m2m("auth", "status", "--json", "--profile", "m2m"))

    assert out.returncode == 0, out.stderr
    config = m2m.home / ".planet.json"
    assert out.stdout == f"logged out of profile 'm2m'; {config} no longer names it\n"
    assert not config.exists()
    assert status["logged_in"] is False
    assert status["kind"] == "m2m"
    assert "expires_in" not in status
    assert not (m2m.home / ".planet" / "m2m" / "token.json").exists()
    assert (m2m.home / ".planet" / "m2m" / "auth_client.json").is_file()
    assert peer.grants("client_credentials") == 1
    assert m2m.leaks(old) == []


def test_options_go_before_or_after_the_command(m2m: Cli) -> None:
    """`--profile` and `--json` work before the command group and after the command; an unknown
    profile is exit 2, and with --json a JSON error object on stdout."""
    found = _json(m2m("--profile", "M2M", "auth", "status", "--json"))
    missing = m2m("--json", "auth", "status", "--profile", "nope")
    missing_text = m2m("auth", "status", "--profile", "nope")

    assert found["source"] == "argument"
    assert found["profile"] == "m2m"
    assert found["logged_in"] is True
    assert missing.returncode == 2
    assert missing.stderr == ""
    assert "profile 'nope' (from argument) does not exist" in json.loads(missing.stdout)["error"]
    assert "profile 'nope' (from argument) does not exist" in _failed(missing_text, 2)


def test_secret_from_the_environment_and_loopback_flag_after_the_command(
    cli: Cli, peer: Peer
) -> None:
    """The M2M secret can come from $PL_AUTH_CLIENT_SECRET instead of the command line, and
    `--allow-loopback-http` works after the command too."""
    args = ["auth", "login", "--client-id", CLIENT_ID, "--issuer", peer.issuer, "--profile", "env"]
    result = cli(*args, "--allow-loopback-http", env={"PL_AUTH_CLIENT_SECRET": CLIENT_SECRET})

    assert result.returncode == 0, result.stderr
    assert result.stdout == "logged in as an M2M client: profile 'env' is now in use\n"
    assert peer.grants("client_credentials") == 1
    saved = json.loads((cli.home / ".planet" / "env" / "auth_client.json").read_text())
    assert saved["client_secret"] == CLIENT_SECRET


# -- choosing the session: the library's precedence ------------------------------------------------


@pytest.mark.parametrize(
    ("environ", "kind"),
    [
        pytest.param({"PL_AUTH_PROFILE": "K", "PL_API_KEY": "PLAK-env"}, "api_key", id="profile"),
        pytest.param({"PL_API_KEY": "PLAK-env"}, "api_key", id="api-key"),
        pytest.param(
            {"PL_AUTH_CLIENT_ID": "svc", "PL_AUTH_CLIENT_SECRET": "svc-secret"}, "m2m", id="m2m"
        ),
    ],
)
def test_environment_chooses_the_session_as_the_library_does(
    cli: Cli, peer: Peer, environ: dict[str, str], kind: str
) -> None:
    """With ~/.planet.json naming an M2M profile, PL_* variables choose the session exactly as
    `choose_session` does: a variable beats the file, and the source names the variable."""
    home = PlanetHome(cli.home)
    home.write_auth_client(
        "m2m", AuthClientConfig.m2m(CLIENT_ID, CLIENT_SECRET, auth_server=peer.issuer)
    )
    home.write_auth_client("k", AuthClientConfig(client_type="static_apikey"))
    home.write_token_file("k", {"api_key": API_KEY})
    home.set_default_profile("m2m")
    expected = choose_session(environ=environ, home=home)

    status = _json(cli("auth", "status", "--json", env=environ))

    assert status["source"] == expected.origin
    assert status["source"].startswith("environment variable PL_")
    assert status["profile"] == expected.profile
    assert status["kind"] == kind
    assert cli.leaks("PLAK-env", "svc-secret") == []


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"PL_AUTH_PROFILE": "nope"}, "(from environment variable PL_AUTH_PROFILE) does not exist"),
        ({"PL_AUTH_CLIENT_ID": "svc"}, "PL_AUTH_CLIENT_SECRET is missing"),
    ],
)
def test_bad_environment_is_a_usage_error(m2m: Cli, environ: dict[str, str], named: str) -> None:
    """A PL_* variable that cannot work is exit code 2 and one line naming the variable, even
    though ~/.planet.json names a working profile."""
    assert named in _failed(m2m("auth", "status", env=environ), 2)


# -- a user session: device login, refresh, logout (revokes) ---------------------------------------


@pytest.fixture(scope="module")
def approve() -> Iterator[Approve]:
    """Confirms a device code as a user does: in Chromium if there is one, else by posting the
    same dev pages' forms over HTTP."""
    path = os.environ.get("PLANET_ASYNC_CHROMIUM") or shutil.which("chromium")
    if path is None:
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            yield lambda url: pool.submit(approve_device_over_http, url, login="carol")
        return
    browser = Chromium.launch(path)
    try:
        yield lambda url: browser.approve_device(url, login="carol")
    finally:
        browser.close()


def _device_login(cli: Cli, peer: Peer, approve: Approve) -> tuple[int, str, str]:
    """Run `auth login --device`, read the code it shows, confirm it as the user, and return
    the command's exit code, stdout and stderr."""
    args = ["--allow-loopback-http", "auth", "login", "--device", "--client-id", USER_CLIENT_ID]
    args += ["--issuer", peer.issuer, "--scope", "openid", "--scope", "offline_access"]
    args += ["--profile", "me", "--timeout", str(TIMEOUT)]
    with subprocess.Popen(
        cli.argv(*args),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli.env(),
        cwd=cli.home,
    ) as proc:
        assert proc.stderr is not None
        shown: list[str] = []
        while not (shown and shown[-1].lstrip().startswith("Or open:")):
            line = proc.stderr.readline()
            assert line, f"the command ended before showing a code: {''.join(shown)}"
            shown.append(line)
        approval = approve(shown[-1].split("Or open:", 1)[1].strip())
        try:
            stdout, rest = proc.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        approval.result(timeout=TIMEOUT)
    stderr = "".join(shown) + rest
    cli.record(args, stdout, stderr)
    return proc.returncode, stdout, stderr


def test_device_login_refresh_and_logout_revokes(cli: Cli, peer: Peer, approve: Approve) -> None:
    """The device login shows the URL and code on stderr and, once the user confirms, saves a
    user session with a refresh token; `auth refresh` uses it once; `auth logout` revokes the
    current refresh token at the peer and deletes token.json. (About 6 s: the peer sends no
    `interval`, so the command polls every 5 s as RFC 8628 says.)"""
    code, stdout, stderr = _device_login(cli, peer, approve)

    assert code == 0, stderr
    assert stdout == "logged in as a user: profile 'me' is now in use\n"
    user_code = re.search(r"^\s+Code:\s+(\S+)$", stderr, re.MULTILINE)
    assert user_code is not None
    assert re.fullmatch(r"[A-Z]{4}-[A-Z]{4}", user_code.group(1))
    assert re.search(rf"^\s+Visit:\s+{re.escape(peer.issuer)}/device$", stderr, re.MULTILINE)
    assert f"{peer.issuer}/device?user_code={user_code.group(1)}" in stderr
    assert peer.grants(DEVICE_CODE_GRANT) == 1
    first = _token_file(cli.home, "me")

    status = _json(cli("auth", "status", "--json", "--profile", "me"))
    assert status["kind"] == "user"
    assert status["logged_in"] is True
    assert status["has_refresh_token"] is True
    assert status["source"] == "argument"

    refreshed = cli("--allow-loopback-http", "--profile", "me", "auth", "refresh")
    assert refreshed.returncode == 0, refreshed.stderr
    assert peer.grants("refresh_token") == 1
    second = _token_file(cli.home, "me")
    assert second["refresh_token"] != first["refresh_token"]  # the peer rotates them
    assert VerifyingApi(peer.issuer).verify(second["access_token"])

    out = cli("--allow-loopback-http", "--profile", "me", "auth", "logout")
    assert out.returncode == 0, out.stderr
    config = cli.home / ".planet.json"
    assert out.stdout == (
        f"logged out of profile 'me' (refresh token revoked); {config} no longer names it\n"
    )
    assert not (cli.home / ".planet" / "me" / "token.json").exists()
    refused = httpx.post(
        f"{peer.issuer}/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": second["refresh_token"],
            "client_id": USER_CLIENT_ID,
        },
        trust_env=False,
    )
    assert refused.status_code == 400
    assert refused.json()["error"] == "invalid_grant"
    assert peer.grants("refresh_token") == 1

    after = cli("--profile", "me", "auth", "status")
    assert "not logged in" in _failed(after, 1)
    secrets = (first["access_token"], first["refresh_token"], second["access_token"])
    assert cli.leaks(*secrets, second["refresh_token"]) == []


def test_device_login_that_times_out_leaves_no_profile(cli: Cli, peer: Peer) -> None:
    """Nobody confirms the code within --timeout: exit 1, the last line says so (no traceback),
    and the new profile is gone again."""
    args = ["--allow-loopback-http", "auth", "login", "--device", "--client-id", USER_CLIENT_ID]
    result = cli(*args, "--issuer", peer.issuer, "--profile", "me", "--timeout", "0.5")

    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    last = result.stderr.splitlines()[-1]
    assert last.startswith("planet-async: error: nobody confirmed the device code within 0.5 s")
    assert result.stdout == ""
    assert not (cli.home / ".planet" / "me").exists()
    assert peer.grants(DEVICE_CODE_GRANT) == 0


def test_http_authorization_server_needs_the_loopback_flag(cli: Cli, peer: Peer) -> None:
    """Without --allow-loopback-http an http:// issuer is refused before the secret or any
    request goes to it: exit 2, one line, nothing written."""
    line = _failed(cli(*_m2m_login(peer.issuer, "p")[1:]), 2)

    assert f"refusing authorization server {peer.issuer}: it is not https" in line
    assert "--allow-loopback-http" in line
    assert not (cli.home / ".planet").exists()
    assert peer.stats()["grant_success"] == {}
    assert peer.errors() == {}


# -- API keys ------------------------------------------------------------------------------------


def test_api_key_profile(cli: Cli) -> None:
    """`auth login --api-key -` saves a profile of kind api_key (the key in token.json, 0600);
    `auth print-access-token` on it fails with one line, since a key is not an access token."""
    login = cli("auth", "login", "--api-key", "-", "--profile", "k", input=f"{API_KEY}\n")
    status = _json(cli("--profile", "k", "auth", "status", "--json"))
    printed = cli("--profile", "k", "auth", "print-access-token")

    assert login.returncode == 0, login.stderr
    assert login.stdout == "logged in with an API key: profile 'k' is now in use\n"
    assert login.stderr == ""
    assert status["kind"] == "api_key"
    assert status["logged_in"] is True
    assert status["profile"] == "k"
    assert "API key" in _failed(printed, 1)
    token_file = cli.home / ".planet" / "k" / "token.json"
    assert _mode(token_file) == 0o600
    assert json.loads(token_file.read_text())["api_key"] == API_KEY
    assert cli.leaks() == []


def test_api_key_logout_forgets_the_key(cli: Cli) -> None:
    """A key read from stdin is saved; after `auth logout` it is in no file under the home
    directory and `auth status` says to log in again (exit 1)."""
    login = cli("auth", "login", "--api-key", "-", "--profile", "k", input=f"{API_KEY}\n")
    out = cli("--profile", "k", "auth", "logout")
    status = cli("--profile", "k", "auth", "status")

    assert login.returncode == 0, login.stderr
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("logged out of profile 'k'; ")
    assert "auth login --api-key" in _failed(status, 1)
    stored = [path.read_text() for path in cli.home.rglob("*") if path.is_file()]
    assert stored  # the profile itself is still there
    assert not any(API_KEY in text for text in stored)
    assert cli.leaks() == []


# -- profiles ------------------------------------------------------------------------------------


def test_profile_list_and_use(m2m: Cli) -> None:
    """`profile list` marks the default with '*' (and lists the built-in profiles); `profile
    use` changes it; an unknown name is exit 2 and changes nothing."""
    PlanetHome(m2m.home).write_auth_client("k", AuthClientConfig(client_type="static_apikey"))
    listed = m2m("profile", "list")
    used = m2m("profile", "use", "K")
    missing = m2m("profile", "use", "nope")

    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines() == [
        "  k",
        "* m2m",
        "  planet-user",
        "  planet-m2m",
        "  legacy",
    ]
    assert used.returncode == 0, used.stderr
    assert used.stdout == "default profile: k\n"
    assert "'nope'" in _failed(missing, 2)
    assert json.loads((m2m.home / ".planet.json").read_text()) == {"PL_AUTH_PROFILE": "k"}


def test_profile_show_masks_the_secret(m2m: Cli, peer: Peer) -> None:
    """`profile show` prints a profile's settings with the client secret masked."""
    shown = m2m("profile", "show", "m2m")

    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert "profile: m2m" in lines
    assert "client_id: service-basic" in lines
    assert f"auth_server: {peer.issuer}" in lines
    assert "client_secret: **********" in lines
    assert m2m.leaks() == []


# -- bad input: one line, an exit code, no traceback ---------------------------------------------


@pytest.mark.parametrize(
    ("path", "content", "args"),
    [
        pytest.param(".planet.json", "{not json", ["auth", "status"], id="planet.json"),
        pytest.param(
            ".planet/m2m/auth_client.json",
            '{"client_id": "x"}',
            ["--profile", "m2m", "auth", "status"],
            id="auth_client.json",
        ),
    ],
)
def test_corrupt_settings_file_is_a_usage_error(
    m2m: Cli, path: str, content: str, args: list[str]
) -> None:
    """A settings file that is not what it should be: exit 2 and one line naming the file,
    which is left as it is."""
    (m2m.home / path).write_text(content)

    line = _failed(m2m(*args), 2)

    assert str(m2m.home / path) in line
    assert (m2m.home / path).read_text() == content


def test_corrupt_token_file_is_moved_aside_with_a_warning(m2m: Cli, peer: Peer) -> None:
    """A token.json that is not JSON is moved aside with a one-line warning naming both files
    and the session counts as logged out; the next token comes from a new grant."""
    token_file = m2m.home / ".planet" / "m2m" / "token.json"
    token_file.write_text("garbage")

    status = m2m("auth", "status", "--json")
    printed = m2m("--allow-loopback-http", "auth", "print-access-token", prints_token=True)

    assert _json(status)["logged_in"] is False
    [warning] = status.stderr.splitlines()
    [aside] = token_file.parent.glob("token.json.corrupt-*")
    assert warning.startswith("planet-async: warning: ")
    assert str(token_file) in warning
    assert str(aside) in warning
    assert aside.read_text() == "garbage"
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout.strip() == _token_file(m2m.home, "m2m")["access_token"]
    assert peer.grants("client_credentials") == 2


def test_missing_secret_without_a_terminal_is_a_usage_error(cli: Cli) -> None:
    """An M2M login with no secret, no $PL_AUTH_CLIENT_SECRET and no terminal to prompt on:
    exit 2, one line, nothing written."""
    line = _failed(cli("auth", "login", "--client-id", "x"), 2)

    assert "--client-secret" in line
    assert "PL_AUTH_CLIENT_SECRET" in line
    assert not (cli.home / ".planet").exists()


def test_wrong_secret_leaves_no_profile(cli: Cli, peer: Peer) -> None:
    """A refused secret: exit 1, one line naming the client and the OAuth error (never the
    secret), and no profile left behind."""
    line = _failed(cli(*_m2m_login(peer.issuer, "w", secret="not-the-secret")), 1)

    assert "invalid_client" in line
    assert "'service-basic'" in line
    assert "not-the-secret" not in line
    assert not (cli.home / ".planet" / "w").exists()
    assert not (cli.home / ".planet.json").exists()
    assert peer.errors() == {"client_credentials:invalid_client": 1}


def test_unreachable_issuer_fails_quickly(cli: Cli) -> None:
    """An issuer on a closed port: exit 1 well inside the timeout, one line naming the URL that
    could not be reached and why (refused), and nothing left behind, not even ~/.planet."""
    port = _closed_port()
    issuer = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    result = cli(*_m2m_login(issuer, "u"), timeout=15)
    elapsed = time.monotonic() - started

    line = _failed(result, 1)
    assert line.endswith(
        f"{issuer}/.well-known/openid-configuration could not be reached: the connection to "
        f"127.0.0.1:{port} was refused (is the server running there?)"
    )
    assert elapsed < 10
    assert list(cli.home.iterdir()) == []


def test_a_login_that_fails_on_tls_leaves_nothing_behind(cli: Cli, peer: Peer) -> None:
    """An M2M login and a user login against https on the peer's plain-HTTP port: each fails
    saying TLS failed (perhaps it is plain http), and neither leaves a file or a directory."""
    issuer = peer.issuer.replace("http://", "https://", 1)
    m2m = cli("auth", "login", "--client-id", CLIENT_ID, "--client-secret", "x", "--issuer", issuer)
    user = cli("auth", "login", "--device", "--client-id", USER_CLIENT_ID, "--issuer", issuer)

    for result in (m2m, user):
        line = _failed(result, 1)
        assert line.endswith(
            "could not be reached: TLS failed: wrong version number (is it a plain http server?)"
        )
    assert list(cli.home.iterdir()) == []


def test_a_failed_login_to_the_profile_in_use_leaves_it_as_it_was(cli: Cli) -> None:
    """A plain `auth login` to the user profile in use, whose issuer refuses connections: it
    fails saying so, and the profile's files are exactly as before (none added, none removed)."""
    issuer = f"http://127.0.0.1:{_closed_port()}"
    home = PlanetHome(cli.home)
    home.write_auth_client("me", AuthClientConfig.user(USER_CLIENT_ID, auth_server=issuer))
    home.set_default_profile("me")
    before = {p: p.read_bytes() for p in cli.home.rglob("*") if p.is_file()}

    line = _failed(cli("--allow-loopback-http", "auth", "login", "--device"), 1)

    assert "was refused" in line
    assert {p: p.read_bytes() for p in cli.home.rglob("*") if p.is_file()} == before
    assert sorted(cli.home.rglob("*")) == sorted(
        [*before, cli.home / ".planet", home.profile_dir("me")]
    )


def test_a_failed_login_keeps_what_was_there(cli: Cli) -> None:
    """A failed login into an existing ~/.planet removes only what it made: the directories
    and files that were there stay."""
    (cli.home / ".planet" / "other").mkdir(parents=True)
    (cli.home / ".planet" / "other" / "notes.txt").write_text("mine")
    issuer = f"http://127.0.0.1:{_closed_port()}"
    _failed(cli(*_m2m_login(issuer, "u"), timeout=15), 1)

    assert sorted(p.name for p in (cli.home / ".planet").iterdir()) == ["other"]
    assert (cli.home / ".planet" / "other" / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize(
    ("command", "typo", "meant"),
    [
        (("auth", "login"), "planet-usr", "planet-user"),
        (("auth", "status"), "Planet-M2N", "planet-m2m"),
        (("profile", "use", "my-profle"), None, "my-profile"),
        (("profile", "show", "my-prfile"), None, "my-profile"),
    ],
)
def test_a_mistyped_profile_name_gets_a_suggestion(
    cli: Cli, command: tuple[str, ...], typo: str | None, meant: str
) -> None:
    """A profile name close to an existing or built-in one is a usage error that asks "did you
    mean" that one; nothing is written."""
    PlanetHome(cli.home).write_auth_client("my-profile", AuthClientConfig.static_api_key(API_KEY))
    before = sorted(str(p.relative_to(cli.home)) for p in cli.home.rglob("*"))
    args = ("--profile", typo, *command) if typo else command
    line = _failed(cli(*args), 2)

    assert f"did you mean {meant!r}?" in line
    assert sorted(str(p.relative_to(cli.home)) for p in cli.home.rglob("*")) == before


def test_a_profile_name_like_none_gets_no_suggestion(cli: Cli) -> None:
    """A name close to no profile is refused without a guess."""
    line = _failed(cli("--profile", "production", "auth", "status"), 2)
    assert "does not exist" in line
    assert "did you mean" not in line


def test_wrong_secret_leaves_an_existing_profile_as_it_was(m2m: Cli, peer: Peer) -> None:
    """A mistyped secret for an existing profile fails and restores its client configuration."""
    config = m2m.home / ".planet" / "m2m" / "auth_client.json"
    before = config.read_bytes()
    _failed(m2m(*_m2m_login(peer.issuer, "m2m", secret="not-the-secret")), 1)
    assert config.read_bytes() == before
    assert m2m("--allow-loopback-http", "auth", "print-access-token").returncode == 0


def test_device_login_qr_code_when_asked() -> None:
    """`--qr` draws a QR code of the complete URI (finder patterns in three corners)."""
    from planet_async.cli._main import _qr_text

    lines = [
        line
        for line in _qr_text("http://127.0.0.1:1/device?user_code=ABCD-EFGH").splitlines()
        if line.strip()
    ]
    finder = "█▀▀▀▀▀█"
    assert lines[0].count(finder) == 2  # top-left and top-right
    assert sum(line.count("▀▀▀▀▀▀▀") for line in lines[:8]) >= 2
    assert len(lines) >= 15
    assert _qr_text("http://127.0.0.1:1/other") != _qr_text("http://127.0.0.1:1/device")
