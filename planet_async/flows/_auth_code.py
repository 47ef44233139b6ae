"""The authorization code grant with PKCE (RFC 6749 4.1, RFC 7636), split into two steps.

`start` builds the authorization request; `finish` checks the redirect back and exchanges the
code. Between the two, the pending state is a serializable model, so a web service can keep it
in its own session store, and a native app can wait for its loopback callback.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_serializer

from .._errors import CallbackError, ConfigurationError, IssuerMismatch, LoginDenied, LoginTimeout
from .._id_token import DEFAULT_LEEWAY, verify_id_token
from .._models import TokenSet, load_revealed_json, reveal_json
from .._oauth import AuthorizationServer, ClientAuth
from ._scopes import OFFLINE_ACCESS, USER_SCOPES, normalize_scopes

__all__ = ["AuthorizationCodeFlow", "CompletedLogin", "PendingAuthorization"]

_MASK = "**********"  # what pydantic shows for a SecretStr


class PendingAuthorization(BaseModel):
    """A started authorization code login, waiting for the redirect back.

    Keep it where only this user's next request can find it (a server-side session), and use it
    once. It holds the PKCE verifier, `state` and `nonce`, all secrets.

    Attributes:
        authorization_url: Where to send the user's browser.
        redirect_uri: Where the server will send the browser back.
        expires_at: Epoch seconds after which `finish` refuses it.
    """

    # A validation error must not quote its input: the input holds the verifier and `state`.
    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    # The URL carries `state` and `nonce`: kept out of repr, and masked by model_dump_json.
    authorization_url: str = Field(repr=False)
    redirect_uri: str
    state: SecretStr
    code_verifier: SecretStr
    nonce: SecretStr
    issuer: str | None
    require_iss: bool = False
    expires_at: float

    @field_serializer("authorization_url", when_used="json")
    def _mask_url(self, url: str) -> str:
        parts = urlsplit(url)
        query = [
            (name, _MASK if name in ("state", "nonce") else value)
            for name, value in parse_qsl(parts.query, keep_blank_values=True)
        ]
        return parts._replace(query=urlencode(query, safe="*")).geturl()

    def to_json(self) -> str:
        """Serialize with the secrets in clear, to keep in a server-side session store.

        ``model_dump_json`` masks the secrets (and so cannot be loaded back); this does not.
        """
        return reveal_json(self)

    @classmethod
    def from_json(cls, text: str | bytes) -> PendingAuthorization:
        """Load what `to_json` wrote.

        Raises:
            ConfigurationError: `text` is not what `to_json` wrote.
        """
        return load_revealed_json(cls, text, "a pending login")


@dataclass(frozen=True)
class CompletedLogin:
    """What a finished browser login gives: the tokens, and who logged in.

    Attributes:
        token: The token set from the token endpoint.
        claims: The ID token's claims, verified (signature, `iss`, `aud`, `exp`, `nonce`); None
            when the server sent no ID token (no ``openid`` scope) or has no issuer URL to
            verify one against.
    """

    token: TokenSet = field(repr=False)
    claims: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def subject(self) -> str | None:
        """The verified `sub` of the user who logged in, if an ID token came."""
        return None if self.claims is None else str(self.claims["sub"])


class AuthorizationCodeFlow:
    """Logs a user in with a browser: authorization code, PKCE S256, `state`, and RFC 9207 `iss`.

    Args:
        server: The authorization server.
        client: The client: `PublicClient` for native apps; `ClientSecretBasic`,
            `ClientSecretPost` or `PrivateKeyJWT` for web services (confidential clients).
        redirect_uri: The registered redirect URI; `start` can also be given one per login.
        scopes: Scopes to request, as names or one space-separated string; by default
            ``planet`` and ``offline_access``. When ``offline_access`` is requested,
            ``prompt=consent`` is sent too (OpenID Connect Core 11 issues refresh tokens only
            then).
        extra_params: More authorization request parameters (e.g. ``audience``).
        lifetime: Seconds a pending login stays usable.
        leeway: Seconds of clock difference allowed for an ID token's `exp` and `iat`.
        clock: Wall-clock seconds; injectable for tests.
    """

    def __init__(
        self,
        server: AuthorizationServer,
        client: ClientAuth,
        *,
        redirect_uri: str | None = None,
        scopes: str | Iterable[str] = USER_SCOPES,
        extra_params: Mapping[str, str] | None = None,
        lifetime: float = 600.0,
        leeway: float = DEFAULT_LEEWAY,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.server = server
        self.client = client
        self.redirect_uri = redirect_uri
        self.scopes = normalize_scopes(scopes)
        self.extra_params = dict(extra_params or {})
        self.lifetime = lifetime
        self.leeway = leeway
        self._clock = clock

    @property
    def description(self) -> str:
        return f"browser login for client {self.client.client_id!r}"

    def __repr__(self) -> str:
        return f"AuthorizationCodeFlow({self.client.client_id!r}, server={self.server!r})"

    async def start(self, redirect_uri: str | None = None) -> PendingAuthorization:
        """Build the authorization request for one login.

        Raises:
            ConfigurationError: No redirect URI, or the server has no authorization endpoint.
            AuthServerError: Discovery failed.
        """
        redirect = redirect_uri or self.redirect_uri
        if not redirect:
            raise ConfigurationError("the authorization code flow needs a redirect_uri")
        endpoint = await self.server.endpoint("authorization_endpoint")
        require_iss = False
        if self.server.issuer is not None:
            metadata = await self.server.metadata()
            require_iss = bool(
                (metadata.model_extra or {}).get("authorization_response_iss_parameter_supported")
            )
        verifier = secrets.token_urlsafe(64)  # 86 characters, within RFC 7636's 43 to 128
        state = secrets.token_urlsafe(32)
        nonce = secrets.token_urlsafe(32)
        params = {
            "response_type": "code",
            "client_id": self.client.client_id,
            "redirect_uri": redirect,
            "state": state,
            "nonce": nonce,
            "code_challenge": _s256(verifier),
            "code_challenge_method": "S256",
        }
        if self.scopes:
            params["scope"] = " ".join(self.scopes)
        if OFFLINE_ACCESS in self.scopes:
            params["prompt"] = "consent"
        params.update(self.extra_params)
        separator = "&" if urlsplit(endpoint).query else "?"
        return PendingAuthorization(
            authorization_url=f"{endpoint}{separator}{urlencode(params)}",
            redirect_uri=redirect,
            state=SecretStr(state),
            code_verifier=SecretStr(verifier),
            nonce=SecretStr(nonce),
            issuer=self.server.issuer,
            require_iss=require_iss,
            expires_at=self._clock() + self.lifetime,
        )

    def check_callback(self, pending: PendingAuthorization, callback_url: str) -> str:
        """Validate the redirect back and return the authorization code; no I/O.

        Raises:
            LoginDenied: The user declined (`error=access_denied`).
            LoginTimeout: The pending login is too old.
            CallbackError: Any other error, a missing or wrong `state`, a wrong or missing `iss`,
                or no code.
        """
        params = dict(parse_qsl(urlsplit(callback_url).query, keep_blank_values=True))
        state = params.get("state")
        if state is None or not hmac.compare_digest(
            state.encode(), pending.state.get_secret_value().encode()
        ):
            raise CallbackError(
                "the login's redirect carried a missing or wrong `state`: it does not belong to "
                "this login (a stale tab, or a forged request); start the login again"
            )
        if self._clock() > pending.expires_at:
            raise LoginTimeout(f"the login took too long ({self.description}); start again")
        iss = params.get("iss")
        checks_iss = pending.issuer is not None and (iss is not None or pending.require_iss)
        if checks_iss and (iss or "").rstrip("/") != (pending.issuer or "").rstrip("/"):
            # RFC 9207: the response must come from the server we sent the user to.
            raise IssuerMismatch(
                f"the login's redirect came from issuer {iss!r}, not {pending.issuer!r}; "
                "start the login again"
            )
        error = params.get("error")
        if error is not None:
            detail = params.get("error_description")
            if error == "access_denied":
                raise LoginDenied(f"the login was declined ({self.description})")
            raise CallbackError(
                f"the authorization server answered {error}"
                + (f" ({detail})" if detail else "")
                + f" ({self.description})"
            )
        code = params.get("code")
        if not code:
            raise CallbackError("the login's redirect carried no authorization code")
        return code

    async def finish(self, pending: PendingAuthorization, callback_url: str) -> TokenSet:
        """Check the redirect back (see `check_callback`) and exchange its code for tokens; an
        ID token that comes with them is verified (see `finish_login`).

        Raises:
            LoginError: The redirect was not a valid answer to this login, or its ID token is
                not valid (`InvalidIdToken`).
            AuthServerError: The token endpoint refused the code or failed.
        """
        return (await self.finish_login(pending, callback_url)).token

    async def finish_login(
        self, pending: PendingAuthorization, callback_url: str
    ) -> CompletedLogin:
        """As `finish`, and say who logged in: the verified claims of the ID token.

        An ID token comes when the ``openid`` scope was asked for. It is verified against the
        server's keys (its JWK Set, fetched from the discovered `jwks_uri` and cached), and its
        `iss`, `aud` (this client), `exp` and `nonce` (this login's) are checked.

        Raises:
            LoginError: As `finish`; `InvalidIdToken` when the ID token fails a check.
            AuthServerError: The token endpoint refused the code or failed, or the server's keys
                could not be fetched.
        """
        code = self.check_callback(pending, callback_url)
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": pending.redirect_uri,
            "code_verifier": pending.code_verifier.get_secret_value(),
        }
        token = await self.server.request_token(
            form, self.client, clock=self._clock, context=self.description
        )
        if token.id_token is None or self.server.issuer is None:
            return CompletedLogin(token)
        claims = await verify_id_token(
            self.server,
            token.id_token.get_secret_value(),
            client_id=self.client.client_id,
            nonce=pending.nonce.get_secret_value(),
            now=self._clock(),
            leeway=self.leeway,
        )
        return CompletedLogin(token, claims)


def _s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
