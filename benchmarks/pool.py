"""A web service's users: `SessionPool` with 10,000 users, against one single-session PlanetAuth.

- Hot path: sequential requests through `httpx.AsyncClient` (an `httpx.MockTransport` API), each
  with ``auth=`` given per request: the same single-session `PlanetAuth` every time, or
  ``pool.auth(user)`` for users picked at random among the 10,000 held (all with a valid
  token). Blocks alternate; the ratio is CPU time per request over the single session's in the
  same round (median and interquartile range). Target: <= 1.05x.
- Memory per held user: `tracemalloc` counts what the pool holds after each user's first
  request, with tokens the size of the test peer's (a JWT access token, a refresh token, an ID
  token; distinct per user, read from a storage that makes new objects on each read, as Redis
  does). Then as many users again arrive beyond `max_sessions`: memory must stay flat.
  Target: <= 4 KiB per user.
- Cold user: a user not held in memory; their first `pool.header` reads the session from a real
  redis-server on loopback through `EncryptedStorage` (one GET, one JWE decryption). Target:
  <= 2 ms (median).
- Redis commands per request on the hot path, from ``INFO commandstats`` before and after
  requests for users already held. Target: 0.
"""

from __future__ import annotations

import gc
import json
import random
import re
import secrets
import time
import tracemalloc
from typing import Any

import anyio
import httpx
from pydantic import SecretStr

import planet_async as pa
from planet_async.web import SessionPool
from tests._redis import RedisServer

from ._common import (
    API_URL,
    Context,
    median,
    ms,
    ok,
    percentile,
    quartiles,
    ratio,
    table,
    write_results,
)
from ._login import device_login

TTL = 3600
BLOCK = 250
USERS = 10_000


class _CopyingStorage(pa.MemoryStorage):
    """Memory storage that keeps JSON and decodes it on each load: every read makes new token
    objects, as a read from Redis does (a plain MemoryStorage would share them with the pool)."""

    def __init__(self) -> None:
        super().__init__()
        self._text: dict[str, str] = {}

    async def load(self, session: str) -> pa.TokenSet | None:
        text = self._text.get(session)
        return None if text is None else pa.TokenSet.from_json_dict(json.loads(text))

    async def save(self, session: str, token: pa.TokenSet) -> None:
        self._text[session] = json.dumps(token.to_json_dict())

    async def delete(self, session: str) -> None:
        self._text.pop(session, None)


def _tokens(shape: dict[str, Any], count: int, received: float) -> list[pa.TokenSet]:
    """`count` token sets, each with its own random tokens the size of the peer's."""

    def like(value: str) -> str:
        return secrets.token_urlsafe(len(value))[: len(value)]

    return [
        pa.TokenSet.from_response(
            {
                "access_token": like(shape["access_token"]),
                "refresh_token": like(shape["refresh_token"]),
                "id_token": like(shape["id_token"]),
                "expires_in": TTL,
                "scope": shape.get("scope"),
                "token_type": "Bearer",
            },
            received_at=received,
        )
        for _ in range(count)
    ]


def _pool(ctx: Context, storage: pa.Storage, **kwargs: Any) -> SessionPool:
    client = pa.ClientSecretBasic(client_id="web-app", client_secret=SecretStr("web-app-secret"))
    return SessionPool(pa.AuthorizationServer(ctx.peer.issuer), client, storage, **kwargs)


def _ids(count: int, offset: int = 0) -> list[str]:
    return [f"user-{i}@example.com" for i in range(offset, offset + count)]


# -- hot path ----------------------------------------------------------------------------------


async def _block(client: httpx.AsyncClient, auths: list[Any]) -> float:
    gc.collect()
    cpu = time.thread_time()
    for auth in auths:
        response = await client.get(API_URL, auth=auth)
        assert response.status_code == 200
    return (time.thread_time() - cpu) / len(auths)


async def _block_pool(client: httpx.AsyncClient, pool: SessionPool, users: list[str]) -> float:
    gc.collect()
    cpu = time.thread_time()
    for user in users:
        response = await client.get(API_URL, auth=pool.auth(user))
        assert response.status_code == 200
    return (time.thread_time() - cpu) / len(users)


async def _hot_path(ctx: Context, tokens: list[pa.TokenSet], rounds: int) -> dict[str, Any]:
    storage = pa.MemoryStorage()
    async with _pool(ctx, storage, max_sessions=USERS) as pool:
        users = _ids(USERS)
        for user, token in zip(users, tokens, strict=True):
            await storage.save(pool.key(user), token)
            await pool.header(user)
        single = pa.PlanetAuth(
            pa.TokenManager(
                pa.ClientCredentialsGrant(
                    pa.AuthorizationServer(ctx.peer.issuer),
                    pa.ClientSecretBasic(
                        client_id="web-app", client_secret=SecretStr("web-app-secret")
                    ),
                )
            ),
        )
        assert single.manager is not None
        await single.manager.set_token(tokens[0])
        rng = random.Random(1)
        single_times: list[float] = []
        pool_times: list[float] = []
        async with httpx.AsyncClient(transport=httpx.MockTransport(lambda r: ok())) as client:
            await _block(client, [single] * BLOCK)
            await _block_pool(client, pool, rng.sample(users, BLOCK))
            for round_ in range(rounds):
                picked = rng.sample(users, BLOCK)
                if round_ % 2:
                    pool_times.append(await _block_pool(client, pool, picked))
                    single_times.append(await _block(client, [single] * BLOCK))
                else:
                    single_times.append(await _block(client, [single] * BLOCK))
                    pool_times.append(await _block_pool(client, pool, picked))
        assert len(pool) == USERS
    ratios = [p / s for p, s in zip(pool_times, single_times, strict=True)]
    return {
        "single_us": median(single_times) * 1e6,
        "pool_us": median(pool_times) * 1e6,
        "ratio": median(ratios),
        "ratio_iqr": quartiles(ratios),
        "requests_each": rounds * BLOCK,
    }


# -- memory ------------------------------------------------------------------------------------


async def _memory(ctx: Context, tokens: list[pa.TokenSet]) -> dict[str, Any]:
    storage = _CopyingStorage()
    async with _pool(ctx, storage, max_sessions=USERS) as pool:
        first, second = _ids(USERS), _ids(USERS, offset=USERS)
        for user, token in zip(first + second, tokens + tokens, strict=True):
            await storage.save(pool.key(user), token)
        gc.collect()
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            for user in first:
                await pool.header(user)
            gc.collect()
            full = tracemalloc.get_traced_memory()[0] - base
            for user in second:  # as many again: the first are dropped, least recently used first
                await pool.header(user)
            gc.collect()
            beyond = tracemalloc.get_traced_memory()[0] - base
        finally:
            tracemalloc.stop()
        assert len(pool) == USERS
        assert first[0] not in pool
    token = tokens[0]
    token_bytes = sum(
        len(s.get_secret_value())
        for s in (token.access_token, token.refresh_token, token.id_token)
        if s is not None
    )
    return {
        "per_user_bytes": full / USERS,
        "per_user_bytes_after_2x": beyond / USERS,
        "token_chars_per_user": token_bytes,
    }


# -- cold users and Redis commands -------------------------------------------------------------


def _commands(server: RedisServer) -> int:
    text = server.call("INFO", "commandstats").decode()
    return sum(
        int(m[2]) for m in re.finditer(r"cmdstat_([a-z|]+):calls=(\d+)", text) if m[1] != "info"
    )


async def _redis(ctx: Context, tokens: list[pa.TokenSet], cold: int) -> dict[str, Any]:
    server = RedisServer().start()
    try:
        async with pa.RedisStorage(server.url) as redis_storage:
            storage = pa.EncryptedStorage(redis_storage, {"bench": secrets.token_bytes(32)})
            async with _pool(ctx, storage, max_sessions=USERS) as pool:
                users = _ids(cold)
                for user, token in zip(users, tokens[:cold], strict=True):
                    await storage.save(pool.key(user), token)
                latencies = []
                before = _commands(server)
                for user in users:
                    started = time.perf_counter()
                    await pool.header(user)
                    latencies.append(time.perf_counter() - started)
                cold_commands = _commands(server) - before
                before = _commands(server)
                hot = 0
                async with httpx.AsyncClient(
                    transport=httpx.MockTransport(lambda r: ok())
                ) as client:
                    for _ in range(5):
                        for user in users:
                            await client.get(API_URL, auth=pool.auth(user))
                            hot += 1
                hot_commands = _commands(server) - before
    finally:
        server.stop()
    return {
        "cold_median_s": median(latencies),
        "cold_p99_s": percentile(latencies, 99),
        "cold_users": cold,
        "commands_per_cold_user": cold_commands / cold,
        "hot_requests": hot,
        "commands_per_hot_request": hot_commands / hot,
    }


async def _measure(ctx: Context, rounds: int, cold: int) -> dict[str, Any]:
    shape, received = await anyio.to_thread.run_sync(device_login, ctx.peer.issuer)
    tokens = _tokens(shape, USERS, received)
    return {
        "hot": await _hot_path(ctx, tokens, rounds),
        "memory": await _memory(ctx, tokens),
        "redis": await _redis(ctx, tokens, cold),
    }


def run(ctx: Context) -> None:
    ctx.configure_peer(ttl=TTL, token_delay_ms=0)
    rounds = ctx.scaled(40, 6)
    cold = ctx.scaled(2_000, 300)
    found = anyio.run(_measure, ctx, rounds, cold)
    hot, memory, redis = found["hot"], found["memory"], found["redis"]
    rows = [
        [
            "hot path, CPU us/request",
            f"{hot['single_us']:.1f}",
            f"{hot['pool_us']:.1f} ({ratio(hot['ratio'], 3)}, IQR "
            f"{hot['ratio_iqr'][0]:.3f}-{hot['ratio_iqr'][1]:.3f})",
            "<= 1.05x",
        ],
        [
            f"memory per held user, {USERS:,} held",
            "",
            f"{memory['per_user_bytes'] / 1024:.2f} KiB "
            f"(tokens: {memory['token_chars_per_user']:,} characters)",
            "<= 4 KiB",
        ],
        [
            f"memory per held user after {2 * USERS:,} users (limit {USERS:,})",
            "",
            f"{memory['per_user_bytes_after_2x'] / 1024:.2f} KiB",
            "flat",
        ],
        [
            "cold user: first header (Redis GET + JWE), median / p99",
            "",
            f"{ms(redis['cold_median_s'], 2)} ms / {ms(redis['cold_p99_s'], 2)} ms",
            "<= 2 ms",
        ],
        ["Redis commands per cold user", "", f"{redis['commands_per_cold_user']:.2f}", "1"],
        [
            "Redis commands per request, hot path",
            "",
            f"{redis['commands_per_hot_request']:.3f} ({redis['hot_requests']:,} requests)",
            "0",
        ],
    ]
    ctx.show(
        table(
            f"Web-service pool: {USERS:,} users against one single-session PlanetAuth",
            ["measure", "single session", "SessionPool", "target"],
            rows,
            note=(
                f"Hot path: {hot['requests_each']:,} requests each, in alternating blocks of "
                f"{BLOCK}; ratio = pool / single session, CPU time, median over blocks. "
                f"Cold users: {redis['cold_users']:,}, over EncryptedStorage(RedisStorage) on "
                "loopback."
            ),
        )
    )
    write_results(
        ctx,
        "pool",
        {
            "parameters": {"users": USERS, "block": BLOCK, "rounds": rounds, "cold": cold},
            **found,
        },
    )
