"""The refresh token grant (RFC 6749 section 6): renewing user sessions."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from .._errors import LoginRequired
from .._models import TokenSet
from .._oauth import (
    AuthorizationServer,
    ClientAuth,
    TokenRequest,
    scope_param,
    token_is_active,
)
from ._scopes import normalize_scopes

__all__ = ["RefreshTokenGrant"]


class RefreshTokenGrant:
    """Renews a session with its refresh token; a first token must come from a login.

    When the server rotates refresh tokens, the new one replaces the old; when a response carries
    no refresh token, the old one is kept (RFC 6749 section 6 allows both).

    Args:
        server: The authorization server.
        client: The client the session was issued to (`PublicClient` for native apps).
        scopes: Scopes to ask for on refresh, as names or one space-separated string; by
            default the server keeps the granted ones.
    """

    renews_without_lock = False
    """A refresh token may be rotated: spending it without the lock could spend it twice."""

    def __init__(
        self,
        server: AuthorizationServer,
        client: ClientAuth,
        *,
        scopes: str | Iterable[str] = (),
    ) -> None:
        self.server = server
        self.client = client
        self.scopes = normalize_scopes(scopes)

    @property
    def loop_free(self) -> bool:
        """Whether `renew` may run on any event loop (the server's transport belongs to none):
        the TokenManager then makes its requests on the renewal loop. Not for a subclass, whose
        `renew` may hold state of its owner's loop."""
        return type(self) is RefreshTokenGrant and self.server.loop_free

    @property
    def description(self) -> str:
        return f"refresh_token for client {self.client.client_id!r}"

    def __repr__(self) -> str:
        return f"RefreshTokenGrant({self.client.client_id!r}, server={self.server!r})"

    async def renew(self, current: TokenSet | None, *, clock: Callable[[], float]) -> TokenSet:
        prepared = await self.prepare(current, clock=clock)
        return await prepared.send(self.server, clock=clock)

    async def prepare(
        self, current: TokenSet | None, *, clock: Callable[[], float]
    ) -> TokenRequest:
        """`renew`'s token request, ready to send, and the reading of its answer.

        Raises:
            LoginRequired: There is no session, or it has no refresh token.
        """
        if current is None:
            raise LoginRequired(
                f"not logged in ({self.description}): run `planet-async auth login`, or log in "
                "from code with `await auth.ensure_initialized()`"
            )
        if current.refresh_token is None:
            raise LoginRequired(
                f"the session expired and has no refresh token ({self.description}): run "
                "`planet-async auth login` again, or `await auth.ensure_initialized()`"
            )
        form = {
            "grant_type": "refresh_token",
            "refresh_token": current.refresh_token.get_secret_value(),
            **scope_param(self.scopes),
        }
        return await self.server.token_request(
            form,
            self.client,
            clock=clock,
            context=self.description,
            keep_refresh_token=current.refresh_token,
        )

    async def still_active(self, current: TokenSet, *, clock: Callable[[], float]) -> bool | None:
        """Whether `current`'s refresh token is still active at the server (introspection),
        without spending it: False once it was rotated (another process renewed the session
        with it) or revoked; None when the server cannot tell. The TokenManager asks before
        spending a refresh token the store has lost track of (see `TokenManager`).

        Raises:
            AuthServerUnavailable: The server could not be reached, or failed.
        """
        if current.refresh_token is None:
            return False
        return await token_is_active(
            self.server,
            self.client,
            current.refresh_token.get_secret_value(),
            hint="refresh_token",
            clock=clock,
        )
