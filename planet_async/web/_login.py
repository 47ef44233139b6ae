"""Browser logins for a web service (a confidential client) that runs as several replicas.

A login starts on one replica and its callback may land on any other: the pending login (PKCE
verifier, `state`, `nonce`) waits in the shared `RecordStore` (Redis) under a key derived from
`state`, for the login's lifetime. It is bound to the browser that started it, taken at most once,
and the callback's `iss` and ID token are checked before anyone is logged in.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlsplit

from .._errors import (
    BrowserMismatch,
    CallbackError,
    ConfigurationError,
    InvalidIdToken,
    UnknownLogin,
)
from ..flows._auth_code import AuthorizationCodeFlow, CompletedLogin, PendingAuthorization
from ..storage._protocol import RecordStore

__all__ = ["LoginStart", "WebLogin"]


@dataclass(frozen=True)
class LoginStart:
    """A started login: where to send the browser, and the value that binds it to the browser.

    Attributes:
        authorization_url: Redirect the browser here.
        browser_binding: Give this to the browser in a cookie (HttpOnly, SameSite=Lax, Secure on
            https) and hand it back to `WebLogin.finish` with the callback. A callback without it
            is refused, so a login started in one browser cannot be completed in another.
        cookie_name: A cookie name for this login alone (it is derived from `state`, so the
            callback can find it and several logins in one browser do not overwrite each other).
        max_age: Seconds the login stays usable; the cookie's Max-Age.
    """

    authorization_url: str = field(repr=False)
    browser_binding: str = field(repr=False)
    cookie_name: str
    max_age: int


class WebLogin:
    """Authorization code + PKCE logins for a confidential web client, across replicas.

    Args:
        flow: The authorization code flow, built with the confidential client
            (`ClientSecretBasic`, `ClientSecretPost` or `PrivateKeyJWT`) and scopes that include
            ``openid`` (the callback says who logged in from the verified ID token).
        records: Where pending logins wait between start and callback: the storage every replica
            shares (`RedisStorage`), or `MemoryStorage` for a single process.
        cookie_prefix: Prefix of the browser-binding cookie's name.
        require_id_token: Refuse a login whose token response has no ID token (the default: a
            web service needs to know who logged in). With False, `CompletedLogin.claims` may
            be None.

    Raises:
        ConfigurationError: An ID token is required and the flow does not ask for ``openid``.
    """

    def __init__(
        self,
        flow: AuthorizationCodeFlow,
        records: RecordStore,
        *,
        cookie_prefix: str = "planet_async_login_",
        require_id_token: bool = True,
    ) -> None:
        if require_id_token and "openid" not in flow.scopes:
            raise ConfigurationError(
                "a web login needs the `openid` scope to say who logged in: add it to the flow's "
                "scopes (or pass require_id_token=False)"
            )
        self.flow = flow
        self.records = records
        self.cookie_prefix = cookie_prefix
        self.require_id_token = require_id_token

    def __repr__(self) -> str:
        return f"WebLogin({self.flow!r}, records={type(self.records).__name__})"

    async def start(self, redirect_uri: str | None = None) -> LoginStart:
        """Start a login: keep it in the shared records and return where to send the browser.

        Raises:
            ConfigurationError: No redirect URI, or the server has no authorization endpoint.
            AuthServerError: Discovery failed.
            StorageError: The pending login could not be stored.
        """
        pending = await self.flow.start(redirect_uri)
        binding = secrets.token_urlsafe(32)
        record = json.dumps({"pending": pending.to_json(), "binding": _digest(binding)})
        lifetime = max(1, round(self.flow.lifetime))
        state = pending.state.get_secret_value()
        await self.records.put_record(_record_key(state), record.encode(), lifetime)
        return LoginStart(
            authorization_url=pending.authorization_url,
            browser_binding=binding,
            cookie_name=self.cookie_name(state),
            max_age=lifetime,
        )

    def cookie_name(self, state: str) -> str:
        """The browser-binding cookie's name for the login with this `state`."""
        return f"{self.cookie_prefix}{_digest(state)[:16]}"

    def state_of(self, callback_url: str) -> str:
        """The `state` of a callback URL.

        Raises:
            UnknownLogin: The URL carries no `state`.
        """
        params = dict(parse_qsl(urlsplit(callback_url).query, keep_blank_values=True))
        state = params.get("state")
        if not state:
            raise UnknownLogin("the login's redirect carried no `state`; start the login again")
        return state

    async def finish(self, callback_url: str, browser_binding: str | None) -> CompletedLogin:
        """Complete the login the callback answers, and say who logged in.

        The pending login is taken from the records in one atomic step before anything else, so
        it is used once whatever happens next: a replayed callback, or the same one arriving at
        two replicas at once, finds nothing (`UnknownLogin`).

        Args:
            callback_url: The full URL the browser was sent back to.
            browser_binding: The binding cookie's value from this request (`cookie_name`), or
                None when the browser sent none.

        Raises:
            UnknownLogin: No pending login for this `state`: used already, expired, or unknown.
            BrowserMismatch: The binding is missing or is another browser's.
            IssuerMismatch: The callback's `iss` names another server (RFC 9207).
            InvalidIdToken: The ID token failed verification, or none came and one is required.
            LoginError: Otherwise not a valid answer to this login (`CallbackError`,
                `LoginDenied`, `LoginTimeout`).
            AuthServerError: The token endpoint refused the code, or failed.
            StorageError: The records could not be read.
        """
        state = self.state_of(callback_url)
        raw = await self.records.take_record(_record_key(state))
        if raw is None:
            raise UnknownLogin(
                "no pending login matches this redirect: it was used already, it expired, or it "
                "was started elsewhere; start the login again"
            )
        try:
            record = json.loads(raw)
            pending = PendingAuthorization.from_json(record["pending"])
            expected = str(record["binding"])
        except (ValueError, KeyError, TypeError):
            raise CallbackError("the pending login's record is unreadable; start again") from None
        if browser_binding is None or not hmac.compare_digest(_digest(browser_binding), expected):
            raise BrowserMismatch(
                "this login was started in another browser (or its cookie was lost); the login "
                "is refused: start it again in this browser"
            )
        completed = await self.flow.finish_login(pending, callback_url)
        if completed.claims is None and self.require_id_token:
            raise InvalidIdToken(
                "the token response carried no ID token, so nobody can be said to have logged "
                "in: ask for the `openid` scope (and give the server's issuer URL)"
            )
        return completed


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _record_key(state: str) -> str:
    # A hash: the key names the login without revealing the `state` to whoever lists the keys.
    return f"login:{_digest(state)}"
