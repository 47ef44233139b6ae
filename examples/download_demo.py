"""The main job, end to end, on this machine: download thousands of files with short-lived tokens.

No Planet credentials needed. The demo starts two local servers on 127.0.0.1:

* the test peer (tests/peer, a real oidc-provider authorization server) issuing access tokens
  that live a few seconds, to the service account ``service-basic``;
* a small API (`_demo_api.py`, in its own process) that verifies every request's token against
  the peer's keys (signature, issuer, audience, expiry), answers 401 otherwise, and serves files.

Then it downloads the files the way an application would, with only the public API of
planet_async: one adapter (`PlanetAuth` for httpx, or the one for httpx2 or aiohttp, chosen with
``--client``; `_clients.py`), its `TokenManager` renewing ahead in the background, one client,
and a fixed pool of worker tasks. It checks every file's bytes, draws a
progress bar on stderr, measures the event loop's worst stall with a 1 ms ticker, and ends with
a summary. The exit code is 0 only if every file arrived intact and the API rejected no request.

    python examples/download_demo.py [--files 8000] [--concurrency 16] [--token-ttl 3]
                                     [--latency-ms 25] [--backend asyncio|trio] [--metrics]
                                     [--client httpx|httpx2|aiohttp]

With ``--metrics`` the summary adds what the token manager told a listener (`add_listener`):
renewals started, succeeded and failed, their latency, tokens adopted from storage, 401
rejections, and the seconds left on the token at the end.

Needs Node.js >= 20 and ``npm ci`` in tests/peer once (``python3 tools/nox.py -s demo`` does both).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import anyio
import anyio.abc

from planet_async import MissingExtra, PlanetAuthError, TokenEvent, TokenManager

EXAMPLES = Path(__file__).resolve().parent
ROOT = EXAMPLES.parent
sys.path[:0] = [str(EXAMPLES), str(ROOT)]  # the API's file contents, and the test peer

from _clients import ASYNCIO_ONLY, CLIENTS, Client, adapter, open_client  # noqa: E402
from _demo_api import file_content  # noqa: E402

from tests._peer import Peer  # noqa: E402

CLIENT_ID = "service-basic"
CLIENT_SECRET = "service-basic-secret"  # the test peer's demo account, not a real secret
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass
class RenewalMetrics:
    """What the token manager reported to its listener: a listener only counts, it never
    blocks (it runs in the task that renews)."""

    counts: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)  # seconds, per completed renewal
    errors: Counter[str] = field(default_factory=Counter)  # failed renewals by error type
    expires_in: float | None = None  # seconds left on the token when the job ended

    def record(self, event: TokenEvent) -> None:
        self.counts[event.kind] += 1
        if event.duration is not None:
            self.latencies.append(event.duration)
        if event.error is not None:
            self.errors[event.error] += 1


@dataclass
class Progress:
    """What the workers have done so far; read by the progress bar and the summary."""

    total: int
    done: int = 0
    failed: int = 0
    bytes: int = 0
    worst_stall: float = 0.0  # seconds, wall clock, between two ticks beyond the 1 ms asked
    worst_stall_cpu: float = 0.0  # the loop thread's CPU time during that worst stall
    worst_busy: float = 0.0  # the most CPU time the loop thread spent between two ticks
    started: float = field(default_factory=time.perf_counter)
    finished: float | None = None
    failures: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)  # seconds, per request, incl. retry
    interrupted: str | None = None  # the signal that stopped the download, if one did
    renewals: int | None = None  # the token manager's count, once the job has ended
    metrics: RenewalMetrics | None = None  # with --metrics: the manager's events
    bar_open: bool = False  # a terminal line is drawn and not yet ended

    @property
    def elapsed(self) -> float:
        return (self.finished or time.perf_counter()) - self.started

    def fail(self, n: int, why: str) -> None:
        self.failed += 1
        if len(self.failures) < 5:
            self.failures.append(f"file {n}: {why}")


# -- the download job: what an application using planet_async looks like ------------------------


async def download(
    args: argparse.Namespace, api_url: str, issuer: str, progress: Progress, budget: float
) -> None:
    """Fetch files 0..N-1 with `args.concurrency` workers, recording what happens in `progress`."""
    auth = adapter(args.client).from_client_credentials(
        CLIENT_ID, CLIENT_SECRET, issuer=issuer, allowed_origins=[api_url]
    )
    manager = auth.manager
    assert isinstance(manager, TokenManager)
    if progress.metrics is not None:
        manager.add_listener(progress.metrics.record)
    try:
        with anyio.fail_after(budget):
            # The manager's context gives background renewals a task group of their own.
            async with (
                manager,
                open_client(args.client, auth, args.concurrency) as client,
                anyio.create_task_group() as observers,
            ):
                observers.start_soon(_ticker, progress)
                observers.start_soon(_draw_progress, progress, manager)
                with anyio.CancelScope() as work:
                    await observers.start(_stop_on_signals, work, progress)
                    await _run_workers(args, client, api_url, progress)
                progress.finished = time.perf_counter()
                observers.cancel_scope.cancel()
    finally:
        progress.renewals = manager.renewals
        if progress.metrics is not None:
            progress.metrics.expires_in = manager.expires_in()


async def _run_workers(
    args: argparse.Namespace, client: Client, api_url: str, progress: Progress
) -> None:
    """A fixed pool of workers takes file numbers from a stream: bounded concurrency."""
    send, receive = anyio.create_memory_object_stream[int](max_buffer_size=args.concurrency)
    progress.started = time.perf_counter()
    async with anyio.create_task_group() as workers:
        for _ in range(args.concurrency):
            workers.start_soon(_worker, client, api_url, receive.clone(), progress)
        receive.close()
        async with send:
            for n in range(args.files):
                await send.send(n)


async def _worker(
    client: Client,
    api_url: str,
    numbers: anyio.abc.ObjectReceiveStream[int],
    progress: Progress,
) -> None:
    async with numbers:
        async for n in numbers:
            sent = time.perf_counter()
            try:
                status, content = await client.fetch(f"{api_url}/files/{n}")
            except (*client.errors, PlanetAuthError) as exc:
                progress.fail(n, f"{type(exc).__name__}: {exc}")
                continue
            finally:
                progress.latencies.append(time.perf_counter() - sent)
            if status != 200:
                progress.fail(n, f"HTTP {status}")
            elif content != file_content(n):
                progress.fail(n, "content differs from the expected bytes")
            else:
                progress.done += 1
                progress.bytes += len(content)


async def _stop_on_signals(
    work: anyio.CancelScope,
    progress: Progress,
    *,
    task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Ctrl-C or a polite kill cancels the work; more of them (nox sends SIGTERM 0.3 s after a
    Ctrl-C) are absorbed, so that a KeyboardInterrupt never lands in the middle of the shutdown.
    """
    if sys.platform == "win32":  # no signal receivers there: Ctrl-C is a KeyboardInterrupt
        task_status.started()
        return
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        task_status.started()
        async for signum in signals:
            if progress.interrupted is None:
                progress.interrupted = signal.Signals(signum).name
                work.cancel()


async def _ticker(progress: Progress) -> None:
    """Sleep 1 ms at a time; anything longer between wake-ups is time the loop was not ours.

    Wall time between ticks is the stall the application feels; the loop thread's CPU time over
    the same gap tells how much of it was code running on the loop rather than the process
    waiting for a CPU (on a busy machine, other programs' share).
    """
    last, last_cpu = time.perf_counter(), time.thread_time()
    while True:
        await anyio.sleep(0.001)
        now, cpu = time.perf_counter(), time.thread_time()
        stall, busy = now - last - 0.001, cpu - last_cpu
        if stall > progress.worst_stall:
            progress.worst_stall, progress.worst_stall_cpu = stall, busy
        progress.worst_busy = max(progress.worst_busy, busy)
        last, last_cpu = now, cpu


# -- the progress bar ------------------------------------------------------------------------------


async def _draw_progress(progress: Progress, manager: TokenManager) -> None:
    """Redraw a bar on a terminal every 0.1 s; elsewhere (logs, CI) print a line per tenth."""
    tty = sys.stderr.isatty()
    tenths_shown = 0
    try:
        while True:
            if tty:
                sys.stderr.write("\r" + _bar_line(progress, manager))
                sys.stderr.flush()
                progress.bar_open = True
            else:
                tenths = (progress.done + progress.failed) * 10 // progress.total
                if tenths > tenths_shown:
                    print(_bar_line(progress, manager), file=sys.stderr, flush=True)
                    tenths_shown = tenths
            await anyio.sleep(0.1 if tty else 0.05)
    finally:  # cancelled once the work is done (or given up): show where it ended
        if tty:
            sys.stderr.write("\r" + _bar_line(progress, manager))
            _finish_bar(progress)
        elif (progress.done + progress.failed) * 10 // progress.total > tenths_shown:
            print(_bar_line(progress, manager), file=sys.stderr, flush=True)


def _bar_line(progress: Progress, manager: TokenManager) -> str:
    finished = progress.done + progress.failed
    fraction = finished / progress.total
    width = 30
    filled = int(fraction * width)
    rate = finished / progress.elapsed if progress.elapsed > 0 else 0.0
    return (
        f"[{'#' * filled}{'.' * (width - filled)}] {fraction:4.0%} "
        f"{finished}/{progress.total} files  {rate:5.0f} files/s  "
        f"renewals {manager.renewals}  failed {progress.failed} "
    )


def _finish_bar(progress: Progress) -> None:
    if progress.bar_open:
        sys.stderr.write("\n")
        sys.stderr.flush()
        progress.bar_open = False


# -- the local servers -----------------------------------------------------------------------------


class DemoApi:
    """The `_demo_api.py` process; it also exits by itself when our end of its stdin closes.

    `module` runs another server with the same command line, first line and ``/__stats`` (the
    benchmarks' faster one)."""

    def __init__(
        self,
        issuer: str,
        latency_ms: float,
        timeout: float = 20.0,
        *,
        module: str = "examples._demo_api",
    ) -> None:
        self._proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", module, "--issuer", issuer, "--latency-ms", str(latency_ms)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        lines: queue.Queue[bytes] = queue.Queue(maxsize=1)
        threading.Thread(
            target=lambda: lines.put(self._proc.stdout.readline()),  # type: ignore[union-attr]
            daemon=True,
        ).start()
        try:
            line = lines.get(timeout=timeout)
            self.url = str(json.loads(line)["url"])
        except (queue.Empty, ValueError, KeyError) as exc:
            self.stop()
            raise RuntimeError(f"{module} did not start (see its output above)") from exc

    def stats(self) -> dict[str, Any]:
        with _NO_PROXY.open(f"{self.url}/__stats", timeout=10) as response:
            return dict(json.loads(response.read()))

    def stop(self) -> None:
        proc = self._proc
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()


class _Stoppable(Protocol):
    def stop(self) -> None: ...


ServerT = TypeVar("ServerT", bound=_Stoppable)


def _launch(start: Callable[[], ServerT], stoppers: list[Callable[[], None]]) -> ServerT:
    """Start a server from a thread, registering its stop first: a Ctrl-C while it starts then
    waits for the start to finish and stops what it started, instead of orphaning it."""
    started: list[ServerT] = []
    failed: list[BaseException] = []

    def run() -> None:
        try:
            started.append(start())
        except BaseException as exc:
            failed.append(exc)

    thread = threading.Thread(target=run, name="start-server", daemon=True)

    def stop() -> None:
        thread.join()
        for server in started:
            server.stop()

    stoppers.append(stop)
    thread.start()
    thread.join()
    if failed:
        raise failed[0]
    return started[0]


# -- putting it together ---------------------------------------------------------------------------


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Download files from a local token-checking API with short-lived tokens."
    )
    parser.add_argument("--files", type=int, default=8000, help="how many files (default 8000)")
    parser.add_argument("--concurrency", type=int, default=16, help="worker tasks (default 16)")
    parser.add_argument(
        "--token-ttl", type=int, default=3, help="access token lifetime in seconds (default 3)"
    )
    parser.add_argument(
        "--latency-ms", type=float, default=25.0, help="API time per file (default 25)"
    )
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    parser.add_argument(
        "--client", choices=CLIENTS, default="httpx", help="HTTP client library (default httpx)"
    )
    parser.add_argument(
        "--timeout", type=float, default=120.0, help="give up after this many seconds overall"
    )
    parser.add_argument(
        "--metrics",
        action="store_true",
        help="also print the token manager's events: renewals, latency, adoptions, 401s",
    )
    args = parser.parse_args(argv)
    if args.files < 1 or args.concurrency < 1 or args.token_ttl < 1 or args.timeout <= 0:
        parser.error("--files, --concurrency and --token-ttl must be >= 1, --timeout > 0")
    if args.client in ASYNCIO_ONLY and args.backend != "asyncio":
        parser.error(f"--client {args.client} runs on asyncio only: use --backend asyncio")
    try:
        adapter(args.client)
    except MissingExtra as exc:
        parser.error(str(exc))
    return args


def _summary(
    args: argparse.Namespace,
    progress: Progress,
    grants: int | None,
    api: dict[str, Any] | None,
    outcome: str,
) -> str:
    elapsed = progress.elapsed
    finished = progress.done + progress.failed
    mb = progress.bytes / 1e6
    unknown = "unknown"
    rejected = api["rejected"] if api else None
    reasons = api["rejected_by_reason"] if api else {}
    rows = [
        ("files", f"{progress.done} of {args.files} intact, {progress.failed} failed"),
        ("bytes", f"{progress.bytes:,} ({mb:.1f} MB)"),
        ("elapsed", f"{elapsed:.1f} s"),
        ("throughput", f"{finished / elapsed:.0f} files/s, {mb / elapsed:.1f} MB/s"),
        ("token lifetime", f"{args.token_ttl} s ({elapsed / args.token_ttl:.1f} lifetimes)"),
        (
            "token renewals",
            f"{unknown if progress.renewals is None else progress.renewals} by the client "
            "(manager.renewals), "
            f"{unknown if grants is None else grants} grants at the server",
        ),
        ("distinct tokens used", f"{api['distinct_tokens'] if api else unknown} (seen by the API)"),
        ("request latency", _percentiles(progress.latencies)),
        (
            "worst event-loop stall",
            f"{progress.worst_stall * 1000:.1f} ms (1 ms ticker), "
            f"{progress.worst_stall_cpu * 1000:.1f} ms of it on the loop's CPU; "
            f"longest run on the loop {progress.worst_busy * 1000:.1f} ms",
        ),
        (
            "requests rejected",
            f"{rejected if rejected is not None else unknown} (401s from the API; must be 0)"
            + (f" {reasons}" if rejected else ""),
        ),
        (
            "setup",
            f"{args.client} on {args.backend}, {args.concurrency} workers, "
            f"API latency {args.latency_ms:g} ms, {_machine()}",
        ),
        *(_metrics_rows(progress.metrics) if progress.metrics is not None else []),
        ("result", outcome),
    ]
    width = max(len(name) for name, _ in rows)
    lines = ["", "planet_async download demo", "-" * 26]
    lines += [f"{name:<{width}}  {value}" for name, value in rows]
    lines += [f"  {failure}" for failure in progress.failures]
    if rejected and set(reasons) == {"expired"}:
        slowest = max(progress.latencies, default=0.0)
        lines.append(
            f"  note: requests took up to {slowest:.1f} s here, longer than what is left of a "
            f"{args.token_ttl} s token once it has been renewed ahead: on a busy machine, "
            "lower --concurrency or raise --token-ttl"
        )
    return "\n".join(lines)


def _metrics_rows(metrics: RenewalMetrics) -> list[tuple[str, str]]:
    counts = metrics.counts
    failed = f"{counts['renewal_failed']} failed" + (
        f" {dict(metrics.errors)}" if metrics.errors else ""
    )
    left = "unknown" if metrics.expires_in is None else f"{metrics.expires_in:.1f} s"
    return [
        (
            "renewal events",
            f"{counts['renewal_started']} started, {counts['renewal_succeeded']} succeeded, "
            f"{failed}, {counts['token_adopted']} tokens adopted from storage, "
            f"{counts['token_rejected']} 401 rejections",
        ),
        ("renewal latency", _percentiles(metrics.latencies)),
        ("token expires in", f"{left} (when the job ended)"),
    ]


def _machine() -> str:
    """CPUs and load: on a busy machine, stalls and latencies are partly other programs'."""
    cpus = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # Windows
        return f"{cpus} CPUs"
    return f"{cpus} CPUs, load average {load:.1f}"


def _percentiles(samples: list[float]) -> str:
    if not samples:
        return "none"
    ordered = sorted(samples)
    p50, p99 = (ordered[min(len(ordered) - 1, int(q * len(ordered)))] for q in (0.5, 0.99))
    return f"p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, max {ordered[-1] * 1000:.0f} ms"


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # Everything stays on loopback, whatever proxies the environment names.
    for name in ("NO_PROXY", "no_proxy"):
        os.environ[name] = ",".join(filter(None, [os.environ.get(name), "127.0.0.1", "localhost"]))

    # Outside the event loop a polite kill is a Ctrl-C: it stops the servers on its way out.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    deadline = time.monotonic() + args.timeout
    progress = Progress(total=args.files, metrics=RenewalMetrics() if args.metrics else None)
    stoppers: list[Callable[[], None]] = []

    def give_up() -> None:  # only if the event loop itself is stuck past the deadline
        print(f"\ndemo: stuck after {args.timeout:g} s; stopping the servers", file=sys.stderr)
        for stop in reversed(stoppers):
            stop()
        os._exit(3)

    watchdog = threading.Timer(args.timeout + 10, give_up)
    watchdog.daemon = True
    watchdog.start()
    grants = None
    api_stats = None
    outcome, code = "interrupted", 130
    try:
        print(f"starting the test peer (tokens live {args.token_ttl} s) ...", file=sys.stderr)
        peer = _launch(lambda: Peer.start(env={"AT_TTL": str(args.token_ttl)}), stoppers)
        api = _launch(lambda: DemoApi(peer.issuer, args.latency_ms), stoppers)
        print(
            f"authorization server {peer.issuer}, API {api.url}; "
            f"downloading {args.files} files with {args.concurrency} workers, "
            f"{args.client} on {args.backend}",
            file=sys.stderr,
        )
        budget = deadline - time.monotonic()
        try:
            anyio.run(download, args, api.url, peer.issuer, progress, budget, backend=args.backend)
        except TimeoutError:
            progress.finished = time.perf_counter()
            outcome, code = f"TIMED OUT after {args.timeout:g} s", 2
        signal.signal(signal.SIGTERM, signal.default_int_handler)  # asyncio reset it
        if progress.interrupted:
            outcome = f"interrupted ({progress.interrupted})"
            code = 128 + signal.Signals[progress.interrupted]
        try:  # after a Ctrl-C in a terminal the servers got it too, and may be gone
            grants = peer.grants("client_credentials")
            api_stats = api.stats()
        except OSError:
            if not progress.interrupted:
                raise
        if code != 2 and not progress.interrupted:
            assert api_stats is not None
            ok = progress.done == args.files and api_stats["rejected"] == 0
            outcome, code = ("OK", 0) if ok else ("FAILED", 1)
    except RuntimeError as exc:  # a server did not start: nothing to summarise
        print(f"demo: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        progress.finished = progress.finished or time.perf_counter()
    finally:
        # A second Ctrl-C (or nox's SIGTERM after it) must not cut the servers' shutdown short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        _finish_bar(progress)
        watchdog.cancel()
        for stop in reversed(stoppers):
            stop()
    print(_summary(args, progress, grants, api_stats, outcome))
    return code


if __name__ == "__main__":
    sys.exit(main())
