"""Fleets configured without code: `PLANET_ASYNC_STORAGE` and `--storage` put token sets in
Redis (profiles still come from the planet CLI's files), and `auth move-to` carries a session
made on a laptop into the fleet's store."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest

from planet_async import (
    ConfigurationError,
    FileStorage,
    MemoryStorage,
    PlanetAuth,
    RedisStorage,
    TokenSet,
)
from planet_async.profiles import AuthClientConfig, PlanetHome
from planet_async.storage import storage_from_environment, storage_from_url
from tests._helpers import VerifyingApi
from tests._peer import Peer
from tests._redis import RedisServer
from tests.test_cli import CLIENT_ID, CLIENT_SECRET, Cli

SESSION = "fleet"


@pytest.fixture
def cli(clean_env: Path) -> Cli:
    return Cli(clean_env)


def _redis_token(redis: RedisServer, session: str) -> TokenSet | None:
    return anyio.run(RedisStorage(redis.url).load, session)


def test_storage_urls() -> None:
    """Redis URLs (plain, TLS, unix) and file URLs name storages; anything else is refused,
    without echoing a password."""
    assert isinstance(storage_from_url("redis://127.0.0.1:6379/0"), RedisStorage)
    assert isinstance(storage_from_url("rediss://cache.example:6380/1"), RedisStorage)
    file = storage_from_url("file:///var/lib/planet%20tokens")
    assert isinstance(file, FileStorage)
    assert file.root == Path("/var/lib/planet tokens")
    with pytest.raises(ConfigurationError, match="not a storage URL") as info:
        storage_from_url("http://user:hunter2@example.com/")
    assert "hunter2" not in str(info.value)
    assert storage_from_environment({}) is None
    with pytest.raises(ConfigurationError, match="PLANET_ASYNC_STORAGE"):
        storage_from_environment({"PLANET_ASYNC_STORAGE": "s3://bucket"})


def test_environment_puts_every_constructor_on_redis(
    monkeypatch: pytest.MonkeyPatch, redis: RedisServer, clean_env: Path
) -> None:
    """With PLANET_ASYNC_STORAGE set, profile-based and explicit constructors keep their tokens in
    Redis; without it they keep today's defaults (the CLI's files, memory)."""
    home = PlanetHome(clean_env)
    home.write_auth_client(
        "svc", AuthClientConfig.m2m(CLIENT_ID, CLIENT_SECRET, auth_server="https://a.test")
    )
    built = {
        "profile": lambda: PlanetAuth.from_profile("svc"),
        "client_credentials": lambda: PlanetAuth.from_client_credentials("id", "secret"),
        "user": lambda: PlanetAuth.for_user("app", issuer="https://a.test"),
    }
    defaults = {"profile": FileStorage, "client_credentials": MemoryStorage, "user": MemoryStorage}
    for name, build in built.items():
        manager = build().manager
        assert manager is not None
        assert isinstance(manager.storage, defaults[name]), name
    monkeypatch.setenv("PLANET_ASYNC_STORAGE", redis.url)
    for name, build in built.items():
        manager = build().manager
        assert manager is not None
        assert isinstance(manager.storage, RedisStorage), name
        assert manager.storage.url == redis.url


def test_login_into_redis_and_use_it_from_the_environment(
    cli: Cli, peer: Peer, redis: RedisServer
) -> None:
    """`--storage URL auth login` saves the tokens in Redis (the profile in the CLI's files, no
    token.json); a command with PLANET_ASYNC_STORAGE then uses that token without a new grant."""
    login = cli(
        "--allow-loopback-http",
        "--storage",
        redis.url,
        *("auth", "login", "--client-id", CLIENT_ID, "--client-secret", CLIENT_SECRET),
        *("--issuer", peer.issuer, "--profile", SESSION),
    )
    assert login.returncode == 0, login.stderr
    assert peer.grants("client_credentials") == 1
    profile = cli.home / ".planet" / SESSION
    assert (profile / "auth_client.json").is_file()
    assert not (profile / "token.json").exists()
    stored = _redis_token(redis, SESSION)
    assert stored is not None

    env = {"PLANET_ASYNC_STORAGE": redis.url}
    printed = cli(
        "--allow-loopback-http", "--profile", SESSION, "auth", "print-access-token",
        env=env, prints_token=True,
    )  # fmt: skip
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout.strip() == stored.access_token.get_secret_value()
    status = cli("--profile", SESSION, "auth", "status", "--json", env=env)
    assert json.loads(status.stdout)["storage"] == redis.url
    assert peer.grants("client_credentials") == 1
    assert cli.leaks() == []


def test_move_a_laptop_session_into_the_fleet_store(
    cli: Cli, peer: Peer, redis: RedisServer
) -> None:
    """`auth move-to URL` copies a file-stored session into Redis and deletes the local copy (two
    places renewing one refresh token would end it); the fleet then uses it as it is."""
    login = cli(
        "--allow-loopback-http",
        *("auth", "login", "--client-id", CLIENT_ID, "--client-secret", CLIENT_SECRET),
        *("--issuer", peer.issuer, "--profile", SESSION),
    )
    assert login.returncode == 0, login.stderr
    local = cli.home / ".planet" / SESSION / "token.json"
    before = json.loads(local.read_text())
    moved = cli("--profile", SESSION, "auth", "move-to", redis.url)
    assert moved.returncode == 0, moved.stderr
    assert moved.stdout == f"moved session {SESSION!r} to {redis.url}\n"
    assert not local.exists()
    in_redis = _redis_token(redis, SESSION)
    assert in_redis is not None
    assert in_redis.to_json_dict() == before
    assert VerifyingApi(peer.issuer).verify(in_redis.access_token.get_secret_value())
    again = cli("--profile", SESSION, "auth", "move-to", redis.url)
    assert again.returncode == 1
    assert "no session to move" in again.stderr
    assert peer.grants("client_credentials") == 1
    assert cli.leaks() == []
