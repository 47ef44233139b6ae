"""The `planet-async` command as a new user meets it, with nothing but the README.

Log in once and that session is the one in use; a user who never logged in is told how; logout
works the same for every kind of session, however often; read-only commands leave the disk as
it was; `--version`, help and shell completion. Subprocesses against the real peer, as in
tests/test_cli.py, whose helpers these tests share.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

import planet_async
from planet_async import PlanetAuth
from planet_async.profiles import AuthClientConfig, PlanetHome
from tests._peer import Peer
from tests.test_cli import (
    API_KEY,
    CLIENT_ID,
    CLIENT_SECRET,
    USER_CLIENT_ID,
    Cli,
    _closed_port,
    _failed,
    _json,
    _token_file,
    with_m2m_profile,
)

NEVER_LOGGED_IN = (
    "planet-async: error: not logged in: run `planet-async auth login` "
    "(profile 'planet-user', from built-in default)"
)


@pytest.fixture
def cli(clean_env: Path) -> Cli:
    return Cli(clean_env)


@pytest.fixture
def m2m(cli: Cli, peer: Peer) -> Cli:
    """`cli` with an M2M profile `m2m` in use and its token stored (one grant), and no lock
    file, as if a tool that takes no lock had written it."""
    with_m2m_profile(cli, peer)
    (cli.home / ".planet" / "m2m" / "token.json.lock").unlink()
    return cli


def _tree(root: Path) -> dict[str, bytes | None]:
    """Every file (with its content) and directory under `root`."""
    return {
        str(path.relative_to(root)): path.read_bytes() if path.is_file() else None
        for path in root.rglob("*")
    }


def _planet_json(home: Path) -> dict[str, str] | None:
    path = home / ".planet.json"
    return json.loads(path.read_text()) if path.exists() else None


# -- a login makes its profile the one in use --------------------------------------------------


def test_api_key_login_is_in_use_at_once(cli: Cli) -> None:
    """`auth login --api-key -` with the key on stdin says in one line that 'planet-apikey' is
    now in use, and `auth status` and a program's default session then use it."""
    login = cli("auth", "login", "--api-key", "-", input=f"{API_KEY}\n")
    status = _json(cli("auth", "status", "--json"))

    assert login.returncode == 0, login.stderr
    assert login.stdout == "logged in with an API key: profile 'planet-apikey' is now in use\n"
    assert login.stderr == ""
    assert _planet_json(cli.home) == {"PL_AUTH_PROFILE": "planet-apikey"}
    assert status["profile"] == "planet-apikey"
    assert status["kind"] == "api_key"
    assert status["logged_in"] is True
    auth = PlanetAuth.from_user_default_session(home=cli.home)
    assert auth.source is not None
    assert auth.source.profile == "planet-apikey"
    assert cli.leaks() == []


def test_no_use_keeps_the_profile_in_use(m2m: Cli) -> None:
    """`--no-use` saves the key but leaves ~/.planet.json naming the profile in use, and the
    line says how to use the new one."""
    login = m2m("auth", "login", "--api-key", "-", "--no-use", input=f"{API_KEY}\n")

    assert login.returncode == 0, login.stderr
    assert login.stdout.startswith("logged in with an API key: profile 'planet-apikey'; not made")
    assert "--profile planet-apikey" in login.stdout
    assert _planet_json(m2m.home) == {"PL_AUTH_PROFILE": "m2m"}
    assert _json(m2m("auth", "status", "--json"))["profile"] == "m2m"


def test_login_says_when_the_environment_comes_first(cli: Cli) -> None:
    """While PL_API_KEY is set, a login still makes its profile the one in use in
    ~/.planet.json, and the one line says that the variable comes first."""
    login = cli("auth", "login", "--api-key", "-", input=f"{API_KEY}\n", env={"PL_API_KEY": "x"})

    assert login.returncode == 0, login.stderr
    assert login.stdout == (
        "logged in with an API key: profile 'planet-apikey' is now in use, except while "
        "environment variable PL_API_KEY is set, which comes first\n"
    )
    assert _planet_json(cli.home) == {"PL_AUTH_PROFILE": "planet-apikey"}


def test_inline_api_key_works_with_a_warning(cli: Cli) -> None:
    """A key typed on the command line is saved, with one warning (without the key) that
    points to `--api-key -`."""
    login = cli("auth", "login", "--api-key", API_KEY)

    assert login.returncode == 0, login.stderr
    [warning] = login.stderr.splitlines()
    assert warning.startswith("planet-async: warning: ")
    assert "shell history" in warning
    assert "`--api-key -`" in warning
    assert _token_file(cli.home, "planet-apikey")["api_key"] == API_KEY
    assert cli.leaks() == []


def test_empty_api_key_on_stdin_is_a_usage_error(cli: Cli) -> None:
    """`--api-key -` with nothing on stdin: exit 2, one line, nothing written."""
    line = _failed(cli("auth", "login", "--api-key", "-", input=""), 2)

    assert "no API key given" in line
    assert not (cli.home / ".planet").exists()


def test_status_shows_no_empty_fields(cli: Cli) -> None:
    """`auth status` of a key from PL_API_KEY (no profile) prints no `None` line."""
    status = cli("auth", "status", env={"PL_API_KEY": API_KEY})

    assert status.returncode == 0, status.stderr
    assert status.stdout.splitlines() == [
        "source: environment variable PL_API_KEY",
        "kind: api_key",
        "logged_in: True",
    ]


# -- plain `auth login` while a key or an M2M client is in use ---------------------------------


def test_plain_login_with_an_api_key_in_use_logs_in_the_user_profile(cli: Cli) -> None:
    """With an API-key profile in use, plain `auth login` logs in to the user profile
    'planet-user' (here pointing at a closed port, so the attempt fails reaching that server)
    instead of refusing; `--profile` naming the key profile is exit 2 with the flags to use."""
    home = PlanetHome(cli.home)
    home.write_auth_client("k", AuthClientConfig(client_type="static_apikey"))
    home.write_token_file("k", {"api_key": API_KEY})
    home.set_default_profile("k")
    issuer = f"http://127.0.0.1:{_closed_port()}"
    home.write_auth_client("planet-user", AuthClientConfig.user(USER_CLIENT_ID, auth_server=issuer))

    plain = cli("--allow-loopback-http", "auth", "login", "--timeout", "10")
    named = cli("--allow-loopback-http", "--profile", "k", "auth", "login")

    assert f"{issuer}/.well-known/openid-configuration could not be reached" in _failed(plain, 1)
    line = _failed(named, 2)
    assert "profile 'k' is not a user profile (api_key)" in line
    assert "leave out --profile" in line
    assert "`--api-key -`" in line
    assert _planet_json(cli.home) == {"PL_AUTH_PROFILE": "k"}


# -- never logged in ---------------------------------------------------------------------------


def test_never_logged_in_is_told_how_to_log_in(cli: Cli) -> None:
    """In an empty home, `auth status`, `auth print-access-token` and `auth refresh` each say
    "not logged in: run `planet-async auth login`" (exit 1, one line); with --json, the same
    as a JSON object on stdout."""
    for command in ("status", "print-access-token", "refresh"):
        assert _failed(cli("auth", command), 1) == NEVER_LOGGED_IN, command
    as_json = cli("--json", "auth", "status")

    assert as_json.returncode == 1
    assert as_json.stderr == ""
    assert json.loads(as_json.stdout) == {
        "error": "not logged in",
        "hint": "run `planet-async auth login` (profile 'planet-user', from built-in default)",
    }
    assert _tree(cli.home) == {}


def test_not_logged_in_to_a_named_profile_names_it_in_the_command(cli: Cli, peer: Peer) -> None:
    """For a user profile given with --profile, the hint is the login of that profile."""
    home = PlanetHome(cli.home)
    home.write_auth_client("me", AuthClientConfig.user(USER_CLIENT_ID, auth_server=peer.issuer))

    line = _failed(cli("--allow-loopback-http", "--profile", "me", "auth", "refresh"), 1)

    assert line == (
        "planet-async: error: not logged in: run `planet-async --profile me auth login` "
        "(profile 'me', from argument)"
    )
    assert peer.stats()["grant_success"] == {}


# -- logout ------------------------------------------------------------------------------------


def test_logout_of_an_api_key_profile_in_use(cli: Cli) -> None:
    """Logging out of the key profile in use deletes the key and ~/.planet.json stops naming
    it; a second logout is exit 0 too and says there was nothing to forget."""
    cli("auth", "login", "--api-key", "-", input=f"{API_KEY}\n")

    first = cli("auth", "logout")
    second = cli("auth", "logout")

    config = cli.home / ".planet.json"
    assert (first.returncode, second.returncode) == (0, 0)
    assert first.stdout == f"logged out of profile 'planet-apikey'; {config} no longer names it\n"
    assert second.stdout == "not logged in to profile 'planet-user'; nothing to forget\n"
    assert not config.exists()
    assert not (cli.home / ".planet" / "planet-apikey" / "token.json").exists()
    assert _failed(cli("auth", "status"), 1) == NEVER_LOGGED_IN


@pytest.mark.parametrize("profile", ["m2m", "planet-user"])
def test_logout_twice_of_a_profile_is_exit_0_both_times(m2m: Cli, peer: Peer, profile: str) -> None:
    """`--profile X auth logout` twice, for an M2M profile and for a user profile that never
    logged in: exit 0 both times, the second says nothing was left, and no file is created."""
    args = ["--allow-loopback-http", "--profile", profile, "auth", "logout", "--json"]
    first = _json(m2m(*args))
    after_first = _tree(m2m.home)
    second = _json(m2m(*args))

    assert first["forgot"] is (profile == "m2m")
    assert second["forgot"] is False
    assert second["revoked"] is False
    assert _tree(m2m.home) == after_first
    assert not (m2m.home / ".planet" / "planet-user").exists()


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"PL_API_KEY": API_KEY}, "environment variable PL_API_KEY"),
        (
            {"PL_AUTH_CLIENT_ID": CLIENT_ID, "PL_AUTH_CLIENT_SECRET": CLIENT_SECRET},
            "environment variable PL_AUTH_CLIENT_ID",
        ),
    ],
)
def test_logout_says_the_variable_is_still_set(
    cli: Cli, environ: dict[str, str], named: str
) -> None:
    """When an environment variable supplies the credential, logout is exit 0 and says that
    the variable is still set, twice alike."""
    for _ in range(2):
        out = cli("auth", "logout", env=environ)
        assert out.returncode == 0, out.stderr
        assert f"{named} is still set and supplies a credential: unset it" in out.stdout
        assert len(out.stdout.splitlines()) == 1
    assert cli.leaks() == []


# -- read-only commands create nothing ---------------------------------------------------------


def test_read_only_commands_create_no_file(m2m: Cli, peer: Peer) -> None:
    """`auth status` (text and JSON), `auth print-access-token` of a valid token, `profile
    list`/`show` and `--help` leave every file and directory as it was: no lock file, no
    session directory; and the token printed is the stored one (no grant)."""
    before = _tree(m2m.home)
    commands = [
        ["auth", "status"],
        ["auth", "status", "--json"],
        ["--profile", "planet-user", "auth", "status", "--json"],
        ["--allow-loopback-http", "auth", "print-access-token"],
        ["profile", "list"],
        ["profile", "show"],
        ["--help"],
        ["auth", "login", "--help"],
    ]
    results = [m2m(*command, prints_token=True) for command in commands]

    assert [r.returncode for r in results] == [0, 0, 1, 0, 0, 0, 0, 0]
    assert results[3].stdout.strip() == _token_file(m2m.home, "m2m")["access_token"]
    assert _tree(m2m.home) == before
    assert peer.grants("client_credentials") == 1


@pytest.mark.anyio
async def test_library_request_from_a_stored_token_creates_no_file(m2m: Cli, peer: Peer) -> None:
    """A program's first request, served from the valid stored token, creates no file or
    directory (no lock file) and asks the server for nothing."""
    before = _tree(m2m.home)
    seen: list[str] = []

    def api(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["authorization"])
        return httpx.Response(200)

    auth = PlanetAuth.from_user_default_session(home=m2m.home, allow_loopback_http=True)
    async with httpx.AsyncClient(auth=auth, transport=httpx.MockTransport(api)) as client:
        response = await client.get("https://api.planet.com/basemaps/v1/mosaics")

    assert response.status_code == 200
    assert seen == [f"Bearer {_token_file(m2m.home, 'm2m')['access_token']}"]
    assert _tree(m2m.home) == before
    assert peer.grants("client_credentials") == 1


# -- version, help, completion -----------------------------------------------------------------


def test_version_and_bare_command(cli: Cli) -> None:
    """`--version` prints `planet-async <version>`; a bare `planet-async` and `planet-async
    auth` print their help (exit 0), not an error."""
    version = cli("--version")
    bare = cli()
    group = cli("auth")

    assert version.returncode == 0
    assert version.stdout == f"planet-async {planet_async.__version__}\n"
    assert bare.returncode == group.returncode == 0
    assert bare.stderr == group.stderr == ""
    assert bare.stdout.startswith("usage: planet-async ")
    assert "completion" in bare.stdout
    assert group.stdout.startswith("usage: planet-async auth ")
    assert "print-access-token" in group.stdout


@pytest.mark.parametrize(
    ("shell", "registers"),
    [
        ("bash", "-F _python_argcomplete planet-async"),
        ("zsh", "#compdef planet-async"),
        ("fish", "complete --command planet-async"),
    ],
)
def test_completion_script_for_each_shell(cli: Cli, shell: str, registers: str) -> None:
    """`completion SHELL` prints a script that registers completion of `planet-async`."""
    result = cli("completion", shell)

    assert result.returncode == 0, result.stderr
    assert registers in result.stdout


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("planet-async au", ["auth"]),
        ("planet-async auth lo", ["login", "logout"]),
        ("planet-async auth login --api", ["--api-key"]),
        ("planet-async completion ", ["--help", "-h", "bash", "fish", "zsh"]),
    ],
)
def test_bash_completes_the_command(cli: Cli, line: str, expected: list[str]) -> None:
    """In bash, with the script from `completion bash` loaded, <TAB> after `line` offers
    exactly `expected` (the installed `planet-async` answers the shell)."""
    bin_dir = Path(sys.executable).parent
    assert (bin_dir / "planet-async").is_file(), "planet-async is not installed in this venv"
    script = cli("completion", "bash").stdout
    words = line.split(" ")
    program = "\n".join(
        [
            script,
            f"COMP_WORDS=({' '.join(repr(word) for word in words)})",
            f"COMP_CWORD={len(words) - 1}",
            f"COMP_LINE={line!r}",
            "COMP_POINT=${#COMP_LINE}",
            f"_python_argcomplete planet-async {words[-1]!r} {words[-2]!r}",
            "printf '%s\\n' \"${COMPREPLY[@]}\"",
        ]
    )
    result = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", program],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"},
        stdin=subprocess.DEVNULL,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert sorted(word.strip() for word in result.stdout.splitlines()) == expected
