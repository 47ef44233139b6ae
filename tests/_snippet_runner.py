"""Run one documentation snippet with Planet's servers played by local ones: ``python
tests/_snippet_runner.py SNIPPET.py``.

tests/test_snippets.py writes each ```python block of the README and the docs to a file and runs
it with this script, which does two things before running the snippet as ``__main__``:

- Routes Planet's URLs to loopback *below* authentication (httpx async and sync, aiohttp,
  requests). $PLANET_ASYNC_SNIPPET_ROUTES is a JSON
  object mapping a Planet URL prefix to a local one; every request httpx sends to such a prefix
  goes to the local server instead, after `PlanetAuth` has decided, against the real Planet URL,
  whether it gets a header (aiohttp: in a middleware after every other). So a snippet that
  calls ``https://api.planet.com/...`` runs unchanged, with the default origin allowlist, and
  reaches the local API.
- Plays an authorization server under Planet's issuer name. For the prefixes listed in
  $PLANET_ASYNC_SNIPPET_ISSUERS, a metadata document fetched through the route names the Planet
  issuer, as Planet's would; its endpoints stay the local server's. This is how the M2M issuer
  that several constructors use by default reaches the test peer. (User logins check the
  issuer of the response, so the test substitutes their issuer in the snippet's text instead.)

$PLANET_ASYNC_SNIPPET_BACKEND=trio runs the snippet's ``anyio.run(main)`` on trio.
"""

from __future__ import annotations

import functools
import json
import os
import runpy
import sys
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpx

ROUTES: dict[str, str] = json.loads(os.environ.get("PLANET_ASYNC_SNIPPET_ROUTES", "{}"))
ISSUERS: set[str] = set(json.loads(os.environ.get("PLANET_ASYNC_SNIPPET_ISSUERS", "[]")))
WELL_KNOWN = ("/.well-known/openid-configuration", "/.well-known/oauth-authorization-server")


def route(url: str) -> tuple[str, str | None]:
    """The local URL for `url`, and the Planet issuer whose metadata it fetches, if any."""
    for planet, local in ROUTES.items():
        prefix = planet.rstrip("/")
        parts = urlsplit(prefix)
        origin = f"{parts.scheme}://{parts.netloc}"
        for suffix in WELL_KNOWN:  # RFC 8414: the well-known path goes before the issuer's path
            if parts.path and url == f"{origin}{suffix}{parts.path}":
                url = f"{prefix}{suffix}"
        if url == prefix or url.startswith((prefix + "/", prefix + "?")):
            metadata_of = planet if planet in ISSUERS and url.endswith(WELL_KNOWN) else None
            return local.rstrip("/") + url[len(prefix) :], metadata_of
    return url, None


_send = httpx.AsyncHTTPTransport.handle_async_request


async def _routed(self: httpx.AsyncHTTPTransport, request: httpx.Request) -> httpx.Response:
    local, metadata_of = route(str(request.url))
    if local != str(request.url):
        request.url = httpx.URL(local)
        request.headers["Host"] = request.url.netloc.decode("ascii")
    response = await _send(self, request)
    if metadata_of is None or response.status_code != 200:
        return response
    metadata = json.loads(await response.aread())
    metadata["issuer"] = metadata_of
    headers = [(k, v) for k, v in response.headers.items() if k.lower() != "content-length"]
    return httpx.Response(200, headers=headers, json=metadata, request=request)


httpx.AsyncHTTPTransport.handle_async_request = _routed  # type: ignore[method-assign]


def _route_aiohttp() -> None:
    """The same routing for aiohttp: a middleware placed after every other one (after
    `PlanetAuthMiddleware` has decided), which points the request at the local URL."""
    try:
        import aiohttp
        from yarl import URL
    except ImportError:
        return

    async def routed(request: Any, handler: Any) -> Any:
        local, _ = route(str(request.url))
        if local != str(request.url):
            request.url = URL(local)
            request.update_host(request.url)
            request.headers["Host"] = request.url.raw_authority
        return await handler(request)

    original = aiohttp.ClientSession.__init__

    @functools.wraps(original)
    def init(self: Any, *args: Any, middlewares: Any = (), **kwargs: Any) -> None:
        original(self, *args, middlewares=(*middlewares, routed), **kwargs)

    aiohttp.ClientSession.__init__ = init  # type: ignore[method-assign]


_route_aiohttp()

_send_sync = httpx.HTTPTransport.handle_request


def _routed_sync(self: httpx.HTTPTransport, request: httpx.Request) -> httpx.Response:
    local, _ = route(str(request.url))
    if local != str(request.url):
        request.url = httpx.URL(local)
        request.headers["Host"] = request.url.netloc.decode("ascii")
    return _send_sync(self, request)


httpx.HTTPTransport.handle_request = _routed_sync  # type: ignore[method-assign]


def _route_requests() -> None:
    """The same routing for requests, in its transport adapter (after the auth has decided)."""
    try:
        import requests.adapters
    except ImportError:
        return
    original = requests.adapters.HTTPAdapter.send

    @functools.wraps(original)
    def send(self: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
        local, _ = route(request.url)
        if local != request.url:
            request.url = local
            request.headers.pop("Host", None)
        return original(self, request, *args, **kwargs)

    requests.adapters.HTTPAdapter.send = send  # type: ignore[method-assign]


_route_requests()

if os.environ.get("PLANET_ASYNC_SNIPPET_BACKEND", "asyncio") != "asyncio":
    _run = anyio.run

    @functools.wraps(_run)
    def _run_on_backend(*args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("backend", os.environ["PLANET_ASYNC_SNIPPET_BACKEND"])
        return _run(*args, **kwargs)

    anyio.run = _run_on_backend

if __name__ == "__main__":
    path = sys.argv[1]
    sys.argv = [path]
    runpy.run_path(path, run_name="__main__")
