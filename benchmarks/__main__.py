"""Run the benchmarks: ``python -m benchmarks [name ...] [--quick]`` from the repository root.

One test peer (oidc-provider on 127.0.0.1) serves the whole run. The run gets a private HOME, so
the `planet` SDK's profiles and tokens never touch your own ``~/.planet``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from tests._peer import Peer

from ._common import Context, environment

BENCHMARKS = (
    "overhead",
    "clients_overhead",
    "storm",
    "refresh_ahead",
    "processes",
    "memory",
    "clients",
    "clients_renewal",
    "store_outage",
    "failover",
    "pool",
)
"""Modules of this package, in the order they run; each has ``run(ctx)``."""

PEER_ENV = {
    "AT_TTL": "3600",
    "RT_ALWAYS": "1",  # every user login comes with a refresh token
    "JWKS_AS_JSON": "1",  # as the `planet` CLI expects
}


def _private_home() -> Path:
    home = Path(tempfile.mkdtemp(prefix="planet-bench-home-"))
    os.environ["HOME"] = str(home)
    os.environ["USERPROFILE"] = str(home)
    for name in list(os.environ):
        if name.startswith("PL_"):
            del os.environ[name]
    return home


def _measured_on() -> str:
    env = environment()
    packages = ", ".join(f"{name} {version}" for name, version in env["packages"].items())
    return (
        f"Measured {env['date']} on {env['platform']} ({env['cpus']} CPUs), "
        f"Python {env['python']}; {packages}."
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument(
        "names", nargs="*", metavar="name", help=f"any of {', '.join(BENCHMARKS)} (default: all)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="fewer repetitions: checks that it works, not numbers"
    )
    args = parser.parse_args(argv)
    names = args.names or list(BENCHMARKS)
    unknown = sorted(set(names) - set(BENCHMARKS))
    if unknown:
        parser.error(f"no benchmark named {', '.join(unknown)}")

    home = _private_home()
    peer = Peer.start(env=PEER_ENV)
    ctx = Context(peer=peer, home=home, quick=args.quick)
    timings: list[str] = []
    started = time.perf_counter()
    try:
        for name in names:
            print(f"\n== {name} ==", flush=True)
            began = time.perf_counter()
            importlib.import_module(f"{__package__}.{name}").run(ctx)
            took = time.perf_counter() - began
            timings.append(f"- {name}: {took:.0f} s")
            print(f"({name} took {took:.1f} s)", flush=True)
    finally:
        peer.stop()
        shutil.rmtree(home, ignore_errors=True)
    total = time.perf_counter() - started
    timings.append(f"- total: {total:.0f} s")
    print(f"\nall benchmarks took {total:.1f} s", flush=True)
    if not args.quick and names == list(BENCHMARKS):
        tables = "\n".join(ctx.tables)
        (ctx.results / "latest.md").write_text(
            f"# Latest run\n\n{_measured_on()}\n\n{tables}\n## Time taken\n\n"
            + "\n".join(timings)
            + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
