"""Choosing a session (arguments, environment, ``~/.planet.json``, built-in) and building it.

One precedence, used by the library and the `planet-async` command alike; the first that
applies wins:

1. Arguments: a profile, or a client id and secret, or an API key.
2. Environment: ``PL_AUTH_PROFILE``; then ``PL_AUTH_CLIENT_ID`` with ``PL_AUTH_CLIENT_SECRET``;
   then ``PL_AUTH_API_KEY`` (the guide's name) or ``PL_API_KEY`` (the SDK's).
3. ``~/.planet.json``: the same keys in the same order, then the legacy ``{"key": ...}``.
4. The built-in ``planet-user`` profile.

The environment wins over the file as a whole, so a variable set for one command always beats
what is saved. A profile named by a variable or the file that does not exist is an error, never
a silent fallback.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from pydantic import SecretStr

from .._errors import ConfigurationError, LoginRequired
from .._manager import TokenManager
from .._oauth import (
    AuthorizationServer,
    ClientAuth,
    ClientSecretPost,
    PrivateKeyJWT,
    PublicClient,
)
from .._redact import clean_api_key
from .._session import Credential, SessionSource, user_credential
from ..flows._client_credentials import ClientCredentialsGrant
from ..flows._scopes import USER_SCOPES, normalize_scopes
from ..storage._config import storage_from_environment
from ..storage._protocol import Storage
from ._clients import PLANET_M2M_ISSUER, AuthClientConfig
from ._files import PlanetHome, normalize_profile_name

__all__ = [
    "SessionSource",
    "choose_session",
    "credential_for_client",
    "credential_from_source",
    "did_you_mean",
]

DEFAULT_PROFILE = "planet-user"
M2M_PROFILE_PREFIX = "planet-m2m-"


def choose_session(
    *,
    profile: str | None = None,
    client_id: str | None = None,
    client_secret: str | None = None,
    api_key: str | None = None,
    environ: Mapping[str, str] | None = None,
    home: PlanetHome | None = None,
) -> SessionSource:
    """Apply the precedence in this module's docstring.

    Raises:
        ConfigurationError: Conflicting arguments, half a client id/secret pair, or a profile
            that does not exist.
    """
    home = home or PlanetHome()
    environ = os.environ if environ is None else environ
    given = [x for x in (profile, client_id or client_secret, api_key) if x]
    if len(given) > 1:
        raise ConfigurationError("give a profile, a client id and secret, or an API key: one")
    explicit = _from_values(
        {
            "PL_AUTH_PROFILE": profile,
            "PL_AUTH_CLIENT_ID": client_id,
            "PL_AUTH_CLIENT_SECRET": client_secret,
            "PL_API_KEY": api_key,
        },
        "argument",
    )
    found = (
        explicit
        or _from_values(environ, "environment variable")
        or _from_values(home.read_config(), str(home.config_file))
    )
    if found is None:
        return SessionSource(kind="profile", profile=DEFAULT_PROFILE, origin="built-in default")
    if found.kind == "profile":
        assert found.profile is not None
        if home.read_auth_client(found.profile) is None:
            raise ConfigurationError(
                f"profile {found.profile!r} (from {found.origin}) does not exist; "
                f"{did_you_mean(home, found.profile)}`planet-async profile list` shows the profiles"
            )
    return found


def did_you_mean(home: PlanetHome, profile: str) -> str:
    """``did you mean 'planet-user'? `` for a profile name close to an existing one, else
    nothing."""
    closest = home.closest_profile(profile)
    return f"did you mean {closest!r}? " if closest and closest != profile else ""


def _from_values(values: Mapping[str, Any], origin: str) -> SessionSource | None:
    def value(name: str) -> str | None:
        item = values.get(name)
        if item is not None and not isinstance(item, str):
            # A setting of the wrong type is a broken setting, not an absent one.
            raise ConfigurationError(f"{where(name)} must be a string; fix or remove it")
        return item if item and item.strip() else None

    def where(name: str) -> str:
        if origin == "argument":
            return "argument"
        if origin == "environment variable":
            return f"environment variable {name}"
        return f"{origin} ({name})"

    if profile := value("PL_AUTH_PROFILE"):
        try:
            name = normalize_profile_name(profile)
        except ConfigurationError as exc:
            raise ConfigurationError(f"{where('PL_AUTH_PROFILE')}: {exc}") from None
        return SessionSource(kind="profile", profile=name, origin=where("PL_AUTH_PROFILE"))
    client_id, client_secret = value("PL_AUTH_CLIENT_ID"), value("PL_AUTH_CLIENT_SECRET")
    if client_id or client_secret:
        if not (client_id and client_secret):
            missing = "PL_AUTH_CLIENT_SECRET" if client_id else "PL_AUTH_CLIENT_ID"
            raise ConfigurationError(
                f"{where('PL_AUTH_CLIENT_ID')}: a client id needs its secret; {missing} is missing"
            )
        try:
            # Where the `planet` SDK keeps the tokens of these credentials, so both share them.
            profile = normalize_profile_name(f"{M2M_PROFILE_PREFIX}{client_id}")
        except ConfigurationError as exc:
            raise ConfigurationError(f"{where('PL_AUTH_CLIENT_ID')}: {exc}") from None
        return SessionSource(
            kind="client_credentials",
            origin=where("PL_AUTH_CLIENT_ID"),
            profile=profile,
            client_id=client_id,
            client_secret=SecretStr(client_secret),
        )
    for name in ("PL_AUTH_API_KEY", "PL_API_KEY", "key"):
        if key := value(name):
            if name == "key" and origin in ("argument", "environment variable"):
                continue
            return SessionSource(kind="api_key", origin=where(name), api_key=SecretStr(key))
    return None


def credential_from_source(
    source: SessionSource,
    *,
    home: PlanetHome | None = None,
    storage: Storage | None = None,
) -> Credential:
    """The credential of a chosen session.

    Its tokens are kept in `storage`, else where ``PLANET_ASYNC_STORAGE`` says, else in the
    files the `planet` CLI shares (``~/.planet/<profile>/token.json``).

    Raises:
        ConfigurationError: The profile's configuration cannot work.
    """
    home = home or PlanetHome()
    storage = storage or storage_from_environment()
    if source.kind == "api_key":
        assert source.api_key is not None
        where = "" if source.origin == "argument" else f" from {source.origin}"
        key = clean_api_key(source.api_key.get_secret_value(), f"API key{where}")
        return Credential(api_key=SecretStr(key), source=source)
    if source.kind == "client_credentials":
        assert source.client_id is not None
        assert source.client_secret is not None
        secret = source.client_secret.get_secret_value()
        config = AuthClientConfig.m2m(source.client_id, secret, auth_server=PLANET_M2M_ISSUER)
        session = source.profile or source.client_id
        found = credential_for_client(config, session=session, storage=storage or home.storage())
        return found.with_source(source)
    assert source.profile is not None
    client = home.read_auth_client(source.profile)
    if client is None:
        raise ConfigurationError(f"profile {source.profile!r} does not exist")
    found = credential_for_client(
        client, session=source.profile, storage=storage or home.storage(), home=home
    )
    return found.with_source(source)


def credential_for_client(
    config: AuthClientConfig,
    *,
    session: str,
    storage: Storage | None = None,
    home: PlanetHome | None = None,
) -> Credential:
    """The credential a client configuration describes.

    Raises:
        ConfigurationError: The configuration lacks what its client type needs.
        LoginRequired: A legacy profile without a saved API key.
    """
    if config.kind in ("api_key", "legacy"):
        key = clean_api_key(_api_key_of(config, session, home), f"API key of profile {session!r}")
        return Credential(api_key=SecretStr(key))
    if not config.server_url and "token_endpoint" not in config.endpoints():
        raise ConfigurationError(f"profile {session!r} has no auth_server")
    endpoints: dict[str, Any] = config.endpoints()
    server = AuthorizationServer(
        config.server_url, token_endpoint=endpoints.pop("token_endpoint", None), **endpoints
    )
    client = _client_auth(config, session)
    if config.scopes is not None:
        try:
            normalize_scopes(config.scopes)
        except ConfigurationError as exc:
            raise ConfigurationError(f"profile {session!r}: {exc}") from None
    audience = {"audience": " ".join(config.audiences)} if config.audiences else {}
    if config.kind == "m2m":
        grant = ClientCredentialsGrant(
            server, client, scopes=config.scopes or (), extra_params=audience
        )
        return Credential(manager=TokenManager(grant, storage=storage, session=session))
    return user_credential(
        server,
        client,
        scopes=tuple(config.scopes if config.scopes is not None else USER_SCOPES),
        redirect_uri=config.local_redirect_uri or config.redirect_uri,
        storage=storage,
        session=session,
        extra_params=audience,
    )


def _client_auth(config: AuthClientConfig, session: str) -> ClientAuth:
    if not config.client_id:
        hint = (
            " (set PL_AUTH_CLIENT_ID and PL_AUTH_CLIENT_SECRET)" if session == "planet-m2m" else ""
        )
        raise ConfigurationError(f"profile {session!r} has no client_id{hint}")
    if config.client_type.endswith("_secret"):
        if config.client_secret is None:
            raise ConfigurationError(f"profile {session!r} needs a client_secret")
        # Like the planet SDK: the secret goes in the form (Keycloak and Auth0 accept both).
        return ClientSecretPost(client_id=config.client_id, client_secret=config.client_secret)
    if config.client_type.endswith("_pubkey"):
        key = _private_key(config, session)
        password = config.client_privkey_password
        try:
            return PrivateKeyJWT(client_id=config.client_id, private_key=key, password=password)
        except ConfigurationError as exc:
            raise ConfigurationError(f"profile {session!r}: {exc}") from exc
    return PublicClient(client_id=config.client_id)


def _private_key(config: AuthClientConfig, session: str) -> SecretStr | bytes:
    if config.client_privkey is not None:
        return config.client_privkey
    if config.client_privkey_file:
        path = os.path.expanduser(config.client_privkey_file)
        try:
            with open(path, "rb") as file:
                return file.read()  # PEM or DER: PrivateKeyJWT tells them apart
        except OSError as exc:
            raise ConfigurationError(
                f"profile {session!r}: cannot read client_privkey_file {path}: {exc.strerror}"
            ) from exc
        except ValueError:  # a NUL in the path
            raise ConfigurationError(
                f"profile {session!r}: client_privkey_file {path!r} is not a usable path"
            ) from None
    raise ConfigurationError(f"profile {session!r} needs client_privkey or client_privkey_file")


def _api_key_of(config: AuthClientConfig, session: str, home: PlanetHome | None) -> str:
    if config.api_key is not None:
        return config.api_key.get_secret_value()
    saved = home.read_token_file(session) if home is not None else None
    for name in ("api_key", "key"):
        value = (saved or {}).get(name)
        if isinstance(value, str) and value:
            return value
    raise LoginRequired(
        f"profile {session!r} has no saved API key: run `planet-async auth login --api-key` "
        "or set PL_API_KEY"
    )
