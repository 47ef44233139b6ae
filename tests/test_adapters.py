"""One conformance suite for every HTTP client's adapter: httpx, httpx2 and aiohttp, and the sync
clients: requests, httpx.Client and httpx2.Client.

Each test runs once per adapter, against the real authorization server (the peer) and a real
local API (`tests._api`) that checks tokens and can revoke one. aiohttp runs on asyncio only; the
httpx and httpx2 cases run on asyncio and trio. A sync client's requests run in worker threads
(threads where the async clients have tasks); its renewals run on the renewal loop.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import anyio
import httpx
import httpx2
import pytest
import requests

from planet_async import AuthAdapter, InvalidClientError, PlanetAuth
from planet_async.aiohttp import PlanetAuthMiddleware
from planet_async.httpx2 import PlanetAuth as PlanetAuth2
from planet_async.requests import PlanetAuth as RequestsAuth
from tests._api import API_KEY, RevocableApi
from tests._helpers import VerifyingApi
from tests._peer import Peer

pytestmark = pytest.mark.anyio


@dataclass(frozen=True)
class Reply:
    status: int
    body: dict[str, Any]


Send = Callable[..., Awaitable[Reply]]


@asynccontextmanager
async def _httpx(auth: AuthAdapter) -> AsyncIterator[Send]:
    assert isinstance(auth, PlanetAuth)
    async with httpx.AsyncClient(auth=auth, follow_redirects=True) as client:

        async def send(method: str, url: str, body: Any = None) -> Reply:
            response = await client.request(method, url, content=body)
            return Reply(response.status_code, response.json())

        yield send


@asynccontextmanager
async def _httpx2(auth: AuthAdapter) -> AsyncIterator[Send]:
    assert isinstance(auth, PlanetAuth2)
    async with httpx2.AsyncClient(auth=auth, follow_redirects=True) as client:

        async def send(method: str, url: str, body: Any = None) -> Reply:
            response = await client.request(method, url, content=body)
            return Reply(response.status_code, response.json())

        yield send


@asynccontextmanager
async def _aiohttp(auth: AuthAdapter) -> AsyncIterator[Send]:
    assert isinstance(auth, PlanetAuthMiddleware)
    async with aiohttp.ClientSession(middlewares=(auth,)) as session:

        async def send(method: str, url: str, body: Any = None) -> Reply:
            async with session.request(method, url, data=body) as response:
                return Reply(response.status, json.loads(await response.read()))

        yield send


def _sync_body(body: Any) -> Any:
    """A sync client's form of a body: an async generator becomes a generator of its chunks."""
    if hasattr(body, "__aiter__"):
        chunks: list[bytes] = []

        async def collect() -> None:
            chunks.extend([chunk async for chunk in body])

        anyio.from_thread.run(collect)
        return iter(chunks)
    return body


@asynccontextmanager
async def _requests(auth: AuthAdapter) -> AsyncIterator[Send]:
    assert isinstance(auth, RequestsAuth)
    with requests.Session() as session:
        session.auth = auth

        def request(method: str, url: str, body: Any) -> Reply:
            response = session.request(method, url, data=_sync_body(body), timeout=30)
            return Reply(response.status_code, response.json())

        async def send(method: str, url: str, body: Any = None) -> Reply:
            return await anyio.to_thread.run_sync(request, method, url, body)

        yield send


def _sync_httpx_like(library: Any, auth_type: type[AuthAdapter]) -> Callable[[AuthAdapter], Any]:
    @asynccontextmanager
    async def open_client(auth: AuthAdapter) -> AsyncIterator[Send]:
        assert isinstance(auth, auth_type)
        with library.Client(auth=auth, follow_redirects=True, timeout=30) as client:

            def request(method: str, url: str, body: Any) -> Reply:
                response = client.request(method, url, content=_sync_body(body))
                return Reply(response.status_code, response.json())

            async def send(method: str, url: str, body: Any = None) -> Reply:
                return await anyio.to_thread.run_sync(request, method, url, body)

            yield send

    return open_client


@dataclass(frozen=True)
class Adapter:
    name: str
    auth: type[AuthAdapter]
    client: Callable[[AuthAdapter], Any]


ADAPTERS = {
    "httpx": Adapter("httpx", PlanetAuth, _httpx),
    "httpx2": Adapter("httpx2", PlanetAuth2, _httpx2),
    "aiohttp": Adapter("aiohttp", PlanetAuthMiddleware, _aiohttp),
    "requests": Adapter("requests", RequestsAuth, _requests),
    "httpx.Client": Adapter("httpx.Client", PlanetAuth, _sync_httpx_like(httpx, PlanetAuth)),
    "httpx2.Client": Adapter("httpx2.Client", PlanetAuth2, _sync_httpx_like(httpx2, PlanetAuth2)),
}
SYNC = ("requests", "httpx.Client", "httpx2.Client")


CASES = [("httpx", "asyncio"), ("httpx", "trio"), ("httpx2", "asyncio"), ("httpx2", "trio")]
CASES.append(("aiohttp", "asyncio"))  # aiohttp runs on asyncio only
# A sync client's calls run in worker threads: the test's own loop does not matter to them.
CASES += [("requests", "asyncio"), ("httpx.Client", "trio"), ("httpx2.Client", "asyncio")]


@pytest.fixture(params=CASES, ids="-".join)
def case(request: pytest.FixtureRequest) -> tuple[str, str]:
    return request.param


@pytest.fixture
def anyio_backend(case: tuple[str, str]) -> str:
    return case[1]


@pytest.fixture
def adapter(case: tuple[str, str]) -> Adapter:
    return ADAPTERS[case[0]]


@pytest.fixture(scope="session")
def apis(peer_server: Peer) -> Iterator[tuple[RevocableApi, RevocableApi]]:
    """Two origins: `a` is allowlisted, `b` is not."""
    verify = VerifyingApi(peer_server.issuer).verify
    a, b = RevocableApi(verify), RevocableApi(verify)
    yield a, b
    a.close()
    b.close()


@pytest.fixture
def api(apis: tuple[RevocableApi, RevocableApi], peer: Peer) -> RevocableApi:
    for each in apis:
        each.reset()
    return apis[0]


@pytest.fixture
def other(apis: tuple[RevocableApi, RevocableApi], api: RevocableApi) -> RevocableApi:
    return apis[1]


def _m2m(adapter: Adapter, peer: Peer, api: RevocableApi, secret: str = "service-basic-secret"):
    return adapter.auth.from_client_credentials(
        "service-basic", secret, issuer=peer.issuer, allowed_origins=[api.origin]
    )


async def test_header_goes_only_to_allowlisted_origins(
    adapter: Adapter, peer: Peer, api: RevocableApi, other: RevocableApi
) -> None:
    """The allowlisted origin gets a bearer token; another origin gets no header at all."""
    async with adapter.client(_m2m(adapter, peer, api)) as send:
        assert (await send("GET", f"{api.origin}/data")).status == 200
        assert (await send("GET", f"{other.origin}/open/x")).body["authorization"] is None
    assert api.hits[0].authorization is not None
    assert api.hits[0].authorization.startswith("Bearer ")
    assert peer.grants("client_credentials") == 1


async def test_redirect_to_another_origin_carries_no_header(
    adapter: Adapter, peer: Peer, api: RevocableApi, other: RevocableApi
) -> None:
    """A redirect from the allowlisted origin to another one arrives without credentials; a
    redirect within the origin keeps them."""
    async with adapter.client(_m2m(adapter, peer, api)) as send:
        away = await send("GET", f"{api.origin}/redirect?to={other.origin}/open/away")
        home = await send("GET", f"{api.origin}/redirect?to={api.origin}/data")
    assert away.status == 200
    assert away.body == {"path": "/open/away", "authorization": None, "body": ""}
    assert [hit.authorization for hit in other.hits] == [None]
    assert home.status == 200
    assert home.body["authorization"].startswith("Bearer ")


async def test_401_renews_once_and_resends_the_body(
    adapter: Adapter, peer: Peer, api: RevocableApi
) -> None:
    """When the API revokes the token, the request is answered after one renewal and one resend
    of the same body."""
    async with adapter.client(_m2m(adapter, peer, api)) as send:
        first = await send("GET", f"{api.origin}/data")
        api.revoke(first.body["authorization"])
        second = await send("POST", f"{api.origin}/data", b"the payload")
    assert second.status == 200
    assert second.body["body"] == "the payload"
    assert second.body["authorization"] != first.body["authorization"]
    assert api.statuses("/data") == [200, 401, 200]
    assert [hit.body for hit in api.hits[1:]] == [b"the payload", b"the payload"]
    assert peer.grants("client_credentials") == 2


async def test_a_streamed_body_is_resent_whole_or_not_at_all(
    adapter: Adapter, peer: Peer, api: RevocableApi
) -> None:
    """After a 401, a body streamed from a generator is never resent empty or cut short: the
    library either replays it whole (aiohttp keeps the chunks) or returns the 401; either way
    the token was renewed once and the next request succeeds."""

    async def chunks() -> AsyncIterator[bytes]:
        yield b"first,"
        yield b"second"

    async with adapter.client(_m2m(adapter, peer, api)) as send:
        first = await send("GET", f"{api.origin}/data")
        api.revoke(first.body["authorization"])
        streamed = await send("POST", f"{api.origin}/data", chunks())
        after = await send("GET", f"{api.origin}/data")
    assert streamed.status in (200, 401)
    assert [hit.body for hit in api.hits if hit.body] == [b"first,second"] * (
        2 if streamed.status == 200 else 1
    )
    assert after.status == 200
    assert peer.grants("client_credentials") == 2


async def test_concurrent_401s_renew_once(adapter: Adapter, peer: Peer, api: RevocableApi) -> None:
    """Twenty requests rejected together lead to exactly one renewal, and every one succeeds."""
    replies: list[Reply] = []
    async with adapter.client(_m2m(adapter, peer, api)) as send:
        first = await send("GET", f"{api.origin}/data")
        api.revoke(first.body["authorization"])

        async def one() -> None:
            replies.append(await send("GET", f"{api.origin}/data"))

        async with anyio.create_task_group() as tg:
            for _ in range(20):
                tg.start_soon(one)
    assert [reply.status for reply in replies] == [200] * 20
    assert peer.grants("client_credentials") == 2


async def test_a_second_401_is_returned_not_retried(
    adapter: Adapter, peer: Peer, api: RevocableApi
) -> None:
    """An API that refuses the renewed token too gets one resend, then the 401 is the answer."""
    async with adapter.client(_m2m(adapter, peer, api)) as send:
        assert (await send("GET", f"{api.origin}/always-401")).status == 401
    assert api.statuses("/always-401") == [401, 401]
    assert peer.grants("client_credentials") == 2


async def test_401_from_a_redirect_target_does_not_renew(
    adapter: Adapter, peer: Peer, api: RevocableApi, other: RevocableApi
) -> None:
    """A 401 from an origin that got no credentials says nothing about the token."""
    async with adapter.client(_m2m(adapter, peer, api)) as send:
        reply = await send("GET", f"{api.origin}/redirect?to={other.origin}/always-401")
    assert reply.status == 401
    assert [hit.authorization for hit in other.hits] == [None]
    assert peer.grants("client_credentials") == 1


async def test_refused_client_raises_the_same_typed_error(
    adapter: Adapter, peer: Peer, api: RevocableApi
) -> None:
    """A refused client secret surfaces as InvalidClientError from the client's own call, and no
    request reaches the API."""
    async with adapter.client(_m2m(adapter, peer, api, secret="not-the-secret")) as send:
        with pytest.raises(InvalidClientError) as info:
            await send("GET", f"{api.origin}/data")
    assert "service-basic" in str(info.value)
    assert "not-the-secret" not in str(info.value)
    assert api.hits == []


async def test_api_key_goes_only_to_allowlisted_origins_and_is_not_retried(
    adapter: Adapter, api: RevocableApi, other: RevocableApi
) -> None:
    """An API key is sent as ``api-key`` to the allowlisted origin only; its 401 is final."""
    auth = adapter.auth.from_api_key(API_KEY, allowed_origins=[api.origin])
    async with adapter.client(auth) as send:
        sent = (await send("GET", f"{api.origin}/data")).body["authorization"]
        assert sent == f"api-key {API_KEY}"
        assert (await send("GET", f"{other.origin}/open/k")).body["authorization"] is None
        assert (await send("GET", f"{api.origin}/always-401")).status == 401
    assert api.statuses("/always-401") == [401]


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_adapters_share_one_session(
    peer: Peer, api: RevocableApi, anyio_backend: str
) -> None:
    """`from_adapter` gives every client the same session: one token for all of them."""
    auth = _m2m(ADAPTERS["httpx"], peer, api)
    others = [PlanetAuth2.from_adapter(auth)]
    if anyio_backend == "asyncio":
        others.append(PlanetAuthMiddleware.from_adapter(auth))
    seen = set()
    for each in [auth, *others]:
        async with ADAPTERS_BY_TYPE[type(each)].client(each) as send:
            seen.add((await send("GET", f"{api.origin}/data")).body["authorization"])
    assert len(seen) == 1
    assert peer.grants("client_credentials") == 1


ADAPTERS_BY_TYPE = {ADAPTERS[name].auth: ADAPTERS[name] for name in ("httpx", "httpx2", "aiohttp")}


@pytest.mark.parametrize(
    ("module", "library"),
    [("aiohttp", "aiohttp"), ("httpx2", "httpx2"), ("requests", "requests")],
)
def test_a_missing_extra_is_named(module: str, library: str) -> None:
    """`import planet_async` never loads an adapter's library; importing the adapter without it
    raises MissingExtra (an ImportError) naming the extra to install."""
    code = f"""
import sys
sys.modules[{library!r}] = None  # as if not installed
import planet_async
assert {library!r} not in [m.split(".")[0] for m in sys.modules if sys.modules[m] is not None]
try:
    import planet_async.{module}
except planet_async.MissingExtra as exc:
    assert isinstance(exc, ImportError)
    print(exc)
"""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert f"pip install 'planet-async[{module}]'" in result.stdout
