"""Storage URLs (issue 18): secrets masked in every malformed shape, typed errors where the URL is
given, and a session's store remembered with its profile so that logout finds it.
"""

from __future__ import annotations

import itertools
import json
import logging
import random
import traceback
from pathlib import Path
from urllib.parse import quote, unquote

import anyio
import pytest

from planet_async import ConfigurationError, PlanetAuthError, RedisStorage, TokenSet
from planet_async.storage import storage_from_environment, storage_from_url
from planet_async.storage._redis import mask_url
from planet_async.storage._url import describe_url
from tests._peer import Peer
from tests._redis import RedisServer, free_port
from tests.test_cli import CLIENT_ID, CLIENT_SECRET, Cli

PASSWORDS = ["Pw0rd-s3cret", "se/cr/et99", "p@ss:w/rd?x#y", "100%pure", "s3cr%2Fet"]

SHAPES = [
    "redis://u:{pw}@{host}/0",
    "redis://:{pw}@{host}/0",
    "redis://{pw}@{host}/0",
    "rediss://u:{pw}@{host}/0",
    "unix://u:{pw}@/tmp/redis.sock",
    "redis:/u:{pw}@{host}",
    "redis//u:{pw}@{host}",
    "rediss:u:{pw}@{host}",
    "redis:u:{pw}@{host}",
    "redis:///u:{pw}@{host}",
    "REDIS://u:{pw}@{host}/0",
    "redis://u:{pw}@{host}:notaport/0",
    "redis://u:{pw}@{host}:99999/0",
    "redis://u:{pw}@[::1/0",
    "redis://u:{pw}@[zz::1]:6379/0",
    "redis://u:{pw}@{host}/notadb",
    "redis://u:{pw}@/0",
    "redis://u:{pw}@{host}/0?password={pw}",
    "redis://{host}/0?password={pw}",
    "redis+sentinel://{host}/mymaster?sentinel_password={pw}",
    "redis+sentinel://u:{pw}@{host}/mymaster/0?sentinel_username=u&sentinel_password={pw}",
    "redis+cluster://{host}?sentinel_password={pw}",
    "redis://u:{pw}@{host}/0?retention=nonsense",
    "file://u:{pw}@host/var/lib/tokens",
    "file:u:{pw}@host/var/lib/tokens",
    "file:/u:{pw}@host/var/lib/tokens",
    "http://u:{pw}@{host}/",
    "u:{pw}@{host}",
    "//u:{pw}@{host}",
]


def _texts_of(error: BaseException) -> str:
    return "".join(traceback.format_exception(error))


@pytest.mark.usefixtures("redis_connections_fail")
@pytest.mark.parametrize("password", PASSWORDS)
def test_no_password_in_any_malformed_url(
    password: str, caplog: pytest.LogCaptureFixture, anyio_backend: str
) -> None:
    """Over every URL shape (a password with / ? # @ %, a slash missing, a file URL with a
    host, a bad port, IPv6 or database, a password in the query), from RedisStorage(...),
    storage_from_url and PLANET_ASYNC_STORAGE: the password (raw, percent-encoded or decoded) is
    in no repr, str, error with its causes, or log line; and a storage that was made cannot
    reach a closed port without saying so in a StorageError, not some other exception."""
    host = f"127.0.0.1:{free_port()}"
    seen: list[str] = []
    forms = {password, quote(password, safe=""), unquote(password)}
    for shape, encoded in itertools.product(SHAPES, (False, True)):
        url = shape.format(pw=quote(password, safe="") if encoded else password, host=host)
        seen.append(mask_url(url))
        for make in (
            lambda url=url: RedisStorage(url, timeout=0.5),
            lambda url=url: storage_from_url(url),
            lambda url=url: storage_from_environment({"PLANET_ASYNC_STORAGE": url}),
        ):
            try:
                storage = make()
            except ConfigurationError as exc:
                seen.append(_texts_of(exc))
                continue
            seen += [repr(storage), str(storage), str(getattr(storage, "url", ""))]
            if isinstance(storage, RedisStorage) and storage.url.startswith("redis://"):
                with caplog.at_level(logging.DEBUG):
                    try:
                        anyio.run(storage.load, "s", backend=anyio_backend)
                    except PlanetAuthError as exc:
                        seen.append(_texts_of(exc))
    seen.append(caplog.text)
    for text in seen:
        for form in forms:
            assert form not in text, (form, text)


def _random_url(rng: random.Random, core: str) -> tuple[str, str]:
    """A URL of a random shape, right or wrong, whose user information holds a password made
    around `core`; returns the URL and the password as it appears in it. Whatever precedes the
    first colon of the user information is a user name, shown as URLs have it."""
    reserved = "/?#:@%+=&;[] "
    password = "".join(rng.choice(reserved + "ab") for _ in range(rng.randint(0, 3)))
    password += core + "".join(rng.choice(reserved + "yz") for _ in range(rng.randint(0, 3)))
    if rng.random() < 0.3:
        password = quote(password, safe="")
    scheme = rng.choice(["redis", "rediss", "unix", "file", "REDIS", "", "http", "redis+x"])
    separator = rng.choice(["://", ":/", ":", "//", ":///", "/", "", "://:"])
    user = rng.choice(["", "u", "user.name", "a/b", "x:y", "-"])
    if user or rng.random() < 0.7:
        userinfo = f"{user}:{password}"
    else:  # a password alone, with no colon: everything before the first colon is a user name
        password = password.replace(":", "")
        userinfo = password
    host = rng.choice(
        ["127.0.0.1", "h", "[::1]", "[zz]", "h:abc", "h:99999", "", "h:6379/0", "h/0?x=1", "[::1"]
    )
    tail = rng.choice(["", "/0", "/x", "?retention=1h", "?password=" + core + "q", "#frag"])
    return f"{scheme}{separator}{userinfo}@{host}{tail}", password


@pytest.mark.usefixtures("redis_connections_fail")
def test_no_password_in_randomly_malformed_urls() -> None:
    """3,000 URLs of random shapes (seeded): the password and its core never appear in the
    masked URL, the quote an error would make of it, a storage's repr, or the error a storage URL
    raises; percent-encoded or not."""
    rng = random.Random(18)
    core = "S3CRETpw"
    for case in range(3000):
        url, password = _random_url(rng, core)
        texts = [mask_url(url), describe_url(url)]
        if case % 10 == 0:
            try:
                texts.append(repr(storage_from_url(url)))
            except ConfigurationError as exc:
                texts.append(_texts_of(exc))
        for text in texts:
            for secret in {core, password, unquote(password)}:
                if len(secret) >= 4:
                    assert secret not in text, (url, text)


BAD_URLS = {
    "redis://127.0.0.1:abc/0": "port",
    "redis://127.0.0.1:99999/0": "port",
    "redis://127.0.0.1:0/0": "port 0",
    "redis://[::1/0": "IPv6",
    "redis://[not-an-address]:6379/0": "IPv6",
    "redis:///0": "no host",
    "redis://127.0.0.1:6379/zero": "database number",
    "redis:/127.0.0.1:6379": "not a Redis URL",
    "rediss:127.0.0.1:6379": "not a Redis URL",
    "redis://u:pa/ss@127.0.0.1:6379/0": "percent-encoded",
    "unix://": "socket's path",
    "redis://127.0.0.1:6379/0?retention=-1": "retention",
}


@pytest.mark.parametrize(("url", "problem"), BAD_URLS.items())
def test_malformed_urls_are_configuration_errors_at_construction(url: str, problem: str) -> None:
    """A URL coredis could not use (a port that is no number in range, a broken IPv6 host, no
    host, a path that is no database, a slash missing) is a ConfigurationError naming the
    problem, from RedisStorage(...) and from PLANET_ASYNC_STORAGE; never a bare ValueError, and
    never later from load() or lock()."""
    with pytest.raises(ConfigurationError, match=problem):
        RedisStorage(url)
    with pytest.raises(ConfigurationError, match="PLANET_ASYNC_STORAGE"):
        storage_from_environment({"PLANET_ASYNC_STORAGE": url})


def test_good_urls_are_accepted() -> None:
    """The shapes the README documents construct, and keep their query options."""
    for url in (
        "redis://127.0.0.1:6379/0",
        "redis://localhost",
        "redis://[::1]:6379/2",
        "rediss://cache.example:6380/1?ssl_ca_certs=/etc/ssl/certs/ca-certificates.crt",
        "redis://:p%2Fw@127.0.0.1:6379/0?retention=12h",
        "unix:///run/redis.sock?db=1",
    ):
        RedisStorage(url)
    assert RedisStorage("redis://h/0?retention=12h").retention == 12 * 3600
    assert RedisStorage("redis://h/0?retention=none").retention is None
    assert RedisStorage("redis://h/0").retention == 30 * 86400
    assert RedisStorage("redis://h/0", retention=60).retention == 60


# -- logout finds the store a session was logged in to ------------------------------------------


@pytest.fixture
def cli(clean_env: Path) -> Cli:
    return Cli(clean_env)


def _in_redis(redis: RedisServer, session: str) -> TokenSet | None:
    return anyio.run(RedisStorage(redis.url).load, session)


def test_logout_finds_the_redis_a_session_was_logged_in_to(
    cli: Cli, peer: Peer, redis: RedisServer
) -> None:
    """Logged in with `--storage redis://...`, logged out with no option or variable: logout
    finds the session in that Redis and deletes it; the profile remembers the URL beside its
    auth_client.json, and forgets it at logout."""
    login = cli(
        "--allow-loopback-http",
        *("--storage", redis.url, "auth", "login"),
        *("--client-id", CLIENT_ID, "--client-secret", CLIENT_SECRET),
        *("--issuer", peer.issuer, "--profile", "fleet"),
    )
    assert login.returncode == 0, login.stderr
    remembered = cli.home / ".planet" / "fleet" / "planet_async_storage.json"
    assert json.loads(remembered.read_text()) == {"url": redis.url, "password": False}
    assert _in_redis(redis, "fleet") is not None

    status = cli("--profile", "fleet", "auth", "status", "--json")
    assert json.loads(status.stdout)["storage"] == redis.url
    out = cli("--allow-loopback-http", "--profile", "fleet", "auth", "logout")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("logged out of profile 'fleet'"), out.stdout
    assert _in_redis(redis, "fleet") is None
    assert not remembered.exists()
    assert cli.leaks() == []


@pytest.mark.usefixtures("redis_connections_fail")
def test_a_remembered_store_never_keeps_its_password(
    cli: Cli, peer: Peer, start_redis: object
) -> None:
    """A store with a password is remembered without it (user name kept); a later command
    without the URL says where the session is and how to give the password, and with the
    variable it logs out."""
    server = start_redis("--requirepass", "fleet-pw-123")  # type: ignore[operator]
    url = f"redis://:fleet-pw-123@127.0.0.1:{server.port}/0"
    login = cli(
        "--allow-loopback-http",
        *("auth", "login", "--client-id", CLIENT_ID, "--client-secret", CLIENT_SECRET),
        *("--issuer", peer.issuer, "--profile", "fleet"),
        env={"PLANET_ASYNC_STORAGE": url},
    )
    assert login.returncode == 0, login.stderr
    remembered = cli.home / ".planet" / "fleet" / "planet_async_storage.json"
    assert json.loads(remembered.read_text()) == {
        "url": f"redis://127.0.0.1:{server.port}/0",
        "password": True,
    }
    for path in (cli.home / ".planet").rglob("*"):
        if path.is_file():
            assert b"fleet-pw-123" not in path.read_bytes(), path

    out = cli("--allow-loopback-http", "--profile", "fleet", "auth", "logout")
    assert out.returncode != 0
    assert f"redis://127.0.0.1:{server.port}/0" in out.stderr
    assert str(remembered) in out.stderr
    assert "PLANET_ASYNC_STORAGE" in out.stderr
    out = cli(
        "--allow-loopback-http",
        *("--profile", "fleet", "auth", "logout"),
        env={"PLANET_ASYNC_STORAGE": url},
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("logged out of profile 'fleet'"), out.stdout
    assert not remembered.exists()
    assert cli.leaks() == []
