"""One conformance suite for every HTTP client's adapter: httpx, httpx2 and aiohttp, and the sync
clients: requests, httpx.Client and httpx2.Client.

Each test runs once per adapter, against the real authorization server (the peer) and a real
local API (`tests._api`) that checks tokens and can revoke one. aiohttp runs on asyncio only; the
httpx and httpx2 cases run on asyncio and trio. A sync client's requests run in worker threads
(threads where the async clients have tasks); its renewals run on the renewal loop.
"""

from __future__ import annotations

import concurrent.futures
import json
import multiprocessing
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import anyio
import httpx
import httpx2
import pytest
import requests
import requests.adapters

from planet_async import (
    AuthAdapter,
    AuthorizationServer,
    ClientCredentialsGrant,
    ClientSecretBasic,
    FileStorage,
    HttpxTransport,
    InvalidClientError,
    PlanetAuth,
    TokenManager,
)
from planet_async.aiohttp import PlanetAuthMiddleware
from planet_async.httpx2 import PlanetAuth as PlanetAuth2
from planet_async.requests import PlanetAuth as RequestsAuth
from planet_async.storage import RedisStorage
from tests._api import API_KEY, RevocableApi
from tests._browser import approve_device_over_http, device_login_saved
from tests._helpers import FakeClock, VerifyingApi
from tests._peer import Peer
from tests.conftest import DEFAULT_TTL

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
    assert f"planet_async.{module} needs the {module} extra" in result.stdout


# -- sync clients: threads -----------------------------------------------------------------------

THREADS = 64
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


@contextmanager
def _sync_get(name: str, auth: AuthAdapter) -> Iterator[Callable[[str], tuple[int, str | None]]]:
    """A GET through the sync client `name`, usable from many threads at once."""
    if name == "requests":

        def get(url: str) -> tuple[int, str | None]:
            with requests.Session() as session:  # a Session per thread; the auth is shared
                response = session.get(url, auth=auth, timeout=30)
                return response.status_code, response.json()["authorization"]

        yield get
        return
    library = httpx if name == "httpx.Client" else httpx2
    with library.Client(auth=auth, timeout=30) as client:  # httpx clients are thread-safe

        def get_httpx(url: str) -> tuple[int, str | None]:
            response = client.get(url)
            return response.status_code, response.json()["authorization"]

        yield get_httpx


@pytest.mark.parametrize("name", SYNC)
def test_threads_at_expiry_make_one_token_request(name: str, peer: Peer, api: RevocableApi) -> None:
    """64 threads that find the token expired at once make exactly one token request between
    them (on the renewal loop), and every one of them is answered with the new token."""
    clock = FakeClock(time.time())
    server = AuthorizationServer(peer.issuer)
    client = ClientSecretBasic(client_id="service-basic", client_secret="service-basic-secret")
    manager = TokenManager(ClientCredentialsGrant(server, client), clock=clock)
    auth = ADAPTERS[name].auth(manager, allowed_origins=[api.origin])
    results: list[tuple[int, str | None]] = []
    errors: list[BaseException] = []
    with _sync_get(name, auth) as get:
        status, first = get(f"{api.origin}/data")
        assert status == 200
        assert peer.grants("client_credentials") == 1
        clock.advance(7200)  # past expiry: nobody may use the old token
        peer.set_token_delay(300)  # the renewal stays in flight while the threads arrive
        barrier = threading.Barrier(THREADS)

        def one() -> None:
            try:
                barrier.wait(timeout=30)
                results.append(get(f"{api.origin}/data"))
            except BaseException as exc:  # reported below, in the test's thread
                errors.append(exc)

        threads = [threading.Thread(target=one) for _ in range(THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    assert errors == []
    assert peer.grants("client_credentials") == 2
    assert len(results) == THREADS
    assert {status for status, _ in results} == {200}
    headers = {header for _, header in results}
    assert len(headers) == 1
    assert headers != {first}


def _child_after_fork(auth: AuthAdapter, url: str, revoked: str, out: Any) -> None:
    """In a forked child: the inherited token serves, and a renewal (after the API refuses that
    token) runs on a renewal loop of the child's own."""
    try:
        with _sync_get("requests", auth) as get:
            status, header = get(url)
        out.put(("ok", status, header != revoked))
    except BaseException as exc:
        out.put(("error", type(exc).__name__, str(exc)))


def _in_a_forked_child(auth: AuthAdapter, url: str, revoked: str) -> tuple[Any, int | None]:
    """`_child_after_fork` run in a child made with ``fork``: what it reported, and its exit
    code."""
    context = multiprocessing.get_context("fork")
    out = context.Queue()
    child = context.Process(target=_child_after_fork, args=(auth, url, revoked, out))
    child.start()
    result = out.get(timeout=60)
    child.join(timeout=60)
    return result, child.exitcode


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_forked_child_keeps_working(peer: Peer, api: RevocableApi) -> None:
    """After ``fork`` (multiprocessing's default start method on Linux), the child renews on a
    renewal loop of its own: the loop thread did not survive the fork, the session did."""
    auth = RequestsAuth.from_client_credentials(
        "service-basic", "service-basic-secret", issuer=peer.issuer, allowed_origins=[api.origin]
    )
    with _sync_get("requests", auth) as get:
        status, header = get(f"{api.origin}/data")
    assert status == 200
    assert header is not None
    api.revoke(header)  # the child's first request is refused: it must renew
    assert _in_a_forked_child(auth, f"{api.origin}/data", header) == (("ok", 200, True), 0)
    assert api.statuses("/data") == [200, 401, 200]
    assert peer.grants("client_credentials") == 2
    # The parent's session and loop are untouched: its own renewal after the revocation works.
    with _sync_get("requests", auth) as get:
        assert get(f"{api.origin}/data")[0] == 200
    assert peer.grants("client_credentials") == 3


class _HeldTransport(HttpxTransport):
    """The httpx transport, whose token requests wait for `release` once `hold` is set, and
    which notes (for any thread) when one is waiting."""

    def __init__(self) -> None:
        super().__init__()
        self.hold = False
        self.waiting = threading.Event()
        self.release = threading.Event()

    async def send(self, request: Any, *, timeout: float) -> Any:
        if self.hold and request.url.endswith("/token"):
            self.waiting.set()
            await anyio.to_thread.run_sync(self.release.wait, 60)
        return await super().send(request, timeout=timeout)


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_child_forked_during_a_renewal_renews_on_its_own(peer: Peer, api: RevocableApi) -> None:
    """A fork while the parent's renewal is in flight (the renewal loop holding the session's
    MemoryStorage lock, its token request unanswered) leaves the child a session it can renew:
    the lock the parent held is not held in the child, which renews with one token request of
    its own; the parent's renewal then completes as well."""
    transport = _HeldTransport()
    server = AuthorizationServer(peer.issuer, transport=transport)
    client = ClientSecretBasic(client_id="service-basic", client_secret="service-basic-secret")
    manager = TokenManager(ClientCredentialsGrant(server, client))
    auth = RequestsAuth(manager, allowed_origins=[api.origin])
    with _sync_get("requests", auth) as get:
        status, header = get(f"{api.origin}/data")
        assert status == 200
        api.revoke(header)  # the next request is refused: the parent renews, and is held
        transport.hold = True
        parent: list[tuple[int, str | None]] = []
        renewing = threading.Thread(target=lambda: parent.append(get(f"{api.origin}/data")))
        renewing.start()
        assert transport.waiting.wait(30)
        transport.hold = False  # the child's own token request goes through
        child = _in_a_forked_child(auth, f"{api.origin}/data", header)
        transport.release.set()
        renewing.join(timeout=60)
    assert child == (("ok", 200, True), 0)
    assert [status for status, _ in parent] == [200]
    assert peer.grants("client_credentials") == 3  # the first, the child's, the parent's


# -- async callers: a renewal outlives a cancelled caller ------------------------------------------


class _NotingTransport(HttpxTransport):
    """The httpx transport, noting (for any thread) when a request is sent."""

    def __init__(self) -> None:
        super().__init__()
        self.sending = threading.Event()

    async def send(self, request: Any, *, timeout: float) -> Any:
        self.sending.set()
        return await super().send(request, timeout=timeout)


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
@pytest.mark.parametrize("off_loop", [False, True], ids=["in-loop", "renewal-loop"])
async def test_a_cancelled_caller_loses_nothing(
    peer: Peer, api: RevocableApi, off_loop: bool
) -> None:
    """A caller cancelled while the renewal it waits for is in flight (in the manager's task
    group; its token request on the caller's loop or on the renewal loop) loses nothing: the
    renewal completes, its token is adopted, and the next caller uses it without a second token
    request."""
    transport = _NotingTransport()
    server = AuthorizationServer(peer.issuer, transport=transport)
    client = ClientSecretBasic(client_id="service-basic", client_secret="service-basic-secret")
    await server.metadata()  # discovery first: the next request sent is the token request
    transport.sending.clear()
    manager = TokenManager(ClientCredentialsGrant(server, client), off_loop=off_loop)
    auth = PlanetAuth(manager, allowed_origins=[api.origin])
    peer.set_token_delay(300)
    async with manager, httpx.AsyncClient(auth=auth) as http:
        async with anyio.create_task_group() as tg:

            async def caller() -> None:
                await http.get(f"{api.origin}/data")
                raise AssertionError("not cancelled")  # pragma: no cover

            tg.start_soon(caller)
            assert await anyio.to_thread.run_sync(transport.sending.wait, 30)
            tg.cancel_scope.cancel()
        assert api.hits == []
        # The renewal went on without its caller: the next request joins it, or finds its token.
        response = await http.get(f"{api.origin}/data")
    assert response.status_code == 200
    assert peer.grants("client_credentials") == 1


# -- sync clients: user sessions in shared storage -----------------------------------------------


@pytest.mark.parametrize("kind", ["file", "redis"])
def test_a_user_session_in_shared_storage_renews_once_for_threads(
    kind: str, peer: Peer, api: RevocableApi, tmp_path: Any, request: pytest.FixtureRequest
) -> None:
    """A user session logged in with a device code and kept in files laid out as the `planet`
    CLI keeps them, or in Redis, serves a requests session from 16 threads: when the API
    refuses its token, they renew it with the refresh token exactly once, and the rotated
    session is in the storage for every other process."""
    if kind == "file":
        storage: Any = FileStorage(tmp_path / ".planet")
    else:
        storage = RedisStorage(request.getfixturevalue("redis").url)
    anyio.run(device_login_saved, peer.issuer, storage, "my-app")
    auth = RequestsAuth.for_user(
        "native-app",
        issuer=peer.issuer,
        scopes=("openid", "offline_access"),
        storage=storage,
        session="my-app",
        allowed_origins=[api.origin],
    )
    results: list[tuple[int, str | None]] = []
    with _sync_get("requests", auth) as get:
        status, first = get(f"{api.origin}/data")
        assert status == 200
        assert first is not None
        api.revoke(first)
        barrier = threading.Barrier(16)

        def one() -> None:
            barrier.wait(timeout=30)
            results.append(get(f"{api.origin}/data"))

        threads = [threading.Thread(target=one) for _ in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    assert [status for status, _ in results] == [200] * 16
    assert peer.grants("refresh_token") == 1
    stored = anyio.run(storage.load, "my-app")
    assert stored is not None
    assert {header for _, header in results} == {f"Bearer {stored.access_token.get_secret_value()}"}


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_an_async_client_shares_a_sync_clients_session(peer: Peer, api: RevocableApi) -> None:
    """A session a sync client uses lives on the renewal loop; an async client sharing it
    (`from_adapter`) renews it there too: one renewal after a 401, whose token then serves the
    sync client without another token request."""
    auth = RequestsAuth.from_client_credentials(
        "service-basic", "service-basic-secret", issuer=peer.issuer, allowed_origins=[api.origin]
    )
    with _sync_get("requests", auth) as get:
        status, first = await anyio.to_thread.run_sync(get, f"{api.origin}/data")
        assert status == 200
        assert first is not None
        api.revoke(first)
        async with httpx.AsyncClient(auth=PlanetAuth.from_adapter(auth)) as client:
            renewed = (await client.get(f"{api.origin}/data")).json()["authorization"]
        status, again = await anyio.to_thread.run_sync(get, f"{api.origin}/data")
    assert status == 200
    assert again == renewed != first
    assert api.statuses("/data") == [200, 401, 200, 200]
    assert peer.grants("client_credentials") == 2


def _until(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Block this thread (and the event loop it runs) until `condition` holds, or `timeout`."""
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        threading.Event().wait(0.005)
    return condition()


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_a_renewal_ahead_serves_while_the_callers_loop_is_stuck(
    peer: Peer, api: RevocableApi
) -> None:
    """With the library's own grant and transport, a renewal's token request is made, and its
    token put in use, on the renewal loop: the new token serves while the caller's loop is
    stuck (here blocked outright), before that loop has run again."""
    clock = FakeClock(time.time())
    server = AuthorizationServer(peer.issuer)
    client = ClientSecretBasic(client_id="service-basic", client_secret="service-basic-secret")
    manager = TokenManager(ClientCredentialsGrant(server, client), clock=clock)
    async with manager:
        first = await manager.header()
        clock.advance(DEFAULT_TTL * 0.8)  # past the refresh-ahead threshold, before expiry
        peer.set_token_delay(200)  # the answer comes after this loop is blocked
        assert manager.header_nowait() == first  # renews in the background
        await anyio.wait_all_tasks_blocked()  # the renewal waits for its answer
        assert _until(lambda: manager.fresh_header() not in (None, first))
        assert await manager.header() != first
    assert peer.grants("client_credentials") == 2


def test_a_user_session_from_sync_code(peer: Peer, api: RevocableApi) -> None:
    """`auth.sync` gives a synchronous program the session's logins and logout: a device login
    whose `show` runs in the caller's thread, the token set, and a logout that revokes the
    refresh token and leaves the session uninitialized."""
    auth = RequestsAuth.for_user(
        "native-app",
        issuer=peer.issuer,
        scopes=("openid", "offline_access"),
        device_interval=0.1,
        allowed_origins=[api.origin],
    )
    shown_in: list[threading.Thread] = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as user:
        approvals: list[concurrent.futures.Future[str]] = []

        def show(pending: Any) -> None:
            shown_in.append(threading.current_thread())
            approvals.append(
                user.submit(approve_device_over_http, pending.verification_uri_complete)
            )

        assert auth.sync.is_initialized() is False
        token = auth.sync.login_with_device(show)
        assert "Sign-in Success" in approvals[0].result(timeout=30)
    assert shown_in == [threading.current_thread()]
    assert auth.sync.is_initialized() is True
    assert auth.sync.token().same_access_token(token)
    with _sync_get("requests", auth) as get:
        assert get(f"{api.origin}/data") == (200, f"Bearer {token.access_token.get_secret_value()}")
    assert auth.sync.logout() is True
    assert auth.sync.is_initialized() is False
    assert peer.grants(DEVICE_GRANT) == 1


class _UpgradingServer(requests.adapters.BaseAdapter):
    """Plays http://127.0.0.1 (port 80) redirecting to https://127.0.0.1 (443): the one change of
    origin on which requests keeps ``Authorization``. Records each hop's header."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, str | None]] = []

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        assert request.url is not None
        self.seen.append((request.url, request.headers.get("Authorization")))
        response = requests.Response()
        response.request, response.url, response.connection = request, request.url, self
        response._content, response._content_consumed = b"", True
        if request.url.startswith("http://"):
            response.status_code = 302
            response.headers["Location"] = "https://127.0.0.1/landed"
        else:
            response.status_code = 200
        return response

    def close(self) -> None:
        pass


@pytest.mark.parametrize("ours", [True, False], ids=["planet_async", "plain header"])
def test_requests_upgrade_redirect_cannot_carry_the_header_off_the_allowlist(ours: bool) -> None:
    """requests keeps ``Authorization`` on an http-to-https redirect to the same host on default
    ports (the plain header shows it). The adapter never sends its header into that: an ``http``
    origin on port 80 counts only with its ``https`` twin, so with plain http allowed on
    loopback but https there not, neither hop gets it."""
    server = _UpgradingServer()
    auth: Any = RequestsAuth(api_key=API_KEY, allow_loopback_http=True)
    if not ours:

        def auth(request: requests.PreparedRequest) -> requests.PreparedRequest:
            request.headers["Authorization"] = f"api-key {API_KEY}"
            return request

    with requests.Session() as session:
        session.mount("http://127.0.0.1", server)
        session.mount("https://127.0.0.1", server)
        assert session.get("http://127.0.0.1/start", auth=auth).status_code == 200
    header = None if ours else f"api-key {API_KEY}"
    assert server.seen == [
        ("http://127.0.0.1/start", header),
        ("https://127.0.0.1/landed", header),
    ]
    if ours:  # the same adapter does authenticate plain http on another loopback port
        assert auth.authenticates("http", "127.0.0.1", 8080)
