"""WebLogin against the real oidc-provider peer, without a browser: the dev login pages are posted
over HTTP (`tests._browser.log_in_over_http`), and pending logins wait in a real Redis.

Every test runs on asyncio and trio (WebLogin, RedisStorage and the token endpoint are anyio).
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit

import anyio
import pytest
from pydantic import SecretStr

from planet_async import (
    AuthorizationCodeFlow,
    AuthorizationServer,
    BrowserMismatch,
    ClientSecretBasic,
    ConfigurationError,
    InvalidIdToken,
    IssuerMismatch,
    LoginTimeout,
    MemoryStorage,
    PrivateKeyJWT,
    RedisStorage,
    UnknownLogin,
)
from planet_async.web import LoginStart, WebLogin
from tests._browser import log_in_over_http
from tests._peer import Peer
from tests._redis import RedisServer

pytestmark = [pytest.mark.anyio, pytest.mark.peer]

REDIRECT = "https://app.example/callback"  # registered for web-app; never fetched


def _flow(peer: Peer, **kwargs: object) -> AuthorizationCodeFlow:
    return AuthorizationCodeFlow(
        AuthorizationServer(peer.issuer),
        kwargs.pop("client", None)  # type: ignore[arg-type]
        or ClientSecretBasic(client_id="web-app", client_secret="web-app-secret"),
        redirect_uri=REDIRECT,
        scopes=("openid", "offline_access"),
        **kwargs,  # type: ignore[arg-type]
    )


async def _provider_login(start: LoginStart, login: str) -> str:
    """The user's part at the provider; returns the callback URL the browser is sent to."""
    return await anyio.to_thread.run_sync(
        lambda: log_in_over_http(start.authorization_url, login=login)
    )


def _with_param(url: str, name: str, value: str) -> str:
    parts = urlsplit(url)
    params = dict(parse_qsl(parts.query))
    params[name] = value
    return parts._replace(query=urlencode(params)).geturl()


async def test_login_started_on_one_replica_finishes_on_another(
    peer: Peer, redis: RedisServer
) -> None:
    """Two replicas (each its own flow and storage client) share only Redis: the login started
    on one completes on the other, and the callback names the verified user."""
    one = WebLogin(_flow(peer), RedisStorage(redis.url))
    two = WebLogin(_flow(peer), RedisStorage(redis.url))
    start = await one.start()
    callback = await _provider_login(start, "carol")
    assert two.cookie_name(two.state_of(callback)) == start.cookie_name
    state = two.state_of(callback)
    for shown in (repr(start), repr(one), str(start)):
        assert start.browser_binding not in shown
        assert state not in shown

    completed = await two.finish(callback, start.browser_binding)

    assert completed.subject == "carol"
    assert completed.claims is not None
    assert completed.claims["aud"] == "web-app"
    assert completed.token.refresh_token is not None
    assert peer.grants("authorization_code") == 1


async def test_a_replayed_callback_is_refused(peer: Peer, redis: RedisServer) -> None:
    """The pending login is taken once: the same callback again finds nothing."""
    login = WebLogin(_flow(peer), RedisStorage(redis.url))
    start = await login.start()
    callback = await _provider_login(start, "dave")
    await login.finish(callback, start.browser_binding)

    with pytest.raises(UnknownLogin):
        await login.finish(callback, start.browser_binding)
    assert peer.grants("authorization_code") == 1


async def test_a_callback_arriving_at_two_replicas_at_once_is_used_once(
    peer: Peer, redis: RedisServer
) -> None:
    """Eight replicas get the same callback at the same moment: exactly one logs the user in,
    seven refuse it, and the code is exchanged once."""
    replicas = [WebLogin(_flow(peer), RedisStorage(redis.url)) for _ in range(8)]
    start = await replicas[0].start()
    callback = await _provider_login(start, "erin")
    subjects: list[str | None] = []
    refused: list[UnknownLogin] = []
    gate = anyio.Event()

    async def finish(replica: WebLogin) -> None:
        await gate.wait()
        try:
            subjects.append((await replica.finish(callback, start.browser_binding)).subject)
        except UnknownLogin as exc:
            refused.append(exc)

    async with anyio.create_task_group() as tasks:
        for replica in replicas:
            tasks.start_soon(finish, replica)
        await anyio.wait_all_tasks_blocked()
        gate.set()

    assert subjects == ["erin"]
    assert len(refused) == 7
    assert peer.grants("authorization_code") == 1


async def test_a_callback_in_another_browser_is_refused(peer: Peer, redis: RedisServer) -> None:
    """Login CSRF: a callback that comes without the starting browser's binding (none, or the
    binding of another login) is refused before the code is exchanged, and spends the login."""
    login = WebLogin(_flow(peer), RedisStorage(redis.url))
    victim_start = await login.start()
    attacker_start = await login.start()
    attacker_callback = await _provider_login(attacker_start, "mallory")

    with pytest.raises(BrowserMismatch):
        await login.finish(attacker_callback, None)  # the victim's browser has no binding
    other = await _provider_login(await login.start(), "mallory")
    with pytest.raises(BrowserMismatch):
        await login.finish(other, victim_start.browser_binding)
    with pytest.raises(UnknownLogin):  # spent: the attacker cannot retry it with the cookie
        await login.finish(attacker_callback, attacker_start.browser_binding)
    assert peer.grants("authorization_code") == 0


async def test_a_callback_with_a_wrong_iss_is_refused(peer: Peer, redis: RedisServer) -> None:
    """RFC 9207: a redirect that says it comes from another issuer is refused (mix-up) before
    the code is exchanged."""
    login = WebLogin(_flow(peer), RedisStorage(redis.url))
    start = await login.start()
    callback = await _provider_login(start, "frank")
    assert dict(parse_qsl(urlsplit(callback).query))["iss"] == peer.issuer

    with pytest.raises(IssuerMismatch):
        await login.finish(
            _with_param(callback, "iss", "https://evil.example"), start.browser_binding
        )
    assert peer.grants("authorization_code") == 0


async def test_an_old_login_is_refused(peer: Peer) -> None:
    """A login past its lifetime (the flow's clock, injected) is refused."""
    now = [1_000_000.0]
    login = WebLogin(_flow(peer, clock=lambda: now[0], lifetime=60.0), MemoryStorage())
    start = await login.start()
    callback = await _provider_login(start, "grace")
    now[0] += 61

    with pytest.raises(LoginTimeout):
        await login.finish(callback, start.browser_binding)


async def test_a_private_key_jwt_web_client_logs_in(
    peer: Peer, client_keys: tuple[Path, dict[str, Path]]
) -> None:
    """A web service that proves itself with private_key_jwt logs users in the same way."""
    _, keys = client_keys
    client = PrivateKeyJWT(
        client_id="web-pkjwt", private_key=keys["ec-1"].read_text(), key_id="ec-1"
    )
    login = WebLogin(_flow(peer, client=client), MemoryStorage())
    start = await login.start()
    completed = await login.finish(await _provider_login(start, "heidi"), start.browser_binding)

    assert completed.subject == "heidi"
    assert completed.claims is not None
    assert completed.claims["aud"] == "web-pkjwt"


async def test_the_flow_checks_the_nonce_of_its_login(peer: Peer) -> None:
    """AuthorizationCodeFlow.finish verifies a returned ID token's nonce against its own login:
    the real provider's ID token for this login, checked against another nonce, is refused."""
    flow = _flow(peer)
    pending = await flow.start()
    callback = await anyio.to_thread.run_sync(
        lambda: log_in_over_http(pending.authorization_url, login="ivan")
    )
    other = pending.model_copy(update={"nonce": SecretStr("a-nonce-of-another-login")})

    with pytest.raises(InvalidIdToken, match="nonce"):
        await flow.finish(other, callback)


async def test_the_flow_returns_the_verified_claims(peer: Peer) -> None:
    """finish_login says who logged in; finish still returns the token set alone."""
    flow = _flow(peer)
    pending = await flow.start()
    callback = await anyio.to_thread.run_sync(
        lambda: log_in_over_http(pending.authorization_url, login="judy")
    )
    completed = await flow.finish_login(pending, callback)

    assert completed.subject == "judy"
    assert completed.claims is not None
    assert completed.claims["nonce"] == pending.nonce.get_secret_value()
    assert "judy" not in repr(completed)
    assert "eyJ" not in repr(completed)


async def test_records_are_taken_once_by_concurrent_takers(redis: RedisServer) -> None:
    """RedisStorage.take_record: of 16 callers taking one record at once, exactly one gets it."""
    storage = RedisStorage(redis.url)
    await storage.put_record("login:x", b"payload", 60)
    got: list[bytes | None] = []
    gate = anyio.Event()

    async def take() -> None:
        await gate.wait()
        got.append(await storage.take_record("login:x"))

    async with anyio.create_task_group() as tasks:
        for _ in range(16):
            tasks.start_soon(take)
        await anyio.wait_all_tasks_blocked()
        gate.set()

    assert sorted(got, key=lambda v: v is not None) == [None] * 15 + [b"payload"]


async def test_a_pending_login_lives_in_redis_for_its_lifetime(
    peer: Peer, redis: RedisServer
) -> None:
    """The record of a started login expires in Redis with the login (an abandoned login leaves
    nothing behind), under a key that does not show its `state`."""
    import coredis

    login = WebLogin(_flow(peer, lifetime=120.0), RedisStorage(redis.url))
    start = await login.start()
    state = dict(parse_qsl(urlsplit(start.authorization_url).query))["state"]
    client = coredis.Redis.from_url(redis.url)
    async with client:
        keys = [key async for key in client.scan_iter(match="planet_async:record:*")]
        assert len(keys) == 1
        assert state.encode() not in keys[0]
        assert 0 < await client.pttl(keys[0]) <= 120_000


async def test_a_web_login_without_openid_is_refused_when_built(peer: Peer) -> None:
    """Without `openid` no ID token would come, so nobody could be said to have logged in: the
    mistake shows when the WebLogin is built, not after each user's code exchange."""
    flow = AuthorizationCodeFlow(
        AuthorizationServer(peer.issuer),
        ClientSecretBasic(client_id="web-app", client_secret="web-app-secret"),
        redirect_uri=REDIRECT,
    )
    with pytest.raises(ConfigurationError, match="openid"):
        WebLogin(flow, MemoryStorage())
    assert WebLogin(flow, MemoryStorage(), require_id_token=False).require_id_token is False


async def test_memory_records_expire_and_are_taken_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """MemoryStorage's records (one process): taken once, and gone after their lifetime."""
    from planet_async.storage import _memory

    now = [100.0]
    monkeypatch.setattr(_memory.time, "monotonic", lambda: now[0])
    storage = MemoryStorage()
    await storage.put_record("a", b"1", 10)
    await storage.put_record("b", b"2", 10)
    assert await storage.take_record("a") == b"1"
    assert await storage.take_record("a") is None
    now[0] += 10
    assert await storage.take_record("b") is None
