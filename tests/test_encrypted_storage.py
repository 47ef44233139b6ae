"""EncryptedStorage: sessions at rest as JWEs under a key ring, bound to their session."""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from planet_async import (
    AuthorizationServer,
    ConfigurationError,
    EncryptedStorage,
    FileStorage,
    MemoryStorage,
    RedisStorage,
    StorageError,
    TokenSet,
)
from planet_async.storage import Generation
from planet_async.storage._encrypted import _kid_of
from planet_async.web import SessionPool
from tests._fleet import jwt_claims
from tests._helpers import FakeClock
from tests._web_login import web_client, web_login

pytestmark = pytest.mark.anyio

K1, K2 = secrets.token_bytes(32), secrets.token_bytes(32)


def token(
    name: str = "at", refresh: str | None = "rt-secret", id_token: str | None = "idt"
) -> TokenSet:
    return TokenSet.from_response(
        {
            "access_token": f"{name}-access",
            "expires_in": 60,
            "refresh_token": refresh,
            "id_token": id_token,
            "scope": "openid",
            "refresh_expires_in": 3600,
        },
        received_at=1_800_000_000.0,
    )


def secrets_of(tokens: list[TokenSet]) -> set[str]:
    found = set()
    for t in tokens:
        found.add(t.access_token.get_secret_value())
        for secret in (t.refresh_token, t.id_token):
            if secret is not None:
                found.add(secret.get_secret_value())
    return found


async def test_a_session_round_trips_and_is_stored_encrypted() -> None:
    """What goes in comes out; what the inner storage holds names the key and no secret."""
    inner = MemoryStorage()
    storage = EncryptedStorage(inner, {"k1": K1})
    original = token()
    await storage.save("s", original)
    assert await storage.load("s") == original
    stored = await inner.load("s")
    assert stored is not None
    text = stored.model_dump_json() + str(stored.to_json_dict())
    assert not any(secret in text for secret in secrets_of([original]))
    assert stored.extra == {"planet_async_encrypted": "dir+A256GCM"}
    assert stored.expires_at == original.expires_at  # times stay readable
    assert await storage.load("absent") is None


async def test_a_value_copied_under_another_session_is_refused() -> None:
    """A ciphertext copied from one session's key to another's does not load."""
    inner = MemoryStorage()
    storage = EncryptedStorage(inner, {"k1": K1})
    await storage.save("alice", token("alice"))
    copied = await inner.load("alice")
    assert copied is not None
    await inner.save("mallory", copied)
    with pytest.raises(StorageError, match="belongs to another session"):
        await storage.load("mallory")


async def test_the_generation_is_readable_outside_and_checked_inside() -> None:
    """The stamp is copied in clear beside the JWE, where the inner storage compares it in its
    conditional save; a clear stamp that is not the sealed one (altered) does not load."""
    inner = MemoryStorage()
    storage = EncryptedStorage(inner, {"k1": K1})
    stamp = Generation("L", 4, "t")
    assert await storage.save_if_newer("s", stamp.on(token()))
    stored = await inner.load("s")
    assert stored is not None
    assert Generation.of(stored) == stamp
    assert not await storage.save_if_newer("s", Generation("L", 3, "u").on(token("older")))
    loaded = await storage.load("s")
    assert loaded is not None
    assert Generation.of(loaded) == stamp
    forged = Generation("L", 99, "t").on(stored)  # so that no later renewal could replace it
    await inner.save("s", forged)
    with pytest.raises(StorageError, match="generation stored in clear"):
        await storage.load("s")


async def test_a_missing_or_wrong_key_is_an_error_naming_the_key_id() -> None:
    """A key id not in the ring, or a different key under the same id, is a StorageError that
    names the key id: never an absent session (a silent logout)."""
    inner = MemoryStorage()
    await EncryptedStorage(inner, {"old-key": K1}).save("s", token())
    with pytest.raises(StorageError, match=r"'old-key'.*not in the key ring") as missing:
        await EncryptedStorage(inner, {"new-key": K2}).load("s")
    with pytest.raises(StorageError, match="does not decrypt with key id 'old-key'") as wrong:
        await EncryptedStorage(inner, {"old-key": K2}).load("s")
    for caught in (missing, wrong):
        assert K1.hex() not in str(caught.value)
        assert "rt-secret" not in str(caught.value)


async def test_the_key_ring_decrypts_with_every_key_and_encrypts_with_the_first() -> None:
    """Rotation: a new first key encrypts new saves, the old one still decrypts old values."""
    inner = MemoryStorage()
    await EncryptedStorage(inner, {"k1": K1}).save("old", token("old"))
    rotated = EncryptedStorage(inner, [("k2", K2), ("k1", K1)])
    assert rotated.key_ids == ["k2", "k1"]
    assert await rotated.load("old") == token("old")
    await rotated.save("new", token("new"))
    assert await EncryptedStorage(inner, {"k2": K2}).load("new") == token("new")


async def test_plaintext_sessions_are_refused_unless_allowed() -> None:
    """A session stored before encryption was turned on: an error, or read with
    allow_plaintext=True and encrypted at its next save."""
    inner = MemoryStorage()
    await inner.save("s", token())
    with pytest.raises(StorageError, match="unencrypted"):
        await EncryptedStorage(inner, {"k1": K1}).load("s")
    lenient = EncryptedStorage(inner, {"k1": K1}, allow_plaintext=True)
    assert await lenient.load("s") == token()
    await lenient.save("s", token())
    stored = await inner.load("s")
    assert stored is not None
    assert "planet_async_encrypted" in stored.extra


def test_bad_key_rings_are_refused() -> None:
    """No key, a short key, an empty or repeated key id: ConfigurationError."""
    for keys in ({}, {"k": b"short"}, {"": K1}, [("k", K1), ("k", K2)]):
        with pytest.raises(ConfigurationError):
            EncryptedStorage(MemoryStorage(), keys)  # type: ignore[arg-type]


async def test_capabilities_are_forwarded(redis: Any) -> None:
    """The wrapper carries the inner storage's capabilities (a Redis lease can lapse)."""
    over_redis = EncryptedStorage(RedisStorage(redis.url), {"k1": K1})
    assert over_redis.lock_can_lapse is True
    assert over_redis.watch_deletions() is not None
    over_files = EncryptedStorage(FileStorage("/nonexistent"), {"k1": K1})
    assert over_files.lock_can_lapse is False
    assert over_files.watch_deletions() is None


def _read_all(root: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file())


async def test_files_hold_no_token(tmp_path: Path) -> None:
    """A copy of the session files holds no access, refresh or ID token."""
    storage = EncryptedStorage(FileStorage(tmp_path), {"k1": K1})
    saved = [token(f"user{i}", f"rt-{i}", f"idt-{i}") for i in range(3)]
    for i, t in enumerate(saved):
        await storage.save(f"user{i}", t)
    dump = await anyio.to_thread.run_sync(_read_all, tmp_path)
    assert dump  # the files are there
    assert not any(secret.encode() in dump for secret in secrets_of(saved))
    assert [await storage.load(f"user{i}") for i in range(3)] == saved


async def test_a_redis_dump_holds_no_token_issued(peer: Any, redis: Any) -> None:
    """Users logged in through the provider, renewed, with the key rotated mid-session: a dump
    of every Redis key holds none of the access, refresh or ID tokens ever issued, and every
    user's session survives the rotation without a new login."""
    clock = FakeClock(time.time())
    issued: list[TokenSet] = []
    users = ["ann", "ben", "cat"]
    async with RedisStorage(redis.url) as redis_storage:
        storage = EncryptedStorage(redis_storage, {"k1": K1})
        async with SessionPool(
            AuthorizationServer(peer.issuer), web_client(), storage, clock=clock
        ) as pool:
            for user in users:
                login = await web_login(peer.issuer, user)
                issued.append(login)
                await pool.sign_in(user, login)
            clock.advance(3600)
            for user in users[:2]:
                await pool.header(user)
                issued.append(await storage.load(pool.key(user)))  # type: ignore[arg-type]

        # The key is rotated: k2 first on the replicas, k1 still decrypts.
        rotated = EncryptedStorage(redis_storage, [("k2", K2), ("k1", K1)])
        async with SessionPool(
            AuthorizationServer(peer.issuer), web_client(), rotated, clock=clock
        ) as pool:
            clock.advance(3600)
            for user in users:
                header = (await pool.header(user))["Authorization"]
                assert jwt_claims(header.removeprefix("Bearer "))["sub"] == user
                stored = await rotated.load(pool.key(user))
                assert stored is not None
                issued.append(stored)
            keys = redis.call("KEYS", "*")
            assert len(keys) == len(users)
            kids = {_kid_of(json.loads(redis.call("GET", key))["access_token"]) for key in keys}
            assert kids == {"k2"}  # every session renewed since is under the new key
            # Once every session was re-encrypted, k1 can go.
            only_new = EncryptedStorage(redis_storage, {"k2": K2})
            for user in users:
                assert await only_new.load(pool.key(user)) is not None

    assert len(issued) == 8
    dump = b"".join(redis.call("GET", key) or b"" for key in redis.call("KEYS", "*"))
    assert not any(secret.encode() in dump for secret in secrets_of(issued))
    assert all(t.refresh_token is not None and t.id_token is not None for t in issued[:3])
