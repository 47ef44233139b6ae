"""Run a real PostgreSQL server (Debian's postgresql-15) on a free loopback port for the tests.

PostgreSQL refuses to run as root, so as root the server runs as ``nobody`` (through
``setpriv``) in a directory of its own owned by ``nobody``. It is started as ``postgres -D ...``
directly, not through ``pg_ctl`` (which detaches), so that the fixture keeps its process to stop,
pause or kill. The nox `tests` session installs postgresql-15 when it is missing;
``PLANET_ASYNC_POSTGRES_BIN`` names another directory holding ``initdb`` and ``postgres``.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from tests._redis import free_port

_DEBIAN_BIN = Path("/usr/lib/postgresql/15/bin")


def postgres_bin() -> Path:
    """The directory holding ``initdb`` and ``postgres``."""
    override = os.environ.get("PLANET_ASYNC_POSTGRES_BIN")
    if override:
        return Path(override)
    if (_DEBIAN_BIN / "postgres").exists():
        return _DEBIAN_BIN
    found = shutil.which("postgres")
    if found is None:
        raise RuntimeError(
            "PostgreSQL not found: `python3 -m nox -s tests` installs Debian's postgresql-15, "
            "or set PLANET_ASYNC_POSTGRES_BIN to a directory holding initdb and postgres"
        )
    return Path(found).parent


def _as_server_user() -> list[str]:
    """The prefix that runs a command as the server's user: `nobody` when we are root."""
    if os.geteuid() != 0:
        return []
    return ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]


class PostgresServer:
    """A private PostgreSQL on 127.0.0.1, trusting local connections as user ``postgres``.

    `stop` (a fast shutdown), `crash` (SIGKILL of the server and its backends), `start`,
    `pause` and `resume` stand in for a restart, a crash and a stalled server in failure tests.
    """

    def __init__(self, *settings: str) -> None:
        self.bin = postgres_bin()
        self.port = free_port()
        self.settings = settings
        self.directory = Path(tempfile.mkdtemp(prefix="planet-postgres-", dir=_server_tmp()))
        self.data = self.directory / "data"
        self._proc: subprocess.Popen[bytes] | None = None
        if os.geteuid() == 0:
            nobody = pwd.getpwnam("nobody")
            os.chown(self.directory, nobody.pw_uid, nobody.pw_gid)
        subprocess.run(
            [
                *_as_server_user(),
                str(self.bin / "initdb"),
                "-D",
                str(self.data),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
        )

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self, timeout: float = 20.0) -> PostgresServer:
        """Start the server (again, after `stop` or `crash`, on the same port and data)."""
        started = len(self.log())
        log = open(self.directory / "postgres.log", "ab")  # noqa: SIM115 - the child writes it
        command = [
            *_as_server_user(),
            str(self.bin / "postgres"),
            "-D",
            str(self.data),
            "-p",
            str(self.port),
            "-k",
            str(self.directory),
            "-c",
            "listen_addresses=127.0.0.1",
        ]
        for setting in self.settings:
            command += ["-c", setting]
        self._proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"postgres exited: {self.log()[-2000:]}")
            if "ready to accept connections" in self.log()[started:]:
                return self
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"postgres did not start within {timeout} s")

    def log(self) -> str:
        path = self.directory / "postgres.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def pause(self) -> None:
        """Stop the server process (not its backends: a connection's queries still run)."""
        assert self._proc is not None
        self._proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self._proc is not None
        self._proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        """A fast shutdown: open connections are ended, and the server exits cleanly."""
        self._end(signal.SIGINT)

    def crash(self) -> None:
        """An immediate shutdown: the server quits without a checkpoint and recovers from its
        WAL at the next start, as after a crash."""
        self._end(signal.SIGQUIT)

    def _end(self, sig: signal.Signals) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.send_signal(signal.SIGCONT)
        proc.send_signal(sig)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    def sql(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        """Run one statement (autocommit) and return its rows (none for a statement that
        returns none)."""
        import psycopg

        with psycopg.connect(self.url, autocommit=True, connect_timeout=5) as conn:
            cursor = conn.execute(query.encode(), params or None)  # type: ignore[call-overload]
            return cursor.fetchall() if cursor.description is not None else []


def _server_tmp() -> str | None:
    """Where the server's directory goes: the usual temporary directory, unless the server runs
    as `nobody` (we are root) and cannot reach it (say TMPDIR under a 0700 /root): then /tmp."""
    if os.geteuid() != 0:
        return None
    path = Path(tempfile.gettempdir()).resolve()
    if all(part.stat().st_mode & 0o001 for part in (path, *path.parents)):
        return None
    return "/tmp"
