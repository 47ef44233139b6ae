"""Development tasks: `python3 -m nox` runs tests, lint, typecheck, docs and package."""

from __future__ import annotations

import ast
import os
import shutil
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

import nox

nox.options.sessions = ["tests", "lint", "typecheck", "docs", "package"]
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


def _source_version() -> str:
    """The version as `planet_async/_version.py` states it: the one place it is written."""
    tree = ast.parse(Path("planet_async/_version.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == [
            "__version__"
        ]:
            return str(ast.literal_eval(node.value))
    raise RuntimeError("planet_async/_version.py assigns no __version__")


# Nothing machine-local, measured or downloaded belongs in a release; the cap catches what this
# list does not foresee (the sdist is about 0.3 MB).
_NOT_RELEASED = {"node_modules", "__pycache__", ".nox", ".venv", ".git", "results"}
_MAX_ARCHIVE_BYTES = 1_000_000


def _released(name: str) -> bool:
    return not (_NOT_RELEASED & set(name.split("/")) or name.endswith((".pyc", ".pyo")))


def _check_wheel(session: nox.Session, wheel: Path, version: str) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = archive.read(f"planet_async-{version}.dist-info/METADATA").decode()
        stated = archive.read("planet_async/_version.py").decode()
    _check_archive(session, wheel, names, metadata, stated, version, prefix="")


def _check_sdist(session: nox.Session, sdist: Path, version: str) -> None:
    prefix = f"planet_async-{version}/"
    with tarfile.open(sdist) as archive:
        names = set(archive.getnames())

        def read(name: str) -> str:
            member = archive.extractfile(prefix + name)
            assert member is not None, f"{sdist.name}: {name} is not a file"
            return member.read().decode()

        metadata, stated = read("PKG-INFO"), read("planet_async/_version.py")
    for required in ("LICENSE", "CHANGELOG.md", "README.md", "tests/conftest.py"):
        if prefix + required not in names:
            session.error(f"{sdist.name} lacks {required}")
    _check_archive(session, sdist, names, metadata, stated, version, prefix=prefix)


def _check_archive(
    session: nox.Session,
    path: Path,
    names: set[str],
    metadata: str,
    stated: str,
    version: str,
    prefix: str,
) -> None:
    """Both archives: typed, the one version everywhere, nothing that is not ours to release."""
    if prefix + "planet_async/py.typed" not in names:
        session.error(f"{path.name} lacks planet_async/py.typed")
    if f"\nVersion: {version}\n" not in metadata:
        session.error(f"{path.name}: its metadata does not say Version: {version}")
    if f'__version__ = "{version}"' not in stated:
        session.error(f"{path.name}: planet_async/_version.py does not say {version}")
    stray = sorted(name for name in names if not _released(name))
    if stray:
        session.error(f"{path.name} holds files that are not released: {stray[:5]}")
    if path.stat().st_size > _MAX_ARCHIVE_BYTES:
        session.error(f"{path.name} is {path.stat().st_size} bytes; what made it large?")


def _check_clean_install(session: nox.Session, artifact: Path, version: str, work: Path) -> None:
    """Install `artifact` into a new virtualenv and use it from a directory with no source."""
    env_dir, cwd = work / "venv", work / "cwd"
    cwd.mkdir(parents=True)
    # No pip of its own: the session's pip installs into it (`--python`), which halves the time.
    session.run("python", "-m", "venv", "--without-pip", str(env_dir))
    bin_dir = env_dir / ("Scripts" if sys.platform == "win32" else "bin")
    python, command = bin_dir / "python", bin_dir / "planet-async"
    # The outer environment keeps pip's index settings; nothing may put the checkout on the path.
    env: dict[str, str | None] = {"PYTHONPATH": None, "PYTHONHOME": None, "VIRTUAL_ENV": None}
    with session.chdir(cwd):
        pip = ("python", "-m", "pip", "--python", str(python))
        session.run(*pip, "install", "--quiet", "--no-compile", str(artifact), env=env)
        imported = session.run(
            str(python),
            "-c",
            "import planet_async; print(planet_async.__version__); print(planet_async.__file__)",
            external=True,
            env=env,
            silent=True,
        )
        reported = session.run(str(command), "--version", external=True, env=env, silent=True)
    assert isinstance(imported, str)
    assert isinstance(reported, str)
    imported_version, imported_from = imported.strip().splitlines()
    if imported_version != version:
        session.error(f"{artifact.name}: planet_async.__version__ is {imported_version!r}")
    if not Path(imported_from).resolve().is_relative_to(env_dir.resolve()):
        session.error(f"{artifact.name}: planet_async was imported from {imported_from}")
    if reported.strip() not in (version, f"planet-async {version}"):
        session.error(f"{artifact.name}: planet-async --version said {reported.strip()!r}")


@nox.session
def package(session: nox.Session) -> None:
    """A release: build the wheel and sdist, check them, install each into a clean virtualenv."""
    # hatchling here, not in an isolated env per build (build checks pyproject's pin): installing
    # the sdist below builds it in isolation from its own build requirements all the same.
    session.install("--no-compile", "pip>=22.3", "build>=1.2", "twine>=6.1", "hatchling")
    version = _source_version()
    with tempfile.TemporaryDirectory(prefix="planet-async-package-") as tmp:
        dist = Path(tmp, "dist")
        session.run("python", "-m", "build", "--no-isolation", "--outdir", str(dist))
        wheel = dist / f"planet_async-{version}-py3-none-any.whl"
        sdist = dist / f"planet_async-{version}.tar.gz"
        built = sorted(p.name for p in dist.iterdir())
        if built != sorted([wheel.name, sdist.name]):
            session.error(f"expected {wheel.name} and {sdist.name}, built {built}")
        session.run("twine", "check", "--strict", str(wheel), str(sdist))
        _check_wheel(session, wheel, version)
        _check_sdist(session, sdist, version)
        for artifact, name in ((wheel, "wheel"), (sdist, "sdist")):
            _check_clean_install(session, artifact, version, Path(tmp, name))


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks beside the `planet` SDK's auth and authlib: `python3 -m nox -s bench`.

    Names or `--quick` go to `python -m benchmarks`: `python3 -m nox -s bench -- storm --quick`.
    """
    session.install(
        "-e",
        ".[redis,aiohttp,httpx2,requests]",  # the clients benchmarks measure every adapter
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
    session.install("-e", ".[aiohttp,httpx2]", "trio>=0.27")  # for --client
    _install_peer(session)
    session.run("python", "examples/download_demo.py", *session.posargs)


@nox.session
def docs(session: nox.Session) -> None:
    """The documentation site, built strictly (a broken link or reference fails): site/.

    View it with `python3 -m http.server -d site 8000`.
    """
    session.install("-e", ".[docs]")
    session.run("zensical", "build", "--strict", "--clean")
