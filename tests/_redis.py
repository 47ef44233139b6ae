"""Run a real redis-server (Debian's package) on a free loopback port for the tests.

Stdlib only. The nox `tests` session installs `redis-server` when it is missing.
"""

from __future__ import annotations

import io
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Ports for servers the tests start are picked below the kernel's ephemeral range (Linux:
# 32768-60999), so no outgoing connection (another xdist worker's clients) can take one between
# the pick and the server's bind: asking the kernel for port 0 returned ephemeral ports, and once
# a cluster node's port was taken that way ("Failed listening on port ... aborting"). The range
# also keeps a cluster node's bus port (10000 above its own) below the ephemeral range.
_PORTS = range(10000, 22768)


def free_port() -> int:
    """A loopback port nothing listens on, outside the ephemeral range."""
    for _ in range(200):
        port = secrets.choice(_PORTS)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free loopback port found in 200 tries")


@dataclass(frozen=True)
class TLSFiles:
    """PEM files for a TLS-only server: the CA that signed it, its certificate and its key."""

    ca: Path
    cert: Path
    key: Path


class RedisServer:
    """A private redis-server on 127.0.0.1: no persistence, its own working directory.

    `extra` are more `redis-server` arguments (ACL users, persistence). With `tls` the server
    listens only for TLS, on `port`, and `url` is a ``rediss://`` URL that trusts its CA.
    `stop`, `kill`, `start`, `pause` and `resume` stand in for a restart, a crash and a stalled
    server in failure tests.
    """

    def __init__(self, *extra: str, port: int | None = None, tls: TLSFiles | None = None) -> None:
        binary = os.environ.get("PLANET_ASYNC_REDIS_SERVER") or shutil.which("redis-server")
        if binary is None:
            raise RuntimeError(
                "redis-server not found: `python3 tools/nox.py -s tests` installs it"
            )
        self.binary = binary
        self.port = port or free_port()
        self.extra = extra
        self.tls = tls
        self.directory = Path(tempfile.mkdtemp(prefix="planet-redis-"))
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        if self.tls is not None:
            return f"rediss://127.0.0.1:{self.port}/0?ssl_ca_certs={self.tls.ca}"
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        """Start the server (again, after `stop`, on the same port and directory)."""
        started = len(self.log())  # on a restart, the first run's lines are in the log already
        log = open(self.directory / "redis.log", "ab")  # noqa: SIM115 - the child writes it
        command = [self.binary, "--bind", "127.0.0.1", "--save", ""]
        if self.tls is None:
            command += ["--port", str(self.port)]
        else:
            command += ["--port", "0", "--tls-port", str(self.port), "--tls-auth-clients", "no"]
            command += ["--tls-cert-file", str(self.tls.cert), "--tls-key-file", str(self.tls.key)]
            command += ["--tls-ca-cert-file", str(self.tls.ca)]
        command += ["--appendonly", "no", "--dir", str(self.directory), *self.extra]
        self._proc = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"redis-server exited: {self.log()[-2000:]}")
            if "Ready to accept connections" in self.log()[started:]:
                return self
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server did not start within {timeout} s")

    def log(self) -> str:
        path = self.directory / "redis.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def pause(self) -> None:
        assert self._proc is not None
        self._proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self._proc is not None
        self._proc.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        """End the server with SIGKILL, as a crash would (`start` brings it back)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.kill()
        proc.wait(timeout=10)

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.send_signal(signal.SIGCONT)
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    @property
    def running(self) -> bool:
        return self._proc is not None

    @staticmethod
    def call_port(port: int, *command: str | bytes, password: str | None = None) -> Any:
        """Send one command to whatever Redis (or sentinel) listens on `port`, without TLS,
        after ``AUTH password`` if given."""
        commands = [("AUTH", password), command] if password is not None else [command]
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        with sock, sock.makefile("rwb") as stream:
            for each in commands:
                stream.write(_encode(each))
            stream.flush()
            replies = [_reply(stream) for _ in commands]
        return replies[-1]

    def flush(self) -> None:
        """Forget every key (between tests)."""
        assert self.call("FLUSHALL") == "OK", "FLUSHALL failed"

    def call(self, *command: str | bytes, db: int = 0, auth: tuple[str, str] | None = None) -> Any:
        """Send one command, as `auth` = (user, password) and in database `db` if given, and
        return its reply: str, int, bytes, None or a list of them. An error reply raises."""
        commands: list[tuple[str | bytes, ...]] = []
        if auth is not None:
            commands.append(("AUTH", *auth))
        if db:
            commands.append(("SELECT", str(db)))
        commands.append(command)
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        if self.tls is not None:
            context = ssl.create_default_context(cafile=str(self.tls.ca))
            context.check_hostname = False  # the tests give some servers a name of another host
            sock = context.wrap_socket(sock)
        with sock, sock.makefile("rwb") as stream:
            for each in commands:
                stream.write(_encode(each))
            stream.flush()
            replies = [_reply(stream) for _ in commands]
        return replies[-1]


def _encode(command: tuple[str | bytes, ...]) -> bytes:
    parts = [part.encode() if isinstance(part, str) else part for part in command]
    return f"*{len(parts)}\r\n".encode() + b"".join(
        b"$%d\r\n%s\r\n" % (len(part), part) for part in parts
    )


def _reply(stream: io.BufferedIOBase) -> Any:
    """One RESP2 reply."""
    line = stream.readline().removesuffix(b"\r\n")
    kind, rest = line[:1], line[1:]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise RuntimeError(f"redis: {rest.decode()}")
    if kind == b":":
        return int(rest)
    if kind == b"$":
        size = int(rest)
        return None if size < 0 else stream.read(size + 2)[:-2]
    if kind == b"*":
        size = int(rest)
        return None if size < 0 else [_reply(stream) for _ in range(size)]
    raise RuntimeError(f"redis: unexpected reply {line!r}")
