"""A one-shot HTTP listener on loopback that receives a browser login's redirect (RFC 8252 7.3)."""

from __future__ import annotations

import html
import logging
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import anyio
import anyio.abc

from .._errors import ConfigurationError, LoginError

__all__ = ["LoopbackListener"]

logger = logging.getLogger(__name__)

_MAX_HEAD = 16 * 1024
_READ_TIMEOUT = 10.0
_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>{title}</title></head>
<body style="font-family: sans-serif; margin: 3em"><h1>{title}</h1><p>{text}</p></body></html>"""


class LoopbackListener:
    """Listens on 127.0.0.1 for exactly one valid redirect to `path`, then closes.

    The port is ephemeral unless `port` is given (for redirect URIs registered with a fixed
    port). It binds the IPv4 loopback address only, never a public interface. A registered
    ``localhost`` redirect URI keeps the name ``localhost`` in `redirect_uri` (browsers resolve
    it to loopback), while the socket still binds 127.0.0.1, as RFC 8252 section 8.3 advises.
    Requests to other paths get a 404 and are otherwise ignored.

    Use it as an async context manager; the socket is closed on exit, whatever happened.
    """

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, path: str = "/callback") -> None:
        if host not in ("127.0.0.1", "localhost"):
            raise ConfigurationError(
                "the login listener binds loopback only: 127.0.0.1 or localhost"
            )
        self._name = host
        self._port = port
        self.path = path
        self._listener: anyio.abc.SocketListener | None = None

    @classmethod
    def for_redirect_uri(cls, redirect_uri: str | None) -> LoopbackListener:
        """A listener for a registered redirect URI like ``http://127.0.0.1/callback``.

        Raises:
            ConfigurationError: The URI is not an http:// loopback URI.
        """
        if redirect_uri is None:
            return cls()
        parts = urlsplit(redirect_uri)
        if parts.scheme != "http" or parts.hostname not in ("127.0.0.1", "localhost"):
            raise ConfigurationError(
                f"{redirect_uri!r} is not a loopback redirect URI (http://127.0.0.1/...)"
            )
        return cls(host=parts.hostname, port=parts.port or 0, path=parts.path or "/")

    @property
    def port(self) -> int:
        if self._listener is None:
            raise RuntimeError("the listener is not open")
        port = self._listener.extra(anyio.abc.SocketAttribute.local_port)  # noqa: S610
        return int(port)

    @property
    def redirect_uri(self) -> str:
        return f"http://{self._name}:{self.port}{self.path}"

    async def __aenter__(self) -> LoopbackListener:
        listeners = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=self._port)
        (listener,) = listeners.listeners  # one address, one socket
        assert isinstance(listener, anyio.abc.SocketListener)
        self._listener = listener
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            await listener.aclose()

    async def wait_for_callback(self, check: Callable[[str], object]) -> str:
        """Serve until a request to `path` arrives and `check` accepts its URL; return that URL.

        `check` validates the redirect (state, iss, error); whatever it raises is raised here,
        after the browser has been shown a failure page. Wrap the call in `anyio.fail_after`
        to bound the wait.
        """
        if self._listener is None:
            raise RuntimeError("the listener is not open")
        outcome: list[str] = []
        failure: list[BaseException] = []
        async with anyio.create_task_group() as tg:

            async def handle(stream: anyio.abc.SocketStream) -> None:
                async with stream:
                    target = await _read_target(stream)
                    if target is None or outcome or failure:
                        return
                    if urlsplit(target).path != self.path:
                        await _respond(stream, 404, "Not found", "Nothing here.")
                        return
                    url = f"http://{self._name}:{self.port}{target}"
                    try:
                        check(url)
                    except LoginError as exc:
                        failure.append(exc)
                        await _respond(
                            stream, 400, "Login failed", f"{exc} You may close this tab."
                        )
                        tg.cancel_scope.cancel()
                        return
                    outcome.append(url)
                    await _respond(
                        stream, 200, "Logged in", "You can close this tab and go back to the app."
                    )
                    tg.cancel_scope.cancel()

            tg.start_soon(_accept_when_waiting, self._listener, handle, tg)
        if failure:
            raise failure[0]
        return outcome[0]


async def _accept_when_waiting(
    listener: anyio.abc.SocketListener,
    handle: Callable[[anyio.abc.SocketStream], Coroutine[Any, Any, None]],
    tg: anyio.abc.TaskGroup,
) -> None:
    """Like `Listener.serve`, but accepts only once a connection is waiting.

    Stopping `serve` cancels an accept in progress, and on asyncio's selector event loops a
    connection that arrives at that moment is accepted and then dropped: an unclosed socket, and
    "Exception in callback ... _sock_accept ... InvalidStateError" printed by asyncio (CPython
    gh-153761). Browsers open a connection (for /favicon.ico) just as the page that ends the
    login arrives, so it happened to about one login in twenty. Waiting for readability first
    means the accept never waits, and a cancellation finds nothing accepted.
    """
    raw = listener.extra(anyio.abc.SocketAttribute.raw_socket)  # noqa: S610
    while True:
        await anyio.wait_readable(raw)
        tg.start_soon(handle, await listener.accept())


async def _read_target(stream: anyio.abc.SocketStream) -> str | None:
    """The request-target of a GET request, or None for anything else."""
    head = b""
    with anyio.move_on_after(_READ_TIMEOUT):
        while b"\r\n\r\n" not in head and len(head) < _MAX_HEAD:
            try:
                head += await stream.receive(4096)
            except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                return None
    request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = request_line.split(" ")
    if len(parts) != 3 or parts[0] != "GET" or not parts[1].startswith("/"):
        return None
    return parts[1]


async def _respond(stream: anyio.abc.SocketStream, status: int, title: str, text: str) -> None:
    body = _PAGE.format(title=html.escape(title), text=html.escape(text)).encode()
    reason = {200: "OK", 400: "Bad Request", 404: "Not Found"}[status]
    head = (
        f"HTTP/1.1 {status} {reason}\r\n"
        "Content-Type: text/html; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Cache-Control: no-store\r\n"
        "Referrer-Policy: no-referrer\r\n"
        "Connection: close\r\n\r\n"
    )
    try:
        await stream.send(head.encode() + body)
    except (anyio.BrokenResourceError, OSError):
        logger.debug("the browser closed the login callback connection early")
