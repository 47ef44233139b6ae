"""Fleets of worker processes (tests/_worker.py, or another program) sharing a session: in a
FileStorage, or in Redis."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path
from types import TracebackType
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent


def jwt_claims(token: str) -> dict[str, Any]:
    """A JWT's payload, read without verifying it."""
    payload = token.split(".")[1]
    claims: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return claims


class Fleet:
    """One worker per backend, started and waiting for `go`; on exit, stragglers are killed and
    every process is reaped.

    Args:
        worker_args: Arguments for ``python -m tests._worker`` (without ``--backend``).
        backends: One worker per entry: ``"asyncio"`` or ``"trio"``.
        logs: A directory for each worker's stderr.
        envs: Per worker, variables to set in its environment (``HOME``, to stand in for another
            machine); by default every worker inherits this process's environment unchanged.
        module: The worker program, run as ``python -m MODULE``; it prints ``ready``, waits for
            ``go`` on stdin, and prints its JSON report as its last line.
    """

    def __init__(
        self,
        worker_args: Sequence[str],
        backends: Sequence[str],
        logs: Path,
        envs: Sequence[Mapping[str, str]] | None = None,
        module: str = "tests._worker",
    ) -> None:
        if envs is not None and len(envs) != len(backends):
            raise ValueError("one environment per worker")
        self._args = list(worker_args)
        self._backends = list(backends)
        self._envs = [dict(env) for env in envs] if envs is not None else [{} for _ in backends]
        self._logs = logs
        self._module = module
        self._stack = ExitStack()
        self.procs: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> Fleet:
        with self._stack as stack:
            for index, (backend, env) in enumerate(zip(self._backends, self._envs, strict=True)):
                stderr = stack.enter_context(open(self._logs / f"worker-{index}.err", "wb"))
                command = [sys.executable, "-W", "error", "-m", self._module, *self._args]
                self.procs.append(
                    stack.enter_context(
                        subprocess.Popen(
                            [*command, "--backend", backend],
                            cwd=REPO_ROOT,  # `-m` puts it first on sys.path: this checkout's code
                            env={**os.environ, **env},
                            stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE,
                            stderr=stderr,
                        )
                    )
                )
            stack.callback(self._kill_stragglers)  # runs before each Popen's exit waits for it
            for index, proc in enumerate(self.procs):
                assert proc.stdout is not None
                line = proc.stdout.readline()
                assert line == b"ready\n", f"worker {index} did not start:\n{self.stderr(index)}"
            self._stack = stack.pop_all()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stack.close()

    def _kill_stragglers(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()

    def go(self) -> None:
        """Release every worker at once."""
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.write(b"go\n")
            proc.stdin.flush()

    def reports(self, timeout: float) -> list[dict[str, Any]]:
        """Each worker's JSON report, once all have exited successfully."""
        outputs = [proc.communicate(timeout=timeout)[0] for proc in self.procs]
        reports = []
        for index, (proc, output) in enumerate(zip(self.procs, outputs, strict=True)):
            assert proc.returncode == 0, f"worker {index} failed:\n{self.stderr(index)}"
            reports.append(json.loads(output.decode().splitlines()[-1]))
        return reports

    def stderr(self, index: int, *, whole: bool = False) -> str:
        text = (self._logs / f"worker-{index}.err").read_text(errors="replace")
        return text if whole else text[-3000:]
