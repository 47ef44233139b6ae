"""Every script in examples/ runs as a user would run it, against the real test peer.

Each example runs as ``python examples/<name>.py`` from the repository root, in a subprocess with
a HOME of its own, pointed by the variables examples/_settings.py reads at the test peer
(oidc-provider on 127.0.0.1) and at a local API: a real HTTP server on 127.0.0.1 that accepts only
access tokens the peer signed (checked against its JWKS, like a resource server) and one known
API key, and records every credential it accepted. Browser logins go through Python's
`webbrowser` to tests/_fake_browser.py (headless Chromium clicking through the peer's pages);
device logins are approved by posting the peer's dev pages, as a user on another device would.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import json
import math
import os
import queue
import re
import shlex
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from planet_async import FileStorage, TokenSet
from planet_async.profiles import AuthClientConfig, PlanetHome
from tests._browser import approve_device_over_http
from tests._helpers import VerifyingApi
from tests._peer import Peer
from tests._redis import RedisServer

pytestmark = pytest.mark.peer

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
FAKE_BROWSER = ROOT / "tests" / "_fake_browser.py"
# Not scenarios of the guide: helpers, and the demos (fleet_dask runs at the end of this module).
NOT_SCENARIOS = {
    "_settings",
    "_clients",
    "_demo_api",
    "download_demo",
    "fleet_dask",
    "sqlite_storage",
    "web_service",
}
# The same service account through the other clients' adapters.
CLIENTS = ["client_aiohttp", "client_httpx2", "client_planet_sdk"]
API_PATH = "/basemaps/v1/mosaics"
API_KEY = "PLAK-examples-test-key"
M2M_ID, M2M_SECRET = "service-basic", "service-basic-secret"
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
DEVICE_LINK = re.compile(r"\(or open (\S+)\)")
RUN_TIMEOUT = 30.0  # seconds one example may take; a browser login takes about 2


# -- the API the examples call ----------------------------------------------------------------


class LocalApi:
    """Answers 200 to a bearer token the peer signed for the API, or to the known API key; 401
    to anything else. Records the credentials it accepted, in order."""

    def __init__(self, verifier: VerifyingApi) -> None:
        self._verifier = verifier
        self._lock = threading.Lock()
        self.accepted: list[str] = []
        self.rejected = 0
        self.url = ""

    def answer(self, path: str, authorization: str) -> int:
        if path != API_PATH:
            return 404
        scheme, _, credential = authorization.partition(" ")
        ok = (scheme.lower() == "bearer" and self._verifier.verify(credential)) or (
            scheme == "api-key" and credential == API_KEY
        )
        with self._lock:
            if ok:
                self.accepted.append(credential)
            else:
                self.rejected += 1
        return 200 if ok else 401


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        api: LocalApi = self.server.api  # type: ignore[attr-defined]
        status = api.answer(self.path, self.headers.get("Authorization", ""))
        body = json.dumps({"mosaics": []} if status == 200 else {"error": status}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # keep pytest's output clean


@pytest.fixture
def api(peer: Peer) -> Iterator[LocalApi]:
    """A fresh LocalApi on an ephemeral port of 127.0.0.1, serving from a thread."""
    local = LocalApi(VerifyingApi(peer.issuer))
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    server.api = local  # type: ignore[attr-defined]
    local.url = f"http://127.0.0.1:{server.server_address[1]}{API_PATH}"
    thread = threading.Thread(
        target=server.serve_forever, args=(0.05,), name="examples-api", daemon=True
    )
    thread.start()
    yield local
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


# -- running an example -------------------------------------------------------------------------


@dataclass
class Run:
    output: str  # stdout and stderr, interleaved
    device_logins: int  # device codes the user approved

    @property
    def last_line(self) -> str:
        """The last line printed: the API's response status, for the examples."""
        return self.output.strip().splitlines()[-1]


def run(
    args: list[str], env: dict[str, str], *, expect_exit: int = 0, timeout: float = RUN_TIMEOUT
) -> Run:
    """Run a command from the repository root; approve every device login link it prints."""
    proc = subprocess.Popen(
        [sys.executable, *args],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        with proc.stdout:
            for line in proc.stdout:
                lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, name="example-output", daemon=True).start()
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    approved = 0
    try:
        while (line := lines.get(timeout=max(deadline - time.monotonic(), 0.01))) is not None:
            seen.append(line)
            if link := DEVICE_LINK.search(line):
                approve_device_over_http(link.group(1))
                approved += 1
        code = proc.wait(timeout=max(deadline - time.monotonic(), 0.01))
    except (queue.Empty, subprocess.TimeoutExpired):
        proc.kill()
        proc.wait()
        raise AssertionError(f"{args} still running after {timeout} s:\n{''.join(seen)}") from None
    output = "".join(seen)
    assert code == expect_exit, f"{args} exited {code}, not {expect_exit}:\n{output}"
    return Run(output, approved)


def run_example(name: str, env: dict[str, str], *, expect_exit: int = 0) -> Run:
    return run([f"examples/{name}.py"], env, expect_exit=expect_exit)


def run_together(*jobs: tuple[list[str], dict[str, str]]) -> list[Run]:
    """Run independent commands at once (a few: each is a process), in the order given."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        futures = [pool.submit(run, args, env) for args, env in jobs]
        return [future.result() for future in futures]


@pytest.fixture
def home(clean_env: Path) -> Path:
    """The examples' HOME (conftest's per-test one): ~/.planet, ~/.planet.json, ~/.cache."""
    return clean_env


@pytest.fixture
def env(home: Path, peer: Peer, api: LocalApi) -> dict[str, str]:
    """What every example runs with: the peer and the local API instead of Planet's servers.

    No credentials: each test adds those its examples need.
    """
    inherited = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("PL_", "PLANET_ASYNC_", "BROWSER"))
        and not name.lower().endswith("_proxy")  # everything here is on loopback
    }
    return {
        **inherited,
        "HOME": str(home),
        "PYTHONUNBUFFERED": "1",
        "PLANET_ASYNC_EXAMPLE_API": api.url,
        "PLANET_ASYNC_EXAMPLE_ISSUER": peer.issuer,
        "PLANET_ASYNC_EXAMPLE_CLIENT_ID": "native-app",
        # the peer knows no `planet` scope; `openid` makes its logins OpenID Connect ones
        "PLANET_ASYNC_EXAMPLE_SCOPES": "openid offline_access",
        "PLANET_ASYNC_EXAMPLE_DEVICE_INTERVAL": "0.2",  # the peer sends none: RFC 8628 says 5 s
        "PLANET_ASYNC_EXAMPLE_M2M_ISSUER": peer.issuer,
    }


@pytest.fixture
def browser_log(tmp_path: Path) -> Path:
    return tmp_path / "browser.log"


@pytest.fixture(scope="module")
def browser_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Chromium's HOME, kept across the module's logins: its font cache is built once."""
    return tmp_path_factory.mktemp("browser-home")


@pytest.fixture
def browser_env(
    env: dict[str, str], chromium_path: str, browser_log: Path, browser_home: Path
) -> dict[str, str]:
    """`env`, plus a $BROWSER that `webbrowser.open` runs with the URL, waiting for it to end."""
    command = shlex.join([sys.executable, str(FAKE_BROWSER), "%s"])
    assert os.pathsep not in command, "webbrowser splits $BROWSER at os.pathsep"
    return {
        **env,
        "BROWSER": command,
        "PLANET_ASYNC_CHROMIUM": chromium_path,
        "PLANET_ASYNC_FAKE_BROWSER_LOG": str(browser_log),
        "PLANET_ASYNC_FAKE_BROWSER_HOME": str(browser_home),
    }


def browser_logins(log: Path) -> int:
    return len(log.read_text().splitlines()) if log.exists() else 0


def without_credentials(env: dict[str, str]) -> dict[str, str]:
    """`env` without credentials."""
    return {name: value for name, value in env.items() if not name.startswith("PL_")}


def grants(peer: Peer) -> dict[str, int]:
    return {name: int(n) for name, n in peer.stats()["grant_success"].items() if n}


def from_profile_dir(home: Path, profile: str) -> TokenSet | None:
    """The session in ~/.planet/<profile>/token.json, loaded as planet_async loads it."""
    return anyio.run(FileStorage(home / ".planet").load, profile)


def from_sqlite(home: Path, session: str) -> TokenSet | None:
    """The session in the custom storage's database (examples/sqlite_storage.py's schema)."""
    database = home / ".cache" / "my-app" / "sessions.db"
    if not database.is_file():
        return None
    with sqlite3.connect(database) as db:
        row = db.execute("SELECT token FROM tokens WHERE session = ?", (session,)).fetchone()
    return TokenSet.from_json_dict(json.loads(row[0])) if row else None


# -- the examples, by scenario ---------------------------------------------------------------

CLI_MANAGED = ["cli_session_implicit", "cli_session_explicit", "cli_session_specific_profile"]
IN_MEMORY = ["user_browser_in_memory", "user_device_in_memory", "m2m_in_memory"]
# Examples that save their session: where to (a `planet` profile, or the SQLite database), under
# which name.
PERSISTENT = {
    "user_browser_on_disk_cli_shared": ("profile", "my-browser-app"),
    "user_browser_custom_storage": ("sqlite", "my-browser-login"),
    "user_device_on_disk_cli_shared": ("profile", "my-device-app"),
    "user_device_custom_storage": ("sqlite", "my-device-login"),
    "m2m_on_disk_cli_shared": ("profile", "my-service-account"),
    "m2m_custom_storage": ("sqlite", "my-service-account"),
}
API_KEYS = ["api_key_in_memory", "api_key_legacy_file", "api_key_on_disk_cli_shared"]


def grant_of(name: str) -> str:
    if "browser" in name:
        return "authorization_code"
    return DEVICE_GRANT if "device" in name else "client_credentials"


def credentials_for(
    name: str, env: dict[str, str], request: pytest.FixtureRequest
) -> dict[str, str]:
    """The environment `name` needs: M2M credentials, or a browser."""
    if name.startswith(("m2m_", "client_")):
        return {**env, "PL_AUTH_CLIENT_ID": M2M_ID, "PL_AUTH_CLIENT_SECRET": M2M_SECRET}
    if "browser" in name:
        browser_env: dict[str, str] = request.getfixturevalue("browser_env")
        return browser_env
    return env


def test_every_example_is_run_here() -> None:
    """Each scenario script in examples/ is one this module runs, and none is missing."""
    scripts = {path.stem for path in EXAMPLES.glob("*.py")} - NOT_SCENARIOS
    covered = {*CLI_MANAGED, *IN_MEMORY, *PERSISTENT, *API_KEYS}
    assert scripts == covered | set(CLIENTS)
    assert len(covered) == 15


def test_local_api_accepts_only_the_peers_tokens_and_the_key(peer: Peer, api: LocalApi) -> None:
    """The stand-in API refuses what it must, so an example's 200 means it authenticated."""
    token = httpx.post(
        f"{peer.issuer}/token",
        data={"grant_type": "client_credentials"},
        auth=(M2M_ID, M2M_SECRET),
        trust_env=False,
    ).json()["access_token"]
    attempts = {
        "": 401,
        "Bearer not-a-jwt": 401,
        f"Bearer {token[:-4]}AAAA": 401,  # signature broken
        "api-key PLAK-someone-else": 401,
        f"Bearer {token}": 200,
        f"api-key {API_KEY}": 200,
    }
    with httpx.Client(trust_env=False) as client:
        for header, status in attempts.items():
            headers = {"Authorization": header} if header else {}
            assert client.get(api.url, headers=headers).status_code == status, header
    assert api.accepted == [token, API_KEY]
    assert api.rejected == 4


@pytest.mark.parametrize("name", IN_MEMORY)
def test_in_memory_session(
    name: str,
    env: dict[str, str],
    home: Path,
    peer: Peer,
    api: LocalApi,
    request: pytest.FixtureRequest,
) -> None:
    """One login or grant, one authenticated request, and nothing written to disk."""
    result = run_example(name, credentials_for(name, env, request))
    assert result.last_line == "200"
    assert grants(peer) == {grant_of(name): 1}
    logins = result.device_logins + browser_logins(request.getfixturevalue("browser_log"))
    assert logins == (0 if name.startswith("m2m_") else 1)
    assert len(api.accepted) == 1
    assert api.rejected == 0
    assert list(home.iterdir()) == []


@pytest.mark.parametrize("name", CLIENTS)
def test_other_clients(
    name: str,
    env: dict[str, str],
    home: Path,
    peer: Peer,
    api: LocalApi,
    request: pytest.FixtureRequest,
) -> None:
    """The aiohttp, httpx2 and Planet SDK examples: one token, one authenticated request."""
    result = run_example(name, credentials_for(name, env, request))
    assert result.last_line == "200"
    assert grants(peer) == {"client_credentials": 1}
    assert len(api.accepted) == 1
    assert api.rejected == 0
    assert list(home.iterdir()) == []


@pytest.mark.parametrize("name", list(PERSISTENT))
def test_saved_session_serves_the_next_run(
    name: str,
    env: dict[str, str],
    home: Path,
    peer: Peer,
    api: LocalApi,
    request: pytest.FixtureRequest,
) -> None:
    """The first run logs in (or gets a token) and saves the session where planet_async finds
    it (a `planet` profile, or the custom storage); the second run uses the saved token: no
    login, no token request, and the on-disk profiles need no credentials in the environment."""
    where, session = PERSISTENT[name]
    example_env = credentials_for(name, env, request)
    log = request.getfixturevalue("browser_log")
    user = not name.startswith("m2m_")
    first = run_example(name, example_env)
    assert first.last_line == "200"
    assert grants(peer) == {grant_of(name): 1}
    assert first.device_logins + browser_logins(log) == (1 if user else 0)
    if where == "profile":
        client = PlanetHome(home).read_auth_client(session)
        assert client is not None
        assert client.kind == ("user" if user else "m2m")
        saved = from_profile_dir(home, session)
        example_env = without_credentials(example_env)
    else:
        saved = from_sqlite(home, session)
    assert saved is not None
    assert api.accepted == [saved.access_token.get_secret_value()]
    if user:
        assert saved.refresh_token is not None  # later runs can renew without the user

    second = run_example(name, example_env)
    assert second.last_line == "200"
    assert grants(peer) == {grant_of(name): 1}
    logins = first.device_logins + second.device_logins + browser_logins(log)
    assert logins == (1 if user else 0)
    assert api.accepted == [saved.access_token.get_secret_value()] * 2
    assert api.rejected == 0


def test_cli_managed_session(
    home: Path,
    env: dict[str, str],
    browser_env: dict[str, str],
    browser_log: Path,
    peer: Peer,
    api: LocalApi,
) -> None:
    """After one `planet-async auth login`, the three CLI-managed examples use that session,
    with no other login: the named profile while there is no default, then the default."""
    login = [
        *("-m", "planet_async.cli", "--allow-loopback-http", "auth", "login", "--browser"),
        *("--profile", "my-cli-profile", "--no-use"),
        *("--client-id", "native-app", "--issuer", peer.issuer),
        *("--scope", "openid", "--scope", "offline_access"),
    ]
    run(login, browser_env)
    assert browser_logins(browser_log) == 1
    saved = from_profile_dir(home, "my-cli-profile")
    assert saved is not None
    token = saved.access_token.get_secret_value()

    # No default profile yet: only the example that names its profile can work.
    assert run_example("cli_session_specific_profile", env).last_line == "200"
    PlanetHome(home).set_default_profile("my-cli-profile")  # as `planet auth profile use` does
    implicit, explicit = run_together(
        (["examples/cli_session_implicit.py"], env), (["examples/cli_session_explicit.py"], env)
    )
    assert implicit.last_line == "200"
    assert explicit.last_line == "200"
    assert "Using profile 'my-cli-profile'" in explicit.output

    assert grants(peer) == {"authorization_code": 1}
    assert api.accepted == [token] * 3
    assert api.rejected == 0


def test_cli_managed_explicit_stops_without_a_login(
    home: Path, env: dict[str, str], peer: Peer, api: LocalApi
) -> None:
    """The explicit example refuses to run on a profile nobody logged in to, before any request."""
    client = AuthClientConfig.user("native-app", auth_server=peer.issuer, scopes=["openid"])
    PlanetHome(home).write_auth_client("nobody", client)
    result = run_example(
        "cli_session_explicit", {**env, "PL_AUTH_PROFILE": "nobody"}, expect_exit=1
    )
    assert "Not logged in" in result.output
    assert api.accepted == []
    assert api.rejected == 0


def test_api_key_from_the_environment(env: dict[str, str], api: LocalApi) -> None:
    """The in-memory API key example sends PL_AUTH_API_KEY as `api-key <key>`."""
    result = run_example("api_key_in_memory", {**env, "PL_AUTH_API_KEY": API_KEY})
    assert result.last_line == "200"
    assert api.accepted == [API_KEY]


def test_api_key_from_the_legacy_file(home: Path, env: dict[str, str], api: LocalApi) -> None:
    """The legacy example reads the key older SDKs saved in ~/.planet.json."""
    (home / ".planet.json").write_text(json.dumps({"key": API_KEY}))
    assert run_example("api_key_legacy_file", env).last_line == "200"
    assert api.accepted == [API_KEY]


def test_api_key_profile_serves_later_runs(home: Path, env: dict[str, str], api: LocalApi) -> None:
    """The first run saves the key as a static_apikey profile; the next needs no variable."""
    first = run_example("api_key_on_disk_cli_shared", {**env, "PL_AUTH_API_KEY": API_KEY})
    assert first.last_line == "200"
    client = json.loads((home / ".planet" / "my-api-key" / "auth_client.json").read_text())
    assert client == {
        "client_type": "static_apikey",
        "api_key": API_KEY,
        "bearer_token_prefix": "api-key",
    }
    assert run_example("api_key_on_disk_cli_shared", env).last_line == "200"
    assert api.accepted == [API_KEY, API_KEY]
    assert api.rejected == 0


def test_the_planet_cli_uses_the_saved_profiles(
    home: Path, env: dict[str, str], peer: Peer
) -> None:
    """The `planet` CLI itself reads what the on-disk examples saved: the service account's
    token (without asking the peer for another) and the API key."""
    pytest.importorskip("planet")
    planet = ["-c", "from planet.cli.cli import main; main()", "auth"]  # the `planet` command
    credentials = {
        **env,
        "PL_AUTH_CLIENT_ID": M2M_ID,
        "PL_AUTH_CLIENT_SECRET": M2M_SECRET,
        "PL_AUTH_API_KEY": API_KEY,
    }
    m2m, key = run_together(
        (["examples/m2m_on_disk_cli_shared.py"], credentials),
        (["examples/api_key_on_disk_cli_shared.py"], credentials),
    )
    assert (m2m.last_line, key.last_line) == ("200", "200")
    saved = from_profile_dir(home, "my-service-account")
    assert saved is not None

    token, api_key = run_together(
        ([*planet, "print-access-token"], {**env, "PL_AUTH_PROFILE": "my-service-account"}),
        ([*planet, "print-api-key"], {**env, "PL_AUTH_PROFILE": "my-api-key"}),
    )
    assert token.last_line == saved.access_token.get_secret_value()
    assert api_key.last_line == API_KEY
    assert grants(peer) == {"client_credentials": 1}


# -- the download demo ------------------------------------------------------------------------

# Seconds the demo's tokens live: a token renewed ahead has over a second left, more than a
# request takes on a busy machine (about 1 s; past that the API finds it expired and rejects).
DEMO_TTL = 6
DEMO_WORKERS = 4
DEMO_FILES = 1000  # 4 workers, at least 25 ms each: 6.25 s at least, beyond a renew-ahead (4.5 s)
DEMO_EVENTS = re.compile(
    r"renewal events +(\d+) started, (\d+) succeeded, (\d+) failed, "
    r"(\d+) tokens adopted from storage, (\d+) 401 rejections"
)
DEMO_RENEWALS = re.compile(r"token renewals +(\d+) by the client .*, (\d+) grants at the server")


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_download_demo_prints_the_managers_metrics(home: Path, backend: str) -> None:
    """examples/download_demo.py --metrics downloads every file and prints the events its token
    manager reported: one started and one succeeded per token request the peer answered, no
    failure, no adoption (one process), no 401."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("PL_", "PLANET_ASYNC_")) and not name.lower().endswith("_proxy")
    }
    command = ["examples/download_demo.py", "--metrics", "--backend", backend]
    command += ["--files", str(DEMO_FILES), "--concurrency", str(DEMO_WORKERS)]
    command += ["--token-ttl", str(DEMO_TTL), "--timeout", "50"]
    result = run(command, {**env, "HOME": str(home)}, timeout=60)
    events = DEMO_EVENTS.search(result.output)
    renewals = DEMO_RENEWALS.search(result.output)
    assert events is not None, result.output
    assert renewals is not None, result.output
    started, succeeded, failed, adopted, rejected = map(int, events.groups())
    client, server = map(int, renewals.groups())
    assert started == succeeded == client == server
    assert started >= 2  # the first token and at least one renewal ahead of expiry
    assert (failed, adopted, rejected) == (0, 0, 0)
    assert re.search(r"renewal latency +p50 \d+ ms", result.output), result.output
    assert re.search(r"token expires in +-?\d+\.\d s", result.output), result.output
    assert "result                  OK" in result.output


def test_the_docs_state_the_demos_job_as_the_demo_runs_it() -> None:
    """The README's and the quick start's figures for the demo follow its defaults (files,
    workers, the API's time per file, so the least time the job can take), and its `--metrics`
    is described as what it prints, a listener's counts, not OpenTelemetry."""
    usage = subprocess.run(
        [sys.executable, "examples/download_demo.py", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    usage = " ".join(usage.split())

    def default(option: str) -> float:
        found = re.search(rf"{option} [A-Z_]+ [^-(\[]*\(default (\d+)\)", usage)
        assert found is not None, (option, usage)
        return float(found.group(1))

    files, workers, latency = default("--files"), default("--concurrency"), default("--latency-ms")
    least = files / workers * latency / 1000
    job = f"at least {least:g} s ({files:,.0f} files, {workers:.0f} at a time, {latency:g} ms each)"
    readme = " ".join((ROOT / "README.md").read_text().split())
    quickstart = " ".join((ROOT / "docs" / "quickstart.md").read_text().split())
    for text in (readme, quickstart):
        assert f"a download job of {files:,.0f} files" in text
        assert job in text
    (metrics,) = re.findall(r"[^.]*`python3 tools/nox.py -s demo -- --metrics`[^.]*\.", readme)
    assert "listener rather than OpenTelemetry" in metrics


# -- the download job on a Dask cluster, sharing one session through Redis ----------------------

FLEET_TTL = 5  # seconds the fleet's tokens live
FLEET_WORKERS = 3
FLEET_FILES = 1440  # 100 ms each, 12 at a time: 12 s at least, about 2.5 token lifetimes
FLEET_TIMEOUT = 50.0  # seconds the whole example may take (it takes about 17)
# The bounds of tests/test_cross_process.py (TTL 5): renewals at least 0.65 * TTL - 1 s apart,
# since a token adopted from storage looks up to 1 s older than it is.
FLEET_FASTEST_RENEWAL = 0.65 * FLEET_TTL - 1.0  # 2.25 s
FLEET_MIN_IAT_GAP = math.floor(FLEET_FASTEST_RENEWAL - 0.1)  # 2


def test_dask_fleet_shares_one_session_through_redis(
    env: dict[str, str], peer: Peer, redis: RedisServer
) -> None:
    """examples/fleet_dask.py downloads every file on a Dask LocalCluster whose worker processes
    share one M2M session in Redis: no request rejected, and one token request per renewal point
    at the peer, not one per worker."""
    peer.set_access_token_ttl(FLEET_TTL)
    credentials = {**env, "PL_AUTH_CLIENT_ID": M2M_ID, "PL_AUTH_CLIENT_SECRET": M2M_SECRET}
    command = ["examples/fleet_dask.py", "--issuer", peer.issuer, "--redis", redis.url]
    command += ["--workers", str(FLEET_WORKERS), "--files", str(FLEET_FILES)]
    command += ["--token-ttl", str(FLEET_TTL)]
    result = run(command, credentials, timeout=FLEET_TIMEOUT)
    report = json.loads(result.last_line)
    grants = peer.grants("client_credentials")
    processes = report["processes"]
    iats: dict[str, int] = {}
    for process in processes:
        iats.update(process["tokens"])
    issued = sorted(iats, key=iats.__getitem__)
    gaps = [iats[b] - iats[a] for a, b in itertools.pairwise(issued)]
    print(
        f"\nDask: {FLEET_WORKERS} worker processes, {report['done']} files in "
        f"{report['seconds']:.1f} s; tokens live {FLEET_TTL} s: {grants} token requests at the "
        f"peer, {len(issued)} tokens used (iat gaps {gaps} s), token requests per process "
        f"{[p['renewals'] for p in processes]}"
    )

    assert (report["done"], report["failed"]) == (FLEET_FILES, 0), report["failures"]
    assert (report["api"]["accepted"], report["api"]["rejected"]) == (FLEET_FILES, 0)
    assert peer.errors() == {}
    assert len(processes) == FLEET_WORKERS
    assert len({process["pid"] for process in processes}) == FLEET_WORKERS
    # One token request per renewal point: the peer issued exactly the tokens the workers used,
    # each renewal point shows as one token, and every request is one a process counted.
    assert grants == len(issued) == report["api"]["distinct_tokens"]
    assert grants == sum(process["renewals"] for process in processes)
    assert grants >= 3  # the first token and at least two renewals
    assert grants <= 1 + math.floor((report["seconds"] + 0.5) / FLEET_FASTEST_RENEWAL)
    # Workers renewing for themselves would make tokens within moments of each other, each used
    # by one worker; here every worker used every token but perhaps the last, in order.
    assert all(gap >= FLEET_MIN_IAT_GAP for gap in gaps), gaps
    for process in processes:
        used = [name for name, _ in process["tokens"]]
        assert set(used) >= set(issued[:-1]), f"process {process['pid']} skipped a token"
        assert used == [name for name in issued if name in used], process["pid"]


# -- the download demo on each client -------------------------------------------------------------

EACH_CLIENT_FILES = 300
EACH_CLIENT_TIMEOUT = 90.0  # the demo starts its own peer and API: a few seconds on a busy machine


def summary_rows(output: str) -> dict[str, str]:
    """The demo's summary (the lines after its dashed rule) as {name: value}."""
    rows: dict[str, str] = {}
    lines = output.splitlines()
    for line in lines[lines.index("-" * 26) + 1 :]:
        name, _, value = line.partition("  ")
        if name and not name.startswith(" "):
            rows[name] = value.strip()
    return rows


@pytest.mark.timeout(EACH_CLIENT_TIMEOUT + 30)
@pytest.mark.parametrize("client", ["httpx", "httpx2", "aiohttp"])
def test_download_demo_runs_on_each_client(client: str, env: dict[str, str]) -> None:
    """examples/download_demo.py --client X downloads every file intact through X's adapter,
    with no request rejected, and says which client it used."""
    command = ["examples/download_demo.py", "--client", client, "--files", str(EACH_CLIENT_FILES)]
    command += ["--concurrency", "8", "--token-ttl", "6"]
    command += ["--timeout", str(EACH_CLIENT_TIMEOUT - 30)]
    result = run(command, env, timeout=EACH_CLIENT_TIMEOUT)
    rows = summary_rows(result.output)
    assert rows["files"] == f"{EACH_CLIENT_FILES} of {EACH_CLIENT_FILES} intact, 0 failed"
    assert rows["requests rejected"].startswith("0 ")
    assert rows["setup"].startswith(f"{client} on asyncio, 8 workers")
    assert rows["result"] == "OK"


def test_download_demo_refuses_aiohttp_on_trio(env: dict[str, str]) -> None:
    """aiohttp runs on asyncio only: --client aiohttp --backend trio is a usage error (exit 2)
    that says so, before any server starts."""
    command = ["examples/download_demo.py", "--client", "aiohttp", "--backend", "trio"]
    result = run(command, env, expect_exit=2)
    assert "--client aiohttp runs on asyncio only: use --backend asyncio" in result.output
    assert "starting the test peer" not in result.output


# -- the notebook ---------------------------------------------------------------------------------


def test_the_notebook_runs_in_a_jupyter_kernel(
    env: dict[str, str], api: LocalApi, peer: Peer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """examples/notebook.ipynb runs in a real Jupyter kernel (ipykernel, driven by nbclient): the
    device login displays a link, the code and a QR code, which this test approves like a user
    would; then a blocking `requests` call from a cell, inside the kernel's running event loop,
    and an `httpx` call with top-level await sharing the session, are both answered 200."""
    import html

    import nbformat
    from nbclient import NotebookClient

    for name, value in env.items():
        if name.startswith("PLANET_ASYNC_EXAMPLE_") or name == "HOME":
            monkeypatch.setenv(name, value)
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")  # no warning about moving paths
    shown: list[dict[str, str]] = []
    approvals: list[concurrent.futures.Future[str]] = []

    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as user:

        class Kernel(NotebookClient):
            def output(self, outs: Any, msg: dict[str, Any], display_id: Any, cell_index: int):
                data = msg.get("content", {}).get("data", {})
                page = data.get("text/html", "")
                if msg["msg_type"] == "display_data" and "planet-async-device-login" in page:
                    shown.append(data)
                    link = re.search(r'href="([^"]+)"', page)
                    assert link is not None
                    approvals.append(
                        user.submit(approve_device_over_http, html.unescape(link.group(1)))
                    )
                return super().output(outs, msg, display_id, cell_index)

        notebook = nbformat.read(EXAMPLES / "notebook.ipynb", as_version=4)
        Kernel(
            notebook,
            timeout=60,
            kernel_name="python3",
            resources={"metadata": {"path": str(EXAMPLES)}},
        ).execute()
    assert len(approvals) == 1
    assert "Sign-in Success" in approvals[0].result(timeout=0)
    (bundle,) = shown
    assert "enter the code" in bundle["text/plain"]
    assert "<code" in bundle["text/html"]
    assert "<svg" in bundle["text/html"]  # the qr extra is installed for the tests
    printed = [
        output.get("text", "")
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
    ]
    assert "requests: 200\n" in printed
    assert "httpx: 200\n" in printed
    assert grants(peer)[DEVICE_GRANT] == 1
    assert len(api.accepted) == 2
