"""Memory: resident memory after 10,000 and 100,000 requests, each contender in its own process.

Each contender runs in a fresh interpreter (so that one's garbage is not another's baseline) and
sends 100,000 sequential requests with a valid token. Resident memory is read after a full garbage
collection at 1,000, 10,000 and 100,000 requests. Resident memory also moves with the allocator's
bookkeeping, so 10,000 more requests then run under `tracemalloc`, which counts the Python objects
they leave behind: a leak of one object per request would leave hundreds of KiB there.
Target: flat.

``python -m benchmarks.memory CONTENDER ISSUER HOME`` runs one contender and prints JSON.
"""

from __future__ import annotations

import gc
import json
import os
import resource
import subprocess
import sys
import tempfile
import tracemalloc
from pathlib import Path
from typing import Any

import anyio
import httpx

from ._common import API_URL, Context, ok, table, write_results
from ._contenders import NAMES, OPENERS, Setup

TTL = 3600
CHECKPOINTS = (1_000, 10_000, 100_000)
TRACED = 5_000
ROOT = Path(__file__).resolve().parent.parent


def resident_bytes() -> int:
    """This process's resident memory now (Linux), or its peak where /proc is missing."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024


async def _measure(
    name: str, issuer: str, home: Path, checkpoints: tuple[int, ...]
) -> dict[str, Any]:
    setup = Setup(issuer, home, TTL)
    resident: dict[str, int] = {}
    failures = sent = 0
    async with OPENERS[name](setup, httpx.MockTransport(lambda request: ok())) as client:
        for checkpoint in checkpoints:
            while sent < checkpoint:
                response = await client.get(API_URL)
                failures += response.status_code != 200
                sent += 1
            gc.collect()
            resident[str(checkpoint)] = resident_bytes()
        tracemalloc.start()
        try:
            gc.collect()
            before = tracemalloc.get_traced_memory()[0]
            for _ in range(TRACED):
                response = await client.get(API_URL)
                failures += response.status_code != 200
            gc.collect()
            left = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
    return {
        "contender": name,
        "resident": resident,
        "traced_requests": TRACED,
        "python_heap_growth": left,
        "failures": failures,
    }


def _worker(argv: list[str]) -> int:
    name, issuer, home, *counts = argv
    checkpoints = tuple(int(c) for c in counts) or CHECKPOINTS
    print(json.dumps(anyio.run(_measure, name, issuer, Path(home), checkpoints)), flush=True)
    return 0


def run(ctx: Context) -> None:
    ctx.configure_peer(ttl=TTL, token_delay_ms=0)
    checkpoints = CHECKPOINTS if not ctx.quick else (1_000, 2_000, 10_000)
    workers = []
    for name in NAMES:
        # Each in its own process and HOME; they run side by side, which changes their speed
        # but not what they keep in memory.
        home = tempfile.mkdtemp(prefix="memory-", dir=ctx.home)
        env = {**os.environ, "HOME": home, "USERPROFILE": home}
        command = [sys.executable, "-m", "benchmarks.memory", name, ctx.peer.issuer, home]
        command += [str(c) for c in checkpoints]
        workers.append(
            subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
        )
    results: list[dict[str, Any]] = []
    try:
        for worker in workers:
            out, _ = worker.communicate(timeout=600)
            if worker.returncode != 0:
                raise RuntimeError(f"the memory worker failed with exit code {worker.returncode}")
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    first, middle, last = (str(c) for c in checkpoints)
    rows = []
    for result in results:
        resident = result["resident"]
        growth = resident[last] - resident[middle]
        rows.append(
            [
                result["contender"],
                f"{resident[first] / 2**20:.1f}",
                f"{resident[middle] / 2**20:.1f}",
                f"{resident[last] / 2**20:.1f}",
                f"{growth / 2**10:+,.0f}",
                f"{growth / (int(last) - int(middle)):+.2f}",
                f"{result['python_heap_growth'] / 2**10:+,.0f}",
                result["failures"],
            ]
        )
        result["growth_bytes_per_request"] = growth / (int(last) - int(middle))
    ctx.show(
        table(
            f"Memory: resident set after {int(middle):,} and {int(last):,} sequential requests",
            [
                "contender",
                f"RSS at {int(first):,}, MiB",
                f"at {int(middle):,}, MiB",
                f"at {int(last):,}, MiB",
                f"growth {int(middle):,} to {int(last):,}, KiB",
                "bytes per request",
                f"Python heap left by {TRACED:,} more, KiB",
                "failures",
            ],
            rows,
            note=(
                "Resident memory after a full garbage collection at each checkpoint; one process "
                f"per contender. Python heap: what {TRACED:,} more requests left allocated "
                "(tracemalloc, after a collection; bounded caches in httpx and the standard "
                "library account for about 30 KiB). Target: flat."
            ),
        )
    )
    write_results(
        ctx, "memory", {"parameters": {"checkpoints": checkpoints}, "contenders": results}
    )


if __name__ == "__main__":
    sys.exit(_worker(sys.argv[1:]))
