"""The httpx side of talking to authorization servers: the one place `_oauth` meets httpx."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from urllib.parse import urlsplit

import anyio
import httpx

from ._background import renewal_loop
from ._errors import AuthServerUnavailable
from ._transport import HttpRequest, HttpResponse

__all__ = ["HttpxTransport", "blocking_client", "send_blocking", "unreachable"]


_ssl: list[ssl.SSLContext] = []


async def _ssl_context() -> ssl.SSLContext:
    # Loading the CA bundle takes milliseconds of CPU: do it once, in a worker thread. Later
    # renewals skip the thread hop, which on a busy event loop costs a wait behind every ready
    # task.
    if not _ssl:
        context = await anyio.to_thread.run_sync(httpx.create_ssl_context)
        if not _ssl:
            _ssl.append(context)
    return _ssl[0]


class HttpxTransport:
    """Sends authorization server requests with httpx.

    Args:
        client: An `httpx.AsyncClient` to send with (its owner closes it). By default each call
            uses a short-lived client: token requests are rare, and a fresh connection is never a
            stale one.
        off_loop: Send from the process's renewal loop (a daemon thread) instead of the
            caller's event loop, which then waits for one answer instead of each step of the
            exchange. Off by default: the `TokenManager` does better by default, making the
            whole request on the renewal loop and putting its token in use from there (see its
            `off_loop`); this is the variant the ``clients_renewal`` benchmark compares it with.
            Only without `client` (a client belongs to its owner's loop).
        helper_process: Let a `TokenManager` hand its token requests to the program's helper
            process (`_helper`), which sends them with this same code, instead of making them
            on the renewal loop: a program whose other threads keep the interpreter busy then
            does not slow each step of the request, only the one wake-up for its answer. On by
            default; only without `client`.
    """

    def __init__(
        self,
        client: httpx.AsyncClient | None = None,
        *,
        off_loop: bool = False,
        helper_process: bool = True,
    ) -> None:
        self._client = client
        self._off_loop = off_loop and client is None
        self._helper_process = helper_process and client is None

    @property
    def helper_process(self) -> bool:
        """Whether the program's helper process may send token requests for this transport."""
        return self._helper_process

    @property
    def loop_free(self) -> bool:
        """Whether this transport may send from any event loop (it has no client of its own)."""
        return self._client is None

    async def send(self, request: HttpRequest, *, timeout: float) -> HttpResponse:
        if self._off_loop:
            return await renewal_loop().run_here(self._send_here, request, timeout)
        return await self._send_here(request, timeout)

    async def _send_here(self, request: HttpRequest, timeout: float) -> HttpResponse:
        try:
            with anyio.fail_after(timeout):
                if self._client is not None:
                    return await self._send(self._client, request, timeout)
                verify = await _ssl_context()
                async with httpx.AsyncClient(verify=verify, timeout=_timeouts(timeout)) as client:
                    return await self._send(client, request, timeout)
        except TimeoutError:
            raise AuthServerUnavailable(
                f"{request.url} did not answer within {timeout:g} s", endpoint=request.url
            ) from None
        except httpx.TransportError as exc:
            raise AuthServerUnavailable(
                unreachable(request.url, exc, timeout), endpoint=request.url
            ) from exc

    @staticmethod
    async def _send(
        client: httpx.AsyncClient, request: HttpRequest, timeout: float
    ) -> HttpResponse:
        response = await client.request(
            request.method,
            request.url,
            headers=dict(request.headers),
            data=dict(request.form) if request.form is not None else None,
            timeout=_timeouts(timeout),
            follow_redirects=False,
        )
        content = await response.aread()
        return HttpResponse(
            status_code=response.status_code,
            headers={k.lower(): v for k, v in response.headers.items()},
            content=content,
        )


def send_blocking(client: httpx.Client, request: HttpRequest, timeout: float) -> HttpResponse:
    """`HttpxTransport`'s exchange, blocking, with `client` (a client that keeps no connection:
    each request gets a fresh one, as with the transport's own short-lived clients). The helper
    process sends this way: the same client every time, no event loop in the way, and far less
    CPU per request than a client made for it, which on a loaded machine is time.

    Raises:
        AuthServerUnavailable: As `HttpxTransport.send`. httpx bounds each phase by `timeout`
            (connecting by half of it); the program waiting for the helper bounds the whole.
    """
    try:
        response = client.request(
            request.method,
            request.url,
            headers=dict(request.headers),
            data=dict(request.form) if request.form is not None else None,
            timeout=_timeouts(timeout),
            follow_redirects=False,
        )
        content = response.read()
    except httpx.TransportError as exc:
        raise AuthServerUnavailable(
            unreachable(request.url, exc, timeout), endpoint=request.url
        ) from exc
    return HttpResponse(
        status_code=response.status_code,
        headers={k.lower(): v for k, v in response.headers.items()},
        content=content,
    )


def blocking_client() -> httpx.Client:
    """The client `send_blocking` expects: verifying TLS as `HttpxTransport` does, keeping no
    connection (token requests are rare: a kept one would be stale)."""
    return httpx.Client(
        verify=httpx.create_ssl_context(), limits=httpx.Limits(max_keepalive_connections=0)
    )


def _timeouts(timeout: float) -> httpx.Timeout:
    """httpx's own limits inside a call's overall `timeout`: connecting (TCP, then TLS) gets half
    of it, so that a server that never finishes the handshake is given up by httpx, which closes
    the socket, rather than by the overall deadline, whose cancellation in the middle of a TLS
    handshake leaves the socket to the garbage collector (httpcore closes it on errors only)."""
    return httpx.Timeout(timeout, connect=timeout / 2)


def unreachable(url: str, exc: httpx.TransportError, timeout: float) -> str:
    """What went wrong reaching `url`, in words a person can act on: the name did not resolve,
    the connection was refused, TLS failed (and why), or the server kept silent."""
    if isinstance(exc, httpx.ConnectTimeout):  # the TCP connection or the TLS handshake
        return f"{url} could not be reached: no connection within {timeout / 2:g} s"
    if isinstance(exc, httpx.TimeoutException):
        return f"{url} did not answer within {timeout:g} s"
    parts = urlsplit(url)
    host = parts.hostname or "?"
    port = parts.port or (443 if parts.scheme == "https" else 80)
    causes = list(_causes(exc))

    def first(kind: type[BaseException]) -> BaseException | None:
        return next((cause for cause in causes if isinstance(cause, kind)), None)

    if isinstance(found := first(socket.gaierror), socket.gaierror):
        detail = found.strerror or str(found)
        why = f"the host name {host!r} could not be resolved ({detail}): check the URL and DNS"
    elif isinstance(found := first(ssl.SSLCertVerificationError), ssl.SSLCertVerificationError):
        detail = found.verify_message or found.reason or "no reason given"
        why = f"TLS failed: the server's certificate was refused ({detail})"
    elif isinstance(found := first(ssl.SSLError), ssl.SSLError):
        reason = found.reason or type(found).__name__
        plain = " (is it a plain http server?)" if reason == "WRONG_VERSION_NUMBER" else ""
        why = f"TLS failed: {reason.replace('_', ' ').lower()}{plain}"
    elif first(ConnectionRefusedError) is not None:
        why = f"the connection to {host}:{port} was refused (is the server running there?)"
    elif errors := [c for c in causes if isinstance(c, OSError) and c.errno and c.strerror]:
        why = f"{errors[0].strerror} (connecting to {host}:{port})"
    else:
        why = type(exc).__name__
    return f"{url} could not be reached: {why}"


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """`exc`'s causes and contexts, and the members of exception groups among them, once each."""
    seen: set[int] = set()
    pending = [exc]
    while pending:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        pending.extend(getattr(current, "exceptions", ()))  # an ExceptionGroup's members
        pending.extend(x for x in (current.__cause__, current.__context__) if x is not None)
