"""Starlette and FastAPI: log users in with Planet, and give each request its user's client.

Installed with the ``starlette`` extra (``python3 -m pip install '.[starlette]'`` in a clone:
Starlette and itsdangerous; FastAPI is Starlette underneath, so it works there too).

Which user a browser belongs to is kept in Starlette's `SessionMiddleware`: a cookie signed with
the app's secret (itsdangerous), holding the user id and nothing else. The users' tokens stay on
the server, in the `SessionPool`'s storage; the cookie never carries one.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from html import escape
from typing import Any, Protocol
from urllib.parse import urlencode

import httpx

from ._auth import PlanetAuth
from ._errors import (
    AuthServerError,
    AuthServerUnavailable,
    ConfigurationError,
    LoginError,
    LoginRequired,
    StorageError,
)
from ._extras import missing_extra
from ._models import TokenSet
from .flows._auth_code import CompletedLogin
from .web._login import WebLogin

try:
    import itsdangerous  # noqa: F401 - SessionMiddleware signs the browser's cookie with it
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse, RedirectResponse, Response
    from starlette.routing import BaseRoute, Mount, Route
except ImportError:  # pragma: no cover - exercised in a subprocess without the extra
    raise missing_extra(
        "planet_async.starlette", "starlette", detail="Starlette and itsdangerous"
    ) from None

__all__ = ["PlanetWeb", "UserPool"]

logger = logging.getLogger(__name__)

USER_KEY = "planet_async.user"
"""Where the user id is kept in the request's session."""
_NEXT_KEY = "planet_async.next"


class UserPool(Protocol):
    """What `PlanetWeb` needs of a pool of user sessions (`planet_async.web.SessionPool`)."""

    def auth(self, user_id: str) -> PlanetAuth: ...

    async def sign_in(self, user_id: str, token: TokenSet) -> None: ...

    async def sign_out(self, user_id: str) -> bool: ...


class _Shared(httpx.AsyncBaseTransport):
    """The app's one connection pool, lent to each request's client: closing that client must
    not close the pool (the app closes it, with `PlanetWeb.aclose`)."""

    def __init__(self, transport: httpx.AsyncBaseTransport) -> None:
        self.transport = transport

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self.transport.handle_async_request(request)

    async def aclose(self) -> None:
        pass


class PlanetWeb:
    """Login, callback and logout routes for a Starlette or FastAPI app, and the current user's
    authenticated httpx client for its request handlers.

    Add Starlette's ``SessionMiddleware`` (a signed cookie says which user a browser is), then
    `install` this on the app. The routes, under `path`:

    - ``GET {path}/login[?next=/where]``: starts a login (`WebLogin.start`), sets the browser-
      binding cookie, and redirects to the authorization server.
    - ``GET {path}/callback``: completes it on whichever replica it lands (`WebLogin.finish`),
      signs the user in to the pool under `user_id(completed)` (the verified `sub` by default),
      and redirects to `next` or `after_login`. A refused callback gets a 400 page.
    - ``POST {path}/logout``: signs the user out everywhere (`SessionPool.sign_out`) and
      redirects to `after_logout`.

    `install` also registers two exception handlers: `LoginRequired` (and so the pool's
    `SessionExpired`: no session, or the refresh token was refused) becomes a redirect to the
    login, and `StorageError` or `AuthServerUnavailable` a 503 with ``Retry-After``.

    Args:
        login: The web login (the confidential client's flow and the shared records).
        pool: The users' sessions (`planet_async.web.SessionPool`).
        path: Where the routes are mounted.
        after_login: Where the browser goes after a login without `next`.
        after_logout: Where the browser goes after logging out.
        base_url: The app's public URL (``https://app.example``), from which the redirect URI
            is made (``{base_url}{path}/callback``; register it with the provider). Without it,
            the URL of the request that starts the login is used, which behind a proxy needs
            the proxy's headers trusted.
        user_id: The app's user id for a completed login; by default the verified `sub`.
        transport: The httpx transport every user's client shares (one connection pool); by
            default an `httpx.AsyncHTTPTransport`.
        client_options: More `httpx.AsyncClient` arguments for the users' clients (`base_url`,
            `timeout`, ...).
    """

    def __init__(
        self,
        login: WebLogin,
        pool: UserPool,
        *,
        path: str = "/auth",
        after_login: str = "/",
        after_logout: str = "/",
        base_url: str | None = None,
        user_id: Callable[[CompletedLogin], str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        client_options: dict[str, Any] | None = None,
    ) -> None:
        if not path.startswith("/") or path.endswith("/"):
            raise ConfigurationError("path must start with '/' and not end with one")
        self.login = login
        self.pool = pool
        self.path = path
        self.after_login = after_login
        self.after_logout = after_logout
        self.base_url = base_url.rstrip("/") if base_url else None
        self._user_id = user_id or _subject
        self._transport = transport or httpx.AsyncHTTPTransport()
        self._client_options = dict(client_options or {})

    def __repr__(self) -> str:
        return f"PlanetWeb({self.login!r}, path={self.path!r})"

    # -- wiring --------------------------------------------------------------------------------

    @property
    def routes(self) -> list[BaseRoute]:
        """The login, callback and logout routes, mounted under `path`."""
        return [
            Mount(
                self.path,
                routes=[
                    Route("/login", self._login, methods=["GET"], name="planet_async_login"),
                    Route("/callback", self._callback, methods=["GET"]),
                    Route("/logout", self._logout, methods=["POST"]),
                ],
            )
        ]

    def install(self, app: Any) -> None:
        """Add the routes and the exception handlers to a Starlette or FastAPI `app`."""
        app.router.routes.extend(self.routes)
        app.add_exception_handler(LoginRequired, self._login_required)
        app.add_exception_handler(StorageError, self._unavailable)
        app.add_exception_handler(AuthServerUnavailable, self._unavailable)

    async def aclose(self) -> None:
        """Close the connection pool the users' clients share (at the app's shutdown)."""
        await self._transport.aclose()

    # -- what request handlers use ---------------------------------------------------------------

    def current_user(self, request: Request) -> str:
        """The id of the user this browser is logged in as.

        Raises:
            LoginRequired: Nobody is logged in in this browser (the handler redirects to login).
        """
        user = _session(request).get(USER_KEY)
        if not isinstance(user, str) or not user:
            raise LoginRequired("log in with Planet first")
        return user

    @asynccontextmanager
    async def user_client(self, request: Request) -> AsyncIterator[httpx.AsyncClient]:
        """An httpx client that authenticates as the current user, for one request:
        ``async with web.user_client(request) as client: ...``.

        Requests made with it raise `SessionExpired` when the user must log in again and
        `StorageError` when the storage is down and no valid token is left; the installed
        handlers turn them into a redirect to the login and a 503.

        Raises:
            LoginRequired: Nobody is logged in in this browser.
        """
        auth = self.pool.auth(self.current_user(request))
        async with httpx.AsyncClient(
            auth=auth, transport=_Shared(self._transport), **self._client_options
        ) as client:
            yield client

    async def client(self, request: Request) -> AsyncIterator[httpx.AsyncClient]:
        """`user_client` as a FastAPI dependency: ``client = Depends(web.client)``."""
        async with self.user_client(request) as client:
            yield client

    # -- the routes ------------------------------------------------------------------------------

    def _callback_url(self, request: Request) -> str:
        if self.base_url is not None:
            return f"{self.base_url}{self.path}/callback"
        return str(request.url_for("planet_async_login")).rsplit("/", 1)[0] + "/callback"

    async def _login(self, request: Request) -> Response:
        session = _session(request)
        target = request.query_params.get("next")
        if target and _is_local(target):
            session[_NEXT_KEY] = target
        start = await self.login.start(self._callback_url(request))
        response = RedirectResponse(start.authorization_url, status_code=303)
        response.set_cookie(
            start.cookie_name,
            start.browser_binding,
            max_age=start.max_age,
            path=f"{self.path}/callback",
            # The public URL decides: behind a TLS-terminating proxy the request itself is http.
            secure=(self.base_url or str(request.url)).startswith("https://"),
            httponly=True,
            samesite="lax",  # sent on the provider's top-level redirect back, not cross-site POSTs
        )
        return response

    async def _callback(self, request: Request) -> Response:
        url = str(request.url)
        try:
            state = self.login.state_of(url)
            cookie = self.login.cookie_name(state)
            completed = await self.login.finish(url, request.cookies.get(cookie))
        except (LoginError, AuthServerError) as exc:
            if isinstance(exc, AuthServerUnavailable):
                raise
            logger.info("a login was refused: %s", str(exc))
            return self._refused(request, exc)
        user = self._user_id(completed)
        await self.pool.sign_in(user, completed.token)
        session = _session(request)
        target = session.pop(_NEXT_KEY, None)
        session.clear()  # whatever this browser was before, it is now this user alone
        session[USER_KEY] = user
        response = RedirectResponse(
            target if isinstance(target, str) and _is_local(target) else self.after_login,
            status_code=303,
        )
        response.delete_cookie(cookie, path=f"{self.path}/callback")
        return response

    def _refused(self, request: Request, exc: Exception) -> Response:
        login = escape(f"{self.path}/login")
        body = (
            "<!doctype html><title>Login failed</title><h1>Login failed</h1>"
            f"<p>{escape(str(exc))}</p><p><a href='{login}'>Log in again</a></p>"
        )
        return Response(body, status_code=400, media_type="text/html")

    async def _logout(self, request: Request) -> Response:
        session = _session(request)
        user = session.pop(USER_KEY, None)
        session.clear()
        if isinstance(user, str) and user:
            try:
                await self.pool.sign_out(user)
            except AuthServerError as exc:  # the session is deleted: only the revocation failed
                logger.warning(
                    "signed a user out, but the refresh token was not revoked: %s", str(exc)
                )
        return RedirectResponse(self.after_logout, status_code=303)

    # -- the exception handlers -------------------------------------------------------------------

    async def _login_required(self, request: Request, exc: Exception) -> Response:
        _session(request).pop(USER_KEY, None)
        query = urlencode({"next": request.url.path}) if request.method == "GET" else ""
        target = f"{self.path}/login" + (f"?{query}" if query else "")
        return RedirectResponse(target, status_code=303)

    async def _unavailable(self, request: Request, exc: Exception) -> Response:
        retry_after = exc.retry_after if isinstance(exc, (AuthServerError, StorageError)) else None
        seconds = max(1, math.ceil(retry_after)) if retry_after else 1
        # The message, not the exception: a kept log record would keep its traceback alive.
        logger.warning("answering 503: %s", str(exc))
        return PlainTextResponse(
            "Planet's sign-in is unavailable for a moment; try again shortly.",
            status_code=503,
            headers={"Retry-After": str(seconds)},
        )


def _subject(completed: CompletedLogin) -> str:
    if completed.subject is None:
        raise ConfigurationError("the login gave no verified subject: ask for the openid scope")
    return completed.subject


def _is_local(target: str) -> bool:
    """A path on this site (not ``//host`` or ``/\\host``, which browsers take as other hosts)."""
    return target.startswith("/") and not target.startswith(("//", "/\\"))


def _session(request: Request) -> dict[str, Any]:
    if "session" not in request.scope:
        raise ConfigurationError(
            "planet_async.starlette needs Starlette's SessionMiddleware on the app "
            "(app.add_middleware(SessionMiddleware, secret_key=...))"
        )
    session: dict[str, Any] = request.session
    return session
