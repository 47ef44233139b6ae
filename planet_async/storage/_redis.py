"""Storage in Redis, for fleets: workers on many machines share a session and renew it once.

Built on coredis, whose client runs on anyio (asyncio and trio alike); redis-py's asyncio client
does not run on trio. Installed with the ``redis`` extra, from a clone of the repository:
``python3 -m pip install '.[redis]'``.
"""

from __future__ import annotations

import contextvars
import hashlib
import json
import logging
import math
import secrets
import sys
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

import anyio
import anyio.abc
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .._errors import ConfigurationError, LockLost, StorageError
from .._extras import missing_extra
from .._models import TokenSet
from .._redact import redact
from ._generations import GENERATION_KEY, Generation
from ._stored import json_object, stored_token
from ._url import check_redis_url, mask_url, url_secrets

# `novermin` below marks BaseExceptionGroup: on 3.10 it is this backport (vermin cannot tell).
if sys.version_info < (3, 11):  # pragma: no cover - anyio depends on the backport there
    from exceptiongroup import BaseExceptionGroup  # novermin

if TYPE_CHECKING:
    import coredis

__all__ = ["DEFAULT_RETENTION", "RedisStorage", "mask_url"]

DEFAULT_RETENTION = 30 * 86400.0
"""Seconds a stored session is kept after its last save when the server did not say how long its
refresh token lasts: 30 days."""

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

# A lease's value is its owner token, '@', and the replication ID of the primary it was taken or
# last extended on (INFO's master_replid, which a replica promoted in a failover changes). A lease
# stamped by a primary that is gone cannot be proven held: its holder may have died with that
# primary, and the replica that took over would otherwise hold the whole fleet back until the
# lease lapsed. So a waiter takes it over at once, and a holder still alive re-stamps it at its
# next extension (or finds it taken over: its fenced save is then refused). A value without '@'
# (an older planet_async's) is a live lease like any other.
_REPLID = "string.match(redis.call('INFO', 'replication'), 'master_replid:(%w+)')"
_HELD = "string.sub(held, 1, #ARGV[1] + 1) == ARGV[1] .. '@'"

# Store ARGV[2] under KEYS[2], kept for ARGV[3] milliseconds ('0': no limit).
_WRITE = """
if ARGV[3] == '0' then redis.call('SET', KEYS[2], ARGV[2])
else redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3]) end
"""

# KEYS[1] = the lease, KEYS[2] = the session; ARGV[1] = our owner token, ARGV[2] = the JSON,
# ARGV[3] = the session's retention in milliseconds ('0': none). The write happens only while the
# lease is ours, in the same atomic step as the check.
_FENCED_SET = f"""
local held = redis.call('GET', KEYS[1])
if held and {_HELD} then
  {_WRITE}
  return 1
end
return 0
"""
# The same write, only if the stored session is not newer than ARGV[2] (`may_replace`, in
# the same atomic step as the write; a stamp read as the Python side reads it: anything but
# strings and a whole number counts as no stamp). ARGV[1] = our owner token ('' outside the
# lock: no lease to check), ARGV[4..6] = the new token's lineage, number and tag. Returns 1
# written, 0 the lease is not ours, 2 the stored session is newer.
_SET_IF_NEWER = f"""
if ARGV[1] ~= '' then
  local held = redis.call('GET', KEYS[1])
  if not (held and {_HELD}) then
    return 0
  end
end
local current = redis.call('GET', KEYS[2])
if current then
  local ok, doc = pcall(cjson.decode, current)
  if ok and type(doc) == 'table' then
    local g = doc['{GENERATION_KEY}']
    if type(g) == 'table' and type(g['lineage']) == 'string' and type(g['tag']) == 'string'
        and type(g['number']) == 'number' and g['number'] >= 0
        and g['number'] == math.floor(g['number']) then
      local number = tonumber(ARGV[5])
      if g['lineage'] ~= ARGV[4] or g['number'] > number
          or (g['number'] == number and g['tag'] ~= ARGV[6]) then
        return 2
      end
    end
  end
end
{_WRITE}
return 1
"""
# KEYS[1] = the session, KEYS[2] = where to move it; ARGV[1] = the SHA-1 of the corrupt value read,
# ARGV[2] = milliseconds to keep it there ('0': no limit). Moves the value only if it is still the
# corrupt one: 1 moved, 0 gone already (another reader moved it), -1 replaced meanwhile.
_MOVE_ASIDE_IF_SAME = """
local value = redis.call('GET', KEYS[1])
if not value then
  return 0
end
if redis.sha1hex(value) ~= ARGV[1] then
  return -1
end
redis.call('RENAME', KEYS[1], KEYS[2])
if ARGV[2] ~= '0' then
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
end
return 1
"""
# KEYS[1] = the lease; ARGV[1] = our owner token, ARGV[2] = milliseconds. Taking a lease we
# already hold succeeds too, so an attempt whose answer was lost can simply be made again.
# Returns 2 when it took over a lease stamped by another primary.
_ACQUIRE = f"""
local replid = {_REPLID}
local mine = ARGV[1] .. '@' .. replid
if redis.call('SET', KEYS[1], mine, 'NX', 'PX', ARGV[2]) then
  return 1
end
local held = redis.call('GET', KEYS[1])
if {_HELD} then
  redis.call('SET', KEYS[1], mine, 'PX', ARGV[2])
  return 1
end
local at = string.find(held, '@', 1, true)
if at and string.sub(held, at + 1) ~= replid then
  redis.call('SET', KEYS[1], mine, 'PX', ARGV[2])
  return 2
end
return 0
"""
_EXTEND = f"""
local held = redis.call('GET', KEYS[1])
if held and {_HELD} then
  redis.call('SET', KEYS[1], ARGV[1] .. '@' .. {_REPLID}, 'PX', ARGV[2])
  return 1
end
return 0
"""
# KEYS[1] = a key of the session (so that a Cluster runs it on the session's primary). Returns
# how many replicas the primary has online (INFO's slaveN lines in state online): those a WAIT
# can hear from. A replica still syncing, or gone, counts for none.
_ONLINE_REPLICAS = """
local n = 0
for _ in string.gmatch(redis.call('INFO', 'replication'), 'slave%d+:[^\\r\\n]*state=online') do
  n = n + 1
end
return n
"""
# KEYS[1] = the session; ARGV[1] = the deletions channel, ARGV[2] = the session name. Deleting
# and telling the watchers in one step: no watcher misses a deletion that happened. A user whose
# ACL forbids the channel still deletes (pcall): watchers then learn it at the next renewal.
_DELETE = """
redis.call('DEL', KEYS[1])
redis.pcall('PUBLISH', ARGV[1], ARGV[2])
return 1
"""
_RELEASE = f"""
local held = redis.call('GET', KEYS[1])
if held and {_HELD} then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def _coredis() -> Any:
    try:
        import coredis
    except ImportError:
        raise missing_extra("RedisStorage", "redis") from None
    return coredis


class _NotAcknowledged(StorageError):
    """Fewer replicas than required acknowledged a write (``WAIT``). Redis itself answered: the
    write is on the primary, and the lease is still there to release."""


class _ConnectionGone(Exception):
    """The lease's connection task has ended; use a client of its own instead."""


@dataclass
class _Request:
    """A command for the lease's connection task, and the place its outcome is left."""

    command: Callable[[coredis.Redis[bytes]], Awaitable[Any]]
    action: str
    session: str  # named in its error: a shared client serves every session
    done: anyio.Event = field(default_factory=anyio.Event)
    result: Any = None
    error: BaseException | None = None


_TOPOLOGIES = {
    "redis+sentinel": ("redis", "sentinel"),
    "redis+cluster": ("redis", "cluster"),
    "rediss+cluster": ("rediss", "cluster"),
}


@dataclass(frozen=True)
class _Topology:
    """Where the sessions are: one node (``redis://``), the primary some sentinels name
    (``redis+sentinel://``), or a Redis Cluster (``redis+cluster://``)."""

    kind: str = "node"
    hosts: tuple[tuple[str, int], ...] = ()
    service: str = ""  # the name the sentinels know the primary by
    db: int = 0
    # The sentinels' own credentials (``requirepass`` / an ACL user on the sentinels), which
    # are not the data nodes'.
    sentinel_username: str | None = None
    sentinel_password: str | None = field(default=None, repr=False)


def _split_topology(url: str) -> tuple[str, _Topology]:
    """A single-node URL of `url`'s first host (coredis reads the credentials and options from
    it) and the topology `url` names; a plain Redis URL is returned as it is.

    ``redis+sentinel://[[user]:password@]host:port[,host:port...]/service[/db][?options]``:
    the sentinels (port 26379 by default) and the name of the primary they watch; the user and
    password are the data nodes'. Sentinels that require a password of their own take it as
    ``?sentinel_password=...`` (and ``&sentinel_username=...`` for an ACL user), percent-encoded,
    as Redis-Sentinel-Url's ``sentinel_`` options and the ``sentinel_password`` settings of
    go-redis-based tools and Kong name it. ``redis+cluster://[[user]:password@]host:port
    [,host:port...][?options]`` (``rediss+cluster://`` for TLS): nodes to discover the cluster
    from (port 6379 by default).

    Raises:
        ConfigurationError: A host list or path that cannot be read; never quoting a password.
    """
    scheme, sep, rest = url.partition("://")
    if scheme.lower() not in _TOPOLOGIES or not sep:
        return url, _Topology()
    base, kind = _TOPOLOGIES[scheme.lower()]
    at = rest.rfind("@")
    userinfo, after = rest[: at + 1], rest[at + 1 :]
    cut = min((i for i in (after.find(c) for c in "/?#") if i >= 0), default=len(after))
    hostlist, tail = after[:cut], after[cut:]
    path, mark, query = tail.partition("?")
    default_port = 26379 if kind == "sentinel" else 6379
    hosts = []
    for each in hostlist.split(","):
        try:
            parts = urlsplit(f"//{each}")
            host, port = parts.hostname, parts.port or default_port
        except ValueError:
            host = None
        if not host:
            raise ConfigurationError(
                f"not a usable {scheme} URL: each host is host[:port], separated by commas"
            )
        hosts.append((host, port))
    segments = [unquote(segment) for segment in path.strip("/").split("/") if segment]
    service, db = "", 0
    if kind == "sentinel":
        if not segments or len(segments) > 2:
            raise ConfigurationError(
                f"not a usable {scheme} URL: its path is /service[/db], the name of the primary "
                "the sentinels watch (e.g. /mymaster/0)"
            )
        service = segments[0]
        if len(segments) == 2:
            if not segments[1].isdigit():
                raise ConfigurationError(f"not a usable {scheme} URL: the database is a number")
            db = int(segments[1])
    elif segments not in ([], ["0"]):
        raise ConfigurationError(f"not a usable {scheme} URL: a cluster has only database 0")
    query, sentinel_username, sentinel_password = _take_sentinel_credentials(scheme, kind, query)
    first = hostlist.split(",")[0]
    single = f"{base}://{userinfo}{first}" + (f"/{db}" if db else "") + (mark if query else "")
    single += query
    return single, _Topology(kind, tuple(hosts), service, db, sentinel_username, sentinel_password)


_SENTINEL_CREDENTIALS = ("sentinel_username", "sentinel_password")


def _take_sentinel_credentials(
    scheme: str, kind: str, query: str
) -> tuple[str, str | None, str | None]:
    """`query` without the sentinels' credentials, and those (percent-decoded; None: absent).

    Raises:
        ConfigurationError: They are given on a URL that has no sentinels, a user name comes
            without a password, or one is empty; never quoting them.
    """
    query, hash_mark, fragment = query.partition("#")
    found: dict[str, str] = {}
    kept = []
    for pair in query.split("&") if query else []:
        name, _, value = pair.partition("=")
        if name in _SENTINEL_CREDENTIALS:
            found[name] = unquote(value)
        else:
            kept.append(pair)
    if found and kind != "sentinel":
        raise ConfigurationError(
            f"not a usable {scheme} URL: sentinel_username and sentinel_password belong to "
            "redis+sentinel:// URLs"
        )
    if any(not value for value in found.values()):
        raise ConfigurationError(f"not a usable {scheme} URL: an empty sentinel credential")
    if "sentinel_username" in found and "sentinel_password" not in found:
        raise ConfigurationError(
            f"not a usable {scheme} URL: sentinel_username needs a sentinel_password"
        )
    rest = "&".join(kept) + hash_mark + fragment
    return rest, found.get("sentinel_username"), found.get("sentinel_password")


def _take_replicas(url: str) -> tuple[str, int | None]:
    """`url` without its ``replicas=`` parameter, and that parameter's number (None: absent)."""
    base, mark, query = url.partition("?")
    if not mark:
        return url, None
    query, hash_mark, fragment = query.partition("#")
    found: int | None = None
    kept = []
    for pair in query.split("&"):
        name, _, value = pair.partition("=")
        if name != "replicas":
            kept.append(pair)
            continue
        if not value.isdigit():
            raise ConfigurationError(
                f"replicas={value!r}: give how many replicas a save must reach"
            )
        found = int(value)
    rebuilt = base + ("?" + "&".join(kept) if kept else "") + hash_mark + fragment
    return rebuilt, found


def _checking_host_names(url: str) -> str:
    """`url`, with TLS checking the server's host name unless the URL says otherwise: coredis
    checks only that a trusted CA signed the certificate, whatever name it was issued for."""
    parts = urlsplit(url)
    if parts.scheme != "rediss" or "ssl_check_hostname" in parse_qs(parts.query):
        return url
    check = "ssl_check_hostname=true"
    return parts._replace(query=f"{parts.query}&{check}" if parts.query else check).geturl()


@dataclass
class _Lease:
    """A held (or sought) lease: its key, our owner token, and the connection it is held on."""

    key: str
    owner: str
    inbox: MemoryObjectSendStream[_Request] | None = None
    lost: bool = field(default=False)
    broken: bool = field(default=False)  # Redis failed a call: do not wait on it to release


class RedisStorage:
    """Keeps sessions in Redis, as the same JSON as the `planet` CLI's ``token.json``.

    `lock(session)` is a lease: a random owner token set with ``SET NX PX``, extended while it is
    held, and released by compare-and-delete, so a holder that crashed blocks others for one
    lease period at most. A save made under the lease is fenced: it is written only if the lease
    is still ours, checked in the same atomic step as the write, so a holder that stalled past its
    lease cannot overwrite a newer session (it gets `LockLost`, and the TokenManager adopts the
    stored session instead).

    Every Redis call is bounded by `timeout`; the wait for the lease by `lock_timeout`. The
    session key and its lease share a hash tag, so every key and script of a session stays in
    one Redis Cluster slot. On Sentinel and Cluster a save counts only once `replicas` replicas
    have it (``WAIT``): replication is asynchronous, and a primary that dies before its replicas
    have a rotated refresh token would take the session with it.

    A value that is not a JSON object is moved aside (``...:token.corrupt-<time>-<random>``) with
    a WARNING, by one reader only and only if it is still that value, in one Lua script: other
    readers of it load None, and a valid session stored meanwhile is left alone and loaded.

    Args:
        url: ``redis://[[user]:password@]host[:port][/db]``, or ``rediss://`` for TLS (coredis
            URL options such as ``?ssl_ca_certs=...`` pass through); ``?retention=30d`` sets
            `retention`. ``redis+sentinel://[[user]:password@]host:port[,host:port...]/service
            [/db]`` names the primary that sentinels (port 26379 by default) watch as
            `service` (the user and password are the data nodes'; sentinels with a password of
            their own take ``?sentinel_password=...``, and ``&sentinel_username=...``);
            ``redis+cluster://[[user]:password@]host:port[,host:port...]`` (or
            ``rediss+cluster://``) a Redis Cluster, discovered from those nodes. A password with
            reserved characters (``/ ? # @ :``) is percent-encoded.
        prefix: Prefix of every key this storage uses.
        retention: Seconds a stored session is kept after its last save when the server did not
            say how long its refresh token lasts (``refresh_expires_in``); where it did, the
            session is kept as long as its refresh token (and never less than its access token).
            None keeps sessions until they are deleted. Default 30 days. Leases keep their own
            expiry.
        lease: Seconds a lease lasts unless extended (extended every third of it while held).
        lock_timeout: Seconds to wait for another holder's lease before `StorageError`.
        timeout: Seconds any one Redis call may take.
        replicas: How many replicas must have a save (``WAIT``) before it counts as saved;
            otherwise the save is a `StorageError`, and the TokenManager keeps the token in
            memory and saves it again later (requests go on with it). Default: 0 on a single
            node; on Sentinel and Cluster URLs 1 where the primary has a replica online, and
            none while it has none (its replicas all gone, or the moments after a failover
            before the others follow the new primary), with a WARNING: no replica could
            acknowledge the save then, and refusing it would stop every renewal of the session
            (a renewal's mark is a save) until one is back. Given (here or as ``?replicas=N`` in
            the URL), it is required whatever the primary has: with fewer replicas online, saves
            fail until they are back. With Sentinel, only a count of every replica makes sure
            the promoted one has the save: Sentinel chooses by the replication offsets it last
            polled, and may promote one that had not acknowledged it.
        replica_timeout: Seconds a save waits for its replicas (less than `timeout`; default
            1 s, or half of `timeout` if that is less).

    Raises:
        ConfigurationError: The URL is not a Redis URL coredis can use (no host, a port that is
            not a number from 1 to 65535, a bad IPv6 address, a password with an unencoded
            ``/``...), a number is out of range, or the ``redis`` extra is missing. The message
            never quotes a password, however malformed the URL.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "planet_async:",
        lease: float = 10.0,
        lock_timeout: float = 60.0,
        timeout: float = 5.0,
        retention: float | None = DEFAULT_RETENTION,
        replicas: int | None = None,
        replica_timeout: float | None = None,
    ) -> None:
        self._coredis = _coredis()
        single, self._topology = _split_topology(url)
        single, replicas_in_url = _take_replicas(single)
        if replicas_in_url is not None:
            replicas = replicas_in_url
        checked, from_url = check_redis_url(single)
        if from_url is not False:
            retention = from_url
        for name, value in (("lease", lease), ("lock_timeout", lock_timeout), ("timeout", timeout)):
            if not (math.isfinite(value) and value > 0):
                raise ConfigurationError(f"{name} must be a positive number of seconds")
        if retention is not None and not (math.isfinite(retention) and retention > 0):
            raise ConfigurationError("retention must be a positive number of seconds, or None")
        self._url = _checking_host_names(checked)
        self._secrets = url_secrets(url)
        try:
            # coredis reads the URL here, not at the first command: its objections belong to
            # construction, where the URL is given.
            self._coredis.Redis.from_url(self._url, decode_components=True)
        except Exception as exc:
            raise ConfigurationError(
                f"not a usable Redis URL: {redact(str(exc), self._secrets)}"
            ) from None
        self.url = mask_url(url if self._topology.kind != "node" else self._url)
        """The URL with its password masked."""
        self._replicas_required = replicas is not None
        if replicas is None:
            replicas = 0 if self._topology.kind == "node" else 1
        if replicas < 0:
            raise ConfigurationError("replicas must be 0 or more")
        if replica_timeout is None:
            replica_timeout = min(1.0, timeout / 2)
        if not (math.isfinite(replica_timeout) and 0 < replica_timeout < timeout):
            raise ConfigurationError("replica_timeout must be positive and less than timeout")
        self.replicas = replicas
        """Replicas a save must reach (``WAIT``) before it counts as saved (by default, where
        the primary has that many online: see the `replicas` argument)."""
        self.replica_timeout = replica_timeout
        self.retention = retention
        """Seconds a session is kept after its last save, unless the server said otherwise."""
        self.prefix = prefix
        self.lease = lease
        self.lock_timeout = lock_timeout
        self.timeout = timeout
        self._held: contextvars.ContextVar[_Lease | None] = contextvars.ContextVar(
            "planet_async_redis_lease", default=None
        )
        self._shared: tuple[anyio.abc.TaskGroup, MemoryObjectSendStream[_Request]] | None = None
        self._without_replicas = False  # the last save found its primary with no replica online

    async def __aenter__(self) -> RedisStorage:
        """Keep one client open until the block ends, for every call made in this event loop: a
        renewal then costs a few round trips instead of a connection of its own. Calls run
        concurrently on it: one that waits holds back no other session's."""
        if self._shared is not None:
            raise RuntimeError("this RedisStorage is already entered")
        tasks = anyio.create_task_group()
        await tasks.__aenter__()
        inbox, outbox = anyio.create_memory_object_stream[_Request](math.inf)
        tasks.start_soon(self._serve, outbox, "*")
        self._shared = (tasks, inbox)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        shared, self._shared = self._shared, None
        assert shared is not None
        tasks, inbox = shared
        inbox.close()
        tasks.cancel_scope.cancel()
        await tasks.__aexit__(None, None, None)

    lock_can_lapse = True
    """The lock is a lease: a holder that stalls past it loses it (see `TokenManager`)."""

    def __repr__(self) -> str:
        return f"RedisStorage({self.url!r}, prefix={self.prefix!r})"

    def _key(self, session: str, kind: str) -> str:
        # The hash tag ({session}) puts a session and its lease in one Redis Cluster slot.
        return f"{self.prefix}{{{session}}}:{kind}"

    # -- the Storage protocol ------------------------------------------------------------------

    async def load(self, session: str) -> TokenSet | None:
        for _ in range(3):  # a value replaced by another corrupt one twice over: absent
            raw = await self._call(lambda c: c.get(self._key(session, "token")), "read", session)
            if raw is None:
                return None
            data = json_object(raw)
            if data is not None:
                break
            if await self._move_aside(session, raw) <= 0:
                # 0: another reader moved it already; -1: replaced meanwhile, read that
                continue
            return None
        else:
            return None
        return stored_token(data, f"session {session!r} in {self.url}")

    async def save(self, session: str, token: TokenSet) -> None:
        payload = json.dumps(token.to_json_dict(), indent=2, sort_keys=True)
        key = self._key(session, "token")
        keep = self._retention_ms(token)
        lease = self._held.get()
        if lease is None or lease.key != self._key(session, "lock"):
            await self._call(
                self._durably(lambda c: c.set(key, payload, px=keep or None), session),
                "save",
                session,
            )
            return
        written = await self._call(
            self._durably(
                lambda c: c.eval(_FENCED_SET, [lease.key, key], [lease.owner, payload, keep]),
                session,
            ),
            "save",
            session,
        )
        if written != 1:
            lease.lost = True
            raise LockLost(
                f"the lease on session {session!r} in {self.url} lapsed before the save "
                "(this process stalled, or Redis did); the stored session was left as it was"
            )

    async def save_if_newer(self, session: str, token: TokenSet) -> bool:
        stamp = Generation.of(token)
        if stamp is None:
            await self.save(session, token)  # no stamp: a login's write, unconditional
            return True
        payload = json.dumps(token.to_json_dict(), indent=2, sort_keys=True)
        key = self._key(session, "token")
        lease_key = self._key(session, "lock")
        lease = self._held.get()
        owner = lease.owner if lease is not None and lease.key == lease_key else ""
        args: list[str | int] = [
            owner,
            payload,
            self._retention_ms(token),
            stamp.lineage,
            stamp.number,
            stamp.tag,
        ]
        written = await self._call(
            self._durably(lambda c: c.eval(_SET_IF_NEWER, [lease_key, key], args), session),
            "save",
            session,
        )
        if written == 0:
            assert lease is not None
            lease.lost = True
            raise LockLost(
                f"the lease on session {session!r} in {self.url} lapsed before the save "
                "(this process stalled, or Redis did); the stored session was left as it was"
            )
        return written == 1

    def _durably(
        self, command: Callable[[coredis.Redis[bytes]], Awaitable[_T]], session: str
    ) -> Callable[[coredis.Redis[bytes]], Awaitable[_T]]:
        """`command`, then ``WAIT`` on the same connection until `replicas` replicas have it (a
        ``ReplicationError``, so a `StorageError`, when they do not within `replica_timeout`).

        Unless `replicas` was given: then a primary with no replica online (all gone, or the
        moments after a failover before the others follow the new primary) takes the write
        without the wait, with one WARNING per episode, since no replica exists that could
        acknowledge it. While that lasts, each save first asks the primary (one round trip)
        whether a replica is back, and waits for it once one is.
        """
        if not self.replicas:
            return command
        wait_ms = max(1, round(self.replica_timeout * 1000))
        key = self._key(session, "token")

        async def online(client: coredis.Redis[bytes]) -> int:
            count = await client.eval(_ONLINE_REPLICAS, [key], [])
            return count if isinstance(count, int) else 0

        async def durable(client: coredis.Redis[bytes]) -> _T:
            if self._without_replicas:
                if not await online(client):
                    return await command(client)
                self._without_replicas = False
                logger.info("%s: a replica is online again; saves wait for it again", self.url)
            try:
                with client.ensure_replication(self.replicas, wait_ms):
                    return await command(client)
            except self._coredis.exceptions.ReplicationError:
                if self._replicas_required or await online(client):
                    raise
            self._without_replicas = True
            logger.warning(
                "%s: the primary of session %r has no replica online, so no save can be "
                "acknowledged by one; saves count without it (a failover before a replica is "
                "back can lose them) until one is online again",
                self.url,
                session,
            )
            # The same write again, now without WAIT, for its outcome (the first one's answer
            # came with the failed WAIT). It is idempotent: the value is the one just written.
            return await command(client)

        return durable

    def _retention_ms(self, token: TokenSet) -> int:
        """Milliseconds to keep `token` in Redis (0: until deleted): as long as its refresh token
        lasts where the server said (``refresh_expires_in``), else `retention`; never less than
        the access token has left."""
        if self.retention is None:
            return 0
        now = time.time()
        lifetime = token.extra.get("refresh_expires_in")
        if (
            token.refresh_token is not None
            and isinstance(lifetime, (int, float))
            and not isinstance(lifetime, bool)
            and math.isfinite(lifetime)
            and lifetime > 0  # Keycloak's 0: an offline token that does not expire
        ):
            until = token.issued_at + lifetime
        else:
            until = now + self.retention
        if token.expires_at is not None:
            until = max(until, token.expires_at)
        return max(1000, math.ceil((until - now) * 1000))

    async def delete(self, session: str) -> None:
        key = self._key(session, "token")
        await self._call(
            lambda c: c.eval(_DELETE, [key], [self.deletions_channel, session]), "delete", session
        )

    @property
    def deletions_channel(self) -> str:
        """The Redis Pub/Sub channel on which `delete` publishes the deleted session's name.

        A Redis ACL user needs it among its channels (``&planet_async:deleted``) for replicas to
        hear of sign-outs at once; without it deletions still work, and the others find out when
        they next renew."""
        return f"{self.prefix}deleted"

    @asynccontextmanager
    async def watch_deletions(self) -> AsyncIterator[AsyncIterator[str]]:
        """Subscribe to `deletions_channel` on a connection of its own, until the block ends.

        Raises:
            StorageError: Redis cannot be reached (the iterator stops when the connection
                drops; watchers subscribe again and re-read what they hold).
        """
        try:
            async with (
                # The node itself; on Sentinel the primary the sentinels name, where `delete`
                # publishes; on a Cluster the cluster's client (a publish reaches every node).
                self._client(listening=True) as client,
                client.pubsub(
                    channels=[self.deletions_channel],
                    ignore_subscribe_messages=True,
                    retry_policy=None,  # a dropped watch must show: deletions may be missed
                    subscription_timeout=self.timeout,
                ) as pubsub,
                aclosing(_session_names(pubsub)) as names,
            ):
                yield names
        except BaseExceptionGroup as group:  # novermin
            leaf = _first_leaf(group)
            raise self._error(leaf, "watch deletions of", "*") from None
        except (OSError, self._coredis.exceptions.RedisError) as exc:
            raise self._error(exc, "watch deletions of", "*") from exc

    # -- the RecordStore protocol (a web service's pending logins) -----------------------------

    async def put_record(self, key: str, data: bytes, ttl: float) -> None:
        ms = max(1, math.ceil(ttl * 1000))
        record = f"{self.prefix}record:{key}"
        await self._call(lambda c: c.set(record, data, px=ms), "record", key)

    async def take_record(self, key: str) -> bytes | None:
        # GETDEL (Redis 6.2+) is atomic: of replicas taking one record at once, one gets it.
        record = f"{self.prefix}record:{key}"
        raw = await self._call(lambda c: c.getdel(record), "record", key)
        return None if raw is None else bytes(raw)

    @asynccontextmanager
    async def lock(self, session: str) -> AsyncIterator[None]:
        lease = _Lease(self._key(session, "lock"), secrets.token_urlsafe(24))
        # One client for the whole lease (acquire, load, save, extend, release), in a task of
        # its own: the caller's work never runs inside coredis's task group. The group is entered
        # and left by hand, so that an error of the caller's comes out as itself, not wrapped in
        # an ExceptionGroup.
        tasks = anyio.create_task_group()
        await tasks.__aenter__()
        try:
            if self._shared is None:
                inbox, outbox = anyio.create_memory_object_stream[_Request](math.inf)
                lease.inbox = inbox
                tasks.start_soon(self._serve, outbox, session)
            reset = self._held.set(lease)
            try:
                # The release also follows a failed or cancelled acquire: Redis may have set the
                # lease just before the wait for its answer ended (unless Redis itself failed).
                await self._acquire(lease, session)
                tasks.start_soon(self._keep_extended, lease, session)
                yield
            finally:
                with anyio.CancelScope(shield=True):
                    await self._release(lease, session)
                self._held.reset(reset)
        finally:
            if lease.inbox is not None:
                lease.inbox.close()
            tasks.cancel_scope.cancel()
            await tasks.__aexit__(None, None, None)

    # -- the lease -------------------------------------------------------------------------------

    async def _acquire(self, lease: _Lease, session: str) -> None:
        deadline = time.monotonic() + self.lock_timeout
        lease_ms = max(1, round(self.lease * 1000))
        delay = 0.005
        while True:
            taken = await self._call(
                lambda c: c.eval(_ACQUIRE, [lease.key], [lease.owner, lease_ms]), "lock", session
            )
            if taken == 2:
                logger.warning(
                    "session %r: took over a lease in %s that a primary lost in a failover had "
                    "stamped; its holder, if alive, finds its save refused",
                    session,
                    self.url,
                )
            if taken:
                return
            if time.monotonic() >= deadline:
                raise StorageError(
                    f"timed out after {self.lock_timeout:g} s waiting for the lease on session "
                    f"{session!r} in {self.url}; another process holds it (a lease lapses by "
                    f"itself within {self.lease:g} s of its holder stopping)"
                )
            await anyio.sleep(delay)
            delay = min(delay * 2, 0.1, self.lease / 10)

    async def _keep_extended(self, lease: _Lease, session: str) -> None:
        lease_ms = max(1, round(self.lease * 1000))
        while True:
            await anyio.sleep(self.lease / 3)
            try:
                extended = await self._call(
                    lambda c: c.eval(_EXTEND, [lease.key], [lease.owner, lease_ms]),
                    "extend the lease on",
                    session,
                )
            except StorageError as exc:
                logger.warning("session %r: %s", session, str(exc))
                continue  # the fenced save still decides; the lease may yet be ours
            if extended != 1:
                lease.lost = True
                logger.warning(
                    "session %r: the lease in %s lapsed while held; a save now would be refused",
                    session,
                    self.url,
                )
                return

    async def _release(self, lease: _Lease, session: str) -> None:
        if lease.lost:
            return  # not ours any more: nothing to release
        if lease.broken:
            # Redis just failed us: waiting on it again would only delay the caller's error, and
            # the lease lapses by itself.
            logger.info("session %r: not releasing the lease; it lapses by itself", session)
            return
        try:
            await self._call(
                lambda c: c.eval(_RELEASE, [lease.key], [lease.owner]), "unlock", session
            )
        except StorageError as exc:
            # The lease lapses by itself; nothing is lost by not deleting it now.
            logger.warning("session %r: %s; the lease will lapse by itself", session, str(exc))

    # -- talking to Redis ------------------------------------------------------------------------

    async def _call(
        self, command: Callable[[coredis.Redis[bytes]], Awaitable[_T]], action: str, session: str
    ) -> _T:
        """Run one command, bounded by `timeout`: on the lease's connection inside `lock`, else
        (or once that connection is gone) on a client of its own."""
        lease = self._held.get()
        inbox = lease.inbox if lease is not None else None
        if inbox is None and self._shared is not None:
            inbox = self._shared[1]
        if inbox is not None:
            request = _Request(command, action, session)
            try:
                inbox.send_nowait(request)
            except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                if lease is not None and lease.inbox is inbox:
                    inbox.close()
                    lease.inbox = None
            else:
                await request.done.wait()
                if not isinstance(request.error, _ConnectionGone):
                    if request.error is not None:
                        if lease is not None and not isinstance(request.error, _NotAcknowledged):
                            lease.broken = True
                        raise request.error
                    result: _T = request.result
                    return result
        return await self._with_client(
            lambda client: self._bounded(command(client), action, session), action, session
        )

    async def _serve(self, outbox: MemoryObjectReceiveStream[_Request], session: str) -> None:
        """The lease's client (or the shared one): runs the requests sent to it until the lock is
        left, each in a task of its own, so that a call that waits (``WAIT`` for a replica that
        a failover took away, a node that does not answer) holds back its own caller only, not
        every session sharing the client. It never raises: a failure is its requests' outcome."""
        gone: BaseException = _ConnectionGone()
        try:
            async with outbox:

                async def run(client: coredis.Redis[bytes], request: _Request) -> None:
                    try:
                        request.result = await self._bounded(
                            request.command(client), request.action, request.session
                        )
                    except StorageError as exc:
                        request.error = exc
                    except BaseException:
                        request.error = gone  # the caller sends it again elsewhere
                        raise
                    finally:
                        request.done.set()

                async def serve(client: coredis.Redis[bytes]) -> None:
                    async with anyio.create_task_group() as running:
                        async for request in outbox:
                            running.start_soon(run, client, request)

                try:
                    await self._with_client(serve, "connect for", session)
                except StorageError as exc:
                    gone = exc  # Redis failed: the requests left fail the same way, at once
                finally:
                    for request in _drain(outbox):
                        request.error = gone
                        request.done.set()
        except Exception:  # pragma: no cover - defensive: the lock must not fail for this
            logger.exception("session %r: the Redis connection task failed", session)

    async def _with_client(
        self, use: Callable[[coredis.Redis[bytes]], Awaitable[_T]], action: str, session: str
    ) -> _T:
        """`use` a client opened for it and closed after it.

        Nothing but Redis commands runs inside a client: coredis runs each client's connections in
        a task group, whose failures would otherwise cancel, and wrap, whatever ran inside it.
        """
        try:
            async with self._client() as client:
                return await use(client)
        except StorageError:
            raise
        except BaseExceptionGroup as group:  # novermin
            leaf = _first_leaf(group)
            if isinstance(leaf, StorageError):  # already ours (`_bounded` runs inside the client)
                raise leaf from leaf.__cause__
            raise self._error(leaf, action, session) from None
        except Exception as exc:
            raise self._error(exc, action, session) from exc

    @asynccontextmanager
    async def _client(self, *, listening: bool = False) -> AsyncIterator[Any]:
        """A client of the node, of the primary the sentinels name now, or of the cluster;
        `listening` (a Pub/Sub subscriber, which waits for messages as long as it takes) without
        a bound on each read."""
        coredis = self._coredis
        options: dict[str, Any] = {"decode_responses": False, "connect_timeout": self.timeout}
        if not listening:
            options["stream_timeout"] = self.timeout
        topology = self._topology
        if topology.kind == "node":
            client = coredis.Redis.from_url(
                self._url,
                decode_components=True,  # a password with reserved characters is percent-encoded
                **options,
            )
            async with client:
                yield client
            return
        from coredis.connection import TCPLocation

        locations = [TCPLocation(host, port) for host, port in topology.hosts]
        if topology.kind == "cluster":
            client = coredis.RedisCluster.from_url(
                self._url, decode_components=True, startup_nodes=locations, **options
            )
            async with client:
                yield client
            return
        parts = urlsplit(self._url)
        credentials = {
            "username": unquote(parts.username) if parts.username else None,
            "password": unquote(parts.password) if parts.password else None,
        }
        sentinel_options: dict[str, Any] = {}
        if topology.sentinel_password is not None:
            # Given, these replace what coredis would otherwise take over from `options`.
            sentinel_options["sentinel_kwargs"] = {
                "connect_timeout": self.timeout,
                "stream_timeout": self.timeout,
                "username": topology.sentinel_username,
                "password": topology.sentinel_password,
            }
        async with coredis.Sentinel(locations, **sentinel_options, **options) as sentinel:
            # coredis takes the first sentinel's answer, even from one that sees that primary
            # down: after a failover, the first sentinel of the URL (the one leading the
            # failover names the new primary last; one cut off from the others never does)
            # would send every call to the primary that is gone.
            sentinel.discover_primary = partial(_primary_named, coredis, sentinel.sentinels)
            primary = sentinel.primary_for(topology.service, db=topology.db, **credentials)
            async with primary:
                yield primary

    async def _bounded(self, request: Awaitable[_T], action: str, session: str) -> _T:
        try:
            with anyio.fail_after(self.timeout):
                return await request
        except StorageError:
            raise
        except Exception as exc:
            raise self._error(exc, action, session) from exc

    def _error(self, exc: Exception, action: str, session: str) -> StorageError:
        if isinstance(exc, TimeoutError):
            detail = f"no answer within {self.timeout:g} s"
        elif isinstance(exc, self._coredis.exceptions.ReplicationError):
            return _NotAcknowledged(
                f"cannot {action} session {session!r} in {self.url}: fewer than {self.replicas} "
                f"replica(s) acknowledged it within {self.replica_timeout:g} s (WAIT); a renewed "
                "token is kept in memory and saved again"
            )
        else:
            # A Redis error can quote the URL it failed to reach, or parts of it: mask them.
            detail = f"{type(exc).__name__}: {exc}".replace(self._url, self.url)
            detail = redact(detail, self._secrets)
        return StorageError(f"cannot {action} session {session!r} in {self.url}: {detail}")

    async def _move_aside(self, session: str, raw: bytes) -> int:
        """Move the session's value aside if it is still `raw`, atomically: 1 moved, 0 already
        gone, -1 replaced meanwhile (a late reader never moves a session stored since)."""
        key = self._key(session, "token")
        aside = f"{key}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(4)}"
        digest = hashlib.sha1(raw).hexdigest()  # noqa: S324 - an identity, not a protection
        keep = 0 if self.retention is None else max(1000, math.ceil(self.retention * 1000))
        moved = await self._call(
            lambda c: c.eval(_MOVE_ASIDE_IF_SAME, [key, aside], [digest, keep]),
            "move aside",
            session,
        )
        if moved != 1:
            return -1 if moved == -1 else 0
        logger.warning(
            "session %r in %s was corrupt (not a JSON object); moved it to %r and treating the "
            "session as absent",
            session,
            self.url,
            aside,
        )
        return 1


async def _primary_named(coredis: Any, sentinels: list[Any], service: str) -> tuple[str, int]:
    """The primary `sentinels` name for `service`: the first answer of a sentinel that does not
    see that primary down (``s_down`` or ``o_down`` in ``SENTINEL MASTER``), as redis-py
    chooses. A sentinel that cannot tell (an ACL that allows it only ``GET-MASTER-ADDR-BY-NAME``)
    is taken at its word when no other answers.

    Raises:
        coredis.exceptions.PrimaryNotFoundError: No sentinel answered, or every one that did
            sees the primary down: a failover is under way, and a write to that primary would
            be lost with it (were it reachable at all).
    """
    unsure: tuple[str, int] | None = None
    seen_down = False
    for sentinel in sentinels:
        view = await _view_of(coredis, sentinel, service)
        if view is None:
            continue
        location, down = view
        if down is False:
            return location
        if down is None:
            unsure = unsure or location
        seen_down = seen_down or bool(down)
    if unsure is not None:
        return unsure
    if seen_down:
        raise coredis.exceptions.PrimaryNotFoundError(
            f"the sentinels see the primary of {service!r} down (a failover under way?)"
        )
    raise coredis.exceptions.PrimaryNotFoundError(f"No primary found for {service!r}")


async def _view_of(
    coredis: Any, sentinel: Any, service: str
) -> tuple[tuple[str, int], bool | None] | None:
    """Where `sentinel` says `service`'s primary is, and whether it sees it down (None: it may
    not say); None when it does not answer, or does not know `service`."""
    gone = (coredis.exceptions.ConnectionError, TimeoutError)
    try:
        state = await sentinel.sentinel_master(service)
    except coredis.exceptions.ResponseError:
        # Not watching `service`, or an ACL that allows only the plain question: ask that.
        try:
            named = await sentinel.sentinel_get_master_addr_by_name(service)
        except gone:
            return None
        return ((_text(named[0]), int(named[1])), None) if named else None
    except gone:
        return None
    return (_text(state["ip"]), int(state["port"])), bool(state["is_sdown"] or state["is_odown"])


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def _session_names(pubsub: Any) -> AsyncGenerator[str, None]:
    async for message in pubsub:
        if message.get("type") != "message":
            continue
        data = message.get("data")
        yield data.decode("utf-8", "surrogateescape") if isinstance(data, bytes) else str(data)


def _first_leaf(group: BaseExceptionGroup[BaseException]) -> Exception:  # novermin
    """The first plain exception in a (nested) group; a cancellation is re-raised as itself."""
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):  # novermin
            return _first_leaf(exc)
        if not isinstance(exc, Exception):
            raise exc
        return exc
    return RuntimeError("an empty exception group")


def _drain(outbox: MemoryObjectReceiveStream[_Request]) -> list[_Request]:
    """The requests still waiting in `outbox`."""
    left = []
    while True:
        try:
            left.append(outbox.receive_nowait())
        except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
            return left
