"""The httpx side of talking to authorization servers: the one place `_oauth` meets httpx."""

from __future__ import annotations

import ssl

import anyio
import httpx

from ._background import renewal_loop
from ._errors import AuthServerUnavailable
from ._transport import HttpRequest, HttpResponse
from ._wire import timeouts as _timeouts
from ._wire import unreachable

__all__ = ["HttpxTransport", "unreachable"]


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
