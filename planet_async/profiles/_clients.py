"""``auth_client.json``: a profile's client configuration, and the built-in profiles."""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, SecretStr

from .._models import reveal_json

__all__ = ["BUILTIN_PROFILES", "AuthClientConfig", "ClientType"]

ClientType = Literal[
    "oidc_device_code",
    "oidc_device_code_secret",
    "oidc_device_code_pubkey",
    "oidc_auth_code",
    "oidc_auth_code_secret",
    "oidc_auth_code_pubkey",
    "oidc_client_credentials_secret",
    "oidc_client_credentials_pubkey",
    "static_apikey",
    "planet_legacy",
]

USER_CLIENT_TYPES = frozenset(
    {
        "oidc_device_code",
        "oidc_device_code_secret",
        "oidc_device_code_pubkey",
        "oidc_auth_code",
        "oidc_auth_code_secret",
        "oidc_auth_code_pubkey",
    }
)
M2M_CLIENT_TYPES = frozenset({"oidc_client_credentials_secret", "oidc_client_credentials_pubkey"})

PLANET_USER_ISSUER = "https://login.planet.com/"
PLANET_M2M_ISSUER = "https://services.sentinel-hub.com/auth/realms/main"
PLANET_AUDIENCE = "https://api.planet.com/"
PLANET_USER_CLIENT_ID = "49lHVBYlXCdfIYqE1B9zeXt0iFHSXees"
PLANET_LEGACY_ENDPOINT = "https://api.planet.com/v0/auth/login"


class AuthClientConfig(BaseModel):
    """One profile's ``auth_client.json``, as the `planet` CLI reads and writes it.

    Unknown keys (``_comment``, future fields) are kept, so a file round-trips unchanged.
    Secrets are `SecretStr` and never appear in a repr.
    """

    model_config = ConfigDict(frozen=True, extra="allow", hide_input_in_errors=True)

    client_type: ClientType
    client_id: str | None = None
    client_secret: SecretStr | None = None
    client_privkey: SecretStr | None = None
    client_privkey_file: str | None = None
    client_privkey_password: SecretStr | None = None
    auth_server: str | None = None
    issuer: str | None = None
    audiences: list[str] | None = None
    scopes: list[str] | None = None
    redirect_uri: str | None = None
    local_redirect_uri: str | None = None
    token_endpoint: str | None = None
    authorization_endpoint: str | None = None
    device_authorization_endpoint: str | None = None
    revocation_endpoint: str | None = None
    introspection_endpoint: str | None = None
    jwks_endpoint: str | None = None
    userinfo_endpoint: str | None = None
    api_key: SecretStr | None = None
    bearer_token_prefix: str | None = None
    legacy_auth_endpoint: str | None = None

    @property
    def kind(self) -> Literal["user", "m2m", "api_key", "legacy"]:
        """What sort of session this client makes."""
        if self.client_type in USER_CLIENT_TYPES:
            return "user"
        if self.client_type in M2M_CLIENT_TYPES:
            return "m2m"
        return "api_key" if self.client_type == "static_apikey" else "legacy"

    @property
    def server_url(self) -> str | None:
        """The authorization server's issuer URL."""
        return self.issuer or self.auth_server

    def endpoints(self) -> dict[str, str]:
        """Endpoints given explicitly, which win over discovery."""
        names = (
            "token_endpoint",
            "authorization_endpoint",
            "device_authorization_endpoint",
            "revocation_endpoint",
            "introspection_endpoint",
            "userinfo_endpoint",
        )
        found = {name: getattr(self, name) for name in names if getattr(self, name)}
        if self.jwks_endpoint:
            found["jwks_uri"] = self.jwks_endpoint
        return found

    def to_json_dict(self) -> dict[str, Any]:
        """The file's contents, secrets in clear, null values dropped (as `planet` writes it)."""
        data = json.loads(reveal_json(self))
        data.update(self.model_extra or {})
        return {key: value for key, value in data.items() if value is not None}

    # -- the usual shapes ----------------------------------------------------------------------

    @classmethod
    def m2m(
        cls,
        client_id: str,
        client_secret: str,
        *,
        auth_server: str = PLANET_M2M_ISSUER,
        scopes: list[str] | None = None,
        audiences: list[str] | None = None,
    ) -> AuthClientConfig:
        """A service account with a client secret (``oidc_client_credentials_secret``)."""
        return cls(
            client_type="oidc_client_credentials_secret",
            client_id=client_id,
            client_secret=SecretStr(client_secret),
            auth_server=auth_server,
            audiences=audiences if audiences is not None else [PLANET_AUDIENCE],
            scopes=scopes if scopes is not None else [],
        )

    @classmethod
    def user(
        cls,
        client_id: str,
        *,
        auth_server: str = PLANET_USER_ISSUER,
        scopes: list[str] | None = None,
        audiences: list[str] | None = None,
        redirect_uri: str | None = None,
    ) -> AuthClientConfig:
        """A native user client: device code, or auth code when `redirect_uri` is given."""
        return cls(
            client_type="oidc_auth_code" if redirect_uri else "oidc_device_code",
            client_id=client_id,
            auth_server=auth_server,
            audiences=audiences if audiences is not None else [PLANET_AUDIENCE],
            scopes=scopes if scopes is not None else ["planet", "offline_access"],
            redirect_uri=redirect_uri,
            local_redirect_uri=redirect_uri,
        )

    @classmethod
    def static_api_key(cls, api_key: str) -> AuthClientConfig:
        """A Planet API key profile (``static_apikey``)."""
        return cls(
            client_type="static_apikey", api_key=SecretStr(api_key), bearer_token_prefix="api-key"
        )


BUILTIN_PROFILES: dict[str, AuthClientConfig] = {
    "planet-user": AuthClientConfig(
        client_type="oidc_device_code",
        client_id=PLANET_USER_CLIENT_ID,
        auth_server=PLANET_USER_ISSUER,
        audiences=[PLANET_AUDIENCE],
        scopes=["planet", "offline_access"],
    ),
    "planet-m2m": AuthClientConfig(
        client_type="oidc_client_credentials_secret",
        auth_server=PLANET_M2M_ISSUER,
        audiences=[PLANET_AUDIENCE],
        scopes=[],
    ),
    "legacy": AuthClientConfig(
        client_type="planet_legacy", legacy_auth_endpoint=PLANET_LEGACY_ENDPOINT
    ),
}
"""Profiles every installation has, as the `planet` CLI defines them."""
