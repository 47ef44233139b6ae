"""What every HTTP library's adapter shares: the session, the origin policy, the header.

An adapter (the httpx and httpx2 Auth, the aiohttp middleware, the Planet SDK helper) only asks
for a header, sets it on requests to allowlisted origins, and reports a 401 that answered it. The
constructors and logins live here, so a user of any client builds its adapter directly.
"""

from __future__ import annotations

import functools
import json
import os
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import SecretStr

from ._background import renewal_loop
from ._display import show_device_login
from ._errors import ConfigurationError, LoginRequired
from ._manager import TokenManager
from ._models import TokenSet
from ._oauth import (
    AuthorizationServer,
    ClientAuth,
    ClientSecretBasic,
    ClientSecretPost,
    PrivateKeyJWT,
    PublicClient,
    revoke_token,
)
from ._redact import clean_api_key
from ._session import Credential, SessionSource, user_credential
from ._urls import OriginPolicy, origin_of
from ._user import BrowserOpener, UserLogin
from .flows._client_credentials import ClientCredentialsGrant
from .flows._device_code import DeviceAuthorization
from .flows._scopes import USER_SCOPES, normalize_scopes
from .profiles import PlanetHome, choose_session, credential_from_source
from .storage._config import storage_from_environment
from .storage._protocol import Storage

__all__ = ["PLANET_API_ORIGINS", "PLANET_M2M_ISSUER", "AuthAdapter", "SyncSession"]

PLANET_API_ORIGINS = ("https://api.planet.com", "https://services.sentinel-hub.com")
"""Where Planet's APIs live: the origins a token is sent to by default."""

PLANET_M2M_ISSUER = "https://services.sentinel-hub.com/auth/realms/main"
"""The authorization server of Planet's M2M (service account) clients."""

_API_KEY_REFUSED = frozenset({origin_of("https://services.sentinel-hub.com")})
"""Sentinel Hub does not accept Planet API keys: a key is never sent there."""

_A = TypeVar("_A", bound="AuthAdapter")
_T = TypeVar("_T")


class AuthAdapter:
    """A Planet session (OAuth2 or API key) and the origins it authenticates, for any client.

    The adapters for each HTTP library derive from this class and share its constructors
    (`from_client_credentials`, `for_user`, `from_user_default_session`, `from_profile`,
    `from_api_key`, ...) and logins. The header goes only to allowlisted origins (Planet's API
    origins by default). An adapter asks `header` for the header of a request, and after a 401
    from an allowlisted origin to a request that carried it, `retry_header` for the header to
    resend with (None: do not resend).

    Args:
        manager: The session's `TokenManager` (OAuth2).
        api_key: A Planet API key, instead of a manager. Never sent to services.sentinel-hub.com.
        allowed_origins: Origins to authenticate, e.g. ``["https://api.planet.com"]``. An
            ``http://`` origin is allowed only on loopback (for tests and local proxies).
        allow_loopback_http: Also authenticate ``http://`` requests to any loopback address and
            port. Off by default.
    """

    def __init__(
        self,
        manager: TokenManager | None = None,
        *,
        api_key: str | None = None,
        allowed_origins: Iterable[str] | None = None,
        allow_loopback_http: bool = False,
    ) -> None:
        if (manager is None) == (api_key is None):
            raise ConfigurationError(
                f"give {type(self).__name__} either a TokenManager or an api_key"
            )
        self.manager = manager
        self._api_key_header = f"api-key {clean_api_key(api_key)}" if api_key is not None else None
        policy = OriginPolicy(
            PLANET_API_ORIGINS if allowed_origins is None else allowed_origins,
            loopback_http=allow_loopback_http,
        )
        if api_key is not None:
            if allowed_origins is not None and policy.origins & _API_KEY_REFUSED:
                raise ConfigurationError(
                    "services.sentinel-hub.com does not accept Planet API keys; use OAuth2 there"
                )
            policy = policy.without(_API_KEY_REFUSED)
        self._policy = policy
        self.user: UserLogin | None = None
        """The login side of a user session (`for_user`); None for M2M and API keys."""
        self.source: SessionSource | None = None
        """Which credential this is and where it came from, when chosen from settings."""

    def __repr__(self) -> str:
        kind = "api_key=***" if self.manager is None else f"manager={self.manager!r}"
        origins = sorted(str(o) for o in self._policy.origins)
        return f"{type(self).__name__}({kind}, origins={origins})"

    @classmethod
    def from_adapter(cls: type[_A], other: AuthAdapter) -> _A:
        """The same session and origins for another client: one `TokenManager` shared by, say,
        an httpx client and an aiohttp session, so a renewal serves both."""
        adapter = cls.__new__(cls)
        adapter.manager = other.manager
        adapter._api_key_header = other._api_key_header
        adapter._policy = other._policy
        adapter.user = other.user
        adapter.source = other.source
        return adapter

    @classmethod
    def _over(cls: type[_A], manager: TokenManager, policy: OriginPolicy) -> _A:
        """An adapter of `manager` sharing an origin policy already built (a `SessionPool`
        makes thousands; the policy is the same for all)."""
        adapter = cls.__new__(cls)
        adapter.manager = manager
        adapter._api_key_header = None
        adapter._policy = policy
        adapter.user = None
        adapter.source = None
        return adapter

    @classmethod
    def from_client_credentials(
        cls: type[_A],
        client_id: str,
        client_secret: str | None = None,
        *,
        private_key: str | bytes | Mapping[str, Any] | None = None,
        private_key_password: str | None = None,
        auth_method: Literal["client_secret_basic", "client_secret_post"] = "client_secret_basic",
        issuer: str | None = PLANET_M2M_ISSUER,
        token_endpoint: str | None = None,
        scopes: str | Iterable[str] = (),
        storage: Storage | None = None,
        session: str | None = None,
        timeout: float = 10.0,
        allowed_origins: Iterable[str] | None = None,
        allow_loopback_http: bool = False,
    ) -> _A:
        """An M2M (service account) session with the client credentials grant.

        Args:
            client_id: The service account's client id.
            client_secret: Its secret; or give `private_key` for `private_key_jwt`.
            private_key: A private key for `private_key_jwt` (RSA, EC or Ed25519/Ed448; PEM,
                DER bytes or JWK; see `PrivateKeyJWT`).
            private_key_password: The password of an encrypted `private_key`.
            auth_method: How a secret is sent: HTTP Basic (default) or in the form.
            issuer: The authorization server; Planet's M2M server by default.
            token_endpoint: Skip discovery and use this token endpoint.
            scopes: Scopes to request, as names or one space-separated string; none by default.
            storage: Where to keep the session; by default where ``PLANET_ASYNC_STORAGE``
                says, else in memory.
            session: The session's name in the storage; the client id by default.
            timeout: Seconds any one call to the authorization server may take.
            allowed_origins: See the class.
            allow_loopback_http: See the class.

        Raises:
            ConfigurationError: Neither or both of `client_secret` and `private_key` were given.
        """
        client: ClientAuth
        if (client_secret is None) == (private_key is None):
            raise ConfigurationError("give either client_secret or private_key")
        if client_secret is None:
            client = PrivateKeyJWT(
                client_id=client_id, private_key=private_key, password=private_key_password
            )
        elif auth_method == "client_secret_post":
            client = ClientSecretPost(client_id=client_id, client_secret=SecretStr(client_secret))
        else:
            client = ClientSecretBasic(client_id=client_id, client_secret=SecretStr(client_secret))
        server = AuthorizationServer(issuer, token_endpoint=token_endpoint, timeout=timeout)
        grant = ClientCredentialsGrant(server, client, scopes=scopes)
        storage = storage if storage is not None else storage_from_environment()
        manager = TokenManager(grant, storage=storage, session=session or client_id)
        return cls(
            manager, allowed_origins=allowed_origins, allow_loopback_http=allow_loopback_http
        )

    @classmethod
    def for_user(
        cls: type[_A],
        client_id: str,
        *,
        issuer: str,
        client: ClientAuth | None = None,
        scopes: str | Iterable[str] = USER_SCOPES,
        redirect_uri: str | None = None,
        storage: Storage | None = None,
        session: str | None = None,
        timeout: float = 10.0,
        device_interval: float = 5.0,
        allowed_origins: Iterable[str] | None = None,
        allow_loopback_http: bool = False,
    ) -> _A:
        """A user session: log in once (browser or device code), then renew with the refresh token.

        Log in with `login_with_browser`, `login_with_device` or `ensure_initialized`; the
        session is saved to `storage`, so later runs renew silently. With rotating refresh
        tokens, the storage always holds the newest one.

        Args:
            client_id: The registered application's client id.
            issuer: The authorization server (e.g. ``https://login.planet.com/``).
            client: How the client authenticates, for confidential clients (web services);
                a public client (`client_id` only) by default.
            scopes: Scopes to request; ``planet`` and ``offline_access`` by default, so that a
                refresh token is issued.
            redirect_uri: The registered loopback redirect URI for browser logins, if it fixes a
                port; an ephemeral port on 127.0.0.1 otherwise.
            storage: Where to keep the session; by default where ``PLANET_ASYNC_STORAGE`` says,
                else in memory.
            session: The session's name in the storage; the client id by default.
            timeout: Seconds any one call to the authorization server may take.
            device_interval: Device-login poll interval when the server gives none.
            allowed_origins: See the class.
            allow_loopback_http: See the class.
        """
        if client is None:
            client = PublicClient(client_id=client_id)
        credential = user_credential(
            AuthorizationServer(issuer, timeout=timeout),
            client,
            scopes=normalize_scopes(scopes),
            redirect_uri=redirect_uri,
            storage=storage if storage is not None else storage_from_environment(),
            session=session or client_id,
            device_interval=device_interval,
        )
        return cls.from_credential(
            credential, allowed_origins=allowed_origins, allow_loopback_http=allow_loopback_http
        )

    @classmethod
    def from_credential(
        cls: type[_A],
        credential: Credential,
        *,
        allowed_origins: Iterable[str] | None = None,
        allow_loopback_http: bool = False,
    ) -> _A:
        """Authenticate requests with a session's credential (see `Credential`)."""
        api_key = credential.api_key.get_secret_value() if credential.api_key else None
        auth = cls(
            credential.manager,
            api_key=api_key,
            allowed_origins=allowed_origins,
            allow_loopback_http=allow_loopback_http,
        )
        auth.user = credential.user
        auth.source = credential.source
        return auth

    def _user_login(self) -> UserLogin:
        if self.user is None:
            raise ConfigurationError("only a user session (for_user) can log in")
        return self.user

    async def is_initialized(self) -> bool:
        """Whether requests can be authenticated without a login: always true for M2M and API
        keys; for a user session, whether it holds a usable token or a refresh token."""
        if self.user is None:
            return True
        return await self.user.manager.is_initialized()

    async def ensure_initialized(
        self,
        *,
        allow_open_browser: bool = True,
        allow_tty_prompt: bool = True,
        open_browser: BrowserOpener | None = None,
    ) -> None:
        """Log the user in only if the session cannot renew by itself; see `UserLogin`."""
        if self.user is not None:
            await self.user.ensure_initialized(
                allow_open_browser=allow_open_browser,
                allow_tty_prompt=allow_tty_prompt,
                open_browser=open_browser,
            )

    async def login_with_device(
        self, show: Callable[[DeviceAuthorization], object] | None = None
    ) -> TokenSet:
        """Log the user in with a device code, printing (or `show`-ing) the code and URL."""
        user = self._user_login()
        return await (user.login_with_device(show) if show else user.login_with_device())

    async def login_with_browser(
        self,
        *,
        open_browser: BrowserOpener | None = None,
        allow_tty_prompt: bool = False,
        timeout: float = 300.0,
    ) -> TokenSet:
        """Log the user in with the local browser and a loopback redirect listener."""
        return await self._user_login().login_with_browser(
            open_browser=open_browser, allow_tty_prompt=allow_tty_prompt, timeout=timeout
        )

    async def logout(self) -> bool:
        """End the session: revoke its refresh token where the server supports RFC 7009, then
        delete it from memory and storage. Returns whether a token was revoked.

        Raises:
            AuthServerError: The server refused or failed to revoke (the local session is
                deleted all the same).
        """
        if self.manager is None:
            return False
        token = await self.manager.forget()
        if self.user is None or token is None or token.refresh_token is None:
            return False
        return await revoke_token(
            self.user.server,
            self.user.client,
            token.refresh_token.get_secret_value(),
            hint="refresh_token",
            clock=time.time,
        )

    @classmethod
    def from_user_default_session(
        cls: type[_A],
        *,
        home: str | os.PathLike[str] | None = None,
        allowed_origins: Iterable[str] | None = None,
        allow_loopback_http: bool = False,
    ) -> _A:
        """The session the user chose with the `planet` CLI or environment variables.

        Precedence: ``PL_AUTH_PROFILE``; ``PL_AUTH_CLIENT_ID`` + ``PL_AUTH_CLIENT_SECRET``;
        ``PL_AUTH_API_KEY`` / ``PL_API_KEY`` (environment first, then ``~/.planet.json``), then
        the legacy ``key`` in ``~/.planet.json``, then the built-in ``planet-user`` profile.
        `source` tells which one was used. Tokens are shared with the CLI in ``~/.planet/``,
        unless ``PLANET_ASYNC_STORAGE`` names another storage (a fleet's Redis).

        Raises:
            ConfigurationError: A named profile does not exist, or the settings conflict.
        """
        planet_home = PlanetHome(home)
        return cls.from_credential(
            credential_from_source(choose_session(home=planet_home), home=planet_home),
            allowed_origins=allowed_origins,
            allow_loopback_http=allow_loopback_http,
        )

    @classmethod
    def from_profile(
        cls: type[_A],
        profile: str,
        *,
        home: str | os.PathLike[str] | None = None,
        storage: Storage | None = None,
        allowed_origins: Iterable[str] | None = None,
        allow_loopback_http: bool = False,
    ) -> _A:
        """A named profile of the `planet` CLI (``~/.planet/<profile>/``), or a built-in one.

        Args:
            profile: The profile name (case-insensitive).
            home: The home directory holding ``.planet/``; the user's by default.
            storage: Keep the tokens here instead; by default where ``PLANET_ASYNC_STORAGE``
                says, else shared with the CLI in ``~/.planet/``.
            allowed_origins: See the class.
            allow_loopback_http: See the class.

        Raises:
            ConfigurationError: The profile does not exist or cannot work.
        """
        planet_home = PlanetHome(home)
        return cls.from_credential(
            credential_from_source(
                choose_session(profile=profile, home=planet_home), home=planet_home, storage=storage
            ),
            allowed_origins=allowed_origins,
            allow_loopback_http=allow_loopback_http,
        )

    @classmethod
    def from_api_key_file(
        cls: type[_A], path: str | os.PathLike[str], *, allowed_origins: Iterable[str] | None = None
    ) -> _A:
        """An API key from a file: the key alone (as saved from Planet's account page, a trailing
        newline and all), or the legacy JSON older SDKs wrote, ``{"key": "PLAK..."}``.

        Raises:
            ConfigurationError: The file cannot be read, is JSON without a ``"key"``, or its key
                cannot be sent in a header (the message names the file, never the key).
        """
        file = Path(path).expanduser()
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, ValueError) as exc:  # ValueError: not UTF-8 (UnicodeDecodeError)
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not text"
            raise ConfigurationError(f"cannot read an API key from {file}: {reason}") from None
        if not text.lstrip().startswith(("{", "[")):  # no key starts so: the key alone
            plain = clean_api_key(text, f"API key in {file}")
            return cls(api_key=plain, allowed_origins=allowed_origins)
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as exc:
            where = (
                f" ({exc.msg}, line {exc.lineno} column {exc.colno})"
                if isinstance(exc, json.JSONDecodeError)
                else ""
            )
            raise ConfigurationError(
                f"cannot read an API key from {file}: it is not valid JSON{where}; it should hold "
                'the key alone, or {"key": "PLAK..."}'
            ) from None
        found = data.get("key") if isinstance(data, dict) else None
        if not isinstance(found, str) or not found.strip():
            raise ConfigurationError(
                f'{file} has no "key"; expected {{"key": "PLAK..."}}, or the key alone'
            )
        return cls(
            api_key=clean_api_key(found, f'API key in {file} ("key")'),
            allowed_origins=allowed_origins,
        )

    @classmethod
    def from_api_key(
        cls: type[_A], api_key: str, *, allowed_origins: Iterable[str] | None = None
    ) -> _A:
        """Authenticate with a Planet API key (sent as ``Authorization: api-key <key>``).

        Whitespace around the key is dropped, so ``from_api_key(Path("key.txt").read_text())``
        works with the newline an editor leaves at a file's end.

        Raises:
            ConfigurationError: The key is empty, or holds whitespace or a control character
                (the message names the problem, never the key).
        """
        return cls(api_key=api_key, allowed_origins=allowed_origins)

    def authenticates(self, scheme: str, host: str, port: int | None) -> bool:
        """Whether a request to this URL's origin gets the header (`port` None: the default)."""
        return self._policy.allows(scheme, host, port)

    async def header(self) -> str:
        """The Authorization header value for the next request; renews the token if it must.

        Raises:
            PlanetAuthError: No token could be had (see the exception tree in `_errors`).
        """
        manager = self.manager
        if manager is None:
            assert self._api_key_header is not None
            return self._api_key_header
        return manager.fresh_header() or await renewed_header(manager)

    async def retry_header(self, rejected: str) -> str | None:
        """After an allowlisted origin answered 401 to `rejected`: the header to resend the request
        with once, or None when resending cannot help (an API key, or no newer token)."""
        manager = self.manager
        if manager is None:
            return None
        loop = renewal_loop()
        if loop.drives(manager):
            return await loop.run(manager, manager.renew_rejected, rejected)
        return await manager.renew_rejected(rejected)

    def header_sync(self) -> str:
        """`header` for synchronous callers (any thread, also inside a running event loop, as in
        a notebook cell). A fresh token's header is read from memory; a renewal runs on the
        process's renewal loop, once for every thread that waits for it.

        Raises:
            PlanetAuthError: No token could be had (see the exception tree in `_errors`).
        """
        manager = self.manager
        if manager is None:
            assert self._api_key_header is not None
            return self._api_key_header
        return manager.fresh_header() or renewal_loop().call(manager, manager.header)

    def retry_header_sync(self, rejected: str) -> str | None:
        """`retry_header` for synchronous callers."""
        manager = self.manager
        if manager is None:
            return None
        return renewal_loop().call(manager, manager.renew_rejected, rejected)

    @property
    def sync(self) -> SyncSession:
        """This session's logins and logout as blocking calls, for synchronous programs and
        notebooks: ``auth.sync.ensure_initialized()``, ``auth.sync.login_with_device()``, ..."""
        return SyncSession(self)


async def renewed_header(manager: TokenManager) -> str:
    """The header of `manager` once its fresh-token path had none: renewed on the caller's loop,
    or on the renewal loop if synchronous callers use the session too (a session lives on one
    event loop)."""
    loop = renewal_loop()
    if loop.drives(manager):
        return await loop.run(manager, manager.header)
    return manager.header_nowait() or await manager.header()


class SyncSession:
    """The blocking face of an adapter's session (`AuthAdapter.sync`): each call runs on the
    process's renewal loop and waits for it, so it works in any thread, and in a notebook cell
    whose event loop is running. A device login's `show` runs in the caller's thread (in a
    notebook, its output belongs to the cell); a browser login's `open_browser` runs on the
    renewal loop's thread.
    """

    def __init__(self, adapter: AuthAdapter) -> None:
        self._adapter = adapter

    def __repr__(self) -> str:
        return f"SyncSession({self._adapter!r})"

    def _call(self, func: Callable[..., Awaitable[_T]], *args: Any) -> _T:
        manager = self._adapter.manager
        assert manager is not None
        return renewal_loop().call(manager, func, *args)

    def header(self) -> str:
        """See `AuthAdapter.header_sync`."""
        return self._adapter.header_sync()

    def token(self) -> TokenSet:
        """The current token set, renewed first if needed (OAuth2 sessions only).

        Raises:
            ConfigurationError: An API key has no token set.
            PlanetAuthError: As `header` raises.
        """
        manager = self._adapter.manager
        if manager is None:
            raise ConfigurationError("an API key has no token set")
        return self._call(manager.token)

    def is_initialized(self) -> bool:
        """See `AuthAdapter.is_initialized`."""
        if self._adapter.user is None:
            return True
        return self._call(self._adapter.is_initialized)

    def ensure_initialized(self, *, allow_tty_prompt: bool = True) -> None:
        """Log the user in with a device code if the session cannot renew by itself (a browser
        login needs `login_with_browser`); nothing for M2M and API keys.

        Raises:
            LoginRequired: A login is needed and `allow_tty_prompt` is False.
            LoginError: The login failed.
        """
        if self.is_initialized():
            return
        if not allow_tty_prompt:
            user = self._adapter._user_login()
            raise LoginRequired(
                f"session {user.manager.session!r} has no usable login: log in first with "
                "`planet-async auth login`, or allow the device login"
            )
        self.login_with_device()

    def login_with_device(
        self, show: Callable[[DeviceAuthorization], object] | None = None
    ) -> TokenSet:
        """Log the user in with a device code and save the session.

        `show` tells the user the code and URL, in the caller's thread; by default a link, the
        code (and with the ``qr`` extra a QR code) in a notebook, printed text elsewhere.

        Raises:
            LoginError: The user declined, or the code expired.
            AuthServerError: The server failed.
        """
        user = self._adapter._user_login()
        flow = user.device_flow()
        pending = self._call(flow.start)
        (show or show_device_login)(pending)
        token = self._call(flow.complete, pending)
        self._call(user.save, token)
        return token

    def login_with_browser(
        self,
        *,
        open_browser: BrowserOpener | None = None,
        allow_tty_prompt: bool = False,
        timeout: float = 300.0,
    ) -> TokenSet:
        """See `AuthAdapter.login_with_browser`."""
        return self._call(
            functools.partial(
                self._adapter.login_with_browser,
                open_browser=open_browser,
                allow_tty_prompt=allow_tty_prompt,
                timeout=timeout,
            )
        )

    def logout(self) -> bool:
        """See `AuthAdapter.logout`."""
        if self._adapter.manager is None:
            return False
        return self._call(self._adapter.logout)
