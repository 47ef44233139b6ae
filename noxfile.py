"""Development tasks: `python3 tools/nox.py` runs tests, lint, typecheck, docs and package.

Every session CI runs installs exact versions from `uv.lock` (`uv sync --locked`), so a release
upstream changes nothing here until the lock is refreshed (`-s lock`, then `-s latest`). `latest`
runs the suite on the newest releases and `lowest` on the lowest versions pyproject.toml allows.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

import nox

nox.options.sessions = ["tests", "lint", "typecheck", "docs", "package", "lowest_core"]
nox.options.default_venv_backend = "uv"
# The interpreter a session runs on is the one nox runs on; uv never downloads one.
os.environ.setdefault("UV_PYTHON_DOWNLOADS", "never")

# Every extra of the library: `lowest` installs the lowest version each of them allows.
EXTRAS = ("aiohttp", "httpx2", "otel", "postgres", "qr", "redis", "requests", "starlette")

PEER_DIR = "tests/peer"
POSTGRES_BIN = "/usr/lib/postgresql/15/bin"


def _sync(session: nox.Session, *selection: str) -> None:
    """Install exactly what uv.lock pins for `selection` (`--extra X`, `--group Y`, ...) into the
    session's virtualenv; fails when uv.lock no longer matches pyproject.toml."""
    session.run_install(
        "uv",
        "sync",
        "--locked",
        "--inexact",  # keeps what a session adds on top, such as `lowest`'s downgrades
        *selection,
        env={"UV_PROJECT_ENVIRONMENT": session.virtualenv.location},
    )


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


def _install_postgres(session: nox.Session) -> None:
    """The real PostgreSQL the PostgresStorage tests use: Debian's postgresql-15 package, whose
    binaries are not on PATH (tests/_postgres.py looks in /usr/lib/postgresql/15/bin)."""
    if os.environ.get("PLANET_ASYNC_POSTGRES_BIN") or Path(POSTGRES_BIN, "postgres").exists():
        return
    if not (shutil.which("apt-get") and hasattr(os, "geteuid") and os.geteuid() == 0):
        session.error(
            "PostgreSQL not found: install Debian's postgresql-15 package, or set "
            "PLANET_ASYNC_POSTGRES_BIN to a directory holding initdb and postgres"
        )
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    session.run("apt-get", "update", "-qq", external=True, env=env)
    session.run("apt-get", "install", "-y", "-qq", "postgresql-15", external=True, env=env)


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite, on asyncio and trio, against the local test peer and a real browser.

    Two pytest-xdist workers, a test file each at a time (`--dist loadfile`: a file's
    module-scoped servers start once), without the runs marked `slow` (the `slow` session);
    arguments replace all that: `-s tests -- -k redis`.
    """
    _sync(session, "--extra", "test")
    _run_suite(session, *PARALLEL, "-m", "not slow and not serial")
    if not session.posargs:
        # Timing-bound runs of several processes, alone on the machine (`serial` marker).
        session.run("pytest", "-m", "serial and not slow")


@nox.session
def slow(session: nox.Session) -> None:
    """The runs marked `slow`, which `tests` leaves out: replicas of the web example with real
    browsers, PostgreSQL fleets across a crash, Sentinel and Cluster failovers, the session
    pool's 1,000 users on 3 replicas. Not in CI. Those also marked `serial` run alone after the
    parallel part; arguments replace all that."""
    _sync(session, "--extra", "test")
    _run_suite(session, *PARALLEL, "-m", "slow and not serial")
    if not session.posargs:
        session.run("pytest", "-m", "slow and serial")


# Much of the suite waits on processes, servers and short-lived tokens rather than computing,
# so two workers fit a 2-core machine; each worker starts its own peer and redis-server.
PARALLEL = ("--numprocesses=2", "--dist=loadfile")


def _run_suite(session: nox.Session, *default: str) -> None:
    _install_peer(session)
    _install_chromium(session)
    _install_redis(session)
    _install_postgres(session)
    session.run("pytest", *(session.posargs or default))


@nox.session
def lint(session: nox.Session) -> None:
    """ruff: lint and formatting; vermin: the package needs no Python newer than it declares."""
    _sync(session, "--only-group", "lint")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run(
        "vermin",
        "--target=" + _requires_python_minimum(),
        "--violations",
        "--eval-annotations",
        "--backport=typing_extensions",
        "planet_async",
    )
    _check_classifiers(session)


def _check_classifiers(session: nox.Session) -> None:
    """The `Python :: 3.X` classifiers start at requires-python's minimum, with no gap."""
    text = Path("pyproject.toml").read_text()
    listed = sorted(
        int(minor) for minor in re.findall(r'"Programming Language :: Python :: 3\.(\d+)"', text)
    )
    minimum = int(_requires_python_minimum().split(".")[1])
    if not listed or listed[0] != minimum or listed != list(range(minimum, listed[-1] + 1)):
        session.error(f"the Python 3.x classifiers {listed} do not start at 3.{minimum} unbroken")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy, strict on the package."""
    _sync(session, "--extra", "test", "--group", "typecheck")
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
# list does not foresee (the sdist is about 1 MB, most of it uv.lock's hashes).
_NOT_RELEASED = {"node_modules", "__pycache__", ".nox", ".venv", ".git", "results"}
_MAX_ARCHIVE_BYTES = 1_500_000


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


def _check_clean_install(
    session: nox.Session, artifact: Path, version: str, work: Path, constraints: Path
) -> None:
    """Install `artifact` into a new virtualenv (its dependencies at the lock's versions) and use
    it from a directory with no source."""
    env_dir, cwd = work / "venv", work / "cwd"
    cwd.mkdir(parents=True)
    session.run("uv", "venv", "--quiet", "--python", sys.executable, str(env_dir))
    bin_dir = env_dir / ("Scripts" if sys.platform == "win32" else "bin")
    python, command = bin_dir / "python", bin_dir / "planet-async"
    # Nothing may put the checkout on the path.
    env: dict[str, str | None] = {"PYTHONPATH": None, "PYTHONHOME": None, "VIRTUAL_ENV": None}
    with session.chdir(cwd):
        session.run(
            "uv",
            "pip",
            "install",
            "--quiet",
            "--python",
            str(python),
            "--constraints",
            str(constraints),
            str(artifact),
            env=env,
        )
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
    _sync(session, "--only-group", "package")
    version = _source_version()
    with tempfile.TemporaryDirectory(prefix="planet-async-package-") as tmp:
        dist = Path(tmp, "dist")
        constraints = Path(tmp, "constraints.txt")
        session.run(
            "uv", "export", "--locked", "--quiet", "--no-hashes", "--no-emit-project",
            "--output-file", str(constraints),
        )  # fmt: skip
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
            _check_clean_install(session, artifact, version, Path(tmp, name), constraints)


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks beside the `planet` SDK's auth and authlib: `python3 tools/nox.py -s bench`.

    Names or `--quick` go to `python -m benchmarks`:
    `python3 tools/nox.py -s bench -- storm --quick`.
    """
    # The clients benchmarks measure every adapter, beside the SDK's auth and authlib; the
    # processes benchmark's storage times need the redis and postgres extras.
    _sync(
        session,
        "--extra",
        "redis",
        "--extra",
        "postgres",
        "--extra",
        "aiohttp",
        "--extra",
        "httpx2",
        "--extra",
        "requests",
        "--group",
        "bench",
    )
    _install_peer(session)
    _install_redis(session)  # the processes benchmark's RedisStorage fleet
    _install_postgres(session)  # and its storage latencies
    session.run("python", "-m", "benchmarks", *session.posargs)


@nox.session
def demo(session: nox.Session) -> None:
    """The main job on loopback, no credentials: thousands of files, tokens living 3 s.

    Options go to examples/download_demo.py: `python3 tools/nox.py -s demo -- --backend trio`.
    """
    _sync(session, "--extra", "aiohttp", "--extra", "httpx2", "--group", "demo")  # for --client
    _install_peer(session)
    session.run("python", "examples/download_demo.py", *session.posargs)


@nox.session
def docs(session: nox.Session) -> None:
    """The documentation site, built strictly (a broken link or reference fails): site/.

    View it with `python3 -m http.server -d site 8000`.
    """
    _sync(session, "--extra", "docs")
    session.run("zensical", "build", "--strict", "--clean")


def _requires_python_minimum() -> str:
    """`requires-python`'s lower bound (`>=3.10` gives "3.10"), for vermin's target."""
    found = re.search(r'^requires-python = "([^"]*)"', Path("pyproject.toml").read_text(), re.M)
    spec = found.group(1) if found else ""
    if not spec.startswith(">=") or "," in spec:
        raise RuntimeError(f"requires-python is {spec!r}; expected a single >= bound")
    return spec.removeprefix(">=").strip()


@nox.session
def lock(session: nox.Session) -> None:
    """Refresh uv.lock to the newest releases pyproject.toml allows; then run `-s latest`."""
    session.run("uv", "lock", "--upgrade", *session.posargs)


@nox.session
def latest(session: nox.Session) -> None:
    """The suite on the newest release of every dependency, ignoring uv.lock (not run by CI:
    upstream churn must not block a landing). Run it with every lock refresh."""
    session.run_install(
        "uv", "pip", "install", "--upgrade", "--resolution", "highest", "-e", ".[test]"
    )
    _run_suite(session)


def _install_lowest(session: nox.Session) -> None:
    """The lowest versions pyproject.toml allows for every direct dependency: the library's,
    every extra's, and the test tools' (their own dependencies at the newest that fit)."""
    # Not session.create_tmp(): it points TMPDIR into .nox/, which the PostgreSQL fixture's
    # unprivileged server user may not be able to reach (a clone under /root).
    lowest = Path(session.virtualenv.location, "lowest.txt")
    session.run_install(
        "uv",
        "pip",
        "compile",
        "--quiet",
        "--resolution",
        "lowest-direct",
        "--python",
        sys.executable,
        *(f"--extra={extra}" for extra in (*EXTRAS, "test")),
        "pyproject.toml",
        "--output-file",
        str(lowest),
    )
    session.run_install("uv", "pip", "install", "--quiet", "-r", str(lowest))
    session.run_install("uv", "pip", "install", "--quiet", "--no-deps", "-e", ".")
    session.run("uv", "pip", "check")
    session.run("python", "-c", _PRINT_LOWEST)


_PRINT_LOWEST = """
import importlib.metadata as m
names = ["anyio", "argcomplete", "httpx", "joserfc", "pydantic", "cryptography", "aiohttp",
         "httpx2", "opentelemetry-api", "qrcode", "coredis", "requests", "starlette",
         "psycopg"]
print("lowest:", ", ".join(f"{n} {m.version(n)}" for n in names))
"""


@nox.session
def lowest(session: nox.Session) -> None:
    """The whole suite on the lowest versions pyproject.toml allows (not run by CI, which runs
    `lowest_core`: see the README's Development section)."""
    _install_lowest(session)
    _run_suite(session, *PARALLEL)


# The part of the suite CI runs on the lowest versions: the tests of the code that meets each
# dependency directly (joserfc and cryptography, pydantic, httpx, httpx2 and aiohttp, anyio and
# trio, coredis, OpenTelemetry, Starlette, argcomplete), without the end-to-end runs (browser
# logins, fleets of processes, the examples, the docs site) that `lowest` adds.
LOWEST_CORE = (
    "tests/test_bad_input.py",
    "tests/test_models.py",
    "tests/test_oauth.py",
    "tests/test_id_token.py",
    "tests/test_adapters.py",
    "tests/test_auth.py",
    "tests/test_manager.py",
    "tests/test_storage.py",
    "tests/test_redis_storage.py",
    "tests/test_encrypted_storage.py",
    "tests/test_session_pool.py",
    "tests/test_starlette.py",
    "tests/test_otel.py",
    "tests/test_cli_first_use.py::test_completion_script_for_each_shell",
    "-m",
    "not slow",
    *PARALLEL,
)


@nox.session
def lowest_core(session: nox.Session) -> None:
    """CI's part of `lowest`: the suite less its slowest end-to-end runs, on the lowest versions."""
    _install_lowest(session)
    _run_suite(session, *LOWEST_CORE)
