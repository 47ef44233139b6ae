"""planet_async.starlette in one process: a Starlette app served through httpx's ASGI transport
(so on asyncio and on trio), the real oidc-provider, a real SessionPool, and the local API that
checks every token. The user's part at the provider is posted over HTTP (no browser here; the
fleet test, tests/test_web_service.py, logs users in with Chromium)."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from urllib.parse import quote

import anyio
import httpx
import pytest
from itsdangerous import TimestampSigner
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from planet_async import (
    AuthorizationCodeFlow,
    AuthorizationServer,
    ClientSecretBasic,
    ConfigurationError,
    MemoryStorage,
    RedisStorage,
    Storage,
)
from planet_async._oauth import revoke_token
from planet_async.starlette import USER_KEY, PlanetWeb
from planet_async.web import SessionPool, WebLogin
from tests._api import RevocableApi
from tests._browser import log_in_over_http
from tests._helpers import FakeClock, VerifyingApi
from tests._peer import Peer
from tests._redis import RedisServer

pytestmark = [pytest.mark.anyio, pytest.mark.peer]

APP = "https://app.example"
SECRET = "the-app-secret-that-signs-its-session-cookie"


@pytest.fixture
def api(peer: Peer) -> Iterator[RevocableApi]:
    server = RevocableApi(VerifyingApi(peer.issuer).verify)
    yield server
    server.close()


class Service:
    """One replica: the app, its PlanetWeb and SessionPool, and an ASGI client that is the
    user's browser (a cookie jar)."""

    def __init__(
        self,
        peer: Peer,
        api: RevocableApi,
        storage: Storage,
        records: object,
        clock: Callable[[], float] = time.time,
        timeout: float = 10.0,
    ) -> None:
        server = AuthorizationServer(peer.issuer, timeout=timeout)
        client = ClientSecretBasic(client_id="web-app", client_secret="web-app-secret")
        self.server, self.client = server, client
        self.pool = SessionPool(server, client, storage, allowed_origins=[api.origin], clock=clock)
        flow = AuthorizationCodeFlow(server, client, scopes=("openid", "offline_access"))
        self.web = PlanetWeb(WebLogin(flow, records), self.pool, base_url=APP)  # type: ignore[arg-type]
        web = self.web

        async def data(request: Request) -> JSONResponse:
            user = web.current_user(request)
            async with web.user_client(request) as api_client:
                response = await api_client.get(f"{api.origin}/users/{quote(user)}/items")
            return JSONResponse({"user": user, "status": response.status_code, **response.json()})

        self.app = Starlette(
            routes=[Route("/data", data)],
            middleware=[Middleware(SessionMiddleware, secret_key=SECRET)],
        )
        self.web.install(self.app)

    def browser(self, **kwargs: object) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(self.app),
            base_url=APP,
            **kwargs,  # type: ignore[arg-type]
        )


@pytest.fixture
async def service(peer: Peer, api: RevocableApi) -> AsyncIterator[Callable[..., Service]]:
    storage = MemoryStorage()
    made: list[Service] = []

    def make(
        storage: Storage = storage,
        records: object = storage,
        clock: Callable[[], float] = time.time,
        timeout: float = 10.0,
    ) -> Service:
        made.append(Service(peer, api, storage, records, clock, timeout))
        return made[-1]

    yield make
    for each in made:
        await each.web.aclose()


async def _log_in(browser: httpx.AsyncClient, login: str) -> httpx.Response:
    """Start at /auth/login, sign in at the provider, and open the callback in `browser`."""
    start = await browser.get("/auth/login", params={"next": "/data"})
    assert start.status_code == 303
    callback = await anyio.to_thread.run_sync(
        lambda: log_in_over_http(start.headers["location"], login=login)
    )
    assert callback.startswith(f"{APP}/auth/callback?")
    return await browser.get(callback)


def _session_of(browser: httpx.AsyncClient) -> dict[str, object]:
    """What the signed session cookie holds (it is signed, not encrypted: anyone can read it)."""
    payload = browser.cookies["session"].split(".")[0]
    return json.loads(base64.b64decode(payload + "=" * (-len(payload) % 4)))


async def test_a_request_without_a_login_is_sent_to_log_in(service: Callable[..., Service]) -> None:
    """No user in this browser: the handler's client is refused with a redirect to the login,
    which then comes back to the page asked for."""
    app = service()
    async with app.browser() as browser:
        response = await browser.get("/data")
    assert response.status_code == 303
    assert response.headers["location"] == "/auth/login?next=%2Fdata"


async def test_a_user_logs_in_and_gets_their_own_data(
    service: Callable[..., Service], peer: Peer, api: RevocableApi
) -> None:
    """Login, callback, then the handler's client calls the API with a token whose `sub` is the
    user's; the cookie holds the user id only, and the binding cookie is gone."""
    app = service()
    async with app.pool, app.browser() as browser:
        callback = await _log_in(browser, "kim")
        assert callback.status_code == 303
        assert callback.headers["location"] == "/data"
        assert not [name for name in browser.cookies if name.startswith("planet_async_login_")]
        assert _session_of(browser) == {USER_KEY: "kim"}

        data = (await browser.get("/data")).json()

    assert data["user"] == "kim"
    assert data["status"] == 200
    assert data["sub"] == "kim"
    assert api.statuses("/users/kim/items") == [200]
    assert peer.grants("authorization_code") == 1


async def test_logout_signs_the_user_out_of_the_pool(
    service: Callable[..., Service], peer: Peer
) -> None:
    """POST /auth/logout forgets the browser's user, deletes the stored session and revokes the
    refresh token: the next page asks for a login."""
    storage = MemoryStorage()
    app = service(storage)
    async with app.pool, app.browser() as browser:
        await _log_in(browser, "lee")
        assert await storage.load(app.pool.key("lee")) is not None
        response = await browser.post("/auth/logout")
        assert response.status_code == 303
        assert await storage.load(app.pool.key("lee")) is None
        assert (await browser.get("/data")).status_code == 303


async def test_a_user_signed_out_on_another_replica_is_sent_to_log_in(
    service: Callable[..., Service],
) -> None:
    """Two replicas share the storage: a sign-out on one turns the other's next request for the
    user (whose cookie still names them, on another device) into a redirect to the login, not a
    500, although that replica held a valid token for them."""
    storage = MemoryStorage()
    one, two = service(storage), service(storage)
    async with one.pool, two.pool, one.browser() as device, two.browser() as other_device:
        await _log_in(device, "max")
        other_device.cookies.set("session", device.cookies["session"], domain="app.example")
        assert (await other_device.get("/data")).status_code == 200  # two holds max now

        await one.pool.sign_out("max")
        await anyio.wait_all_tasks_blocked()  # two's watcher has heard of the deletion

        response = await other_device.get("/data")
    assert response.status_code == 303
    assert response.headers["location"].startswith("/auth/login")


async def test_a_refused_refresh_token_sends_the_user_to_log_in(
    service: Callable[..., Service], peer: Peer
) -> None:
    """The user's refresh token was revoked at the provider; when their access token has run
    out (the pool's clock, injected), the renewal is refused and the page redirects to the login
    instead of failing with a 500."""
    clock = FakeClock(time.time())
    storage = MemoryStorage()
    app = service(storage, storage, clock)
    async with app.pool, app.browser() as browser:
        await _log_in(browser, "nina")
        assert (await browser.get("/data")).status_code == 200
        stored = await storage.load(app.pool.key("nina"))
        assert stored is not None
        assert stored.refresh_token is not None
        revoked = await revoke_token(
            app.server,
            app.client,
            stored.refresh_token.get_secret_value(),
            hint="refresh_token",
            clock=time.time,
        )
        assert revoked
        clock.advance(3600)

        response = await browser.get("/data")
    assert response.status_code == 303
    assert response.headers["location"] == "/auth/login?next=%2Fdata"
    assert peer.errors() == {"refresh_token:invalid_grant": 1}


async def test_a_storage_outage_is_a_503_with_retry_after(
    redis_connections_fail: None,  # first: its end (collecting coredis's leftovers) comes last
    service: Callable[..., Service],
    start_redis: Callable[..., RedisServer],
) -> None:
    """A user the replica does not hold, while Redis is down: 503 with Retry-After (the browser
    is not sent to log in, which would not help)."""
    redis = start_redis()
    storage = RedisStorage(redis.url, timeout=1.0)
    redis.stop()
    app = service(storage, MemoryStorage())
    signed = TimestampSigner(SECRET).sign(
        base64.b64encode(json.dumps({USER_KEY: "ghost"}).encode())
    )
    async with app.browser(cookies={"session": signed.decode()}) as browser:
        response = await browser.get("/data")
    assert response.status_code == 503
    assert int(response.headers["retry-after"]) >= 1

    # Logins wait in the same Redis: starting or completing one is a 503 too, not a 500.
    app = service(storage, storage)
    async with app.browser() as browser:
        started = await browser.get("/auth/login")
        completed = await browser.get("/auth/callback", params={"code": "c", "state": "s"})
    assert [started.status_code, completed.status_code] == [503, 503]


async def test_a_provider_that_does_not_answer_the_callback_is_a_503(
    service: Callable[..., Service], peer: Peer
) -> None:
    """The token endpoint does not answer the code exchange in time (held 2 s, the client waits
    0.5 s): the callback answers 503 with Retry-After, and nobody is logged in."""
    app = service(timeout=0.5)
    async with app.pool, app.browser() as browser:
        start = await browser.get("/auth/login")
        callback = await anyio.to_thread.run_sync(
            lambda: log_in_over_http(start.headers["location"], login="omar")
        )
        peer.set_token_delay(2000)
        response = await browser.get(callback)
        peer.set_token_delay(0)
        assert response.status_code == 503
        assert response.headers["retry-after"] == "1"
        assert (await browser.get("/data")).status_code == 303


async def test_a_callback_without_a_pending_login_is_a_400_page(
    service: Callable[..., Service],
) -> None:
    """A forged or stale callback gets a page that says so and offers a new login."""
    app = service()
    async with app.browser() as browser:
        response = await browser.get("/auth/callback", params={"code": "c", "state": "forged"})
    assert response.status_code == 400
    assert "start the login again" in response.text
    assert "/auth/login" in response.text


async def test_without_a_base_url_the_redirect_uri_is_the_requests(
    service: Callable[..., Service],
) -> None:
    """Without `base_url`, the redirect URI sent to the provider is the callback route on the
    host the login was started on; the binding cookie is Secure on https."""
    app = service()
    web = PlanetWeb(app.web.login, app.pool, path="/planet")
    bare = Starlette(middleware=[Middleware(SessionMiddleware, secret_key=SECRET)])
    web.install(bare)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(bare), base_url="https://other.example"
    ) as browser:
        response = await browser.get("/planet/login")
    params = dict(httpx.URL(response.headers["location"]).params)
    assert params["redirect_uri"] == "https://other.example/planet/callback"
    cookie = response.headers["set-cookie"]
    assert "Path=/planet/callback" in cookie
    assert "HttpOnly" in cookie
    assert "Secure" in cookie
    await web.aclose()


async def test_without_the_session_middleware_the_error_says_what_to_add(
    service: Callable[..., Service],
) -> None:
    """PlanetWeb needs SessionMiddleware; without it the error names it."""
    app = service()
    bare = Starlette(routes=app.web.routes)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(bare), base_url=APP) as browser:
        with pytest.raises(ConfigurationError, match="SessionMiddleware"):
            await browser.get("/auth/login")


@pytest.mark.parametrize("library", ["starlette", "itsdangerous"])
def test_a_missing_extra_is_named(library: str) -> None:
    """`import planet_async` never loads Starlette; planet_async.starlette without it (or without
    itsdangerous, which signs the session cookie) raises MissingExtra naming the extra."""
    code = f"""
import sys
sys.modules[{library!r}] = None  # as if not installed
import planet_async, planet_async.web
assert "starlette" not in [m.split(".")[0] for m in sys.modules if sys.modules[m] is not None]
try:
    import planet_async.starlette
except planet_async.MissingExtra as exc:
    assert isinstance(exc, ImportError)
    print(exc)
"""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert "needs the starlette extra" in result.stdout
    assert "[starlette]" in result.stdout
