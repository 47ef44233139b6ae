"""What a session is, apart from any HTTP library: its credential, how it logs in, where it
came from. The httpx `PlanetAuth` (and any other client's adapter) wraps one of these."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from pydantic import SecretStr

from ._errors import ConfigurationError
from ._manager import TokenManager
from ._oauth import AuthorizationServer, ClientAuth
from ._redact import require_header_safe
from ._user import UserLogin
from .flows._refresh import RefreshTokenGrant
from .storage._protocol import Storage

__all__ = ["Credential", "SessionSource", "user_credential"]


@dataclass(frozen=True)
class SessionSource:
    """Which credential is in use and where it came from.

    Attributes:
        kind: ``"profile"``, ``"client_credentials"`` or ``"api_key"``.
        origin: Where it was found, e.g. ``"environment variable PL_AUTH_PROFILE"``.
        profile: The profile name (for client credentials and API keys from variables: the
            profile their tokens are kept under, if any; ``planet-m2m-<client id>`` for client
            credentials, as in the `planet` SDK).
        client_id: The M2M client id, for client credentials.
    """

    kind: Literal["profile", "client_credentials", "api_key"]
    origin: str
    profile: str | None = None
    client_id: str | None = None
    client_secret: SecretStr | None = None
    api_key: SecretStr | None = None

    def describe(self) -> str:
        """One line for people: what is used, and why."""
        if self.kind == "profile":
            return f"profile {self.profile!r} (from {self.origin})"
        if self.kind == "client_credentials":
            return f"M2M client {self.client_id!r} (from {self.origin})"
        return f"API key (from {self.origin})"


@dataclass(frozen=True, eq=False)
class Credential:
    """One session's credential: a `TokenManager` (OAuth2) or an API key, never both.

    Attributes:
        manager: The OAuth2 session's token manager.
        api_key: A Planet API key, checked to be sendable in a header.
        user: The login side of a user session; None for M2M and API keys.
        source: Which credential this is and where it came from, when chosen from settings.
    """

    manager: TokenManager | None = None
    api_key: SecretStr | None = None
    user: UserLogin | None = None
    source: SessionSource | None = None

    def __post_init__(self) -> None:
        if (self.manager is None) == (self.api_key is None):
            raise ConfigurationError("a session has either a TokenManager or an API key")
        if self.api_key is not None:
            require_header_safe(self.api_key.get_secret_value(), "API key")

    def with_source(self, source: SessionSource) -> Credential:
        """The same credential, saying where it came from."""
        return Credential(self.manager, self.api_key, self.user, source)


def user_credential(
    server: AuthorizationServer,
    client: ClientAuth,
    *,
    scopes: tuple[str, ...],
    redirect_uri: str | None,
    storage: Storage | None,
    session: str,
    device_interval: float = 5.0,
    extra_params: Mapping[str, str] | None = None,
) -> Credential:
    """A user session: renewed with its refresh token, logged in with `UserLogin`."""
    manager = TokenManager(RefreshTokenGrant(server, client), storage=storage, session=session)
    user = UserLogin(
        manager,
        server,
        client,
        scopes=scopes,
        redirect_uri=redirect_uri,
        device_interval=device_interval,
        extra_params=dict(extra_params) if extra_params else None,
    )
    return Credential(manager=manager, user=user)
