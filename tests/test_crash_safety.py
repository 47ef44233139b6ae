"""FileStorage under `kill -9`: a saver killed mid-write never leaves a corrupt session."""

from __future__ import annotations

import os
import queue
import random
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

import anyio
import pytest

from planet_async import FileStorage
from tests._save_loop import written_token

REPO = Path(__file__).resolve().parents[1]

MAX_KILLS = 50
TIME_BUDGET = 25.0  # seconds


def _forward(stream: IO[str], lines: queue.Queue[str]) -> None:
    for line in stream:
        lines.put(line)


@pytest.mark.skipif(sys.platform == "win32", reason="needs fork and SIGKILL")
@pytest.mark.timeout(60)
def test_sigkill_during_saves_never_corrupts_the_session(tmp_path: Path) -> None:
    """Killed at random moments while saving, the file is absent or a token the saver wrote."""
    root = tmp_path / "root"
    session_dir = root / "default"
    saver = subprocess.Popen(
        [sys.executable, "-m", "tests._save_loop", str(root)],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert saver.stdin is not None
    assert saver.stdout is not None
    # Read its output in a thread, so that every wait for a line can have a timeout.
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=_forward, args=(saver.stdout, lines), daemon=True).start()
    rng = random.Random()
    kills = loaded = interrupted = 0
    deadline = time.monotonic() + TIME_BUDGET
    try:
        for run in range(MAX_KILLS):
            if time.monotonic() >= deadline:
                break
            saver.stdin.write(f"go {run}\n")
            saver.stdin.flush()
            started = re.fullmatch(r"started (\d+)\n", lines.get(timeout=20))
            assert started, "the saver did not start"
            pid = int(started[1])

            time.sleep(rng.uniform(0.005, 0.05))  # the random moment is the point, not a sync
            os.kill(pid, signal.SIGKILL)
            reaped = re.fullmatch(r"reaped (\d+) (\d+)\n", lines.get(timeout=20))
            assert reaped, "the saver was not reaped"
            assert int(reaped[1]) == pid
            status = int(reaped[2])
            assert os.WIFSIGNALED(status), f"the saver exited on its own ({status})"
            assert os.WTERMSIG(status) == signal.SIGKILL
            kills += 1

            # Temp files are what a kill mid-write leaves; they never replace the token file.
            temps = list(session_dir.glob(".token.*.tmp"))
            interrupted += bool(temps)
            for temp in temps:
                temp.unlink()

            token = anyio.run(FileStorage(root).load, "default")
            assert list(session_dir.glob("*corrupt*")) == []
            if token is None:
                assert not (session_dir / "token.json").exists()
                continue
            written = re.fullmatch(r"at-(\d+)-(\d+)", token.access_token.get_secret_value())
            assert written, "the loaded token is not one the saver wrote"
            token_run, i = int(written[1]), int(written[2])
            assert token_run <= run
            assert token.to_json_dict() == written_token(token_run, i).to_json_dict()
            loaded += 1
    finally:
        saver.stdin.close()
        try:
            saver.wait(timeout=10)
        except subprocess.TimeoutExpired:
            saver.kill()
            saver.wait()
        saver.stdout.close()

    assert kills >= 30
    assert loaded >= kills - 1  # only a kill before the very first save finds no file
    assert interrupted >= 1, "no kill landed mid-write: the test proved nothing"
