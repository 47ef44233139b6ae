"""The auth flow of httpx and httpx2: one generator protocol over two sets of types.

httpx2 continues httpx's API, so the flow is written once against what both libraries' requests
and responses offer; each adapter only names its own `Auth` base class and its replayable body type.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Generator
from typing import Any, ClassVar

from ._adapter import AuthAdapter, renewed_header

__all__ = ["HttpxStyleFlow"]


class HttpxStyleFlow(AuthAdapter):
    """`sync_auth_flow` and `async_auth_flow` for an httpx-like `Auth` class."""

    _replayable: ClassVar[tuple[type, ...]] = ()
    """The request body types that can be sent twice (the library's in-memory `ByteStream`)."""

    def sync_auth_flow(self, request: Any) -> Generator[Any, Any, None]:
        # A sync client: a renewal runs on the process's renewal loop, while this thread waits.
        url = request.url
        if not self._policy.allows(url.scheme, url.host, url.port):
            yield request
            return
        header = self.header_sync()
        request.headers["Authorization"] = header
        response = yield request
        if response.status_code != 401 or not self._rejects(response.request, header):
            return
        retry = self.retry_header_sync(header)
        if retry is None or not isinstance(request.stream, self._replayable):
            return
        response.read()
        request.headers["Authorization"] = retry
        yield request

    async def async_auth_flow(self, request: Any) -> AsyncGenerator[Any, Any]:
        url = request.url
        if not self._policy.allows(url.scheme, url.host, url.port):
            yield request
            return
        manager = self.manager
        if manager is None:
            request.headers["Authorization"] = self._api_key_header
            yield request
            return
        header = manager.fresh_header() or await renewed_header(manager)
        request.headers["Authorization"] = header
        response = yield request
        manager.take_answer()
        if response.status_code != 401 or not self._rejects(response.request, header):
            return
        retry = await self.retry_header(header)
        if retry is None or not isinstance(request.stream, self._replayable):
            # Only an in-memory body can be sent twice; a streamed one was consumed. The renewed
            # token still serves the next request.
            return
        await response.aread()
        request.headers["Authorization"] = retry
        yield request

    def _rejects(self, sent: Any, header: str) -> bool:
        """Whether a 401 is the verdict on `header`: it answered a request that went to an
        allowlisted origin and carried it (not a redirect's target, which got no credentials)."""
        url = sent.url
        return (
            self._policy.allows(url.scheme, url.host, url.port)
            and sent.headers.get("Authorization") == header
        )
