"""TokenManager events: what a job watching renewals is told, and that telling costs it nothing."""

from __future__ import annotations

import logging
import random
import subprocess
import sys
import time

import anyio
import httpx
import pytest

from planet_async import (
    AuthorizationServer,
    ClientCredentialsGrant,
    ClientSecretBasic,
    HttpxTransport,
    MemoryStorage,
    PlanetAuth,
    TokenEvent,
    TokenManager,
)
from tests._helpers import API, FakeClock, VerifyingApi
from tests._peer import Peer

pytestmark = pytest.mark.anyio

TOKEN_URL = "https://auth.test/token"


class Endpoint:
    """A token endpoint handing out numbered tokens; it can be held shut or made to fail."""

    def __init__(self, lifetime: int = 100) -> None:
        self.lifetime = lifetime
        self.calls = 0
        self.gate: anyio.Event | None = None
        self.status = 200

    async def handler(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.status != 200:
            return httpx.Response(self.status)
        body = {"access_token": f"access-{self.calls}", "expires_in": self.lifetime}
        return httpx.Response(200, json={**body, "token_type": "Bearer"})

    def grant(self) -> ClientCredentialsGrant:
        http = httpx.AsyncClient(transport=httpx.MockTransport(self.handler))
        server = AuthorizationServer(token_endpoint=TOKEN_URL, transport=HttpxTransport(http))
        client = ClientSecretBasic(client_id="svc", client_secret="svc-secret")
        return ClientCredentialsGrant(server, client)


def kinds(events: list[TokenEvent]) -> list[str]:
    return [event.kind for event in events]


def peer_manager(peer: Peer, clock: FakeClock, storage: MemoryStorage, **kw) -> TokenManager:
    client = ClientSecretBasic(client_id="service-basic", client_secret="service-basic-secret")
    grant = ClientCredentialsGrant(AuthorizationServer(peer.issuer), client)
    return TokenManager(grant, storage=storage, clock=clock, rng=random.Random(0), **kw)


async def test_one_renewal_for_many_waiters_is_one_started_and_one_succeeded() -> None:
    """100 callers waiting on one renewal make one renewal_started and one renewal_succeeded,
    the latter with the renewal's duration and the new token's lifetime."""
    clock = FakeClock()
    endpoint = Endpoint(lifetime=100)
    events: list[TokenEvent] = []
    manager = TokenManager(endpoint.grant(), clock=clock, on_event=events.append)
    endpoint.gate = anyio.Event()
    headers: list[str] = []

    async def one() -> None:
        headers.append(await manager.header())

    async with anyio.create_task_group() as tg:
        for _ in range(100):
            tg.start_soon(one)
        await anyio.wait_all_tasks_blocked()
        assert kinds(events) == ["renewal_started"]
        endpoint.gate.set()
    assert headers == ["Bearer access-1"] * 100
    assert kinds(events) == ["renewal_started", "renewal_succeeded"]
    started, succeeded = events
    assert started == TokenEvent("renewal_started", "default")  # no token yet: no expiry
    assert succeeded.session == "default"
    assert succeeded.duration >= 0  # type: ignore[operator]
    assert succeeded.error is None
    assert succeeded.expires_in == 100


async def test_failed_renewal_reports_the_error_type() -> None:
    """A renewal that fails for all its waiters is one renewal_failed naming the error's type,
    and no secret."""
    clock = FakeClock()
    endpoint = Endpoint()
    endpoint.status = 503
    events: list[TokenEvent] = []
    manager = TokenManager(endpoint.grant(), clock=clock, on_event=events.append)
    endpoint.gate = anyio.Event()
    failures = 0

    async def one() -> None:
        nonlocal failures
        try:
            await manager.header()
        except Exception:
            failures += 1

    async with anyio.create_task_group() as tg:
        for _ in range(10):
            tg.start_soon(one)
        await anyio.wait_all_tasks_blocked()
        endpoint.gate.set()
    assert failures == 10
    assert endpoint.calls == 1
    assert kinds(events) == ["renewal_started", "renewal_failed"]
    failed = events[1]
    assert failed.error == "AuthServerUnavailable"
    assert failed.duration >= 0  # type: ignore[operator]
    assert failed.expires_in is None
    assert "svc-secret" not in repr(events)


async def test_token_saved_by_another_manager_is_adopted(peer: Peer) -> None:
    """A manager that finds a fresh token another one saved uses it and says so (token_adopted
    between started and succeeded); a token it requests itself is not an adoption."""
    clock = FakeClock(start=time.time())
    storage = MemoryStorage()
    a_events: list[TokenEvent] = []
    b_events: list[TokenEvent] = []
    a = peer_manager(peer, clock, storage, on_event=a_events.append)
    b = peer_manager(peer, clock, storage, on_event=b_events.append)

    first = await a.header()
    assert await b.header() == first
    assert kinds(a_events) == ["renewal_started", "renewal_succeeded"]
    assert kinds(b_events) == ["renewal_started", "token_adopted", "renewal_succeeded"]

    clock.advance(50)  # past both soft thresholds (at most 45 s), before the hard one (54 s)
    a_events.clear()
    b_events.clear()
    second = await a.header()
    assert second != first
    assert await b.header() == second
    assert kinds(a_events) == ["renewal_started", "renewal_succeeded"]
    assert kinds(b_events) == ["renewal_started", "token_adopted", "renewal_succeeded"]
    assert b_events[1].expires_in == 60  # the token a has just obtained
    assert peer.grants("client_credentials") == 2


async def test_a_401_is_reported_as_a_rejection(peer: Peer) -> None:
    """A 401 from the API for the session's token is one token_rejected, then its renewal."""
    clock = FakeClock(start=time.time())
    events: list[TokenEvent] = []
    manager = peer_manager(peer, clock, MemoryStorage(), on_event=events.append)
    api = VerifyingApi(peer.issuer)
    transport = httpx.MockTransport(api.handler)
    async with httpx.AsyncClient(auth=PlanetAuth(manager), transport=transport) as client:
        assert (await client.get(f"{API}/data/v1/searches")).status_code == 200
        api.clock = lambda: time.time() + 3600  # the API now finds every token expired
        assert (await client.get(f"{API}/data/v1/searches")).status_code == 401
    assert kinds(events) == [
        "renewal_started",
        "renewal_succeeded",
        "token_rejected",
        "renewal_started",
        "renewal_succeeded",
    ]
    assert api.rejected == 2  # the first token, then its replacement: retried once only
    assert peer.grants("client_credentials") == 2


async def test_listener_that_raises_does_not_break_the_renewal(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A listener raising on every event is logged once, at WARNING, without the token in the
    message; renewals go on and the other listeners get every event."""
    clock = FakeClock()
    endpoint = Endpoint(lifetime=100)
    manager = TokenManager(endpoint.grant(), clock=clock)
    events: list[TokenEvent] = []

    def broken(event: TokenEvent) -> None:
        raise RuntimeError(f"cannot handle {event.kind} with {manager.header_nowait()}")

    manager.add_listener(broken)
    manager.add_listener(events.append)
    with caplog.at_level(logging.WARNING, logger="planet_async"):
        assert await manager.header() == "Bearer access-1"
        assert await manager.renew()
    assert manager.header_nowait() == "Bearer access-2"
    assert kinds(events) == ["renewal_started", "renewal_succeeded"] * 2
    warnings = [r for r in caplog.records if "listener" in r.getMessage()]
    assert len(warnings) == 1
    assert warnings[0].levelno == logging.WARNING
    assert "RuntimeError" in warnings[0].getMessage()
    assert "access-" not in caplog.text


async def test_removed_listener_hears_nothing_more() -> None:
    """The function add_listener returns unsubscribes; calling it twice is harmless."""
    clock = FakeClock()
    manager = TokenManager(Endpoint().grant(), clock=clock)
    events: list[TokenEvent] = []
    remove = manager.add_listener(events.append)
    await manager.header()
    remove()
    remove()
    await manager.renew()
    assert kinds(events) == ["renewal_started", "renewal_succeeded"]


async def test_expires_in_reads_the_token_in_memory() -> None:
    """expires_in() is None before a token, then the seconds left on the manager's clock."""
    clock = FakeClock()
    manager = TokenManager(Endpoint(lifetime=100).grant(), clock=clock)
    assert manager.expires_in() is None
    await manager.header()
    assert manager.expires_in() == 100
    clock.advance(30)
    assert manager.expires_in() == 70
    clock.advance(80)
    assert manager.expires_in() == -10


def test_import_does_not_load_opentelemetry() -> None:
    """`import planet_async` (and its otel module) never imports opentelemetry."""
    code = (
        "import sys, planet_async, planet_async.otel; "
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=30
    )
    assert out.stdout.strip() == "[]"
