"""TokenManager semantics: single flight, refresh ahead, cancellation, 401 handling, rotation."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator

import anyio
import httpx
import pytest

from planet_async import (
    AuthorizationServer,
    AuthServerUnavailable,
    ClientCredentialsGrant,
    ClientSecretBasic,
    HttpxTransport,
    InvalidClientError,
    InvalidGrantError,
    MemoryStorage,
    PlanetAuth,
    PublicClient,
    RefreshTokenGrant,
    TokenManager,
    TokenSet,
)
from tests._helpers import API, FakeClock

pytestmark = pytest.mark.anyio

TOKEN_URL = "https://auth.test/token"


class FakeTokenEndpoint:
    """A token endpoint that numbers its tokens, can be held shut, and can be made to fail."""

    def __init__(self, clock: FakeClock, lifetime: int = 100) -> None:
        self.clock = clock
        self.lifetime = lifetime
        self.calls = 0
        self.forms: list[dict[str, str]] = []
        self.gate: anyio.Event | None = None
        self.fail_with: httpx.Response | None = None
        self.rotate = False

    def hold(self) -> anyio.Event:
        self.gate = anyio.Event()
        return self.gate

    async def handler(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        self.forms.append(dict(httpx.QueryParams(request.content.decode())))
        if self.gate is not None:
            await self.gate.wait()
        if self.fail_with is not None:
            return self.fail_with
        body = {"access_token": f"at-{self.calls}", "token_type": "Bearer"}
        body["expires_in"] = self.lifetime
        if self.rotate:
            body["refresh_token"] = f"rt-{self.calls + 1}"
        return httpx.Response(200, json=body)

    def server(self) -> AuthorizationServer:
        http = httpx.AsyncClient(transport=httpx.MockTransport(self.handler))
        return AuthorizationServer(token_endpoint=TOKEN_URL, transport=HttpxTransport(http))


def m2m_manager(endpoint: FakeTokenEndpoint, **kwargs) -> TokenManager:
    client = ClientSecretBasic(client_id="svc", client_secret="svc-secret")
    grant = ClientCredentialsGrant(endpoint.server(), client)
    kwargs.setdefault("rng", random.Random(0))
    return TokenManager(grant, clock=endpoint.clock, **kwargs)


def token(access: str, clock: FakeClock, *, age: float = 0, lifetime: float = 100, **kw):
    issued = clock.now - age
    return TokenSet(access_token=access, issued_at=issued, expires_at=issued + lifetime, **kw)


class Api:
    """The API: accepts the tokens in `valid`, answers 401 otherwise; can be held shut."""

    def __init__(self, valid: set[str] | None = None) -> None:
        self.valid = valid
        self.seen: list[str] = []
        self.bodies: list[bytes] = []
        self.gate: anyio.Event | None = None

    async def handler(self, request: httpx.Request) -> httpx.Response:
        header = request.headers.get("authorization", "")
        self.seen.append(header)
        self.bodies.append(await request.aread())
        if self.gate is not None:
            await self.gate.wait()
        if self.valid is not None and header.removeprefix("Bearer ") not in self.valid:
            return httpx.Response(401)
        return httpx.Response(200, json={"auth": header})


def api_client(manager: TokenManager, api: Api) -> httpx.AsyncClient:
    return httpx.AsyncClient(auth=PlanetAuth(manager), transport=httpx.MockTransport(api.handler))


async def test_thousand_requests_at_expiry_make_one_token_request() -> None:
    """1,000 concurrent requests against an expired stored token share one renewal."""
    clock = FakeClock()
    endpoint = FakeTokenEndpoint(clock)
    storage = MemoryStorage()
    await storage.save("default", token("stale", clock, age=200))
    manager = m2m_manager(endpoint, storage=storage)
    api = Api()
    gate = endpoint.hold()
    statuses: list[int] = []

    async def one(client: httpx.AsyncClient) -> None:
        statuses.append((await client.get(f"{API}/x")).status_code)

    async with api_client(manager, api) as client, anyio.create_task_group() as tg:
        for _ in range(1000):
            tg.start_soon(one, client)
        await anyio.wait_all_tasks_blocked()
        assert endpoint.calls == 1
        gate.set()
    assert endpoint.calls == 1
    assert statuses == [200] * 1000
    assert set(api.seen) == {"Bearer at-1"}
    assert (await storage.load("default")).access_token.get_secret_value() == "at-1"


async def test_waiters_each_get_the_shared_error() -> None:
    """When the one renewal fails, every waiter gets its own copy of the typed error."""
    clock = FakeClock()
    endpoint = FakeTokenEndpoint(clock)
    endpoint.fail_with = httpx.Response(503)
    manager = m2m_manager(endpoint)
    gate = endpoint.hold()
    errors: list[BaseException] = []

    async def one() -> None:
        try:
            await manager.header()
        except AuthServerUnavailable as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tg:
        for _ in range(100):
            tg.start_soon(one)
        await anyio.wait_all_tasks_blocked()
        gate.set()
    assert endpoint.calls == 1
    assert len(errors) == 100
    assert len({id(e) for e in errors}) == 100
    assert all(TOKEN_URL in str(e) for e in errors)


@pytest.mark.parametrize("with_task_group", [False, True])
async def test_cancelled_waiter_does_not_cancel_the_renewal(with_task_group: bool) -> None:
    """Cancelling the task that started a renewal leaves it running for the other waiters."""
    clock = FakeClock()
    endpoint = FakeTokenEndpoint(clock)
    manager = m2m_manager(endpoint)
    gate = endpoint.hold()
    got: list[str] = []
    first_scope = anyio.CancelScope()

    async def first() -> None:
        with first_scope:
            got.append("first:" + await manager.header())

    async def second() -> None:
        got.append("second:" + await manager.header())

    async def run() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(first)
            await anyio.wait_all_tasks_blocked()
            tg.start_soon(second)
            await anyio.wait_all_tasks_blocked()
            first_scope.cancel()
            await anyio.wait_all_tasks_blocked()
            gate.set()

    if with_task_group:
        async with manager:
            await run()
    else:
        await run()
    assert got == ["second:Bearer at-1"]
    assert first_scope.cancelled_caught
    assert endpoint.calls == 1
    assert manager.header_nowait() == "Bearer at-1"


async def test_failure_is_not_remembered_as_a_result() -> None:
    """After a failed renewal and its backoff, the next caller makes a fresh attempt."""
    clock = FakeClock()
    endpoint = FakeTokenEndpoint(clock)
    endpoint.fail_with = httpx.Response(500)
    manager = m2m_manager(endpoint, backoff_base=1.0)
    with pytest.raises(AuthServerUnavailable):
        await manager.header()
    with pytest.raises(AuthServerUnavailable):
        await manager.header()  # inside the backoff: no new attempt
    assert endpoint.calls == 1
    endpoint.fail_with = None
    clock.advance(1.0)  # the first backoff is at most backoff_base
    assert await manager.header() == "Bearer at-2"
    assert endpoint.calls == 2


async def test_refresh_ahead_runs_in_the_background() -> None:
    """Past the soft threshold, requests keep the current token while one renewal runs."""
    clock = FakeClock()
    endpoint = FakeTokenEndpoint(clock, lifetime=100)
    manager = m2m_manager(endpoint)
    api = Api()
    async with manager, api_client(manager, api) as client:
        await client.get(f"{API}/x")
        clock.advance(80)  # soft threshold is at 65-75 s, hard at 90 s
        gate = endpoint.hold()
        for _ in range(50):
            response = await client.get(f"{API}/x")
            assert response.json() == {"auth": "Bearer at-1"}
        await anyio.wait_all_tasks_blocked()
        assert endpoint.calls == 2  # exactly one renewal in flight, none per request
        gate.set()
        await anyio.wait_all_tasks_blocked()
        response = await client.get(f"{API}/x")
        assert response.json() == {"auth": "Bearer at-2"}
    assert endpoint.calls == 2


async def test_refresh_ahead_without_task_group_renews_in_line_once() -> None:
    """Without a task group, one caller renews past the soft threshold; the others do not wait."""
    clock = FakeClock()
    endpoint = FakeTokenEndpoint(clock, lifetime=100)
    manager = m2m_manager(endpoint)
    await manager.header()
    clock.advance(80)
    gate = endpoint.hold()
    results: list[str] = []

    async def renewer() -> None:
        results.append(await manager.header())

    async with anyio.create_task_group() as tg:
        tg.start_soon(renewer)
        await anyio.wait_all_tasks_blocked()
        for _ in range(20):
            assert await manager.header() == "Bearer at-1"
        assert endpoint.calls == 2
        gate.set()
    assert results == ["Bearer at-2"]
    assert endpoint.calls == 2


async def test_soft_threshold_is_jittered_per_manager() -> None:
    """Managers renew at different moments in the 65-75% window, so processes do not align."""
    moments = []
    for seed in (1, 2):
        clock = FakeClock()
        endpoint = FakeTokenEndpoint(clock, lifetime=1000)
        manager = m2m_manager(endpoint, rng=random.Random(seed))
        await manager.header()
        start = clock.now
        while endpoint.calls == 1 and clock.now - start < 1000:
            clock.advance(1)
            await manager.header()
        moments.append(clock.now - start)
    assert all(650 <= m <= 750 for m in moments), moments
    assert moments[0] != moments[1]


async def test_expired_token_makes_callers_wait_for_a_new_one() -> None:
    """Past the hard threshold (expiry less the margin) the old token is never handed out."""
    clock = FakeClock()
    endpoint = FakeTokenEndpoint(clock, lifetime=3600)
    manager = m2m_manager(endpoint, expiry_margin=30)
    await manager.header()
    clock.advance(3600 - 30)
    assert manager.header_nowait() is None
    assert await manager.header() == "Bearer at-2"


async def test_401_on_current_token_renews_once_and_resends() -> None:
    """A 401 for the current token renews it and resends the request, with its body, once."""
    clock = FakeClock()
    endpoint = FakeTokenEndpoint(clock)
    manager = m2m_manager(endpoint)
    api = Api(valid={"at-2"})
    async with api_client(manager, api) as client:
        response = await client.post(f"{API}/x", content=b"payload")
    assert response.status_code == 200
    assert api.seen == ["Bearer at-1", "Bearer at-2"]
    assert api.bodies == [b"payload", b"payload"]
    assert endpoint.calls == 2


async def test_many_401s_for_one_token_make_one_renewal() -> None:
    """Requests that all get 401 for the same token share a single renewal."""
    clock = FakeClock()
    endpoint = FakeTokenEndpoint(clock)
    manager = m2m_manager(endpoint)
    api = Api(valid={"at-2"})
    statuses: list[int] = []
    async with api_client(manager, api) as client:
        await manager.header()
        api.gate = anyio.Event()

        async def one() -> None:
            statuses.append((await client.get(f"{API}/x")).status_code)

        async with anyio.create_task_group() as tg:
            for _ in range(200):
                tg.start_soon(one)
            await anyio.wait_all_tasks_blocked()
            api.gate.set()
    assert statuses == [200] * 200
    assert endpoint.calls == 2
    assert api.seen.count("Bearer at-1") == 200
    assert api.seen.count("Bearer at-2") == 200


async def test_401_for_a_replaced_token_uses_the_replacement() -> None:
    """A late 401 for a token already renewed retries with the new one and renews nothing."""
    clock = FakeClock()
    endpoint = FakeTokenEndpoint(clock)
    manager = m2m_manager(endpoint)
    old = await manager.header()
    await manager.renew()
    assert await manager.renew_rejected(old) == "Bearer at-2"
    assert endpoint.calls == 2


async def test_repeated_401s_back_off() -> None:
    """An API that refuses every token cannot make the client hammer the token endpoint."""
    clock = FakeClock()
    endpoint = FakeTokenEndpoint(clock)
    manager = m2m_manager(endpoint, backoff_base=2.0)
    api = Api(valid=set())
    async with api_client(manager, api) as client:
        assert (await client.get(f"{API}/x")).status_code == 401
        assert endpoint.calls == 2  # the first token, and one renewal after the 401
        for _ in range(10):
            assert (await client.get(f"{API}/x")).status_code == 401
        assert endpoint.calls == 2  # backing off: no renewal per request
        clock.advance(2.0)
        assert (await client.get(f"{API}/x")).status_code == 401
        assert endpoint.calls == 3


async def _stream() -> AsyncIterator[bytes]:
    yield b"part-1;"
    yield b"part-2"


class ConsumingTransport(httpx.AsyncBaseTransport):
    """Reads request bodies by iterating the stream, as a real transport does."""

    def __init__(self, valid: set[str]) -> None:
        self.valid = valid
        self.received: list[tuple[str, bytes]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = b"".join([chunk async for chunk in request.stream])
        header = request.headers.get("authorization", "")
        self.received.append((header, body))
        ok = header.removeprefix("Bearer ") in self.valid
        return httpx.Response(200 if ok else 401)


async def test_streamed_body_is_not_resent_after_401() -> None:
    """A consumed streaming body cannot be replayed: the 401 is returned, the next request works."""
    clock = FakeClock()
    endpoint = FakeTokenEndpoint(clock)
    manager = m2m_manager(endpoint)
    transport = ConsumingTransport(valid={"at-2"})
    async with httpx.AsyncClient(auth=PlanetAuth(manager), transport=transport) as client:
        first = await client.post(f"{API}/upload", content=_stream())
        second = await client.post(f"{API}/upload", content=b"bytes-body")
    assert first.status_code == 401
    assert second.status_code == 200
    assert transport.received == [
        ("Bearer at-1", b"part-1;part-2"),
        ("Bearer at-2", b"bytes-body"),
    ]
    assert endpoint.calls == 2


def refresh_manager(endpoint: FakeTokenEndpoint, storage: MemoryStorage) -> TokenManager:
    grant = RefreshTokenGrant(endpoint.server(), PublicClient(client_id="native-app"))
    return TokenManager(grant, storage=storage, clock=endpoint.clock, rng=random.Random(0))


async def test_rotated_refresh_token_is_kept_in_storage() -> None:
    """With rotation, each refresh stores the new refresh token and sends it next time."""
    clock = FakeClock()
    endpoint = FakeTokenEndpoint(clock)
    endpoint.rotate = True
    storage = MemoryStorage()
    await storage.save("default", token("at-0", clock, age=200, refresh_token="rt-1"))
    manager = refresh_manager(endpoint, storage)
    for expected in ("rt-1", "rt-2", "rt-3"):
        await manager.header()
        assert endpoint.forms[-1]["refresh_token"] == expected
        clock.advance(100)
    stored = await storage.load("default")
    assert stored.refresh_token.get_secret_value() == "rt-4"


async def test_invalid_grant_adopts_a_session_rotated_elsewhere() -> None:
    """If a lock-free writer (the planet CLI) rotated the session meanwhile, its tokens are used."""
    clock = FakeClock()
    endpoint = FakeTokenEndpoint(clock)
    storage = MemoryStorage()
    await storage.save("default", token("at-0", clock, age=200, refresh_token="rt-old"))

    async def handler(request: httpx.Request) -> httpx.Response:
        endpoint.calls += 1
        form = dict(httpx.QueryParams(request.content.decode()))
        if form["refresh_token"] == "rt-old":
            # Meanwhile, another program refreshed without a lock: it wrote rt-new, and the
            # server revoked rt-old.
            storage._tokens["default"] = token(
                "at-elsewhere", clock, age=200, refresh_token="rt-new"
            )
            return httpx.Response(400, json={"error": "invalid_grant"})
        assert form["refresh_token"] == "rt-new"
        return httpx.Response(200, json={"access_token": "at-new", "expires_in": 100})

    endpoint.handler = handler  # type: ignore[method-assign]
    manager = refresh_manager(endpoint, storage)
    assert await manager.header() == "Bearer at-new"
    assert endpoint.calls == 2
    stored = await storage.load("default")
    assert stored.refresh_token.get_secret_value() == "rt-new"  # the response kept the old one


async def test_invalid_grant_with_nothing_newer_stored_is_raised() -> None:
    """A refused refresh token with no newer session stored means: log in again."""
    clock = FakeClock()
    endpoint = FakeTokenEndpoint(clock)
    endpoint.fail_with = httpx.Response(400, json={"error": "invalid_grant"})
    storage = MemoryStorage()
    await storage.save("default", token("at-0", clock, age=200, refresh_token="rt-1"))
    manager = refresh_manager(endpoint, storage)
    with pytest.raises(InvalidGrantError, match="log in again") as info:
        await manager.header()
    assert "rt-1" not in str(info.value)
    assert endpoint.calls == 1
    assert (await storage.load("default")).refresh_token.get_secret_value() == "rt-1"


async def test_explicit_renew_raises_when_the_renewal_fails() -> None:
    """`renew()` reports a failed renewal even while the old token would still serve."""
    clock = FakeClock()
    endpoint = FakeTokenEndpoint(clock)
    manager = m2m_manager(endpoint)
    await manager.header()
    endpoint.fail_with = httpx.Response(400, json={"error": "invalid_client"})
    with pytest.raises(InvalidClientError):
        await manager.renew()
    assert await manager.header() == "Bearer at-1"  # requests keep the still-valid token


async def test_explicit_renew_asks_the_server_even_with_a_fresh_stored_token() -> None:
    """`renew()` in a new process renews, rather than adopting the fresh token in storage."""
    clock = FakeClock()
    endpoint = FakeTokenEndpoint(clock)
    storage = MemoryStorage()
    await storage.save("default", token("stored", clock))
    manager = m2m_manager(endpoint, storage=storage)
    renewed = await manager.renew()
    assert renewed.access_token.get_secret_value() == "at-1"
    assert endpoint.calls == 1
    assert (await storage.load("default")).access_token.get_secret_value() == "at-1"


def test_a_manager_keeps_few_enough_attributes_to_share_its_dict_keys() -> None:
    """A SessionPool holds a TokenManager per user. CPython (3.11-3.13) shares one table of
    attribute names among a class's instances only up to 30 names; a manager with a 30th
    attribute got a dict of its own, which took a held user from 4.0 KiB to 5.1 KiB
    (`python3 tools/nox.py -s bench -- pool`). So a manager sets fewer than 30."""
    manager = m2m_manager(FakeTokenEndpoint(FakeClock()))
    assert len(vars(manager)) < 30, sorted(vars(manager))
