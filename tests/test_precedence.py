"""Which session is used: one precedence over arguments, environment, ``~/.planet.json`` and the
built-in default, as a table.

Sources, strongest first: explicit arguments, then environment variables, then ``~/.planet.json``,
then the built-in ``planet-user`` profile. Within a source: a profile, then a client id and
secret, then an API key (``PL_AUTH_API_KEY`` before ``PL_API_KEY``, and in the file the legacy
``key`` last). A named profile that does not exist, half a client id/secret pair and conflicting
arguments are errors that name where the setting came from: never a silent fallback.

Each row gives its inputs and the exact `SessionSource` expected (``{file}`` in an origin stands
for the path of ``~/.planet.json``). The single-source rows are written out; the rows that combine
sources are generated from them, each expecting one of the written-out results.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from planet_async import ClientCredentialsGrant, ConfigurationError, PlanetAuth, RefreshTokenGrant
from planet_async.profiles import AuthClientConfig, PlanetHome, SessionSource, choose_session
from tests._helpers import API

FILE = "{file}"  # stands for str(~/.planet.json) in expected origins and messages


@dataclass(frozen=True)
class Item:
    """One setting in one source, and the session it selects when it wins."""

    name: str
    args: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    file: dict[str, Any] = field(default_factory=dict)
    expect: SessionSource | None = None


def _profile(name: str, origin: str) -> SessionSource:
    return SessionSource(kind="profile", profile=name, origin=origin)


def _m2m(client_id: str, secret: str, origin: str) -> SessionSource:
    return SessionSource(
        kind="client_credentials",
        origin=origin,
        profile=f"planet-m2m-{client_id}",  # where the planet SDK keeps these tokens too
        client_id=client_id,
        client_secret=SecretStr(secret),
    )


def _key(key: str, origin: str) -> SessionSource:
    return SessionSource(kind="api_key", origin=origin, api_key=SecretStr(key))


# Each source's settings, strongest first; `expect` is what each selects on its own.
ARGUMENTS = [
    Item("arg-profile", args={"profile": "argp"}, expect=_profile("argp", "argument")),
    Item(
        "arg-client",
        args={"client_id": "arg-id", "client_secret": "arg-secret"},
        expect=_m2m("arg-id", "arg-secret", "argument"),
    ),
    Item("arg-key", args={"api_key": "arg-key"}, expect=_key("arg-key", "argument")),
]
ENVIRONMENT = [
    Item(
        "env-profile",
        env={"PL_AUTH_PROFILE": "envp"},
        expect=_profile("envp", "environment variable PL_AUTH_PROFILE"),
    ),
    Item(
        "env-client",
        env={"PL_AUTH_CLIENT_ID": "env-id", "PL_AUTH_CLIENT_SECRET": "env-secret"},
        expect=_m2m("env-id", "env-secret", "environment variable PL_AUTH_CLIENT_ID"),
    ),
    Item(
        "env-auth-api-key",
        env={"PL_AUTH_API_KEY": "env-auth-key"},
        expect=_key("env-auth-key", "environment variable PL_AUTH_API_KEY"),
    ),
    Item(
        "env-api-key",
        env={"PL_API_KEY": "env-key"},
        expect=_key("env-key", "environment variable PL_API_KEY"),
    ),
]
CONFIG_FILE = [
    Item(
        "file-profile",
        file={"PL_AUTH_PROFILE": "filep"},
        expect=_profile("filep", f"{FILE} (PL_AUTH_PROFILE)"),
    ),
    Item(
        "file-client",
        file={"PL_AUTH_CLIENT_ID": "file-id", "PL_AUTH_CLIENT_SECRET": "file-secret"},
        expect=_m2m("file-id", "file-secret", f"{FILE} (PL_AUTH_CLIENT_ID)"),
    ),
    Item(
        "file-auth-api-key",
        file={"PL_AUTH_API_KEY": "file-auth-key"},
        expect=_key("file-auth-key", f"{FILE} (PL_AUTH_API_KEY)"),
    ),
    Item(
        "file-api-key",
        file={"PL_API_KEY": "file-key"},
        expect=_key("file-key", f"{FILE} (PL_API_KEY)"),
    ),
    Item(
        "file-legacy-key",
        file={"key": "legacy-key", "jwt": "legacy.jwt"},
        expect=_key("legacy-key", f"{FILE} (key)"),
    ),
]
SOURCES = [ARGUMENTS, ENVIRONMENT, CONFIG_FILE]
DEFAULT = _profile("planet-user", "built-in default")


@dataclass(frozen=True)
class Row:
    id: str
    args: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    file: dict[str, Any] | None = None
    expect: SessionSource | None = None
    error: str | None = None  # a substring of the ConfigurationError's message


def _combine(*items: Item) -> Row:
    """A row with all of `items`' settings, expecting the first item's session."""
    file: dict[str, Any] = {}
    for item in items:
        file.update(item.file)
    return Row(
        id=" + ".join(item.name for item in items),
        args={k: v for item in items for k, v in item.args.items()},
        env={k: v for item in items for k, v in item.env.items()},
        file=file or None,
        expect=items[0].expect,
    )


def _generated_rows() -> list[Row]:
    rows = [Row("nothing", expect=DEFAULT)]
    # Each setting alone.
    rows += [_combine(item) for source in SOURCES for item in source]
    # One setting from each of two sources: the stronger source wins, whatever the settings.
    for strong, weak in itertools.combinations(SOURCES, 2):
        rows += [_combine(a, b) for a in strong for b in weak]
    # Two settings of the environment or the file: the earlier in the list wins.
    for source in (ENVIRONMENT, CONFIG_FILE):
        rows += [_combine(a, b) for a, b in itertools.combinations(source, 2)]
        rows.append(_combine(*source))  # everything the source can hold
    # Every environment variable and every file key, under each single argument.
    rows += [_combine(arg, *ENVIRONMENT, *CONFIG_FILE) for arg in ARGUMENTS]
    rows.append(_combine(*ENVIRONMENT, *CONFIG_FILE))
    return rows


EXPLICIT_ROWS = [
    # -- values that are blank or not ours are no setting at all ---------------------------------
    Row(
        "blank env profile is unset",
        env={"PL_AUTH_PROFILE": "", "PL_API_KEY": "env-key"},
        expect=_key("env-key", "environment variable PL_API_KEY"),
    ),
    Row(
        "blank file profile is unset",
        file={"PL_AUTH_PROFILE": "  "},
        expect=DEFAULT,
    ),
    Row(
        "empty file",
        file={},
        expect=DEFAULT,
    ),
    Row(
        "unknown file keys are ignored",
        file={"_comment": "hello", "PL_AUTH_EXTRA": "x=y"},
        expect=DEFAULT,
    ),
    Row(
        "a variable named key is not the legacy key",
        env={"key": "env-legacy"},
        expect=DEFAULT,
    ),
    Row(
        "blank argument is no argument",
        args={"profile": "", "api_key": "arg-key"},
        expect=_key("arg-key", "argument"),
    ),
    # -- names -----------------------------------------------------------------------------------
    Row(
        "argument profile name is normalised",
        args={"profile": "ArgP"},
        expect=_profile("argp", "argument"),
    ),
    Row(
        "env profile name is normalised",
        env={"PL_AUTH_PROFILE": "ENVP"},
        expect=_profile("envp", "environment variable PL_AUTH_PROFILE"),
    ),
    Row(
        "built-in profile named in the file",
        file={"PL_AUTH_PROFILE": "legacy"},
        expect=_profile("legacy", f"{FILE} (PL_AUTH_PROFILE)"),
    ),
    Row(
        "client id names the profile its tokens are kept under",
        env={"PL_AUTH_CLIENT_ID": "Env-ID", "PL_AUTH_CLIENT_SECRET": "env-secret"},
        expect=SessionSource(
            kind="client_credentials",
            origin="environment variable PL_AUTH_CLIENT_ID",
            profile="planet-m2m-env-id",
            client_id="Env-ID",
            client_secret=SecretStr("env-secret"),
        ),
    ),
    Row(
        "client id that cannot name a profile",
        env={"PL_AUTH_CLIENT_ID": "a/b", "PL_AUTH_CLIENT_SECRET": "env-secret"},
        error="environment variable PL_AUTH_CLIENT_ID: 'planet-m2m-a/b' cannot be a profile name",
    ),
    # -- a profile that does not exist is an error naming its source -----------------------------
    Row(
        "unknown argument profile",
        args={"profile": "ghost"},
        error="profile 'ghost' (from argument) does not exist",
    ),
    Row(
        "unknown env profile",
        env={"PL_AUTH_PROFILE": "ghost"},
        error="profile 'ghost' (from environment variable PL_AUTH_PROFILE) does not exist",
    ),
    Row(
        "unknown file profile",
        file={"PL_AUTH_PROFILE": "ghost"},
        error=f"profile 'ghost' (from {FILE} (PL_AUTH_PROFILE)) does not exist",
    ),
    Row(
        "unknown env profile does not fall back to the file",
        env={"PL_AUTH_PROFILE": "ghost"},
        file={"PL_AUTH_PROFILE": "filep"},
        error="(from environment variable PL_AUTH_PROFILE) does not exist",
    ),
    Row(
        "unknown env profile does not fall back to env client credentials",
        env={"PL_AUTH_PROFILE": "ghost", "PL_AUTH_CLIENT_ID": "x", "PL_AUTH_CLIENT_SECRET": "y"},
        error="(from environment variable PL_AUTH_PROFILE) does not exist",
    ),
    Row(
        "unknown file profile does not fall back to the legacy key",
        file={"PL_AUTH_PROFILE": "ghost", "key": "legacy-key"},
        error=f"(from {FILE} (PL_AUTH_PROFILE)) does not exist",
    ),
    Row(
        "unknown file profile is not consulted when the env decides",
        env={"PL_API_KEY": "env-key"},
        file={"PL_AUTH_PROFILE": "ghost"},
        expect=_key("env-key", "environment variable PL_API_KEY"),
    ),
    Row(
        "env profile with a path separator",
        env={"PL_AUTH_PROFILE": "../envp"},
        error="environment variable PL_AUTH_PROFILE: '../envp' cannot be a profile name",
    ),
    Row(
        "file profile with a path separator",
        file={"PL_AUTH_PROFILE": "a/b"},
        error=f"{FILE} (PL_AUTH_PROFILE): 'a/b' cannot be a profile name",
    ),
    Row(
        "file profile that is not a string",
        file={"PL_AUTH_PROFILE": 42},
        error=f"{FILE} (PL_AUTH_PROFILE)",
    ),
    Row(
        "file API key that is not a string",
        file={"PL_API_KEY": ["PLAK"]},
        error=f"{FILE} (PL_API_KEY)",
    ),
    # -- half a client id / secret pair ----------------------------------------------------------
    Row(
        "argument client id without its secret",
        args={"client_id": "arg-id"},
        error="argument: a client id needs its secret; PL_AUTH_CLIENT_SECRET is missing",
    ),
    Row(
        "argument secret without its client id",
        args={"client_secret": "arg-secret"},
        error="argument: a client id needs its secret; PL_AUTH_CLIENT_ID is missing",
    ),
    Row(
        "env client id without its secret",
        env={"PL_AUTH_CLIENT_ID": "env-id"},
        error="environment variable PL_AUTH_CLIENT_ID: a client id needs its secret; "
        "PL_AUTH_CLIENT_SECRET is missing",
    ),
    Row(
        "env secret without its client id",
        env={"PL_AUTH_CLIENT_SECRET": "env-secret"},
        error="PL_AUTH_CLIENT_ID is missing",
    ),
    Row(
        "file client id without its secret",
        file={"PL_AUTH_CLIENT_ID": "file-id"},
        error=f"{FILE} (PL_AUTH_CLIENT_ID): a client id needs its secret; "
        "PL_AUTH_CLIENT_SECRET is missing",
    ),
    Row(
        "file secret without its client id",
        file={"PL_AUTH_CLIENT_SECRET": "file-secret"},
        error="PL_AUTH_CLIENT_ID is missing",
    ),
    Row(
        "env id and file secret do not make a pair",
        env={"PL_AUTH_CLIENT_ID": "env-id"},
        file={"PL_AUTH_CLIENT_SECRET": "file-secret"},
        error="environment variable PL_AUTH_CLIENT_ID: a client id needs its secret",
    ),
    Row(
        "half a pair is not skipped for an API key",
        env={"PL_AUTH_CLIENT_ID": "env-id", "PL_API_KEY": "env-key"},
        error="PL_AUTH_CLIENT_SECRET is missing",
    ),
    Row(
        "half a pair in the env is not skipped for the file",
        env={"PL_AUTH_CLIENT_SECRET": "env-secret"},
        file={"PL_AUTH_PROFILE": "filep"},
        error="PL_AUTH_CLIENT_ID is missing",
    ),
    Row(
        "half a pair under a profile of the same source is never reached",
        env={"PL_AUTH_PROFILE": "envp", "PL_AUTH_CLIENT_ID": "env-id"},
        expect=_profile("envp", "environment variable PL_AUTH_PROFILE"),
    ),
    Row(
        "half a pair in the file is never reached when the env decides",
        env={"PL_API_KEY": "env-key"},
        file={"PL_AUTH_CLIENT_ID": "file-id"},
        expect=_key("env-key", "environment variable PL_API_KEY"),
    ),
    Row(
        "half a pair in the env with a full pair as arguments",
        args={"client_id": "arg-id", "client_secret": "arg-secret"},
        env={"PL_AUTH_CLIENT_ID": "env-id"},
        expect=_m2m("arg-id", "arg-secret", "argument"),
    ),
    # -- conflicting arguments -------------------------------------------------------------------
    *[
        Row(
            f"conflicting arguments: {' + '.join(sorted(args))}",
            args=args,
            error="give a profile, a client id and secret, or an API key: one",
        )
        for args in (
            {"profile": "argp", "api_key": "arg-key"},
            {"profile": "argp", "client_id": "arg-id", "client_secret": "arg-secret"},
            {"client_id": "arg-id", "client_secret": "arg-secret", "api_key": "arg-key"},
            {"profile": "argp", "client_id": "arg-id"},
            {"profile": "argp", "client_secret": "arg-secret"},
            {"api_key": "arg-key", "client_secret": "arg-secret"},
            {
                "profile": "argp",
                "client_id": "arg-id",
                "client_secret": "arg-secret",
                "api_key": "arg-key",
            },
        )
    ],
]

ROWS = _generated_rows() + EXPLICIT_ROWS


def test_the_table_has_no_duplicate_ids() -> None:
    """Every row is distinct, so each appears in the report on its own."""
    ids = [row.id for row in ROWS]
    assert len(ids) == len(set(ids))
    assert len(ROWS) > 100


@pytest.fixture
def home(tmp_path: Path) -> PlanetHome:
    """A home with the profiles the table names: argp, envp and filep."""
    planet_home = PlanetHome(tmp_path / "planet-home")
    for name in ("argp", "envp", "filep"):
        planet_home.write_auth_client(name, AuthClientConfig.user(f"{name}-client"))
    return planet_home


def _fill(text: str, home: PlanetHome) -> str:
    return text.replace(FILE, str(home.config_file))


def _expected(source: SessionSource, home: PlanetHome) -> SessionSource:
    return SessionSource(
        kind=source.kind,
        origin=_fill(source.origin, home),
        profile=source.profile,
        client_id=source.client_id,
        client_secret=source.client_secret,
        api_key=source.api_key,
    )


@pytest.mark.parametrize("row", ROWS, ids=[row.id for row in ROWS])
def test_precedence(row: Row, home: PlanetHome) -> None:
    """The row's inputs select exactly the row's session, or fail naming the row's source."""
    if row.file is not None:
        home.home.mkdir(parents=True, exist_ok=True)
        home.config_file.write_text(json.dumps(row.file))
    if row.error is not None:
        with pytest.raises(ConfigurationError) as info:
            choose_session(environ=row.env, home=home, **row.args)
        assert _fill(row.error, home) in str(info.value)
        for secret in ("arg-secret", "env-secret", "file-secret", "arg-key", "env-key"):
            assert secret not in str(info.value)
        return
    assert row.expect is not None
    assert choose_session(environ=row.env, home=home, **row.args) == _expected(row.expect, home)


def test_secrets_compare_by_value() -> None:
    """The table's comparisons see the secrets: a different secret is a different source."""
    assert _m2m("a", "one", "argument") != _m2m("a", "two", "argument")
    assert _key("one", "argument") != _key("two", "argument")


def test_defaults_read_the_process_environment_and_home(
    monkeypatch: pytest.MonkeyPatch, clean_env: Path
) -> None:
    """Without `environ` and `home`, choose_session reads os.environ and $HOME."""
    PlanetHome(clean_env).write_auth_client("homep", AuthClientConfig.user("x"))
    (clean_env / ".planet.json").write_text(json.dumps({"PL_AUTH_PROFILE": "homep"}))
    assert choose_session() == _profile("homep", f"{clean_env / '.planet.json'} (PL_AUTH_PROFILE)")
    monkeypatch.setenv("PL_API_KEY", "env-key")
    assert choose_session() == _key("env-key", "environment variable PL_API_KEY")


# -- PlanetAuth.from_user_default_session and from_profile apply the same precedence -------------


def _header(auth: PlanetAuth) -> str | None:
    seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("authorization"))
        return httpx.Response(200)

    with httpx.Client(auth=auth, transport=httpx.MockTransport(handler)) as client:
        client.get(f"{API}/data/v1/searches")
    return seen[0]


def test_default_session_is_the_builtin_planet_user(home: PlanetHome) -> None:
    """With nothing set: the built-in planet-user profile, a user session in ~/.planet."""
    auth = PlanetAuth.from_user_default_session(home=home.home)
    assert auth.source == DEFAULT
    assert auth.user is not None
    assert auth.manager is not None
    assert auth.manager.session == "planet-user"


def test_default_session_from_the_env_profile(
    home: PlanetHome, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PL_AUTH_PROFILE in the environment beats the file's profile and legacy key."""
    home.config_file.write_text(json.dumps({"PL_AUTH_PROFILE": "filep", "key": "legacy-key"}))
    monkeypatch.setenv("PL_AUTH_PROFILE", "EnvP")
    auth = PlanetAuth.from_user_default_session(home=home.home)
    assert auth.source == _profile("envp", "environment variable PL_AUTH_PROFILE")
    assert auth.manager is not None
    assert isinstance(auth.manager.grant, RefreshTokenGrant)
    assert auth.manager.session == "envp"


def test_default_session_from_env_client_credentials(
    home: PlanetHome, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PL_AUTH_CLIENT_ID + PL_AUTH_CLIENT_SECRET: an M2M session against Planet's M2M server."""
    home.config_file.write_text(json.dumps({"PL_API_KEY": "file-key"}))
    monkeypatch.setenv("PL_AUTH_CLIENT_ID", "env-id")
    monkeypatch.setenv("PL_AUTH_CLIENT_SECRET", "env-secret")
    auth = PlanetAuth.from_user_default_session(home=home.home)
    assert auth.source == _m2m("env-id", "env-secret", "environment variable PL_AUTH_CLIENT_ID")
    assert auth.manager is not None
    grant = auth.manager.grant
    assert isinstance(grant, ClientCredentialsGrant)
    assert grant.client.client_id == "env-id"
    assert grant.server.issuer == "https://services.sentinel-hub.com/auth/realms/main"
    assert grant.extra_params == {"audience": "https://api.planet.com/"}
    assert auth.manager.session == "planet-m2m-env-id"  # planet's token directory for these
    assert auth.manager.storage.root == home.profiles_dir  # type: ignore[attr-defined]


def test_default_session_from_env_api_keys(
    home: PlanetHome, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PL_AUTH_API_KEY beats PL_API_KEY, and the key goes out as an api-key header."""
    monkeypatch.setenv("PL_API_KEY", "env-key")
    monkeypatch.setenv("PL_AUTH_API_KEY", "env-auth-key")
    auth = PlanetAuth.from_user_default_session(home=home.home)
    assert auth.source == _key("env-auth-key", "environment variable PL_AUTH_API_KEY")
    assert _header(auth) == "api-key env-auth-key"


def test_default_session_from_the_legacy_key(home: PlanetHome) -> None:
    """The legacy {"key": ...} in ~/.planet.json, when nothing else is set."""
    home.config_file.write_text(json.dumps({"key": "legacy-key"}))
    auth = PlanetAuth.from_user_default_session(home=home.home)
    assert auth.source == _key("legacy-key", f"{home.config_file} (key)")
    assert _header(auth) == "api-key legacy-key"


def test_default_session_with_an_unknown_env_profile(
    home: PlanetHome, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bad PL_AUTH_PROFILE is an error naming the variable, not the built-in default."""
    home.config_file.write_text(json.dumps({"PL_AUTH_PROFILE": "filep"}))
    monkeypatch.setenv("PL_AUTH_PROFILE", "ghost")
    with pytest.raises(ConfigurationError, match="environment variable PL_AUTH_PROFILE"):
        PlanetAuth.from_user_default_session(home=home.home)


def test_default_session_with_half_a_pair(
    home: PlanetHome, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PL_AUTH_CLIENT_ID without its secret is an error, not a fallback to the API key."""
    monkeypatch.setenv("PL_AUTH_CLIENT_ID", "env-id")
    monkeypatch.setenv("PL_API_KEY", "env-key")
    with pytest.raises(ConfigurationError, match="PL_AUTH_CLIENT_SECRET is missing"):
        PlanetAuth.from_user_default_session(home=home.home)


def test_from_profile_beats_the_environment(
    home: PlanetHome, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An explicit profile wins over PL_AUTH_PROFILE and PL_API_KEY in the environment."""
    monkeypatch.setenv("PL_AUTH_PROFILE", "envp")
    monkeypatch.setenv("PL_API_KEY", "env-key")
    auth = PlanetAuth.from_profile("argp", home=home.home)
    assert auth.source == _profile("argp", "argument")
    assert auth.manager is not None
    assert auth.manager.session == "argp"
