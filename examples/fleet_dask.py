"""The demo's download job on a Dask cluster, its worker processes sharing one session in Redis.

A fleet is many processes using one service account. Each process that kept its own session
would ask the authorization server for a token at every expiry (N token requests where one would
do, and throttling by the server); sharing the session through Redis makes the whole fleet renew
once per expiry. Here the fleet is a real Dask ``LocalCluster`` with worker processes, and the job
is the one of `download_demo.py`: fetch files from an API that verifies every token.

Each worker process opens, once, what an application using planet_async opens (a Dask worker
plugin does it when the worker starts, and closes it when the worker stops): an event loop in a
thread of its own, one `PlanetAuth` over ``RedisStorage(url)`` and one `httpx.AsyncClient`.
Dask tasks download batches of files through them. The first worker that finds the token aged
renews it under the Redis lease; the others read the new token from Redis when theirs ages.

With no options it runs on this machine alone and needs no credentials: it starts the test peer
(tests/peer, a real oidc-provider) issuing tokens that live a few seconds to the service account
``service-basic``, the demo's API (`_demo_api.py`), and a private ``redis-server`` on loopback
(Debian's package). ``--issuer`` and ``--redis`` use running ones instead: the credentials then
come from PL_AUTH_CLIENT_ID and PL_AUTH_CLIENT_SECRET, as for every other example.

    python examples/fleet_dask.py [--workers 3] [--files 1440] [--batch 24] [--concurrency 4]
                                  [--token-ttl 5] [--latency-ms 100] [--backend asyncio|trio]
                                  [--issuer URL] [--redis URL] [--timeout 60]

It ends with a summary and, last, one JSON line of the figures. The exit code is 0 only if every
file arrived intact and the API rejected no request. Needs, in a clone of the repository,
``python3 -m pip install '.[redis]' distributed`` (and ``trio`` for ``--backend trio``) and,
unless ``--issuer`` is given, Node.js and ``npm ci`` in tests/peer.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import logging
import os
import sys
import threading
import time
from collections.abc import AsyncIterator
from contextlib import ExitStack, asynccontextmanager
from pathlib import Path
from typing import Any, cast

import anyio
import anyio.abc
import anyio.from_thread
import httpx
from distributed import Client, LocalCluster, WorkerPlugin, get_worker, wait

from planet_async import PlanetAuth, PlanetAuthError, RedisStorage

EXAMPLES = Path(__file__).resolve().parent
ROOT = EXAMPLES.parent
# The API's file contents, the demo's API process and the test peer. Dask's worker processes
# import this file too (as `__mp_main__`), and so find the same modules.
sys.path[:0] = [str(EXAMPLES), str(ROOT)]

from _demo_api import file_content  # noqa: E402
from download_demo import CLIENT_ID, CLIENT_SECRET, DemoApi  # noqa: E402

SESSION = "fleet-demo"  # the session's name in Redis, shared by every worker process
PLUGIN = "planet-session"


def fingerprint(token: str) -> str:
    """Names a token in a report without revealing it."""
    return hashlib.sha256(token.encode()).hexdigest()[:12]


def issued_at(token: str) -> int | None:
    """A JWT's `iat`, read without verifying it (for the report: when each token was issued)."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return int(claims["iat"])
    except (IndexError, ValueError, KeyError, TypeError):
        return None


# -- in each worker process: one session, one client, one event loop -----------------------------


class SharedSession(WorkerPlugin):
    """Opens, in each worker process, an event loop (in a thread), a `PlanetAuth` over Redis and
    an `httpx.AsyncClient`; closes them when the worker stops.

    Only where to connect travels from the client to the workers; the credentials are read from
    each worker's own environment, as they would be on machines of a real cluster.
    """

    idempotent = True

    def __init__(self, issuer: str, redis_url: str, api_url: str, concurrency: int, backend: str):
        self.issuer = issuer
        self.redis_url = redis_url
        self.api_url = api_url
        self.concurrency = concurrency
        self.backend = backend

    def setup(self, worker: Any) -> None:
        self._stack = ExitStack()
        self.tokens: dict[str, int | None] = {}  # fingerprint: iat, in order of first use
        portal = self._stack.enter_context(anyio.from_thread.start_blocking_portal(self.backend))
        self.portal = portal
        self.client, self.auth = self._stack.enter_context(
            portal.wrap_async_context_manager(self._open())
        )

    def teardown(self, worker: Any) -> None:
        self._stack.close()

    @asynccontextmanager
    async def _open(self) -> AsyncIterator[tuple[httpx.AsyncClient, PlanetAuth]]:
        auth = PlanetAuth.from_client_credentials(
            os.environ["PL_AUTH_CLIENT_ID"],
            os.environ["PL_AUTH_CLIENT_SECRET"],
            issuer=self.issuer,
            storage=RedisStorage(self.redis_url),
            session=SESSION,
            allowed_origins=[self.api_url],
        )
        # The manager is not entered (`async with auth.manager`): the request that finds the
        # token aged renews it in line, a few milliseconds on a local network, while the other
        # requests keep using the current token. A background renewal would do as well; this
        # way, a renewal is never left unused when a task ends just after starting one.

        async def note_token(request: httpx.Request) -> None:
            token = request.headers.get("authorization", "").partition(" ")[2]
            if token and (name := fingerprint(token)) not in self.tokens:
                self.tokens[name] = issued_at(token)

        limits = httpx.Limits(max_connections=self.concurrency)
        async with httpx.AsyncClient(
            auth=auth,
            limits=limits,
            timeout=10.0,
            trust_env=False,  # loopback only, whatever proxies the environment names
            event_hooks={"request": [note_token]},  # run after auth: they see the header
        ) as client:
            yield client, auth

    def download(self, numbers: list[int]) -> dict[str, Any]:
        """Called from a Dask task (a worker thread): download `numbers` on this process's loop."""
        return self.portal.call(self._download, numbers)

    async def _download(self, numbers: list[int]) -> dict[str, Any]:
        done = 0
        failures: list[str] = []
        send, receive = anyio.create_memory_object_stream[int](max_buffer_size=len(numbers))
        for n in numbers:
            send.send_nowait(n)
        send.close()

        async def fetch(queue: anyio.abc.ObjectReceiveStream[int]) -> None:
            nonlocal done
            async with queue:
                async for n in queue:
                    try:
                        response = await self.client.get(f"{self.api_url}/files/{n}")
                    except (httpx.HTTPError, PlanetAuthError) as exc:
                        failures.append(f"file {n}: {type(exc).__name__}: {exc}")
                        continue
                    if response.status_code != 200:
                        failures.append(f"file {n}: HTTP {response.status_code}")
                    elif response.content != file_content(n):
                        failures.append(f"file {n}: content differs from the expected bytes")
                    else:
                        done += 1

        async with receive, anyio.create_task_group() as tasks:
            for _ in range(self.concurrency):
                tasks.start_soon(fetch, receive.clone())
        return {"done": done, "failures": failures}

    def report(self) -> dict[str, Any]:
        manager = self.auth.manager
        return {
            "pid": os.getpid(),
            "renewals": manager.renewals if manager is not None else None,
            "tokens": list(self.tokens.items()),
        }


def download_batch(numbers: list[int]) -> dict[str, Any]:
    """A Dask task: download a batch of files with the worker process's shared session."""
    plugin = cast(SharedSession, get_worker().plugins[PLUGIN])
    return plugin.download(numbers)


def process_report(dask_worker: Any) -> dict[str, Any]:
    """What a worker process did with the session (run on every worker at the end)."""
    plugin = cast(SharedSession, dask_worker.plugins[PLUGIN])
    return plugin.report()


# -- the driver ---------------------------------------------------------------------------------


def run_job(
    args: argparse.Namespace, issuer: str, redis_url: str, api_url: str, deadline: float
) -> dict[str, Any]:
    """Start the cluster, download every file in batches, collect what each process did; the
    cluster is closed however this ends."""
    numbers = list(range(args.files))
    batches = [numbers[i : i + args.batch] for i in range(0, args.files, args.batch)]
    plugin = SharedSession(issuer, redis_url, api_url, args.concurrency, args.backend)
    with (
        LocalCluster(
            n_workers=args.workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            silence_logs=logging.ERROR,
        ) as cluster,
        Client(cluster) as client,
    ):
        client.register_plugin(plugin, name=PLUGIN)
        started = time.perf_counter()
        futures = client.map(download_batch, batches, pure=False)
        wait(futures, timeout=max(deadline - time.monotonic(), 1.0))
        results = client.gather(futures)
        elapsed = time.perf_counter() - started
        processes = list(client.run(process_report).values())
    failures = [failure for result in results for failure in result["failures"]]
    return {
        "files": args.files,
        "done": sum(result["done"] for result in results),
        "failed": len(failures),
        "failures": failures[:5],
        "batches": len(batches),
        "seconds": elapsed,
        "processes": processes,
    }


def _summary(args: argparse.Namespace, job: dict[str, Any], api: dict[str, Any]) -> str:
    tokens: dict[str, int | None] = {}
    for process in job["processes"]:
        tokens.update(process["tokens"])
    iats = sorted(iat for iat in tokens.values() if iat is not None)
    first = iats[0] if iats else 0
    rows = [
        ("files", f"{job['done']} of {job['files']} intact, {job['failed']} failed"),
        ("elapsed", f"{job['seconds']:.1f} s ({job['seconds'] / args.token_ttl:.1f} lifetimes)"),
        (
            "cluster",
            f"Dask LocalCluster, {args.workers} worker processes x 1 thread, {job['batches']} "
            f"tasks of {args.batch} files, {args.concurrency} downloads at a time per process "
            f"({args.backend})",
        ),
        ("tokens", f"{len(tokens)}, issued at +{', +'.join(str(i - first) for i in iats)} s"),
        (
            "token requests",
            f"{[p['renewals'] for p in job['processes']]} by each process (the others read "
            "the session from Redis)",
        ),
        (
            "tokens each process used",
            f"{[len(p['tokens']) for p in job['processes']]} of {len(tokens)}",
        ),
        ("requests rejected", f"{api['rejected']} (401s from the API; must be 0)"),
    ]
    width = max(len(name) for name, _ in rows)
    lines = ["", "planet_async on a Dask cluster", "-" * 30]
    lines += [f"{name:<{width}}  {value}" for name, value in rows]
    lines += [f"  {failure}" for failure in job["failures"]]
    return "\n".join(lines)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Download files on a Dask cluster whose workers share one session in Redis."
    )
    parser.add_argument("--workers", type=int, default=3, help="worker processes (default 3)")
    parser.add_argument("--files", type=int, default=1440, help="how many files (default 1440)")
    parser.add_argument("--batch", type=int, default=24, help="files per task (default 24)")
    parser.add_argument(
        "--concurrency", type=int, default=4, help="downloads at a time per process (default 4)"
    )
    parser.add_argument(
        "--token-ttl", type=int, default=5, help="access token lifetime, seconds (default 5)"
    )
    parser.add_argument(
        "--latency-ms", type=float, default=100.0, help="API time per file (default 100)"
    )
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    parser.add_argument("--issuer", help="a running authorization server (default: start one)")
    parser.add_argument("--redis", help="a running Redis, redis://... (default: start one)")
    parser.add_argument(
        "--timeout", type=float, default=60.0, help="give up after this many seconds overall"
    )
    args = parser.parse_args(argv)
    if min(args.workers, args.files, args.batch, args.concurrency, args.token_ttl) < 1:
        parser.error("--workers, --files, --batch, --concurrency and --token-ttl must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for name in ("NO_PROXY", "no_proxy"):  # everything here is on loopback
        os.environ[name] = ",".join(filter(None, [os.environ.get(name), "127.0.0.1", "localhost"]))
    deadline = time.monotonic() + args.timeout
    # A last resort, if something hangs past the deadline that no timeout below bounds.
    watchdog = threading.Timer(args.timeout + 30, lambda: os._exit(3))
    watchdog.daemon = True
    watchdog.start()
    with ExitStack() as servers:
        issuer = args.issuer or _start(servers, _peer(args.token_ttl)).issuer
        if args.issuer is None:  # the test peer's service account
            os.environ.setdefault("PL_AUTH_CLIENT_ID", CLIENT_ID)
            os.environ.setdefault("PL_AUTH_CLIENT_SECRET", CLIENT_SECRET)
        redis_url = args.redis or _start(servers, _redis()).url
        api = _start(servers, DemoApi(issuer, args.latency_ms))
        print(
            f"authorization server {issuer}, API {api.url}, Redis "
            f"{RedisStorage(redis_url).url}; {args.files} files on {args.workers} Dask workers",
            file=sys.stderr,
            flush=True,
        )
        job = run_job(args, issuer, redis_url, api.url, deadline)
        stats = api.stats()
    watchdog.cancel()
    ok = job["done"] == args.files and stats["rejected"] == 0
    print(_summary(args, job, stats))
    print(f"result: {'OK' if ok else 'FAILED'}")
    print(json.dumps({**job, "api": stats}))
    return 0 if ok else 1


def _peer(ttl: int) -> Any:
    from tests._peer import Peer

    return Peer.start(env={"AT_TTL": str(ttl)})


def _redis() -> Any:
    from tests._redis import RedisServer

    return RedisServer().start()


def _start(stack: ExitStack, server: Any) -> Any:
    """Stop `server` when `stack` closes."""
    stack.callback(server.stop)
    return server


if __name__ == "__main__":
    sys.exit(main())
