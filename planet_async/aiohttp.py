"""The aiohttp adapter: a client middleware, ``aiohttp.ClientSession(middlewares=(auth,))``.

Installed with the ``aiohttp`` extra, from a clone of the repository:
``python3 -m pip install '.[aiohttp]'`` (aiohttp 3.12 or newer, which has client middlewares).
"""

from __future__ import annotations

from ._adapter import AuthAdapter
from ._extras import missing_extra

try:
    from aiohttp import ClientHandlerType, ClientRequest, ClientResponse, hdrs
except ImportError:  # pragma: no cover - exercised in a subprocess without the extra
    raise missing_extra("planet_async.aiohttp", "aiohttp", detail="aiohttp 3.12 or newer") from None

__all__ = ["PlanetAuthMiddleware"]


class PlanetAuthMiddleware(AuthAdapter):
    """Authenticates aiohttp requests to Planet's APIs, with an OAuth2 session or an API key.

    Pass it as ``aiohttp.ClientSession(middlewares=(auth,))``, or per request. It has the
    constructors and logins of every adapter (`from_client_credentials`, `for_user`,
    `from_user_default_session`, ...); to share one session with an httpx client, build it with
    `from_adapter`.

    aiohttp runs middlewares once per hop of a redirect chain, and removes ``Authorization``
    when a redirect changes origin; this middleware decides again on every hop, so only
    allowlisted origins get the header. When one answers 401 to the current token, the token is
    renewed once and the request resent, if its body can be sent again (aiohttp reports a
    consumed stream, which is then not resent; the renewed token serves the next request).
    """

    async def __call__(self, request: ClientRequest, handler: ClientHandlerType) -> ClientResponse:
        url = request.url
        if not self._policy.allows(url.scheme, url.host or "", url.port):
            return await handler(request)
        header = await self.header()
        request.headers[hdrs.AUTHORIZATION] = header
        response = await handler(request)
        if self.manager is not None:
            self.manager.take_answer()
        if response.status != 401:
            return response
        retry = await self.retry_header(header)
        body = request.body
        if retry is None or (body != b"" and getattr(body, "consumed", True)):
            return response
        await response.read()
        response.release()
        request.headers[hdrs.AUTHORIZATION] = retry
        return await handler(request)
