"""What every benchmark shares: the run's context, the loop ticker, statistics, tables, results."""

from __future__ import annotations

import itertools
import json
import math
import os
import platform
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import httpx

if TYPE_CHECKING:
    from tests._peer import Peer

RESULTS = Path(__file__).resolve().parent / "results"

API_URL = "https://api.planet.com/data/v1/item-types"
"""Every benchmark request goes here; an `httpx.MockTransport` stands in for the API."""

_OK_BODY = b'{"ok":true}'
_OK_HEADERS = {"content-type": "application/json"}


def ok() -> httpx.Response:
    """The API's answer to an authenticated request."""
    return httpx.Response(200, headers=_OK_HEADERS, content=_OK_BODY)


def unauthorized() -> httpx.Response:
    return httpx.Response(401, headers=_OK_HEADERS, content=b'{"error":"unauthorized"}')


def bearer(request: httpx.Request) -> str | None:
    """The bearer token a request carries, if any."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token if scheme.lower() == "bearer" and token else None


@dataclass
class Context:
    """One benchmark run: the shared test peer, a private HOME, and how thorough to be."""

    peer: Peer
    home: Path
    quick: bool = False
    tables: list[str] = field(default_factory=list)

    @property
    def results(self) -> Path:
        """Where this run's numbers go: results/, or results/quick/ for a quick run."""
        return RESULTS / "quick" if self.quick else RESULTS

    def scaled(self, full: int, quick: int) -> int:
        return quick if self.quick else full

    def configure_peer(self, *, ttl: int, token_delay_ms: int) -> None:
        """Set the access token lifetime and the token endpoint's delay; zero the counters."""
        self.peer.set_access_token_ttl(ttl)
        self.peer.set_token_delay(token_delay_ms)
        self.peer.reset()

    def token_requests(self, grant_type: str = "client_credentials") -> int:
        """Token requests of `grant_type` the peer answered since the last reset, failed or not."""
        failed = sum(
            count for key, count in self.peer.errors().items() if key.startswith(f"{grant_type}:")
        )
        return self.peer.grants(grant_type) + failed

    def show(self, text: str) -> None:
        print(text, flush=True)
        self.tables.append(text)


def start_watchdog(seconds: float, what: str) -> None:
    """End this process if it is still running after `seconds` (a benchmark's child process)."""

    def expire() -> None:
        print(f"{what} {os.getpid()}: watchdog expired", file=sys.stderr, flush=True)
        os._exit(3)

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()


class Ticker:
    """Ticks every `interval` seconds on the event loop and notes when each tick really ran.

    A loop that is busy (or blocked) cannot run the ticker, so the gaps between ticks are the
    loop's stalls, whoever caused them.
    """

    def __init__(self, interval: float = 0.001) -> None:
        self.interval = interval
        self.ticks: list[float] = []

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        task_status.started()
        while True:
            self.ticks.append(time.perf_counter())
            await anyio.sleep(self.interval)

    def worst_lag(self, start: float, end: float) -> float:
        """The longest the loop went without ticking within [start, end], less the interval.

        The window's edges count as ticks: a stall that began before `start` counts from `start`,
        and a window with no tick inside at all stalled for its whole length.
        """
        if end <= start:
            return 0.0
        inside = [t for t in self.ticks if start < t < end]
        gaps = (b - a for a, b in itertools.pairwise([start, *inside, end]))
        return max(0.0, max(gaps) - self.interval)

    def count(self, start: float, end: float) -> int:
        return sum(1 for t in self.ticks if start <= t <= end)


# -- statistics -------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank percentile `q` (0..100) of `values`."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    if not ordered:
        return math.nan
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2


def quartiles(values: Sequence[float]) -> tuple[float, float]:
    """The 25th and 75th percentiles (interpolated), the spread reported beside a median."""
    ordered = sorted(values)
    if len(ordered) < 2:
        return (ordered[0], ordered[0]) if ordered else (math.nan, math.nan)

    def at(q: float) -> float:
        position = q * (len(ordered) - 1)
        low = math.floor(position)
        high = min(low + 1, len(ordered) - 1)
        return ordered[low] + (ordered[high] - ordered[low]) * (position - low)

    return at(0.25), at(0.75)


# -- output -----------------------------------------------------------------------------------


def ms(seconds: float | None, digits: int = 1) -> str:
    return "n/a" if seconds is None or math.isnan(seconds) else f"{seconds * 1000:.{digits}f}"


def ratio(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.{digits}f}x"


def table(
    title: str, header: Sequence[str], rows: Iterable[Sequence[object]], note: str = ""
) -> str:
    """A Markdown table (readable in a terminal too), with a title line and an optional note."""
    cells = [[str(c) for c in header], *([str(c) for c in row] for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]

    def line(row: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    out = [f"### {title}", "", line(cells[0]), rule, *(line(r) for r in cells[1:])]
    if note:
        out += ["", note]
    return "\n".join(out) + "\n"


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def environment() -> dict[str, Any]:
    """Where and with what the numbers were measured."""
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "packages": {
            name: _version(name)
            for name in ("planet-async", "planet", "planet-auth", "authlib", "httpx", "anyio")
        },
    }


def write_results(ctx: Context, name: str, data: dict[str, Any]) -> Path:
    """Write one benchmark's numbers to benchmarks/results/<name>.json (or results/quick/)."""
    ctx.results.mkdir(parents=True, exist_ok=True)
    path = ctx.results / f"{name}.json"
    document = {"benchmark": name, "environment": environment(), **data}
    path.write_text(json.dumps(document, indent=2, sort_keys=False) + "\n")
    return path
