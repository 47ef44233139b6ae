"""Development tasks: `python3 -m nox` runs tests, lint, typecheck and docs."""

from __future__ import annotations

import os
import shutil

import nox

nox.options.sessions = ["tests", "lint", "typecheck", "docs"]
nox.options.default_venv_backend = "venv"

PEER_DIR = "tests/peer"


def _install_peer(session: nox.Session) -> None:
    """The real authorization server the tests talk to: oidc-provider, from the lockfile."""
    with session.chdir(PEER_DIR):
        session.run("npm", "ci", "--no-audit", "--no-fund", "--loglevel=error", external=True)


def _install_debian_package(session: nox.Session, package: str, binary: str, override: str) -> bool:
    """Install Debian's `package` unless `binary` is on PATH or `override` names one; returns
    False when it is missing and cannot be installed here (not root, or not Debian)."""
    if shutil.which(binary) or os.environ.get(override):
        return True
    if not (shutil.which("apt-get") and hasattr(os, "geteuid") and os.geteuid() == 0):
        return False
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    session.run("apt-get", "update", "-qq", external=True, env=env)
    session.run("apt-get", "install", "-y", "-qq", package, external=True, env=env)
    return True


def _install_chromium(session: nox.Session) -> None:
    """The real browser the login tests drive: Debian's chromium, never a downloaded build."""
    if not _install_debian_package(session, "chromium", "chromium", "PLANET_ASYNC_CHROMIUM"):
        session.warn(
            "chromium not found: browser login tests will be skipped (set PLANET_ASYNC_CHROMIUM "
            "to a Chromium binary, or install Debian's chromium package)"
        )


def _install_redis(session: nox.Session) -> None:
    """The real Redis the fleet storage tests use: Debian's redis-server package."""
    found = _install_debian_package(
        session, "redis-server", "redis-server", "PLANET_ASYNC_REDIS_SERVER"
    )
    if not found:
        session.error(
            "redis-server not found: install Debian's redis-server package, or set "
            "PLANET_ASYNC_REDIS_SERVER to a redis-server binary"
        )


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite, on asyncio and trio, against the local test peer and a real browser."""
    session.install("-e", ".[test]")
    _install_peer(session)
    _install_chromium(session)
    _install_redis(session)
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff: lint and formatting."""
    session.install("ruff>=0.8")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy, strict on the package."""
    session.install("-e", ".[test]", "mypy>=1.13")
    session.run("mypy")


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks beside the `planet` SDK's auth and authlib: `python3 -m nox -s bench`.

    Names or `--quick` go to `python -m benchmarks`: `python3 -m nox -s bench -- storm --quick`.
    """
    session.install(
        "-e",
        ".[redis]",
        "planet>=3.7,<4",
        "planet-auth>=2.3,<3",
        "authlib>=1.6,<2",
        "matplotlib>=3.8",
        "trio>=0.27",
    )
    _install_peer(session)
    _install_redis(session)  # the processes benchmark's RedisStorage fleet
    session.run("python", "-m", "benchmarks", *session.posargs)


@nox.session
def demo(session: nox.Session) -> None:
    """The main job on loopback, no credentials: thousands of files, tokens living 3 s.

    Options go to examples/download_demo.py: `python3 -m nox -s demo -- --backend trio`.
    """
    session.install("-e", ".", "trio>=0.27")
    _install_peer(session)
    session.run("python", "examples/download_demo.py", *session.posargs)


@nox.session
def docs(session: nox.Session) -> None:
    """The documentation site, built strictly (a broken link or reference fails): site/.

    View it with `python3 -m http.server -d site 8000`.
    """
    session.install("-e", ".[docs]")
    session.run("zensical", "build", "--strict", "--clean")
