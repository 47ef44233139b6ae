"""User sessions: log in once with a browser or a device code, then renew silently."""

from __future__ import annotations

import inspect
import webbrowser
from collections.abc import Awaitable, Callable, Iterable

import anyio

from ._display import show_device_login
from ._errors import LoginError, LoginRequired, LoginTimeout
from ._manager import TokenManager
from ._models import TokenSet
from ._oauth import AuthorizationServer, ClientAuth
from .flows._auth_code import AuthorizationCodeFlow
from .flows._device_code import DeviceAuthorization, DeviceCodeFlow
from .flows._loopback import LoopbackListener
from .flows._scopes import normalize_scopes

__all__ = ["BrowserOpener", "UserLogin", "login_with_browser", "login_with_device"]

BrowserOpener = Callable[[str], "bool | Awaitable[bool]"]
"""Opens a URL in a browser; returns False when it could not. May be sync or async."""


async def login_with_device(
    flow: DeviceCodeFlow, *, show: Callable[[DeviceAuthorization], object] = show_device_login
) -> TokenSet:
    """Run a device login end to end: start, `show` the user the code, poll until done.

    `show` may be a plain function or a coroutine function.

    Raises:
        LoginError: The user declined, or the code expired.
        AuthServerError: The server failed.
    """
    pending = await flow.start()
    shown = show(pending)
    if inspect.isawaitable(shown):
        await shown
    return await flow.complete(pending)


async def login_with_browser(
    flow: AuthorizationCodeFlow,
    *,
    open_browser: BrowserOpener | None = None,
    allow_tty_prompt: bool = False,
    timeout: float = 300.0,
    output: Callable[[str], object] = print,
    read_line: Callable[[str], str] = input,
) -> TokenSet:
    """Run a browser login end to end with a loopback listener for the redirect back.

    The listener binds 127.0.0.1 on the port of the flow's redirect URI (ephemeral if it has
    none). When no browser can be opened, the URL is printed; with `allow_tty_prompt`, the user
    may also paste the URL they were redirected to.

    Args:
        flow: The authorization code flow (its redirect URI, if any, must be a loopback one).
        open_browser: Opens the login URL; `webbrowser.open` by default.
        allow_tty_prompt: Accept a pasted redirect URL from the terminal.
        timeout: Seconds to wait for the user.
        output: Where to print the URL when no browser opened.
        read_line: How to read the pasted URL (`input` by default).

    Raises:
        LoginTimeout: Nobody came back within `timeout`.
        LoginError: The redirect back was invalid or the login was declined.
        AuthServerError: The server failed.
    """
    opener = open_browser or webbrowser.open
    listener = LoopbackListener.for_redirect_uri(flow.redirect_uri)
    async with listener:
        pending = await flow.start(listener.redirect_uri)
        found: list[str] = []
        # A rejected redirect is kept here and raised after the task group: raised inside it,
        # it would reach the caller wrapped in an ExceptionGroup instead of as a LoginError.
        failed: list[LoginError] = []

        def check(url: str) -> None:
            flow.check_callback(pending, url)

        try:
            with anyio.fail_after(timeout):
                async with anyio.create_task_group() as tg:

                    async def from_listener() -> None:
                        try:
                            found.append(await listener.wait_for_callback(check))
                        except LoginError as exc:
                            failed.append(exc)
                        tg.cancel_scope.cancel()

                    async def from_terminal() -> None:
                        line = await anyio.to_thread.run_sync(
                            read_line,
                            "Paste the URL your browser was sent to: ",
                            abandon_on_cancel=True,
                        )
                        try:
                            check(line.strip())
                        except LoginError as exc:
                            failed.append(exc)
                        else:
                            found.append(line.strip())
                        tg.cancel_scope.cancel()

                    tg.start_soon(from_listener)
                    url = pending.authorization_url
                    if not await _open(opener, url):
                        output(f"Open this URL in a browser to log in:\n\n    {url}\n")
                        if allow_tty_prompt:
                            tg.start_soon(from_terminal)
        except TimeoutError:
            raise LoginTimeout(
                f"no browser came back within {timeout:g} s ({flow.description}); start again"
            ) from None
    if failed:
        raise failed[0]
    return await flow.finish(pending, found[0])


async def _open(opener: BrowserOpener, url: str) -> bool:
    if inspect.iscoroutinefunction(opener):
        return bool(await opener(url))
    result = await anyio.to_thread.run_sync(opener, url)
    if inspect.isawaitable(result):
        result = await result
    return bool(result)


class UserLogin:
    """The login side of a user session; `PlanetAuth.for_user` wires one up.

    Args:
        manager: The session's TokenManager (its grant renews with the refresh token).
        server: The authorization server.
        client: The client logins are made for.
        scopes: Scopes to request, as names or one space-separated string.
        redirect_uri: The registered loopback redirect URI, if the client has one.
        device_interval: Poll interval when the server gives none (RFC 8628 says 5 s).
        extra_params: More parameters for login requests (e.g. ``audience``).
    """

    def __init__(
        self,
        manager: TokenManager,
        server: AuthorizationServer,
        client: ClientAuth,
        *,
        scopes: str | Iterable[str],
        redirect_uri: str | None = None,
        device_interval: float = 5.0,
        extra_params: dict[str, str] | None = None,
    ) -> None:
        self.manager = manager
        self.server = server
        self.client = client
        self.scopes = normalize_scopes(scopes)
        self.redirect_uri = redirect_uri
        self.device_interval = device_interval
        self.extra_params = dict(extra_params or {})

    def device_flow(self) -> DeviceCodeFlow:
        """A device login for this session; drive it step by step, then `save` its result."""
        return DeviceCodeFlow(
            self.server,
            self.client,
            scopes=self.scopes,
            default_interval=self.device_interval,
            extra_params=self.extra_params,
        )

    def authorization_code_flow(self, redirect_uri: str | None = None) -> AuthorizationCodeFlow:
        """A browser login for this session; drive it step by step, then `save` its result."""
        return AuthorizationCodeFlow(
            self.server,
            self.client,
            redirect_uri=redirect_uri or self.redirect_uri,
            scopes=self.scopes,
            extra_params=self.extra_params,
        )

    async def save(self, token: TokenSet) -> None:
        """Make a login's tokens the session's, in memory and in its storage."""
        await self.manager.set_token(token)

    async def login_with_device(
        self, show: Callable[[DeviceAuthorization], object] = show_device_login
    ) -> TokenSet:
        """Log in with a device code (see `login_with_device`) and save the session."""
        token = await login_with_device(self.device_flow(), show=show)
        await self.save(token)
        return token

    async def login_with_browser(
        self,
        *,
        open_browser: BrowserOpener | None = None,
        allow_tty_prompt: bool = False,
        timeout: float = 300.0,
    ) -> TokenSet:
        """Log in with the local browser (see `login_with_browser`) and save the session."""
        token = await login_with_browser(
            self.authorization_code_flow(),
            open_browser=open_browser,
            allow_tty_prompt=allow_tty_prompt,
            timeout=timeout,
        )
        await self.save(token)
        return token

    async def ensure_initialized(
        self,
        *,
        allow_open_browser: bool = True,
        allow_tty_prompt: bool = True,
        open_browser: BrowserOpener | None = None,
    ) -> None:
        """Log in only if the session has no usable token and no refresh token.

        With `allow_open_browser`, a browser login; otherwise, with `allow_tty_prompt`, a device
        login whose instructions are printed.

        Raises:
            LoginRequired: A login is needed but neither way is allowed.
            LoginError: The login failed.
        """
        if await self.manager.is_initialized():
            return
        if allow_open_browser:
            await self.login_with_browser(
                open_browser=open_browser, allow_tty_prompt=allow_tty_prompt
            )
        elif allow_tty_prompt:
            await self.login_with_device()
        else:
            raise LoginRequired(
                f"session {self.manager.session!r} has no usable login, and neither a browser "
                "nor a terminal prompt is allowed: log in first with `planet-async auth login`"
            )
