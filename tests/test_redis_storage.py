"""RedisStorage against a real redis-server: the basics a fleet relies on."""

from __future__ import annotations

import pytest

from planet_async import RedisStorage, TokenSet
from tests._redis import RedisServer

pytestmark = pytest.mark.anyio


async def test_save_load_delete_round_trip(redis: RedisServer) -> None:
    """A session saved is loaded back as it was, as the JSON of the planet CLI's token.json."""
    storage = RedisStorage(redis.url)
    token = TokenSet(access_token="at", issued_at=100, expires_at=200, refresh_token="rt")
    assert await storage.load("s") is None
    async with storage.lock("s"):
        await storage.save("s", token)
    loaded = await storage.load("s")
    assert loaded is not None
    assert loaded.to_json_dict() == token.to_json_dict()
    await storage.delete("s")
    assert await storage.load("s") is None


async def test_entered_storage_keeps_one_connection_for_every_call(redis: RedisServer) -> None:
    """`async with RedisStorage(...)` serves locks, loads and saves over one connection (Redis
    counts one client while it is open) and closes it at the end."""
    token = TokenSet(access_token="at", issued_at=100, expires_at=200)
    async with RedisStorage(redis.url) as storage:
        for _ in range(3):
            async with storage.lock("s"):
                assert await storage.load("s") in (None, token)
                await storage.save("s", token)
        info = await storage._call(lambda c: c.client_list(), "list clients", "s")
        assert len(info) == 1
    loaded = await RedisStorage(redis.url).load("s")
    assert loaded is not None
    assert loaded.access_token.get_secret_value() == "at"
