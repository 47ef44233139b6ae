"""SessionPool on a real redis-server: replicas that share users, sign-out, an outage."""

from __future__ import annotations

import collections
import hashlib
import itertools
import json
import re
import secrets
import sys
import time
from collections.abc import Callable
from contextlib import AsyncExitStack, aclosing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from anyio.streams.text import TextReceiveStream

from planet_async import (
    AuthorizationServer,
    EncryptedStorage,
    RedisStorage,
    SessionExpired,
    StorageError,
    TokenSet,
)
from planet_async._oauth import revoke_token
from planet_async.web import SessionPool
from tests._fleet import jwt_claims
from tests._helpers import API, FakeClock, VerifyingApi
from tests._redis import RedisServer
from tests._web_login import web_client, web_login


def token_requests(peer: Any) -> int:
    refused = sum(n for k, n in peer.errors().items() if k.startswith("refresh_token"))
    return int(peer.grants("refresh_token")) + refused


pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("redis_connections_fail")]

KEY = secrets.token_bytes(32)
ROOT = Path(__file__).resolve().parents[1]


def replica(peer: Any, redis_url: str, **kwargs: Any) -> SessionPool:
    """A pool as one replica of a web service has it: its own Redis client, encrypted."""
    storage = EncryptedStorage(
        RedisStorage(redis_url, timeout=kwargs.pop("timeout", 5.0)), {"k": KEY}
    )
    return SessionPool(AuthorizationServer(peer.issuer), web_client(), storage, **kwargs)


def commands(server: RedisServer) -> dict[str, int]:
    """Calls per Redis command so far (INFO commandstats), without INFO itself."""
    text = server.call("INFO", "commandstats").decode()
    found = {m[1]: int(m[2]) for m in re.finditer(r"cmdstat_([a-z|]+):calls=(\d+)", text)}
    found.pop("info", None)
    return found


async def test_replicas_renew_each_user_once(peer: Any, redis: RedisServer) -> None:
    """Two replicas, 4 users with expired tokens, 10 concurrent requests per user on each
    replica: exactly 4 refresh requests (one per user, under the per-user lease), no
    invalid_grant, and every request carries its own user's token."""
    clock = FakeClock(time.time())
    users = [f"u{i}" for i in range(4)]
    api = VerifyingApi(peer.issuer)
    wrong: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sub = jwt_claims(request.headers["authorization"].removeprefix("Bearer "))["sub"]
        if sub != request.url.params["as"]:
            wrong.append(sub)
        return api.handler(request)

    async with (
        replica(peer, redis.url, clock=clock) as one,
        replica(peer, redis.url, clock=clock) as two,
    ):
        for user in users:
            await one.sign_in(user, await web_login(peer.issuer, user))
            await two.header(user)  # both replicas hold every user
        clock.advance(3600)
        peer.reset()
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:

            async def call(pool: SessionPool, user: str) -> None:
                response = await client.get(f"{API}/x?as={user}", auth=pool.auth(user))
                assert response.status_code == 200

            async with anyio.create_task_group() as tasks:
                for _ in range(10):
                    for user in users:
                        tasks.start_soon(call, one, user)
                        tasks.start_soon(call, two, user)
    assert peer.grants("refresh_token") == len(users)
    assert peer.errors() == {}
    assert wrong == []
    assert api.accepted == 80


async def test_the_hot_path_sends_no_redis_command(peer: Any, redis: RedisServer) -> None:
    """Requests for users whose tokens are held in memory send no command to Redis."""
    async with replica(peer, redis.url) as pool:
        for user in ("a", "b", "c"):
            await pool.sign_in(user, await web_login(peer.issuer, user))
        before = commands(redis)
        async with httpx.AsyncClient(
            transport=httpx.MockTransport(lambda r: httpx.Response(200))
        ) as client:
            for _ in range(100):
                for user in ("a", "b", "c"):
                    await client.get(f"{API}/x", auth=pool.auth(user))
                    await pool.header(user)
        assert commands(redis) == before


async def test_sign_out_reaches_the_other_replica(peer: Any, redis: RedisServer) -> None:
    """Sign-out on one replica: the other, told through Redis Pub/Sub, drops the user (no
    timer involved), and its next request for them raises SessionExpired without a token request."""
    dropped: list[str] = []
    seen = anyio.Event()

    def on_sign_out(key: str) -> None:
        dropped.append(key)
        seen.set()

    async with (
        replica(peer, redis.url) as one,
        replica(peer, redis.url, on_sign_out=on_sign_out) as two,
    ):
        await one.sign_in("lee", await web_login(peer.issuer, "lee"))
        await two.sign_in("max", await web_login(peer.issuer, "max"))
        await two.header("lee")
        assert "lee" in two
        peer.reset()
        assert await one.sign_out("lee") is True
        assert redis.call("EXISTS", f"planet_async:{{{one.key('lee')}}}:token") == 0
        with anyio.fail_after(5):  # a guard against a hang; the drop comes in milliseconds
            await seen.wait()
        assert dropped == [two.key("lee")]
        assert "lee" not in two
        assert "max" in two
        with pytest.raises(SessionExpired):
            await two.header("lee")
        assert (await two.header("max"))["Authorization"].startswith("Bearer ")
        assert peer.grants("refresh_token") == 0


async def test_a_redis_outage_serves_held_tokens_and_renews_nobody(
    peer: Any, start_redis: Callable[..., RedisServer]
) -> None:
    """Redis down: users held with a valid token are served; a user whose token expired gets a
    StorageError with retry_after (a 503 for the app), and no refresh token is spent; once Redis
    is back, that user is renewed once."""
    server = start_redis()
    clock = FakeClock(time.time())
    async with replica(peer, server.url, clock=clock, timeout=0.5) as pool:
        await pool.sign_in("ned", await web_login(peer.issuer, "ned"))
        await pool.sign_in("ola", await web_login(peer.issuer, "ola"))
        clock.advance(20)
        await pool.header("ola")
        server.stop()
        peer.reset()
        clock.advance(30)  # ola (renewed at 20 s... not: still the login token) is valid
        assert (await pool.header("ola"))["Authorization"].startswith("Bearer ")
        clock.advance(3600)
        with pytest.raises(StorageError) as caught:
            await pool.header("ned")
        retry_after = caught.value.retry_after
        assert retry_after is not None
        assert retry_after > 0
        del caught  # its traceback holds coredis's failed connection (see redis_connections_fail)
        with pytest.raises(StorageError):
            await pool.header("someone-new")
        assert peer.grants("refresh_token") == 0
        server.start()
        clock.advance(retry_after + 1)
        header = (await pool.header("ned"))["Authorization"]
        assert jwt_claims(header.removeprefix("Bearer "))["sub"] == "ned"
        assert peer.grants("refresh_token") == 1
        assert peer.errors() == {}


async def test_sign_out_reaches_a_replica_in_another_process(
    peer: Any, redis: RedisServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """A replica in another process holds two users; one signs out here: that process drops
    them (told by Redis, no polling), then its request for them raises SessionExpired while the
    other user is still served. The delay is printed (the issue asks for under one second)."""
    users = ["pia", "quinn"]
    async with replica(peer, redis.url) as here:
        for user in users:
            await here.sign_in(user, await web_login(peer.issuer, user))
        command = [sys.executable, "-m", "tests._pool_replica", peer.issuer, redis.url]
        async with await anyio.open_process([*command, KEY.hex(), *users], cwd=ROOT) as process:
            assert process.stdout is not None
            async with aclosing(_lines(process.stdout)) as lines:
                with anyio.fail_after(30):  # a guard against a hang, not a measurement
                    assert await anext(lines) == "ready"
                    signed_out = time.time()
                    assert await here.sign_out("pia") is True
                    report = json.loads(await anext(lines))
            assert await process.wait() == 0
    assert report["dropped"] == here.key("pia")
    assert report["outcome"] == {"pia": "SessionExpired", "quinn": "served"}
    with capsys.disabled():
        print(f"\nsign-out seen by the other process {report['at'] - signed_out:.3f} s later")


async def _lines(stream: Any) -> Any:
    buffered = ""
    async for chunk in TextReceiveStream(stream):
        buffered += chunk
        while "\n" in buffered:
            line, buffered = buffered.split("\n", 1)
            yield line


async def test_a_refused_session_sends_every_replica_to_the_login(
    peer: Any, redis: RedisServer
) -> None:
    """The server refuses a user's refresh token on one replica: the dead session is deleted,
    so the other replica tells the user to log in too (SessionExpired, not a 503 from a renewal
    mark left behind), and neither sends the refused refresh token again."""
    clock = FakeClock(time.time())
    token = await web_login(peer.issuer, "rae")
    assert token.refresh_token is not None
    async with (
        replica(peer, redis.url, clock=clock) as one,
        replica(peer, redis.url, clock=clock) as two,
    ):
        await one.sign_in("rae", token)
        await revoke_token(
            AuthorizationServer(peer.issuer),
            web_client(),
            token.refresh_token.get_secret_value(),
            hint="refresh_token",
            clock=time.time,
        )
        clock.advance(3600)
        peer.reset()
        with pytest.raises(SessionExpired):
            await one.header("rae")
        assert redis.call("EXISTS", f"planet_async:{{{one.key('rae')}}}:token") == 0
        for pool in (two, one, two):
            with pytest.raises(SessionExpired):
                await pool.header("rae")
        assert token_requests(peer) == 1


async def test_deletions_are_published_and_a_user_without_the_channel_still_deletes(
    start_redis: Callable[..., RedisServer],
) -> None:
    """`delete` publishes the session on the deletions channel to watchers; an ACL user that
    may not publish there (Redis 7 grants no channel by default) still deletes."""
    server = start_redis("--requirepass", "default-pw")
    for user, channels in (("watcher", "&*"), ("plain", "resetchannels")):
        reply = server.call(
            "ACL",
            "SETUSER",
            user,
            "on",
            f">{user}-pw",
            "~*",
            channels,
            "+@all",
            auth=("default", "default-pw"),
        )
        assert reply == "OK"
    url = f"redis://{{}}:{{}}-pw@127.0.0.1:{server.port}/0"
    watching = RedisStorage(url.format("watcher", "watcher"))
    plain = RedisStorage(url.format("plain", "plain"))
    token = TokenSet(access_token="at", issued_at=0)
    watch = watching.watch_deletions()
    assert watch is not None
    async with watch as deletions:
        await watching.save("one", token)
        await watching.delete("one")
        with anyio.fail_after(10):  # a guard against a hang
            assert await anext(deletions) == "one"
        await plain.save("two", token)
        await plain.delete("two")
        assert await plain.load("two") is None


@dataclass(frozen=True)
class Scale:
    """How big a fleet run is: users logged in, how many of them are requested, for how long,
    by how many tasks in each replica, and how many logins run at once."""

    users: int
    active: int
    seconds: float
    concurrency: int
    logins_at_once: int = 12
    every_user_covered: bool = True  # each replica requests each active user often enough


LIFETIME = 8  # seconds an access token lives at the peer in the fleet runs
# How soon after one refresh grant the next one for the same user may come. A manager renews
# once a token's soft threshold has passed: `refresh_ahead` (0.75) of the lifetime less up to
# `jitter` (0.1) of it, so more than 0.65 of it (the pool's managers keep TokenManager's
# defaults), counted from the token's `issued_at`. The replica that renewed has `issued_at` as
# the moment the response reached it, after the provider granted it; the other replicas read
# the token from the store, whose format (the `planet` CLI's `_iat`) keeps whole seconds, so
# theirs can be up to 1 s earlier. So a user's next grant comes more than 0.65 * 8 - 1 = 4.2 s
# after the one before (4,200 ms or more on the provider's millisecond clock).
SHORTEST_PERIOD = 0.65 * LIFETIME - 1


@pytest.mark.fleet
@pytest.mark.parametrize(
    "scale",
    [
        pytest.param(Scale(users=24, active=16, seconds=12, concurrency=4), id="24-users"),
        pytest.param(
            Scale(users=1000, active=800, seconds=60, concurrency=64, every_user_covered=False),
            id="1000-users",
            marks=[pytest.mark.slow, pytest.mark.serial, pytest.mark.timeout(600)],
        ),
    ],
)
async def test_three_replica_processes_renew_each_active_user_once_per_period(
    peer: Any,
    redis: RedisServer,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    scale: Scale,
) -> None:
    """3 replica processes on one Redis, `scale.users` users logged in through the provider
    (without a browser, a bounded number at once), tokens living 8 s, `scale.seconds` of
    requests for the first `scale.active` users in random order (issue 19 asks for 1,000 users
    and 60 s: the `1000-users` case, marked slow):

    - every request carries its own user's valid token (0 errors, 0 rejected, 0 wrong-user in
      every replica) and the provider refused nothing (0 invalid_grant: with rotating refresh
      tokens, two replicas renewing one user for one period would spend a refresh token twice);
    - at most one renewal per user per refresh period, counted at the provider: each active
      user's refresh grants came at least `SHORTEST_PERIOD` (4.2 s, see there) apart, and so no
      more than 1 + (run length // 4.2) of them, the run length being from `go` to the last
      replica's exit (no renewal happens outside it);
    - every grant's token reached a replica, and none was wasted, or only for want of requests:
      each token a refresh grant gave was used by some replica or is the one stored, unless the
      replica that obtained it got no request for that user in the 4.2 s after (it puts the
      token in use at once and keeps it until its own next renewal, which only a request of its
      own past the soft threshold, 5.2 s or more later, starts, and that request still carries
      the token). A user left unrequested that long can have a token renewed ahead of expiry
      and never used before another replica renews again: refresh-ahead's price, not a second
      renewal in one period (the spacing at the provider rules that out);
    - with 24 users, each replica requests every active user at least every 4.2 s after their
      first renewal (`every_user_covered`), so none is wasted at all and each user gets exactly
      one renewal per refresh period: at most one (the spacing) and at least one (every request
      got a valid token, and every token was used). With 1,000 users (800 active) the replicas
      cannot do that on a 2-core machine: each user's renewal and the other 2 replicas' reads of
      it cost about 10 ms of CPU per refresh period, the 3 replicas then keep about 1.2 cores
      busy, and each comes back to a given user only every 8 s or so; the run prints how many
      tokens went unused;
    - the idle users cost no token request (the provider counted none for them) and their
      stored sessions are byte-for-byte untouched.
    """
    peer.set_access_token_ttl(LIFETIME)
    users = [f"fleet-{i}" for i in range(scale.users)]
    active, idle = users[: scale.active], users[scale.active :]
    storage = EncryptedStorage(RedisStorage(redis.url), {"k": KEY})
    initial: dict[str, str] = {}
    limiter = anyio.CapacityLimiter(scale.logins_at_once)
    started = time.monotonic()
    server = AuthorizationServer(peer.issuer)
    async with SessionPool(server, web_client(), storage) as here:

        async def log_in(user: str) -> None:
            async with limiter:
                token = await web_login(peer.issuer, user, server)
                await here.sign_in(user, token)
            initial[user] = _digest(token.access_token.get_secret_value())

        async with anyio.create_task_group() as logins:
            for user in users:
                logins.start_soon(log_in, user)
        stored_key = {user: f"planet_async:{{{here.key(user)}}}:token" for user in users}
    login_seconds = time.monotonic() - started
    with capsys.disabled():
        print(f"\n{scale.users} users logged in in {login_seconds:.1f} s", end="")
    idle_before = {user: redis.call("GET", stored_key[user]) for user in idle}
    peer.reset()

    command = [sys.executable, "-m", "tests._pool_fleet_worker", peer.issuer, redis.url]
    command += [KEY.hex(), str(scale.seconds), str(scale.concurrency), *active]
    reports = []
    async with AsyncExitStack() as stack:
        # What a replica writes to stderr goes to a file: an undrained pipe would block it.
        logs = [stack.enter_context((tmp_path / f"replica-{i}.log").open("wb")) for i in range(3)]
        processes = [
            await stack.enter_async_context(await anyio.open_process(command, cwd=ROOT, stderr=log))
            for log in logs
        ]
        readers = [await stack.enter_async_context(aclosing(_lines(p.stdout))) for p in processes]
        with anyio.fail_after(scale.seconds + 80):  # a guard against a hang, not a measurement
            for lines in readers:
                assert await anext(lines) == "ready"
            go = time.time()
            for process in processes:
                assert process.stdin is not None
                await process.stdin.send(b"go\n")
            for lines in readers:
                reports.append(json.loads(await anext(lines)))
            for process in processes:
                assert await process.wait() == 0
            end = time.time()

    seen: dict[str, dict[str, int]] = {user: {} for user in active}
    for report in reports:
        for user, tokens in report["tokens"].items():
            seen[user].update(tokens)
    for user in active:
        stored = await storage.load(here.key(user))
        assert stored is not None
        token = stored.access_token.get_secret_value()
        seen[user][_digest(token)] = int(jwt_claims(token)["iat"])
    # Each token a refresh grant gave, as the replica that asked for it noted it.
    obtained: dict[str, tuple[int, str, float]] = {}  # digest -> (replica, user, arrival)
    for replica, report in enumerate(reports):
        for user, tokens in report["obtained"].items():
            obtained |= {digest: (replica, user, at) for digest, at in tokens}
    used = {digest for user in active for digest in seen[user]}  # or stored
    unused = {digest: noted for digest, noted in obtained.items() if digest not in used}
    granted_ms = peer.refreshed()  # user -> when the provider granted each renewal
    granted = {sub: [ms / 1000 for ms in times] for sub, times in granted_ms.items()}
    # The longest stretch without a request for each active user in each replica, from their
    # first renewal (before it, the token from the login had expired or was about to) to the end
    # of the requests.
    unrequested: dict[str, float] = {}
    for user in active:
        first = granted[user][0] if granted.get(user) else go
        for report in reports:
            times = (t for t in report["requested"][user] if t > first)
            marks = sorted([first, *times, go + scale.seconds])
            gap = max(b - a for a, b in itertools.pairwise(marks))
            unrequested[user] = max(gap, unrequested.get(user, 0.0))
    covered = [user for user in active if unrequested[user] < SHORTEST_PERIOD]
    most = 1 + int((end - go) // SHORTEST_PERIOD)
    grant_seconds = sorted(s for report in reports for s in report["grants"])
    spread = dict(sorted(collections.Counter(len(t) for t in granted.values()).items()))
    with capsys.disabled():
        print(
            f"\n{scale.users} users ({scale.active} active), 3 replicas, {scale.seconds:g} s:"
            f" login {login_seconds:.1f} s ({scale.logins_at_once} at once), run {end - go:.1f} s,"
            f" requests {[report['requests'] for report in reports]}; longest stretch without"
            f" a request for a user in a replica {max(unrequested.values()):.2f} s, under"
            f" {SHORTEST_PERIOD:g} s for {len(covered)} users;"
            f" {peer.grants('refresh_token')} refresh grants"
            f" ({peer.grants('refresh_token') / (end - go):.0f}/s), {len(unused)} of their"
            f" tokens unused; refresh grants per user {spread} (at most {most}); time per grant:"
            f" median {_quantile(grant_seconds, 0.5):.3f} s,"
            f" p99 {_quantile(grant_seconds, 0.99):.3f} s, max {grant_seconds[-1]:.3f} s"
        )

    assert peer.errors() == {}
    for i, report in enumerate(reports):
        log = (tmp_path / f"replica-{i}.log").read_text()[-4000:]
        assert (report["errors"], report["rejected"], report["wrong_user"]) == (0, 0, 0), log
    # Counted at the provider: idle users made no token request, and no active user was renewed
    # twice in one refresh period (each grant at least the shortest period after the one before).
    assert sum(map(len, granted.values())) == peer.grants("refresh_token")
    assert set(granted) <= set(active)
    for user in active:
        times = granted_ms.get(user, [])
        assert all(b - a >= round(SHORTEST_PERIOD * 1000) for a, b in itertools.pairwise(times)), (
            user,
            [b - a for a, b in itertools.pairwise(times)],
        )
        assert 1 <= len(times) <= most, (user, times)
    assert {user: redis.call("GET", stored_key[user]) for user in idle} == idle_before
    # Every grant's token reached a replica, and every renewed token used came from a grant.
    assert len(obtained) == peer.grants("refresh_token")
    assert used - set(initial.values()) <= set(obtained)
    # None wasted, or only for want of requests: a token that no request carried was obtained
    # by a replica that got no request for that user in the 4.2 s after it.
    for replica, user, at in unused.values():
        asked = [t for t in reports[replica]["requested"][user] if at < t < at + SHORTEST_PERIOD]
        assert asked == [], (replica, user, at)
    if scale.every_user_covered:
        assert {u: round(unrequested[u], 2) for u in active if u not in covered} == {}
        assert unused == {}


def _quantile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def _until_dropped(pool: SessionPool, *users: str) -> None:
    """Wait (at most 10 s) until `pool`'s deletions watch came back after a restart: it then
    drops the users it held, to read them again."""
    deadline = time.monotonic() + 10
    while any(u in pool for u in users) and time.monotonic() < deadline:  # noqa: ASYNC110
        await anyio.sleep(0.05)
    assert not any(u in pool for u in users)


async def test_a_redis_restart_without_data_keeps_the_users_a_replica_held(
    peer: Any, start_redis: Callable[..., RedisServer]
) -> None:
    """Redis restarts without persistence while a replica holds two users. Its watch breaks
    and comes back, and it drops them (a sign-out may have been missed), keeping what each
    held. On each user's next request the storage has nothing: the replica asks the server
    whether the held refresh token is still active (1 introspection each, nothing spent),
    and stores the session again: as it was while its access token is fresh (lee), renewed
    from it once expiring (max). Another replica then reads them from Redis. Before, both
    users were sent to log in again."""
    server = start_redis()  # keeps nothing over a restart
    clock = FakeClock(time.time())
    async with (
        replica(peer, server.url, clock=clock, timeout=0.5) as one,
        replica(peer, server.url, clock=clock, timeout=0.5) as two,
    ):
        await one.sign_in("lee", await web_login(peer.issuer, "lee"))
        lee = (await one.header("lee"))["Authorization"]
        server.stop()
        server.start()
        await _until_dropped(one, "lee")
        await one.sign_in("max", await web_login(peer.issuer, "max"))  # after the restart
        server.stop()
        server.start()
        await _until_dropped(one, "lee", "max")
        assert server.call("KEYS", "*") == []
        peer.reset()
        with anyio.fail_after(10):
            assert (await one.header("lee"))["Authorization"] == lee
            assert (peer.introspections(), peer.grants("refresh_token")) == (1, 0)
            assert (await two.header("lee"))["Authorization"] == lee  # read from Redis
            clock.advance(3600)  # max's access token has expired
            renewed = (await one.header("max"))["Authorization"]
            assert jwt_claims(renewed.removeprefix("Bearer "))["sub"] == "max"
            assert (peer.introspections(), peer.grants("refresh_token")) == (2, 1)
            assert (await two.header("max"))["Authorization"] == renewed
        assert peer.errors() == {}


async def test_a_user_revoked_while_the_watch_was_down_is_sent_to_log_in(
    peer: Any, start_redis: Callable[..., RedisServer]
) -> None:
    """A sign-out the watch may have missed: the user's refresh token was revoked at the server
    (as `sign_out` does) and Redis came back empty. The server reports the held refresh token
    inactive, so the replica does not store it again: `SessionExpired`, nothing stored and
    nothing spent."""
    server = start_redis()
    async with replica(peer, server.url, timeout=0.5) as pool:
        token = await web_login(peer.issuer, "lee")
        await pool.sign_in("lee", token)
        await pool.header("lee")
        assert token.refresh_token is not None
        assert await revoke_token(
            AuthorizationServer(peer.issuer),
            web_client(),
            token.refresh_token.get_secret_value(),
            hint="refresh_token",
            clock=time.time,
        )
        server.stop()
        server.start()
        await _until_dropped(pool, "lee")
        peer.reset()
        with anyio.fail_after(10), pytest.raises(SessionExpired, match="inactive at the server"):
            await pool.header("lee")
        assert server.call("KEYS", "*") == []
        assert (peer.introspections(), peer.grants("refresh_token")) == (1, 0)
        assert peer.errors() == {}


async def test_a_sign_out_after_the_restart_reaches_the_replica_holding_the_lost_session(
    peer: Any, start_redis: Callable[..., RedisServer]
) -> None:
    """Redis came back empty; replica one still holds lee's tokens from before. Lee signs out
    on replica two, which holds nothing of lee and finds nothing stored: it deletes all the
    same, so replica one hears of it and forgets what it held. Lee's next request there is
    `SessionExpired`, with no request to the server: the session is not restored."""
    server = start_redis()
    async with (
        replica(peer, server.url, timeout=0.5) as one,
        replica(peer, server.url, timeout=0.5) as two,
    ):
        await one.sign_in("lee", await web_login(peer.issuer, "lee"))
        await one.header("lee")
        server.stop()
        server.start()
        await _until_dropped(one, "lee")
        peer.reset()
        assert await two.sign_out("lee") is False  # nothing to revoke from here
        with anyio.fail_after(10):
            while one._orphans:  # noqa: ASYNC110 - the deletion arrives through Redis
                await anyio.sleep(0.05)
            with pytest.raises(SessionExpired, match="is not stored"):
                await one.header("lee")
        assert server.call("KEYS", "*") == []
        assert (peer.introspections(), peer.grants("refresh_token")) == (0, 0)
