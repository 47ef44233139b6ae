"""Development tasks: `python3 -m nox` runs tests, lint and typecheck."""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.default_venv_backend = "venv"

PEER_DIR = "tests/peer"


def _install_peer(session: nox.Session) -> None:
    """The real authorization server the tests talk to: oidc-provider, from the lockfile."""
    with session.chdir(PEER_DIR):
        session.run("npm", "ci", "--no-audit", "--no-fund", "--loglevel=error", external=True)


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite, on asyncio and trio, against the local test peer."""
    session.install("-e", ".[test]")
    _install_peer(session)
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
