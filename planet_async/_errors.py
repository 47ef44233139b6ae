"""Exceptions raised by planet_async.

Every exception the library raises on purpose derives from `PlanetAuthError`::

    PlanetAuthError
    ├── ConfigurationError        the arguments or configuration cannot work
    │   ├── AsyncOnlyError        a sync httpx.Client was given an async-only auth
    │   └── MissingExtra          an optional integration's package is not installed
    ├── StorageError              session storage could not be read, written or locked
    │   └── LockLost                  a lease lapsed before a save; the save was refused
    ├── LoginRequired             no usable session and no way to get one without the user
    │   └── SessionExpired            a web service's user must log in again (`SessionPool`)
    ├── LoginError                an interactive login did not complete
    │   ├── LoginDenied               the user or the server refused (`access_denied`)
    │   ├── LoginTimeout              the device code, or the wait for the browser, expired
    │   └── CallbackError             the redirect back was invalid (state, iss, error, no code)
    │       ├── IssuerMismatch            its `iss` names another server (RFC 9207, mix-up)
    │       ├── UnknownLogin              no pending login for its `state`: used, expired or forged
    │       ├── BrowserMismatch           it came to another browser than the one that started it
    │       └── InvalidIdToken            the ID token failed validation (signature, iss, aud, ...)
    └── AuthServerError           the authorization server did not give us a token
        ├── AuthServerUnavailable     timeout, no connection, 5xx or 429 (see `retry_after`)
        ├── InvalidTokenResponse      not a usable token response (HTML, bad JSON, ...)
        └── OAuthError                an RFC 6749 section 5.2 error (`error`, `error_description`)
            ├── InvalidClientError        `invalid_client`: the client credentials were refused
            └── InvalidGrantError         `invalid_grant`: the refresh token or code was refused

Messages name the session and the endpoint and say what to do next. They never contain a secret:
no token, client secret, API key, authorization code or PKCE verifier.
"""

from __future__ import annotations

import copy

__all__ = [
    "AsyncOnlyError",
    "AuthServerError",
    "AuthServerUnavailable",
    "BrowserMismatch",
    "ConfigurationError",
    "InvalidClientError",
    "InvalidGrantError",
    "InvalidIdToken",
    "IssuerMismatch",
    "InvalidTokenResponse",
    "CallbackError",
    "LoginDenied",
    "LoginError",
    "LoginRequired",
    "LoginTimeout",
    "LockLost",
    "MissingExtra",
    "SessionExpired",
    "OAuthError",
    "PlanetAuthError",
    "StorageError",
    "UnknownLogin",
]


class PlanetAuthError(Exception):
    """Base class of every exception planet_async raises on purpose."""


class ConfigurationError(PlanetAuthError, ValueError):
    """The arguments or configuration given to planet_async cannot work."""


class AsyncOnlyError(ConfigurationError, TypeError):
    """An async-only object was used from synchronous code."""


class MissingExtra(ConfigurationError, ImportError):
    """An optional integration needs a package that is not installed; the message names the extra
    and the command that installs it (from a clone: ``python3 -m pip install '.[aiohttp]'``)."""


class StorageError(PlanetAuthError):
    """Session storage could not be read, written or locked.

    A web service turns it into ``503 Service Unavailable`` with ``Retry-After: retry_after``.

    Attributes:
        retry_after: Seconds until this process tries the storage again for the session, when
            known (a `TokenManager` sets it when it backs off); None otherwise.
    """

    def __init__(self, message: str = "", *, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after

    def __reduce__(self) -> tuple[object, ...]:
        # copy.copy() and pickle keep the keyword-only attribute.
        return (_rebuild, (type(self), self.args, self.__dict__))


class LockLost(StorageError):
    """A storage lease (`RedisStorage.lock`) lapsed before a save, so the save was refused: another
    process may hold the lease now and have stored a newer session."""


class LoginRequired(PlanetAuthError):
    """There is no usable session and none can be obtained without the user.

    Raised when a session has no refresh token, or the authorization server refused the one it
    had. The user must log in again.
    """


class SessionExpired(LoginRequired):
    """A user of a web service has no usable session: none is stored under their id (never
    logged in, signed out, or dropped after the retention), or the authorization server refused
    its refresh token (`invalid_grant`: revoked, expired, or spent). Start a new login; the
    Starlette integration turns it into a redirect to the login.

    Attributes:
        session: The storage key of the user's session (not the user id, which the key may hide).
    """

    def __init__(self, message: str = "", *, session: str = ""):
        super().__init__(message)
        self.session = session

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild, (type(self), self.args, self.__dict__))


class LoginError(PlanetAuthError):
    """An interactive login (device code or browser) did not complete."""


class LoginDenied(LoginError):
    """The user declined, or the server refused, the login (`access_denied`)."""


class LoginTimeout(LoginError):
    """The login took too long: the device code expired, or the browser never came back."""


class CallbackError(LoginError):
    """The authorization response was invalid: wrong or missing `state`, wrong `iss`, an error,
    or no code. Nothing from it was used; start the login again."""


class IssuerMismatch(CallbackError):
    """The redirect back named another authorization server in `iss` than the one the login was
    sent to (RFC 9207): a mix-up attack, or a misconfigured issuer. Nothing from it was used."""


class UnknownLogin(CallbackError):
    """No pending login matches the redirect's `state`: it was used already (a replayed
    callback), it expired, or it was never started here."""


class BrowserMismatch(CallbackError):
    """The redirect back came without the browser binding of the login it answers: a login
    started in one browser was completed in another (login CSRF). The pending login is spent."""


class InvalidIdToken(CallbackError):
    """The ID token failed validation: its signature against the provider's keys, `iss`, `aud`,
    `exp`, or the login's `nonce`. Nobody was logged in."""


class AuthServerError(PlanetAuthError):
    """The authorization server did not give us a token.

    Attributes:
        endpoint: The URL that was called.
        retry_after: Seconds the server asked us to wait, when it said so.
    """

    def __init__(self, message: str, *, endpoint: str = "", retry_after: float | None = None):
        super().__init__(message)
        self.endpoint = endpoint
        self.retry_after = retry_after

    def __reduce__(self) -> tuple[object, ...]:
        # copy.copy() and pickle keep the keyword-only attributes.
        return (_rebuild, (type(self), self.args, self.__dict__))


class AuthServerUnavailable(AuthServerError):
    """The authorization server could not be reached, timed out, or answered 5xx or 429."""


class InvalidTokenResponse(AuthServerError):
    """The authorization server answered, but not with a usable token response."""


class OAuthError(AuthServerError):
    """The authorization server answered with an OAuth 2.0 error (RFC 6749, section 5.2).

    Attributes:
        error: The `error` code, e.g. ``"invalid_grant"``.
        error_description: The server's `error_description`, if any.
        status_code: The HTTP status of the response.
    """

    def __init__(
        self,
        message: str,
        *,
        error: str,
        error_description: str | None = None,
        status_code: int = 400,
        endpoint: str = "",
        retry_after: float | None = None,
    ):
        super().__init__(message, endpoint=endpoint, retry_after=retry_after)
        self.error = error
        self.error_description = error_description
        self.status_code = status_code


class InvalidClientError(OAuthError):
    """The authorization server refused the client's credentials (`invalid_client`)."""


class InvalidGrantError(OAuthError):
    """The authorization server refused the grant (`invalid_grant`), e.g. a used refresh token."""


def _rebuild(
    cls: type[PlanetAuthError], args: tuple[object, ...], state: dict[str, object]
) -> PlanetAuthError:
    exc = cls.__new__(cls)
    exc.args = args
    exc.__dict__.update(state)
    return exc


def fresh_copy(error: BaseException) -> BaseException:
    """A copy of a shared error, so each waiter raises its own with its own traceback."""
    try:
        clone = copy.copy(error)
    except Exception:  # pragma: no cover - exotic exception types
        return error
    clone.__cause__ = error.__cause__
    return clone
