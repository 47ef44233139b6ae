"""Replicated Redis for the tests: a Sentinel group and a Redis Cluster, of real redis-servers
(Debian's package) on loopback ports, built from tests/_redis.py's `RedisServer`.

Stdlib only. Timings checked on this machine are in the project's round-3 facts: with
``down-after-milliseconds 1000`` Sentinel promotes a replica about 1.4 s after its primary is
SIGKILLed (and names it 1.5-2.3 s after); with ``cluster-node-timeout 1000`` a Cluster replica
takes over in 2.1-2.5 s.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests._redis import RedisServer, free_port

FAST_SYNC = ("--repl-diskless-sync-delay", "0")  # a replica's full sync starts at once


def _wait_for(check: object, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():  # type: ignore[operator]
                return
        except (OSError, RuntimeError):
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{what} within {timeout:g} s")


class SentinelGroup:
    """One primary, two replicas and three sentinels watching them as `NAME`.

    `url` is the ``redis+sentinel://`` URL of the three sentinels; `kill_primary` SIGKILLs the
    current primary and `wait_for_failover` waits until every sentinel names another one. With
    `password` the data nodes require it (``requirepass``, and the sentinels and replicas are
    given it); with `sentinel_password` the sentinels require one of their own.
    """

    NAME = "mymaster"

    def __init__(
        self,
        replicas: int = 2,
        sentinels: int = 3,
        *,
        password: str | None = None,
        sentinel_password: str | None = None,
    ) -> None:
        self.password = password
        self.sentinel_password = sentinel_password
        auth = ("--requirepass", password, "--masterauth", password) if password else ()
        self.primary = RedisServer(*FAST_SYNC, *auth)
        self.replicas = [
            RedisServer(*FAST_SYNC, *auth, "--replicaof", "127.0.0.1", str(self.primary.port))
            for _ in range(replicas)
        ]
        self.sentinel_ports = [free_port() for _ in range(sentinels)]
        self.directory = Path(tempfile.mkdtemp(prefix="planet-sentinel-"))
        self._sentinels: list[subprocess.Popen[bytes]] = []

    @property
    def servers(self) -> list[RedisServer]:
        return [self.primary, *self.replicas]

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{self.NAME}/0"

    def start(self) -> SentinelGroup:
        """Start every process; if one fails, stop those already started and raise."""
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> SentinelGroup:
        self.primary.start()
        for replica in self.replicas:
            replica.start()
        auth = ("default", self.password) if self.password else None
        _wait_for(
            lambda: (
                self.primary.call("INFO", "replication", auth=auth).count(b"state=online")
                == len(self.replicas)
            ),
            "the replicas did not come online",
            20,
        )
        for port in self.sentinel_ports:
            self._start_sentinel(port, self.primary.port)
        for port in self.sentinel_ports:
            _wait_for(
                lambda port=port: (
                    self.sentinel_call(port, "SENTINEL", "REPLICAS", self.NAME)
                    if self.replicas
                    else self.sentinel_call(port, "PING") == "PONG"
                ),
                "the sentinels did not see the replicas",
                20,
            )
        return self

    def _start_sentinel(self, port: int, primary_port: int) -> None:
        binary = os.environ.get("PLANET_ASYNC_REDIS_SERVER") or shutil.which("redis-server")
        assert binary is not None
        home = self.directory / f"sentinel-{len(self._sentinels)}"
        home.mkdir()
        conf = home / "sentinel.conf"
        conf.write_text(
            f"port {port}\nbind 127.0.0.1\ndir {home}\n"
            f"sentinel monitor {self.NAME} 127.0.0.1 {primary_port} 2\n"
            f"sentinel down-after-milliseconds {self.NAME} 1000\n"
            f"sentinel failover-timeout {self.NAME} 3000\n"
            + (f"sentinel auth-pass {self.NAME} {self.password}\n" if self.password else "")
            + (f"requirepass {self.sentinel_password}\n" if self.sentinel_password else "")
        )
        log = open(home / "sentinel.log", "wb")  # noqa: SIM115 - the child writes it
        command = [binary, str(conf), "--sentinel"]
        self._sentinels.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT))
        log.close()

    def start_lost_sentinel(self, primary_port: int) -> int:
        """Start one more sentinel, watching `primary_port` as `NAME` and knowing no other
        sentinel (one cut off from the group, or restarted with an old configuration): it goes
        on naming that primary whatever the others do. Returns its port once it has seen that
        primary down (``s_down``); it is stopped with the group, and is not in `url`."""
        port = free_port()
        self._start_sentinel(port, primary_port)

        def sees_it_down() -> bool:
            state = self.sentinel_call(port, "SENTINEL", "MASTER", self.NAME)
            assert isinstance(state, list)
            fields = [f.decode() if isinstance(f, bytes) else str(f) for f in state]
            return "s_down" in dict(zip(fields[::2], fields[1::2], strict=True))["flags"]

        _wait_for(sees_it_down, "the lost sentinel did not see its primary down", 20)
        return port

    def sentinel_call(self, port: int, *command: str) -> object:
        return RedisServer.call_port(port, *command, password=self.sentinel_password)

    def primary_port(self, sentinel_port: int | None = None) -> int:
        """The primary's port as a sentinel names it."""
        port = sentinel_port or self.sentinel_ports[0]
        answer = self.sentinel_call(port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.NAME)
        assert isinstance(answer, list)
        return int(answer[1])

    def server_on(self, port: int) -> RedisServer:
        (server,) = [s for s in self.servers if s.port == port]
        return server

    def kill_primary(self) -> RedisServer:
        """SIGKILL the current primary; returns it (to start again as a replica later)."""
        primary = self.server_on(self.primary_port())
        primary.kill()
        return primary

    def wait_for_failover(self, old_port: int, timeout: float = 20) -> int:
        """Wait until every sentinel names a primary other than `old_port`, and it takes writes;
        returns its port."""
        _wait_for(
            lambda: all(self.primary_port(port) != old_port for port in self.sentinel_ports),
            "the sentinels did not fail over",
            timeout,
        )
        new = self.server_on(self.primary_port())
        _wait_for(
            lambda: b"role:master" in new.call("INFO", "replication"),
            "the new primary did not take the role",
            timeout,
        )
        return new.port

    def stop(self) -> None:
        for proc in self._sentinels:
            proc.send_signal(signal.SIGTERM)
        for proc in self._sentinels:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        self._sentinels = []
        for server in self.servers:
            server.stop()


def _cluster_port() -> int:
    """A free port whose cluster bus port (10000 above it) is free too."""
    for _ in range(100):
        port = free_port()
        try:
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", port + 10000))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


class ClusterGroup:
    """A Redis Cluster of `primaries` primaries with one replica each (``redis-cli --cluster
    create --cluster-replicas 1``), ``cluster-node-timeout 1000``.

    `url` is the ``redis+cluster://`` URL of every node.
    """

    def __init__(self, primaries: int = 3) -> None:
        self.nodes = [
            RedisServer(
                *FAST_SYNC,
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "1000",
                port=_cluster_port(),
            )
            for _ in range(2 * primaries)
        ]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)

    def start(self) -> ClusterGroup:
        """Start every process; if one fails, stop those already started and raise."""
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> ClusterGroup:
        for node in self.nodes:
            node.start()
        cli = shutil.which("redis-cli")
        assert cli is not None, "redis-cli (Debian's redis-tools) is needed for a cluster"
        subprocess.run(
            [
                cli,
                "--cluster",
                "create",
                *(f"127.0.0.1:{node.port}" for node in self.nodes),
                "--cluster-replicas",
                "1",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        _wait_for(self._ready, "the cluster did not cover every slot", 30)
        return self

    def _ready(self) -> bool:
        for node in self.nodes:
            info = node.call("CLUSTER", "INFO")
            if b"cluster_state:ok" not in info:
                return False
        # Every replica is in sync, so that a failover has one to promote.
        links = sum(node.call("INFO", "replication").count(b"state=online") for node in self.nodes)
        return links == len(self.nodes) // 2

    def primary_of(self, key: str) -> RedisServer:
        """The node serving `key`'s slot now."""
        alive = [node for node in self.nodes if node.running]
        slot = alive[0].call("CLUSTER", "KEYSLOT", key)
        for node in alive:
            for start, end, owner, *_ in node.call("CLUSTER", "SLOTS"):
                if start <= slot <= end:
                    (server,) = [n for n in self.nodes if n.port == int(owner[1])]
                    return server
        raise RuntimeError(f"no node serves slot {slot}")

    def flush(self) -> None:
        """Forget every key on every primary (between tests)."""
        for node in self.nodes:
            if node.running and b"role:master" in node.call("INFO", "replication"):
                node.flush()

    def wait_for_takeover(self, dead: RedisServer, timeout: float = 30) -> None:
        """Wait until every node left says its replica serves `dead`'s slots, and the cluster
        is whole again."""

        def whole() -> bool:
            alive = [n for n in self.nodes if n is not dead and n.running]
            return all(
                b"cluster_state:ok" in n.call("CLUSTER", "INFO")
                and all(
                    int(owner[1]) != dead.port for _, _, owner, *_ in n.call("CLUSTER", "SLOTS")
                )
                for n in alive
            )

        _wait_for(whole, "the cluster did not recover", timeout)

    def rejoin(self, node: RedisServer, timeout: float = 30) -> None:
        """Start `node` again (it rejoins as a replica of the primary that replaced it) and wait
        until it is in sync."""
        node.start()

        def synced() -> bool:
            info = node.call("INFO", "replication")
            return b"role:slave" in info and b"master_link_status:up" in info

        _wait_for(synced, "the node did not rejoin as a replica", timeout)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
