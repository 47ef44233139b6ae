"""The client credentials grant (RFC 6749 section 4.4): machine-to-machine sessions."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from .._errors import ConfigurationError
from .._models import TokenSet
from .._oauth import AuthorizationServer, ClientAuth, PublicClient, TokenRequest, scope_param
from ._scopes import OFFLINE_ACCESS, normalize_scopes

__all__ = ["ClientCredentialsGrant"]


class ClientCredentialsGrant:
    """Gets M2M tokens with the client's own credentials; renewing is simply asking again.

    Args:
        server: The authorization server.
        client: A confidential client: `ClientSecretBasic`, `ClientSecretPost` or `PrivateKeyJWT`.
        scopes: Scopes to request, as names or one space-separated string; none by default.
            M2M clients never get `offline_access`.
        extra_params: More form fields for the token request (e.g. ``audience``, ``resource``).
    """

    renews_without_lock = True
    """Renewing needs no shared state, so when the storage's lock cannot be had (its service is
    down), the TokenManager renews anyway, in this process, rather than failing the job."""

    def __init__(
        self,
        server: AuthorizationServer,
        client: ClientAuth,
        *,
        scopes: str | Iterable[str] = (),
        extra_params: Mapping[str, str] | None = None,
    ) -> None:
        if isinstance(client, PublicClient):
            raise ConfigurationError(
                "the client credentials grant needs a client secret or private key"
            )
        self.server = server
        self.client = client
        self.scopes = tuple(s for s in normalize_scopes(scopes) if s != OFFLINE_ACCESS)
        self.extra_params = dict(extra_params or {})

    @property
    def loop_free(self) -> bool:
        """Whether `renew` may run on any event loop (the server's transport belongs to none):
        the TokenManager then makes its requests on the renewal loop. Not for a subclass, whose
        `renew` may hold state of its owner's loop."""
        return type(self) is ClientCredentialsGrant and self.server.loop_free

    @property
    def description(self) -> str:
        return f"client_credentials for client {self.client.client_id!r}"

    def __repr__(self) -> str:
        return (
            f"ClientCredentialsGrant(client_id={self.client.client_id!r}, server={self.server!r})"
        )

    async def renew(self, current: TokenSet | None, *, clock: Callable[[], float]) -> TokenSet:
        prepared = await self.prepare(current, clock=clock)
        return await prepared.send(self.server, clock=clock)

    async def prepare(
        self, current: TokenSet | None, *, clock: Callable[[], float]
    ) -> TokenRequest:
        """`renew`'s token request, ready to send, and the reading of its answer."""
        form = {"grant_type": "client_credentials", **scope_param(self.scopes), **self.extra_params}
        return await self.server.token_request(
            form, self.client, clock=clock, context=self.description
        )
