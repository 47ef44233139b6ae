"""RedisStorage against a real redis-server: the lease, fencing, key layout and connections.

The contract every storage meets (round trips, exclusion, a cancelled waiter) is in
tests/test_storage.py; this file holds what only a lease in Redis has. Leases here last a fraction
of a second, so a lease that lapses does so within the test; sleeps appear only where the time
passing is itself what is tested.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import json
import logging
import re
import socket
import ssl
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import anyio
import pytest

from planet_async import ConfigurationError, LockLost, RedisStorage, StorageError, TokenSet
from planet_async.storage._redis import _Lease
from tests._redis import RedisServer, TLSFiles, free_port

pytestmark = pytest.mark.anyio

LEASE = 0.3  # seconds; short, so a lease lapses within a test
SLACK = 0.5  # seconds of scheduling delay allowed on a busy machine
TOKEN_KEY = "planet_async:{s}:token"
LOCK_KEY = "planet_async:{s}:lock"


def _token(access: str) -> TokenSet:
    return TokenSet(
        access_token=access, issued_at=100, expires_at=200, refresh_token=f"rt-{access}"
    )


def _stored(server: RedisServer, key: str = TOKEN_KEY, db: int = 0) -> str | None:
    raw = server.call("GET", key, db=db)
    return None if raw is None else json.loads(raw)["access_token"]


async def _lease_attempts(server: RedisServer, *, times: int) -> None:
    """Wait until a waiter has tried `times` more times to take a held lease (SET NX)."""

    def attempts() -> int:
        found = re.search(r"cmdstat_set:calls=(\d+)", server.call("INFO", "commandstats").decode())
        return int(found.group(1)) if found else 0

    # The attempts are made on another client's connections: Redis's counters are the witness.
    start = attempts()
    while attempts() < start + times:  # noqa: ASYNC110
        await anyio.sleep(0.005)


class StalledStorage(RedisStorage):
    """A holder that stalls: its lease is never extended, so it lapses while held."""

    async def _keep_extended(self, lease: _Lease, session: str) -> None:
        return


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
    raw = redis.call("GET", TOKEN_KEY)
    assert raw == json.dumps(token.to_json_dict(), indent=2, sort_keys=True).encode()
    await storage.delete("s")
    assert await storage.load("s") is None


# -- the lease -------------------------------------------------------------------------------


async def test_the_lease_is_a_random_owner_that_expires(redis: RedisServer) -> None:
    """A held lease is one key with a random owner token and an expiry of at most one lease;
    each holding gets a new owner, and leaving deletes the key."""
    storage = RedisStorage(redis.url, lease=5)
    owners = []
    for _ in range(2):
        async with storage.lock("s"):
            owners.append(redis.call("GET", LOCK_KEY))
            assert 0 < redis.call("PTTL", LOCK_KEY) <= 5000
        assert redis.call("EXISTS", LOCK_KEY) == 0
    first, second = owners
    assert first != second
    assert len(first) >= 32


async def test_the_lease_excludes_another_storage(redis: RedisServer) -> None:
    """A second storage on the same Redis (another process) enters only after the first left."""
    order: list[str] = []
    first_in = anyio.Event()
    release = anyio.Event()

    async def first() -> None:
        async with RedisStorage(redis.url).lock("s"):
            order.append("first in")
            first_in.set()
            await release.wait()
            order.append("first out")

    async def second() -> None:
        async with RedisStorage(redis.url).lock("s"):
            order.append("second in")

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(first)
            await first_in.wait()
            tg.start_soon(second)
            await _lease_attempts(redis, times=3)
            assert order == ["first in"]
            release.set()
    assert order == ["first in", "first out", "second in"]


async def test_a_cancelled_waiter_leaves_the_lease_free(redis: RedisServer) -> None:
    """A waiter cancelled while the lease is held leaves no lease of its own behind: once the
    holder leaves, the key is gone and the next storage enters at once."""
    held = anyio.Event()
    release = anyio.Event()

    async def holder() -> None:
        async with RedisStorage(redis.url).lock("s"):
            held.set()
            await release.wait()

    async def waiter() -> None:
        async with RedisStorage(redis.url).lock("s"):
            pytest.fail("the waiter entered while the lease was held")

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(holder)
            await held.wait()
            with anyio.CancelScope() as waiting:
                async with anyio.create_task_group() as waiters:
                    waiters.start_soon(waiter)
                    await _lease_attempts(redis, times=3)
                    waiting.cancel()
            release.set()
        assert redis.call("EXISTS", LOCK_KEY) == 0
        async with RedisStorage(redis.url, lock_timeout=0.2).lock("s"):
            pass


async def test_the_wait_for_a_held_lease_ends_after_lock_timeout(redis: RedisServer) -> None:
    """A lease held elsewhere makes `lock` give up after `lock_timeout` with a StorageError that
    names the session, the store and the wait, and the holder's lease is left alone."""
    holder = RedisStorage(redis.url)
    impatient = RedisStorage(redis.url, lock_timeout=0.3)
    async with holder.lock("s"):
        owner = redis.call("GET", LOCK_KEY)
        started = time.monotonic()
        with pytest.raises(StorageError) as info:
            async with impatient.lock("s"):
                pytest.fail("entered a held lease")
        waited = time.monotonic() - started
        assert redis.call("GET", LOCK_KEY) == owner
    assert 0.3 <= waited < 0.3 + SLACK
    message = str(info.value)
    assert "timed out after 0.3 s waiting for the lease on session 's'" in message
    assert redis.url in message
    assert not isinstance(info.value, LockLost)


async def test_a_long_hold_keeps_the_lease(redis: RedisServer) -> None:
    """A holder keeps its lease for several lease periods (it is extended while held): another
    storage waiting all that time does not get in, and the holder's fenced save still lands."""
    holder = RedisStorage(redis.url, lease=LEASE)
    waiter = RedisStorage(redis.url, lease=LEASE, lock_timeout=4 * LEASE)
    async with holder.lock("s"):
        with pytest.raises(StorageError, match="timed out"):
            async with waiter.lock("s"):
                pytest.fail("entered a lease its holder kept extending")
        await holder.save("s", _token("held-long"))
        assert 0 < redis.call("PTTL", LOCK_KEY) <= LEASE * 1000
    assert _stored(redis) == "held-long"


async def test_a_stalled_holder_loses_the_lease_after_one_period(redis: RedisServer) -> None:
    """A lease not extended (its holder stalled) lapses by itself: another storage gets in
    about one lease period after it was taken."""
    stalled = StalledStorage(redis.url, lease=LEASE)
    other = RedisStorage(redis.url, lock_timeout=5)
    async with stalled.lock("s"):
        taken = time.monotonic()
        async with other.lock("s"):
            waited = time.monotonic() - taken
    assert LEASE - 0.05 <= waited < LEASE + SLACK


async def test_a_save_after_the_lease_lapsed_is_refused(redis: RedisServer) -> None:
    """A holder whose lease lapsed and was taken by another cannot overwrite the session the new
    holder saved: its save raises LockLost (a StorageError) and the newer session stays; leaving,
    it does not release the new holder's lease."""
    stalled = StalledStorage(redis.url, lease=LEASE)
    other = RedisStorage(redis.url, lease=5, lock_timeout=5)
    taken_over = anyio.Event()
    done = anyio.Event()
    owners: list[bytes] = []

    async def take_over() -> None:
        async with other.lock("s"):
            await other.save("s", _token("newer"))
            owners.append(redis.call("GET", LOCK_KEY))
            taken_over.set()
            await done.wait()

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            async with stalled.lock("s"):
                stale_owner = redis.call("GET", LOCK_KEY)
                tg.start_soon(take_over)
                await taken_over.wait()
                with pytest.raises(LockLost) as info:
                    await stalled.save("s", _token("stale"))
            assert redis.call("GET", LOCK_KEY) == owners[0] != stale_owner
            done.set()
    assert isinstance(info.value, StorageError)
    assert "lapsed before the save" in str(info.value)
    assert _stored(redis) == "newer"
    assert redis.call("EXISTS", LOCK_KEY) == 0  # released by its own holder


async def test_release_never_deletes_another_owners_lease(redis: RedisServer) -> None:
    """Leaving a lease that lapsed deletes nothing: the key, now another owner's, stays with its
    owner and expiry."""
    stalled = StalledStorage(redis.url, lease=LEASE)
    async with stalled.lock("s"):
        await anyio.sleep(LEASE + 0.1)  # the lease lapses (nobody extends it)
        assert redis.call("EXISTS", LOCK_KEY) == 0
        assert redis.call("SET", LOCK_KEY, "someone-else", "PX", "5000") == "OK"
    assert redis.call("GET", LOCK_KEY) == b"someone-else"
    assert redis.call("PTTL", LOCK_KEY) > 4000


async def test_a_save_without_the_lease_is_not_fenced(redis: RedisServer) -> None:
    """A save made outside `lock` (a login, the CLI copying a session in) is a plain write,
    whoever holds the lease."""
    async with RedisStorage(redis.url).lock("s"):
        await RedisStorage(redis.url).save("s", _token("outside"))
    assert _stored(redis) == "outside"


# -- what is stored ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [b'{"access_token": "at-1", "token_ty', b"\x00\xff\xfe garbage \x89PNG", b'["at-1"]'],
    ids=["truncated", "binary", "list"],
)
async def test_a_corrupt_value_is_moved_aside(
    redis: RedisServer, caplog: pytest.LogCaptureFixture, content: bytes
) -> None:
    """A stored value that is not a JSON object loads as None, after being renamed aside (kept
    for inspection), with one WARNING naming the session, the store and the new key."""
    redis.call("SET", TOKEN_KEY, content)
    with caplog.at_level(logging.WARNING, logger="planet_async"):
        assert await RedisStorage(redis.url).load("s") is None
    (aside,) = redis.call("KEYS", "*")
    assert aside.decode().startswith(f"{TOKEN_KEY}.corrupt-")
    assert redis.call("GET", aside) == content
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "'s'" in warning.getMessage()
    assert redis.url in warning.getMessage()
    assert aside.decode() in warning.getMessage()


async def test_a_json_object_that_is_no_token_is_left_alone(redis: RedisServer) -> None:
    """A JSON object that is not a token set raises StorageError without quoting it, and stays."""
    redis.call("SET", TOKEN_KEY, '{"api_key": "PLAK-not-ours"}')
    with pytest.raises(StorageError, match="log in again") as info:
        await RedisStorage(redis.url).load("s")
    assert "PLAK-not-ours" not in str(info.value)
    assert redis.call("GET", TOKEN_KEY) == b'{"api_key": "PLAK-not-ours"}'


async def test_key_layout(redis: RedisServer, start_redis: Callable[..., RedisServer]) -> None:
    """Keys are `<prefix>{<session>}:token` and `<prefix>{<session>}:lock`: the session is a
    hash tag, so a real cluster-mode server puts a session and its lease in one slot."""
    storage = RedisStorage(redis.url, prefix="fleet-7:")
    async with storage.lock("MyProfile"):
        await storage.save("MyProfile", _token("at"))
        keys = sorted(key.decode() for key in redis.call("KEYS", "*"))
    assert keys == ["fleet-7:{MyProfile}:lock", "fleet-7:{MyProfile}:token"]
    assert redis.call("KEYS", "*") == [b"fleet-7:{MyProfile}:token"]
    await RedisStorage(redis.url).save("MyProfile", _token("at"))
    assert redis.call("EXISTS", "planet_async:{MyProfile}:token") == 1

    cluster = start_redis("--cluster-enabled", "yes", "--cluster-port", str(free_port()))
    slots = {cluster.call("CLUSTER", "KEYSLOT", key) for key in keys}
    assert len(slots) == 1


# -- connections -----------------------------------------------------------------------------


@pytest.mark.usefixtures("redis_connections_fail")
async def test_an_unreachable_store_is_one_clear_error() -> None:
    """A store that cannot be reached is one StorageError saying what could not be done, to
    which session, in which store, and why, each once."""
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    storage = RedisStorage(url, timeout=1)
    with pytest.raises(StorageError) as read:
        await storage.load("s")
    with pytest.raises(StorageError) as lock:
        async with storage.lock("s"):
            pytest.fail("locked an unreachable store")
    for info, action in ((read, "read"), (lock, "lock")):
        message = str(info.value)
        assert message.startswith(f"cannot {action} session 's' in {url}: ConnectionError: ")
        assert message.count(url) == 1
        assert f"127.0.0.1:{port}" in message.removeprefix(f"cannot {action} session 's' in {url}")


@pytest.mark.usefixtures("redis_connections_fail")
async def test_a_password_in_the_url_is_masked_everywhere(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The password of a Redis URL appears in no repr, attribute, error (nor its causes) or log
    line, when the server cannot be reached."""
    url = f"redis://user:s3cret@127.0.0.1:{free_port()}/0"
    storage = RedisStorage(url, timeout=1)
    texts = [repr(storage), str(storage), storage.url]
    with caplog.at_level(logging.DEBUG):
        for attempt in (storage.load("s"), storage.save("s", _token("at")), storage.delete("s")):
            with pytest.raises(StorageError) as info:
                await attempt
            texts.append("".join(traceback.format_exception(info.value)))
        with pytest.raises(StorageError) as info:
            async with storage.lock("s"):
                pytest.fail("locked an unreachable store")
        texts.append("".join(traceback.format_exception(info.value)))
    texts.append(caplog.text)
    assert "redis://user:***@127.0.0.1" in str(info.value)
    for text in texts:
        assert "s3cret" not in text


async def test_a_url_that_is_not_redis_is_refused_masked() -> None:
    """A URL of another scheme is a ConfigurationError that quotes it with its password masked."""
    with pytest.raises(ConfigurationError, match=re.escape("http://user:***@redis.test")) as info:
        RedisStorage("http://user:s3cret@redis.test:6379/0")
    assert "s3cret" not in str(info.value)


@pytest.mark.usefixtures("redis_connections_fail")
async def test_acl_user_and_password(start_redis: Callable[..., RedisServer]) -> None:
    """An ACL user with a password (user:password@) works, and so does the default user's
    password alone (:password@); a wrong password is a StorageError that does not quote it."""
    server = start_redis("--requirepass", "default-pw")
    reply = server.call(
        "ACL", "SETUSER", "fleet", "on", ">fleet-pw", "~*", "+@all", auth=("default", "default-pw")
    )
    assert reply == "OK"
    port = server.port
    fleet = RedisStorage(f"redis://fleet:fleet-pw@127.0.0.1:{port}/0")
    async with fleet.lock("s"):
        await fleet.save("s", _token("as-fleet"))
    loaded = await RedisStorage(f"redis://:default-pw@127.0.0.1:{port}/0").load("s")
    assert loaded is not None
    assert loaded.access_token.get_secret_value() == "as-fleet"

    wrong = RedisStorage(f"redis://fleet:wrong-pw@127.0.0.1:{port}/0")
    with pytest.raises(StorageError) as info:
        await wrong.load("s")
    assert "wrong-pw" not in "".join(traceback.format_exception(info.value))
    with pytest.raises(StorageError):
        await RedisStorage(f"redis://127.0.0.1:{port}/0").load("s")


@pytest.mark.usefixtures("redis_connections_fail")
async def test_a_password_with_reserved_characters(
    start_redis: Callable[..., RedisServer], caplog: pytest.LogCaptureFixture
) -> None:
    """A password holding characters a URL reserves (@ : / + = %) works percent-encoded, as
    RFC 3986 has it, and is masked in that form too."""
    password = "p@ss:w/rd+=%"
    server = start_redis("--requirepass", password)
    url = f"redis://:{quote(password, safe='')}@127.0.0.1:{server.port}/0"
    storage = RedisStorage(url)
    with caplog.at_level(logging.DEBUG):
        async with storage.lock("s"):
            await storage.save("s", _token("reserved"))
    assert server.call("EXISTS", TOKEN_KEY, auth=("default", password)) == 1
    assert repr(storage) == f"RedisStorage('redis://:***@127.0.0.1:{server.port}/0', prefix=" + (
        "'planet_async:')"
    )
    assert quote(password, safe="") not in caplog.text


async def test_database_number(redis: RedisServer) -> None:
    """The database in the URL's path is the one used: keys land in db 3, none in db 0."""
    url = redis.url.removesuffix("/0") + "/3"
    storage = RedisStorage(url)
    async with storage.lock("s"):
        await storage.save("s", _token("in-db-3"))
    assert _stored(redis, db=3) == "in-db-3"
    assert redis.call("KEYS", "*") == []
    assert await RedisStorage(redis.url).load("s") is None


def _chain(exc: BaseException) -> list[BaseException]:
    """`exc` and every exception it came from, shown or not, inside groups too."""
    found: list[BaseException] = []
    pending = [exc]
    while pending:
        each = pending.pop()
        if any(each is known for known in found):
            continue
        found.append(each)
        pending += [e for e in (each.__cause__, each.__context__) if e is not None]
        pending += getattr(each, "exceptions", ())
    return found


def _tls_files(directory: Path, *, hosts: tuple[str, ...]) -> TLSFiles:
    """A CA, and a server certificate it signed for `hosts` (names or IP addresses)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def build(subject: str, key: Any, issuer: str, issuer_key: Any) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        build("planet-async test CA", ca_key, "planet-async test CA", ca_key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    cert = (
        build(hosts[0], key, "planet-async test CA", ca_key)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    files = TLSFiles(directory / "ca.pem", directory / "server.pem", directory / "server.key")
    files.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return files


@pytest.mark.usefixtures("redis_connections_fail")
async def test_tls(start_redis: Callable[..., RedisServer], tmp_path: Path) -> None:
    """`rediss://` talks TLS to a TLS-only server whose CA is given as `ssl_ca_certs` in the
    URL; the same server without that CA (so, unverifiable) is a StorageError."""
    tls = _tls_files(tmp_path, hosts=("localhost", "127.0.0.1"))
    server = start_redis(tls=tls)
    storage = RedisStorage(server.url)
    async with storage.lock("s"):
        await storage.save("s", _token("over-tls"))
    assert _stored(server) == "over-tls"
    loaded = await RedisStorage(server.url).load("s")
    assert loaded is not None
    assert loaded.access_token.get_secret_value() == "over-tls"

    untrusted = RedisStorage(f"rediss://127.0.0.1:{server.port}/0", timeout=2)
    with pytest.raises(StorageError) as info:
        await untrusted.load("s")
    assert any(isinstance(cause, ssl.SSLCertVerificationError) for cause in _chain(info.value))
    plain = RedisStorage(f"redis://127.0.0.1:{server.port}/0", timeout=1)
    with pytest.raises(StorageError):
        await plain.load("s")


@pytest.mark.usefixtures("redis_connections_fail")
async def test_tls_checks_the_server_name(
    start_redis: Callable[..., RedisServer], tmp_path: Path
) -> None:
    """Under TLS a certificate the trusted CA issued for another name is refused, unless the URL
    turns the check off (``ssl_check_hostname=false``)."""
    tls = _tls_files(tmp_path, hosts=("redis.invalid",))
    server = start_redis(tls=tls)
    storage = RedisStorage(server.url, timeout=2)
    with pytest.raises(StorageError) as info:
        await storage.save("s", _token("to-an-impostor"))
    (refusal,) = [e for e in _chain(info.value) if isinstance(e, ssl.SSLCertVerificationError)]
    assert "mismatch" in str(refusal)
    assert server.call("KEYS", "*") == []
    await RedisStorage(f"{server.url}&ssl_check_hostname=false").save("s", _token("unchecked"))
    assert _stored(server) == "unchecked"


# -- the extra -------------------------------------------------------------------------------


async def test_without_coredis_the_error_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without coredis, RedisStorage is a ConfigurationError saying which extra to install."""
    monkeypatch.setitem(sys.modules, "coredis", None)
    with pytest.raises(
        ConfigurationError, match=r"needs the redis extra: .*pip install .*\[redis\]"
    ):
        RedisStorage("redis://127.0.0.1:6379/0")


def test_planet_async_imports_without_coredis() -> None:
    """`import planet_async` works where coredis cannot be imported, and only RedisStorage
    itself then says what is missing."""
    script = """
import sys
import threading
sys.modules["coredis"] = None
import planet_async
from planet_async import ConfigurationError, FileStorage, RedisStorage
assert "coredis" not in [m for m in sys.modules if sys.modules[m] is not None]
try:
    RedisStorage("redis://127.0.0.1:6379/0")
except ConfigurationError as exc:
    print(exc)
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "RedisStorage needs the redis extra" in done.stdout


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


class _SlowReplyProxy:
    """A TCP proxy to a redis-server that holds back Redis's answer to a lease attempt for a
    second: a fault a real server does not produce on demand."""

    def __init__(self, port: int) -> None:
        self._port = port
        self._listen = socket.socket()
        self._listen.bind(("127.0.0.1", 0))
        self._listen.listen()
        self._sockets: list[socket.socket] = [self._listen]
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self.url = f"redis://127.0.0.1:{self._listen.getsockname()[1]}/0"
        self._threads[0].start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = self._listen.accept()
                upstream = socket.create_connection(("127.0.0.1", self._port))
                self._sockets += [client, upstream]
                hold = threading.Event()
                for target, args in (
                    (self._up, (client, upstream)),
                    (self._down, (upstream, client)),
                ):
                    thread = threading.Thread(target=target, args=(*args, hold), daemon=True)
                    self._threads.append(thread)
                    thread.start()

    @staticmethod
    def _up(client: socket.socket, upstream: socket.socket, hold: threading.Event) -> None:
        with contextlib.suppress(OSError):
            while data := client.recv(65536):
                if b"NX" in data:
                    hold.set()
                upstream.sendall(data)

    @staticmethod
    def _down(upstream: socket.socket, client: socket.socket, hold: threading.Event) -> None:
        with contextlib.suppress(OSError):
            while data := upstream.recv(65536):
                if hold.is_set():
                    time.sleep(1.0)
                    hold.clear()
                client.sendall(data)

    def close(self) -> None:
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        for thread in self._threads:
            thread.join(timeout=5)


async def test_a_wait_cancelled_after_redis_set_the_lease_releases_it(
    redis: RedisServer,
) -> None:
    """A lease attempt cancelled after Redis executed it, before its answer arrived, is released
    (compare-and-delete with its owner token), so nobody waits for a lease nobody holds."""
    proxy = _SlowReplyProxy(redis.port)
    try:
        with anyio.move_on_after(0.5) as scope:
            async with RedisStorage(proxy.url, lease=5.0).lock("s"):
                pytest.fail("the lease answer was held back; the wait must have been cancelled")
        assert scope.cancelled_caught
        started = time.monotonic()
        with anyio.fail_after(2):
            async with RedisStorage(redis.url, lease=5.0).lock("s"):
                waited = time.monotonic() - started
        assert waited < 1.0
    finally:
        proxy.close()
