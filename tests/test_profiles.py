"""The `planet` CLI's files: ``~/.planet.json`` and ``~/.planet/<profile>/``, read and written.

Every client type of ``auth_client.json`` parses and builds the right kind of session; files are
written exactly as `planet` writes them; unknown keys survive a rewrite; broken files are errors
that name the file; secrets stay out of reprs and messages.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import SecretStr

from planet_async import (
    ClientCredentialsGrant,
    ClientSecretPost,
    ConfigurationError,
    FileStorage,
    LoginRequired,
    PlanetAuth,
    PrivateKeyJWT,
    PublicClient,
    RefreshTokenGrant,
)
from planet_async._auth import auth_for_client
from planet_async.profiles import (
    BUILTIN_PROFILES,
    AuthClientConfig,
    PlanetHome,
    SessionSource,
    normalize_profile_name,
)
from tests._helpers import API

PLANET_AUDIENCE = "https://api.planet.com/"
SECRET = "s3cret-client-secret"
API_KEY = "PLAKabcdef0123456789"


def _layout(data: dict[str, Any]) -> bytes:
    """What `planet` writes for `data`: sorted keys, two-space indents, no trailing newline."""
    return json.dumps(data, indent=2, sort_keys=True).encode()


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def _sent_header(auth: PlanetAuth) -> str | None:
    """The Authorization header `auth` puts on a request to api.planet.com (sync: API keys)."""
    seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("authorization"))
        return httpx.Response(200)

    with httpx.Client(auth=auth, transport=httpx.MockTransport(handler)) as client:
        client.get(f"{API}/data/v1/searches")
    assert len(seen) == 1
    return seen[0]


def _ec_pem(password: bytes | None = None) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    encryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    ).decode()


# -- the files' layout ---------------------------------------------------------------------------


def test_auth_client_json_is_written_as_planet_writes_it(tmp_path: Path) -> None:
    """auth_client.json: sorted keys, indent 2, no trailing newline, no nulls, file 0600 and
    directories 0700."""
    home = PlanetHome(tmp_path / "home")
    home.write_auth_client("svc", AuthClientConfig.m2m("svc-id", SECRET))
    path = tmp_path / "home" / ".planet" / "svc" / "auth_client.json"
    expected = {
        "audiences": [PLANET_AUDIENCE],
        "auth_server": "https://services.sentinel-hub.com/auth/realms/main",
        "client_id": "svc-id",
        "client_secret": SECRET,
        "client_type": "oidc_client_credentials_secret",
        "scopes": [],
    }
    assert path.read_bytes() == _layout(expected)
    assert not path.read_bytes().endswith(b"\n")
    assert b"null" not in path.read_bytes()
    assert _mode(path) == 0o600
    assert _mode(path.parent) == 0o700
    assert _mode(path.parent.parent) == 0o700


def test_planet_json_is_written_as_planet_writes_it(tmp_path: Path) -> None:
    """~/.planet.json: the same layout, 0600, and null values dropped."""
    home = PlanetHome(tmp_path)
    home.write_config({"PL_AUTH_PROFILE": "planet-user", "PL_API_KEY": None})
    assert home.config_file.read_bytes() == _layout({"PL_AUTH_PROFILE": "planet-user"})
    assert _mode(home.config_file) == 0o600


def test_token_file_is_written_as_planet_writes_it(tmp_path: Path) -> None:
    """An API key token.json: the same layout, nulls dropped, 0600."""
    home = PlanetHome(tmp_path)
    home.write_token_file("Keys", {"api_key": API_KEY, "bearer_token_prefix": "api-key", "x": None})
    path = tmp_path / ".planet" / "keys" / "token.json"
    assert path.read_bytes() == _layout({"api_key": API_KEY, "bearer_token_prefix": "api-key"})
    assert _mode(path) == 0o600
    assert home.read_token_file("KEYS") == {"api_key": API_KEY, "bearer_token_prefix": "api-key"}
    assert home.delete_token_file("keys") is True
    assert home.delete_token_file("keys") is False
    assert home.read_token_file("keys") is None


def test_home_defaults_to_the_users_home(clean_env: Path) -> None:
    """Without an argument PlanetHome uses $HOME, and its token storage is ~/.planet."""
    home = PlanetHome()
    assert home.home == clean_env
    assert home.config_file == clean_env / ".planet.json"
    storage = home.storage()
    assert isinstance(storage, FileStorage)
    assert storage.root == clean_env / ".planet"


def test_set_default_profile_keeps_the_other_keys(tmp_path: Path) -> None:
    """`set_default_profile` is a read-modify-write: unknown keys and the legacy key stay."""
    config = tmp_path / ".planet.json"
    config.write_text(json.dumps({"_comment": "mine", "key": "PLAKold", "PL_AUTH_PROFILE": "a"}))
    PlanetHome(tmp_path).set_default_profile("My-Profile")
    assert json.loads(config.read_text()) == {
        "_comment": "mine",
        "key": "PLAKold",
        "PL_AUTH_PROFILE": "my-profile",
    }
    assert config.read_bytes() == _layout(json.loads(config.read_text()))


def test_set_default_profile_creates_the_file(tmp_path: Path) -> None:
    """Without a ~/.planet.json, `set_default_profile` writes one with just the profile."""
    home = PlanetHome(tmp_path)
    assert home.read_config() == {}
    home.set_default_profile("planet-user")
    assert home.read_config() == {"PL_AUTH_PROFILE": "planet-user"}


def test_unknown_keys_survive_a_rewrite_of_auth_client_json(tmp_path: Path) -> None:
    """Keys planet_async does not model (`_comment`, `_hidden`, future fields) are kept."""
    original = {
        "_comment": "OIDC/OAuth server used by Planet Public API endpoints",
        "_hidden": True,
        "audiences": [PLANET_AUDIENCE],
        "auth_server": "https://login.planet.com/",
        "client_id": "my-app",
        "client_type": "oidc_device_code",
        "organization": "org-1",
        "project_id": "project-1",
        "scopes": ["planet", "offline_access"],
    }
    home = PlanetHome(tmp_path)
    _write_json(tmp_path / ".planet" / "a" / "auth_client.json", original)
    config = home.read_auth_client("a")
    assert config is not None
    assert config.model_extra == {
        "_comment": original["_comment"],
        "_hidden": True,
        "organization": "org-1",
        "project_id": "project-1",
    }
    home.write_auth_client("b", config)
    assert (tmp_path / ".planet" / "b" / "auth_client.json").read_bytes() == _layout(original)


# -- client types --------------------------------------------------------------------------------

USER_DEVICE = {
    "audiences": [PLANET_AUDIENCE],
    "auth_server": "https://login.planet.com/",
    "client_id": "device-app",
    "client_type": "oidc_device_code",
    "scopes": ["planet", "offline_access"],
}
USER_AUTH_CODE = {
    **USER_DEVICE,
    "client_id": "web-app",
    "client_type": "oidc_auth_code",
    "redirect_uri": "https://app.example/callback",
    "local_redirect_uri": "http://localhost:8080/callback",
}
M2M_SECRET = {
    "audiences": [PLANET_AUDIENCE],
    "auth_server": "https://services.sentinel-hub.com/auth/realms/main",
    "client_id": "svc-id",
    "client_secret": SECRET,
    "client_type": "oidc_client_credentials_secret",
    "scopes": [],
}


def _config(home: PlanetHome, name: str, data: dict[str, Any]) -> AuthClientConfig:
    _write_json(home.profiles_dir / name / "auth_client.json", data)
    config = home.read_auth_client(name)
    assert config is not None
    return config


def test_device_code_client_builds_a_user_session(tmp_path: Path) -> None:
    """oidc_device_code: a public client, renewed with the refresh token, audience in logins."""
    home = PlanetHome(tmp_path)
    config = _config(home, "dev", USER_DEVICE)
    assert config.kind == "user"
    auth = auth_for_client(config, session="dev", storage=home.storage())
    assert auth.user is not None
    assert auth.manager is not None
    assert isinstance(auth.manager.grant, RefreshTokenGrant)
    assert auth.manager.session == "dev"
    assert auth.user.client == PublicClient(client_id="device-app")
    assert auth.user.scopes == ("planet", "offline_access")
    assert auth.user.extra_params == {"audience": PLANET_AUDIENCE}
    assert auth.user.server.issuer == "https://login.planet.com/"
    assert auth.user.redirect_uri is None


def test_auth_code_client_listens_on_its_local_redirect_uri(tmp_path: Path) -> None:
    """oidc_auth_code: the browser login uses local_redirect_uri (planet's listener address)."""
    home = PlanetHome(tmp_path)
    config = _config(home, "web", USER_AUTH_CODE)
    assert config.redirect_uri == "https://app.example/callback"
    auth = auth_for_client(config, session="web")
    assert auth.user is not None
    assert isinstance(auth.user.manager.grant, RefreshTokenGrant)
    assert auth.user.redirect_uri == "http://localhost:8080/callback"


def test_auth_code_client_with_only_a_redirect_uri(tmp_path: Path) -> None:
    """Without local_redirect_uri the redirect_uri serves for the listener too."""
    data = {k: v for k, v in USER_AUTH_CODE.items() if k != "local_redirect_uri"}
    config = _config(PlanetHome(tmp_path), "web", data)
    auth = auth_for_client(config, session="web")
    assert auth.user is not None
    assert auth.user.redirect_uri == "https://app.example/callback"


@pytest.mark.parametrize("client_type", ["oidc_device_code_secret", "oidc_auth_code_secret"])
def test_confidential_user_clients_send_their_secret(tmp_path: Path, client_type: str) -> None:
    """*_secret user clients authenticate with the secret in the form, like planet does."""
    data = {**USER_AUTH_CODE, "client_type": client_type, "client_secret": SECRET}
    config = _config(PlanetHome(tmp_path), "conf", data)
    assert config.kind == "user"
    auth = auth_for_client(config, session="conf")
    assert auth.user is not None
    assert auth.user.client == ClientSecretPost(
        client_id="web-app", client_secret=SecretStr(SECRET)
    )
    assert isinstance(auth.user.manager.grant, RefreshTokenGrant)
    assert auth.user.manager.grant.client is auth.user.client


@pytest.mark.parametrize("client_type", ["oidc_device_code_pubkey", "oidc_auth_code_pubkey"])
def test_pubkey_user_clients_with_an_inline_key(tmp_path: Path, client_type: str) -> None:
    """*_pubkey user clients sign private_key_jwt assertions with client_privkey."""
    pem = _ec_pem()
    data = {**USER_AUTH_CODE, "client_type": client_type, "client_privkey": pem}
    auth = auth_for_client(_config(PlanetHome(tmp_path), "pk", data), session="pk")
    assert auth.user is not None
    client = auth.user.client
    assert isinstance(client, PrivateKeyJWT)
    assert client.client_id == "web-app"
    assert client.private_key.get_secret_value() == pem


def test_pubkey_client_with_a_key_file_and_password(tmp_path: Path, clean_env: Path) -> None:
    """client_privkey_file (with ~ expanded) and client_privkey_password load an encrypted PEM."""
    pem = _ec_pem(password=b"pem-password")
    (clean_env / "client.pem").write_text(pem)
    data = {
        **USER_DEVICE,
        "client_type": "oidc_device_code_pubkey",
        "client_privkey_file": "~/client.pem",
        "client_privkey_password": "pem-password",
    }
    auth = auth_for_client(_config(PlanetHome(tmp_path), "pk", data), session="pk")
    assert auth.user is not None
    client = auth.user.client
    assert isinstance(client, PrivateKeyJWT)
    assert client.private_key.get_secret_value() == pem
    assert client.password == SecretStr("pem-password")


def test_pubkey_client_with_an_unreadable_key_file(tmp_path: Path) -> None:
    """A missing client_privkey_file is a ConfigurationError naming the profile and the file."""
    missing = tmp_path / "nowhere.pem"
    data = {
        **USER_DEVICE,
        "client_type": "oidc_device_code_pubkey",
        "client_privkey_file": str(missing),
    }
    config = _config(PlanetHome(tmp_path), "pk", data)
    with pytest.raises(ConfigurationError, match="client_privkey_file") as info:
        auth_for_client(config, session="pk")
    assert "'pk'" in str(info.value)
    assert str(missing) in str(info.value)


def test_pubkey_client_without_a_key(tmp_path: Path) -> None:
    """A *_pubkey client with neither key field is a ConfigurationError saying what is needed."""
    data = {**USER_DEVICE, "client_type": "oidc_device_code_pubkey"}
    config = _config(PlanetHome(tmp_path), "pk", data)
    with pytest.raises(ConfigurationError, match="client_privkey or client_privkey_file"):
        auth_for_client(config, session="pk")


def test_m2m_secret_client_builds_a_client_credentials_session(tmp_path: Path) -> None:
    """oidc_client_credentials_secret: client credentials with the audience and the scopes."""
    data = {**M2M_SECRET, "scopes": ["api:read", "offline_access"]}
    config = _config(PlanetHome(tmp_path), "svc", data)
    assert config.kind == "m2m"
    auth = auth_for_client(config, session="svc")
    assert auth.user is None
    assert auth.manager is not None
    grant = auth.manager.grant
    assert isinstance(grant, ClientCredentialsGrant)
    assert grant.client == ClientSecretPost(client_id="svc-id", client_secret=SecretStr(SECRET))
    assert grant.extra_params == {"audience": PLANET_AUDIENCE}
    assert grant.scopes == ("api:read",)  # M2M never asks for offline_access
    assert grant.server.issuer == "https://services.sentinel-hub.com/auth/realms/main"


def test_m2m_pubkey_client_builds_a_client_credentials_session(tmp_path: Path) -> None:
    """oidc_client_credentials_pubkey: client credentials authenticated with private_key_jwt."""
    data = {k: v for k, v in M2M_SECRET.items() if k != "client_secret"}
    data.update(client_type="oidc_client_credentials_pubkey", client_privkey=_ec_pem())
    auth = auth_for_client(_config(PlanetHome(tmp_path), "svc", data), session="svc")
    assert auth.manager is not None
    grant = auth.manager.grant
    assert isinstance(grant, ClientCredentialsGrant)
    assert isinstance(grant.client, PrivateKeyJWT)
    assert grant.extra_params == {"audience": PLANET_AUDIENCE}


def test_m2m_client_without_a_secret(tmp_path: Path) -> None:
    """A *_secret client with no client_secret is a ConfigurationError naming the profile."""
    data = {k: v for k, v in M2M_SECRET.items() if k != "client_secret"}
    config = _config(PlanetHome(tmp_path), "svc", data)
    with pytest.raises(ConfigurationError, match=r"'svc' needs a client_secret"):
        auth_for_client(config, session="svc")


def test_builtin_m2m_profile_needs_a_client_id() -> None:
    """The built-in planet-m2m profile has no client id: the error says which variables to set."""
    with pytest.raises(ConfigurationError, match="PL_AUTH_CLIENT_ID and PL_AUTH_CLIENT_SECRET"):
        auth_for_client(BUILTIN_PROFILES["planet-m2m"], session="planet-m2m")


def test_oidc_client_without_a_server(tmp_path: Path) -> None:
    """An OIDC client with neither auth_server nor token_endpoint is a ConfigurationError."""
    data = {k: v for k, v in M2M_SECRET.items() if k != "auth_server"}
    with pytest.raises(ConfigurationError, match="'svc' has no auth_server"):
        auth_for_client(_config(PlanetHome(tmp_path), "svc", data), session="svc")


def test_explicit_endpoints_need_no_discovery(tmp_path: Path) -> None:
    """Endpoints in auth_client.json are used as given (issuer and jwks_endpoint included)."""
    data = {
        **M2M_SECRET,
        "issuer": "https://issuer.example/",
        "token_endpoint": "https://issuer.example/oauth/token",
        "jwks_endpoint": "https://issuer.example/jwks",
    }
    config = _config(PlanetHome(tmp_path), "svc", data)
    assert config.server_url == "https://issuer.example/"
    assert config.endpoints() == {
        "token_endpoint": "https://issuer.example/oauth/token",
        "jwks_uri": "https://issuer.example/jwks",
    }
    auth = auth_for_client(config, session="svc")
    assert auth.manager is not None
    assert isinstance(auth.manager.grant, ClientCredentialsGrant)
    assert auth.manager.grant.server.issuer == "https://issuer.example/"


def test_explicit_token_endpoint_is_used_without_discovery(tmp_path: Path) -> None:
    """The explicit token endpoint is what the grant posts to; no discovery request is made
    (the issuer does not exist, so discovery would fail)."""
    data = {**M2M_SECRET, "token_endpoint": "https://issuer.example/oauth/token"}
    auth = auth_for_client(_config(PlanetHome(tmp_path), "svc", data), session="svc")
    assert auth.manager is not None
    assert isinstance(auth.manager.grant, ClientCredentialsGrant)
    server = auth.manager.grant.server
    found = anyio.run(server.endpoint, "token_endpoint")
    assert found == "https://issuer.example/oauth/token"


def test_static_api_key_profile_sends_an_api_key_header(tmp_path: Path) -> None:
    """static_apikey with the key in auth_client.json: `Authorization: api-key <key>`."""
    data = {"api_key": API_KEY, "bearer_token_prefix": "api-key", "client_type": "static_apikey"}
    config = _config(PlanetHome(tmp_path), "key", data)
    assert config.kind == "api_key"
    auth = auth_for_client(config, session="key")
    assert auth.manager is None
    assert auth.user is None
    assert _sent_header(auth) == f"api-key {API_KEY}"


def test_static_api_key_profile_with_the_key_in_token_json(tmp_path: Path) -> None:
    """static_apikey without a key in the config reads token.json's api_key, as planet does."""
    home = PlanetHome(tmp_path)
    config = _config(home, "key", {"client_type": "static_apikey"})
    home.write_token_file("key", {"api_key": API_KEY, "bearer_token_prefix": "api-key"})
    assert _sent_header(auth_for_client(config, session="key", home=home)) == f"api-key {API_KEY}"


def test_static_api_key_written_by_the_constructor(tmp_path: Path) -> None:
    """AuthClientConfig.static_api_key writes planet's static_apikey file and reads back."""
    home = PlanetHome(tmp_path)
    home.write_auth_client("key", AuthClientConfig.static_api_key(API_KEY))
    path = home.profile_dir("key") / "auth_client.json"
    assert path.read_bytes() == _layout(
        {"api_key": API_KEY, "bearer_token_prefix": "api-key", "client_type": "static_apikey"}
    )
    assert _sent_header(PlanetAuth.from_profile("key", home=tmp_path)) == f"api-key {API_KEY}"


def test_legacy_profile_with_a_saved_key(tmp_path: Path) -> None:
    """planet_legacy with token.json {"key": ..., "jwt": ...}: the key as an api-key header."""
    home = PlanetHome(tmp_path)
    config = _config(
        home,
        "old",
        {
            "client_type": "planet_legacy",
            "legacy_auth_endpoint": "https://api.planet.com/v0/auth/login",
        },
    )
    assert config.kind == "legacy"
    home.write_token_file("old", {"key": API_KEY, "jwt": "legacy.jwt.value"})
    assert _sent_header(auth_for_client(config, session="old", home=home)) == f"api-key {API_KEY}"


def test_builtin_legacy_profile_with_a_saved_key(tmp_path: Path) -> None:
    """The built-in `legacy` profile finds its key in ~/.planet/legacy/token.json."""
    PlanetHome(tmp_path).write_token_file("legacy", {"key": API_KEY})
    auth = PlanetAuth.from_profile("legacy", home=tmp_path)
    assert _sent_header(auth) == f"api-key {API_KEY}"
    assert auth.source == SessionSource(kind="profile", origin="argument", profile="legacy")


def test_legacy_profile_without_a_key_asks_for_a_login(tmp_path: Path) -> None:
    """planet_legacy without a saved key raises LoginRequired saying how to fix it."""
    with pytest.raises(LoginRequired) as info:
        PlanetAuth.from_profile("legacy", home=tmp_path)
    message = str(info.value)
    assert "'legacy'" in message
    assert "no saved API key" in message
    assert "PL_API_KEY" in message


def test_from_profile_builds_a_user_session(tmp_path: Path) -> None:
    """PlanetAuth.from_profile on a device-code profile: a user session sharing ~/.planet."""
    home = PlanetHome(tmp_path)
    _config(home, "dev", USER_DEVICE)
    auth = PlanetAuth.from_profile("Dev", home=tmp_path)
    assert auth.user is not None
    assert auth.manager is not None
    assert isinstance(auth.manager.grant, RefreshTokenGrant)
    assert auth.manager.session == "dev"
    assert isinstance(auth.manager.storage, FileStorage)
    assert auth.manager.storage.root == tmp_path / ".planet"
    assert auth.source == SessionSource(kind="profile", origin="argument", profile="dev")


def test_from_profile_with_other_storage(tmp_path: Path) -> None:
    """`storage=` keeps the tokens elsewhere; the profile still gives the client."""
    _config(PlanetHome(tmp_path), "svc", M2M_SECRET)
    elsewhere = FileStorage(tmp_path / "elsewhere")
    auth = PlanetAuth.from_profile("svc", home=tmp_path, storage=elsewhere)
    assert auth.manager is not None
    assert auth.manager.storage is elsewhere
    assert isinstance(auth.manager.grant, ClientCredentialsGrant)


def test_from_profile_builtin_planet_user() -> None:
    """The built-in planet-user profile: Planet's login server and public client id."""
    auth = PlanetAuth.from_profile("planet-user")
    assert auth.user is not None
    assert auth.user.server.issuer == "https://login.planet.com/"
    assert auth.user.client == PublicClient(client_id="49lHVBYlXCdfIYqE1B9zeXt0iFHSXees")
    assert auth.user.scopes == ("planet", "offline_access")
    assert auth.user.extra_params == {"audience": PLANET_AUDIENCE}


def test_from_profile_unknown_profile(tmp_path: Path) -> None:
    """An unknown profile name is a ConfigurationError naming it."""
    with pytest.raises(ConfigurationError, match=r"profile 'nope'.*does not exist"):
        PlanetAuth.from_profile("nope", home=tmp_path)


def test_auth_client_config_constructors() -> None:
    """m2m / user / static_api_key build the files `planet` itself writes for those kinds."""
    assert AuthClientConfig.m2m("svc-id", SECRET).to_json_dict() == M2M_SECRET
    assert AuthClientConfig.user("device-app").to_json_dict() == USER_DEVICE
    browser = AuthClientConfig.user("web-app", redirect_uri="http://localhost:8080/cb")
    assert browser.to_json_dict() == {
        **USER_DEVICE,
        "client_id": "web-app",
        "client_type": "oidc_auth_code",
        "redirect_uri": "http://localhost:8080/cb",
        "local_redirect_uri": "http://localhost:8080/cb",
    }


def test_builtin_profiles_match_planet() -> None:
    """The built-ins are planet's: planet-user, planet-m2m and legacy, as documented."""
    assert set(BUILTIN_PROFILES) == {"planet-user", "planet-m2m", "legacy"}
    assert BUILTIN_PROFILES["planet-user"].to_json_dict() == {
        **USER_DEVICE,
        "client_id": "49lHVBYlXCdfIYqE1B9zeXt0iFHSXees",
    }
    assert BUILTIN_PROFILES["planet-m2m"].to_json_dict() == {
        k: v for k, v in M2M_SECRET.items() if k not in ("client_id", "client_secret")
    }
    assert BUILTIN_PROFILES["legacy"].to_json_dict() == {
        "client_type": "planet_legacy",
        "legacy_auth_endpoint": "https://api.planet.com/v0/auth/login",
    }


# -- profile names and listing -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "normal"),
    [("planet-user", "planet-user"), ("My-Profile", "my-profile"), (" Svc ", "svc")],
)
def test_profile_names_are_case_insensitive(name: str, normal: str) -> None:
    """Names are lower-cased (and trimmed) for the directory, as planet does."""
    assert normalize_profile_name(name) == normal


@pytest.mark.parametrize("name", ["", "  ", ".", "..", "a/b", "a\\b", "../etc"])
def test_unsafe_profile_names_are_refused(name: str) -> None:
    """Empty names, dot names and names with a path separator are ConfigurationErrors."""
    with pytest.raises(ConfigurationError, match="cannot be a profile name"):
        normalize_profile_name(name)


def test_profile_names_are_normalised_on_disk(tmp_path: Path) -> None:
    """Writing under `MyApp` and reading `MYAPP` meet in ~/.planet/myapp/."""
    home = PlanetHome(tmp_path)
    home.write_auth_client("MyApp", AuthClientConfig.user("app"))
    assert (tmp_path / ".planet" / "myapp" / "auth_client.json").is_file()
    assert home.read_auth_client("MYAPP") == AuthClientConfig.user("app")
    with pytest.raises(ConfigurationError):
        home.write_auth_client("my/app", AuthClientConfig.user("app"))


def test_list_profiles(tmp_path: Path) -> None:
    """Directories with auth_client(.sops).json, sorted, then the built-ins not on disk."""
    home = PlanetHome(tmp_path)
    assert home.list_profiles() == ["planet-user", "planet-m2m", "legacy"]
    home.write_auth_client("zeta", AuthClientConfig.user("z"))
    home.write_auth_client("alpha", AuthClientConfig.static_api_key(API_KEY))
    _write_json(home.profiles_dir / "secret" / "auth_client.sops.json", {"sops": {}})
    home.write_token_file("tokens-only", {"api_key": API_KEY})  # no auth_client.json
    (home.profiles_dir / "empty").mkdir()
    home.write_token_file("planet-user", {"access_token": "x"})  # built-in, token only
    home.write_auth_client("legacy", AuthClientConfig.static_api_key(API_KEY))  # shadows
    assert home.list_profiles() == [
        "alpha",
        "legacy",
        "secret",
        "zeta",
        "planet-user",
        "planet-m2m",
    ]


def test_sops_only_profile_is_a_configuration_error(tmp_path: Path) -> None:
    """auth_client.sops.json alone: an error that mentions sops and the file, never a fallback."""
    home = PlanetHome(tmp_path)
    path = home.profiles_dir / "enc" / "auth_client.sops.json"
    _write_json(path, {"client_type": "ENC[AES256_GCM,data:...]", "sops": {}})
    with pytest.raises(ConfigurationError, match="sops") as info:
        home.read_auth_client("enc")
    assert str(path) in str(info.value)
    with pytest.raises(ConfigurationError, match="sops"):
        PlanetAuth.from_profile("enc", home=tmp_path)


def test_sops_file_beside_a_plain_one_uses_the_plain_one(tmp_path: Path) -> None:
    """With both files present the plain auth_client.json is read."""
    home = PlanetHome(tmp_path)
    home.write_auth_client("both", AuthClientConfig.user("plain-app"))
    _write_json(home.profiles_dir / "both" / "auth_client.sops.json", {"sops": {}})
    config = home.read_auth_client("both")
    assert config is not None
    assert config.client_id == "plain-app"


def test_missing_profile_reads_as_none(tmp_path: Path) -> None:
    """read_auth_client: None for an unknown name, the built-in for a built-in name."""
    home = PlanetHome(tmp_path)
    assert home.read_auth_client("nobody") is None
    assert home.read_auth_client("Planet-User") is BUILTIN_PROFILES["planet-user"]


# -- broken files --------------------------------------------------------------------------------


@pytest.mark.parametrize("content", [b"{not json", b"[1, 2]", b"\xff\xfe", b"", b'"text"'])
def test_corrupt_planet_json_names_the_file(tmp_path: Path, content: bytes) -> None:
    """A ~/.planet.json that is not a JSON object is a ConfigurationError naming the file; the
    file is left alone."""
    config = tmp_path / ".planet.json"
    config.write_bytes(content)
    with pytest.raises(ConfigurationError) as info:
        PlanetHome(tmp_path).read_config()
    assert str(config) in str(info.value)
    assert config.read_bytes() == content
    with pytest.raises(ConfigurationError, match=str(config)):
        PlanetHome(tmp_path).set_default_profile("planet-user")
    assert config.read_bytes() == content


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b"[]",
        b"{}",  # no client_type
        b'{"client_type": "oidc_magic"}',
        b'{"client_type": "oidc_device_code", "scopes": "planet"}',
    ],
)
def test_corrupt_auth_client_json_names_the_file(tmp_path: Path, content: bytes) -> None:
    """An unreadable or invalid auth_client.json is a ConfigurationError naming the file."""
    path = tmp_path / ".planet" / "bad" / "auth_client.json"
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    with pytest.raises(ConfigurationError) as info:
        PlanetHome(tmp_path).read_auth_client("bad")
    assert str(path) in str(info.value)
    with pytest.raises(ConfigurationError):
        PlanetAuth.from_profile("bad", home=tmp_path)


def test_invalid_auth_client_json_does_not_quote_its_secret(tmp_path: Path) -> None:
    """The error for an invalid file never repeats the secret it holds."""
    path = tmp_path / ".planet" / "bad" / "auth_client.json"
    _write_json(path, {**M2M_SECRET, "client_type": "nonsense"})
    with pytest.raises(ConfigurationError) as info:
        PlanetHome(tmp_path).read_auth_client("bad")
    assert SECRET not in str(info.value)
    assert SECRET not in repr(info.value)


def test_unreadable_auth_client_json_names_the_file(tmp_path: Path) -> None:
    """A file that cannot be read (here: a directory in its place) is a ConfigurationError."""
    path = tmp_path / ".planet" / "dir" / "auth_client.json"
    path.mkdir(parents=True)
    with pytest.raises(ConfigurationError, match="cannot read") as info:
        PlanetHome(tmp_path).read_auth_client("dir")
    assert str(path) in str(info.value)


# -- API key files and secrets -------------------------------------------------------------------


def test_from_api_key_file(tmp_path: Path) -> None:
    """from_api_key_file reads the legacy {"key": ...} file and sends the key as api-key."""
    path = tmp_path / "key.json"
    path.write_text(json.dumps({"key": API_KEY, "jwt": "ignored"}))
    assert _sent_header(PlanetAuth.from_api_key_file(path)) == f"api-key {API_KEY}"


@pytest.mark.parametrize(
    "content",
    [
        f"{API_KEY}\n",
        f"{API_KEY}\r\n",
        f"  {API_KEY}\n\n",
        API_KEY,
        json.dumps({"key": f"{API_KEY}\n"}),
    ],
    ids=["newline", "crlf", "padded", "bare", "json-with-newline"],
)
def test_an_api_key_read_from_a_file_loses_its_trailing_newline(
    tmp_path: Path, content: str
) -> None:
    """A key file as editors save it (the key, then a newline) works both ways: read by
    `from_api_key_file`, or read by the program and given to `from_api_key`; the environment's
    keys are stripped alike."""
    path = tmp_path / "key.txt"
    path.write_bytes(content.encode())
    assert _sent_header(PlanetAuth.from_api_key_file(path)) == f"api-key {API_KEY}"
    if not content.startswith("{"):
        with open(path) as file:  # what a user's program does
            read = file.read()
        assert _sent_header(PlanetAuth.from_api_key(read)) == f"api-key {API_KEY}"


def test_an_api_key_from_the_environment_loses_surrounding_whitespace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`PL_AUTH_API_KEY="$(cat key.txt)\n"`-style values work as the command's `--api-key -`
    does: the whitespace around the key is dropped."""
    monkeypatch.setenv("PL_AUTH_API_KEY", f" {API_KEY}\n")
    auth = PlanetAuth.from_user_default_session()
    assert _sent_header(auth) == f"api-key {API_KEY}"


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (f"{API_KEY}\nPLAKsecond0123456789\n", "contains a line feed (LF)"),
        ("PLAK abcdef\n", "contains a space"),
        ("\n\n", "is empty"),
    ],
)
def test_a_plain_key_file_that_is_no_key_names_the_file(
    tmp_path: Path, content: str, problem: str
) -> None:
    """A file that holds two keys, a key with a space inside, or nothing, is refused naming the
    file and the problem, never its contents."""
    path = tmp_path / "key.txt"
    path.write_text(content)
    with pytest.raises(ConfigurationError) as info:
        PlanetAuth.from_api_key_file(path)
    assert str(info.value).startswith(f"the API key in {path} {problem}")
    assert "PLAK" not in str(info.value).replace(str(path), "")


def test_an_api_key_of_a_profile_names_the_profile(clean_env: Path) -> None:
    """A profile's saved key with whitespace inside is refused naming the profile."""
    PlanetHome(clean_env).write_auth_client("keys", AuthClientConfig.static_api_key("PLAK x"))
    with pytest.raises(ConfigurationError) as info:
        PlanetAuth.from_profile("keys", home=clean_env)
    assert str(info.value).startswith("the API key of profile 'keys' contains a space")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read an API key"),
        ("{broken", "cannot read an API key from .*: it is not valid JSON \\(Expecting"),
        (b"\xff\xfe", "cannot read an API key from .*: not text"),
        ('{"api_key": "PLAKx"}', 'has no "key"'),
        ('{"key": ""}', 'has no "key"'),
        ('{"key": 42}', 'has no "key"'),
        ('["PLAKx"]', 'has no "key"'),
    ],
)
def test_from_api_key_file_errors(
    tmp_path: Path, content: str | bytes | None, message: str
) -> None:
    """A missing, broken or key-less file is a ConfigurationError naming the file and what is
    wrong with it (not a bare JSON parse error)."""
    path = tmp_path / "key.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(ConfigurationError, match=message) as info:
        PlanetAuth.from_api_key_file(path)
    assert str(path) in str(info.value)


def test_secrets_never_appear_in_reprs(tmp_path: Path) -> None:
    """Client secrets, private keys, key passwords and API keys stay out of every repr."""
    pem = _ec_pem()
    configs = [
        AuthClientConfig.m2m("svc-id", SECRET),
        AuthClientConfig.static_api_key(API_KEY),
        AuthClientConfig(
            client_type="oidc_client_credentials_pubkey",
            client_id="svc",
            client_privkey=SecretStr(pem),
            client_privkey_password=SecretStr("pem-password"),
            auth_server="https://issuer.example/",
        ),
    ]
    sources = [
        SessionSource(
            kind="client_credentials",
            origin="argument",
            client_id="svc-id",
            client_secret=SecretStr(SECRET),
        ),
        SessionSource(kind="api_key", origin="argument", api_key=SecretStr(API_KEY)),
    ]
    home = PlanetHome(tmp_path)
    home.write_auth_client("svc", configs[0])
    auths = [PlanetAuth.from_profile("svc", home=tmp_path), PlanetAuth.from_api_key(API_KEY)]
    texts = [repr(x) for x in [*configs, *sources, *auths]]
    texts += [str(c) for c in configs] + [s.describe() for s in sources]
    texts.append(repr(auths[0].manager.grant))  # type: ignore[union-attr]
    for text in texts:
        for secret in (SECRET, API_KEY, "pem-password", "PRIVATE KEY"):
            assert secret not in text, text
    # ... while the files hold them in clear, as planet needs them.
    assert SECRET in (tmp_path / ".planet" / "svc" / "auth_client.json").read_text()
