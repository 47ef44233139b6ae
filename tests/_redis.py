"""Run a real redis-server (Debian's package) on a free loopback port for the tests.

Stdlib only. The nox `tests` session installs `redis-server` when it is missing.
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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """A private redis-server on 127.0.0.1: no persistence, its own working directory.

    `extra` are more `redis-server` arguments (ACL users, TLS). `stop`, `start`, `pause` and
    `resume` stand in for a restart, a crash and a stalled server in failure tests.
    """

    def __init__(self, *extra: str, port: int | None = None) -> None:
        binary = os.environ.get("PLANET_ASYNC_REDIS_SERVER") or shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server not found: `python3 -m nox -s tests` installs it")
        self.binary = binary
        self.port = port or free_port()
        self.extra = extra
        self.directory = Path(tempfile.mkdtemp(prefix="planet-redis-"))
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        log = open(self.directory / "redis.log", "ab")  # noqa: SIM115 - the child writes it
        command = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
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
            if "Ready to accept connections" in self.log():
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

    def flush(self) -> None:
        """Forget every key (between tests)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            sock.sendall(b"*1\r\n$8\r\nFLUSHALL\r\n")
            assert sock.recv(64).startswith(b"+OK"), "FLUSHALL failed"
