"""Every ```python block in README.md and docs/ runs, complete, against the local servers.

Each block is written to a file and run by tests/_snippet_runner.py in a subprocess with a HOME of
its own, on asyncio and on trio. Two visible tables point it at local servers:

- `substitutions`: placeholder values in the snippet's text (client ids, secrets, an API key, the
  user-login issuer, a Redis or PostgreSQL URL) replaced by ones the local servers know;
- `routes`: Planet's API and M2M issuer, reached through the runner's httpx routing, so the
  snippet keeps Planet's URLs and the default origin allowlist.

A block the reader is meant to fill in (a protocol's method signatures) is marked with
``<!-- not-run: why -->`` on the line before it; a block that only includes a file of examples/
(``--8<-- "examples/..."``) is run by tests/test_examples.py. Both kinds are counted and listed.
"""

from __future__ import annotations

import json
import queue
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx
import pytest

from planet_async import PLANET_M2M_ISSUER
from tests._browser import PASSWORD, approve_device_over_http
from tests._peer import Peer
from tests.conftest import DEFAULT_TTL
from tests.test_examples import (  # the examples' fixtures: the local API, HOME, a browser
    API_KEY,
    M2M_ID,
    M2M_SECRET,
    LocalApi,
    api,  # noqa: F401
    browser_env,  # noqa: F401
    browser_home,  # noqa: F401
    browser_log,  # noqa: F401
    env,  # noqa: F401
    home,  # noqa: F401
)

pytestmark = pytest.mark.peer

ROOT = Path(__file__).resolve().parents[1]
RUNNER = ROOT / "tests" / "_snippet_runner.py"
SOURCES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
FENCE = re.compile(r"^```python[^\n]*\n(.*?)^```\s*$", re.MULTILINE | re.DOTALL)
NOT_RUN = re.compile(r"<!--\s*not-run:\s*(.+?)\s*-->\s*$")
INCLUDE = re.compile(r'^\s*--8<--\s+"([^"]+)"\s*$')
DEVICE_LINK = re.compile(r"\(or open (\S+)\)")
WEB_LOGIN = re.compile(r"^Open (\S+) in your browser")
RUN_TIMEOUT = 30.0
WEB_APP = ("web-app", "web-app-secret")  # the peer's confidential client for web services


@dataclass(frozen=True)
class Block:
    source: str  # e.g. "README.md:57"
    code: str
    skipped: str | None  # why it is not run here, if it is not


def blocks() -> list[Block]:
    found = []
    for path in SOURCES:
        text = path.read_text()
        for match in FENCE.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
            code = match.group(1)
            skipped = None
            if marker := NOT_RUN.search(before):
                skipped = f"marked not-run: {marker.group(1)}"
            elif code.strip() and all(INCLUDE.match(row) for row in code.strip().splitlines()):
                skipped = "includes examples/, run by tests/test_examples.py"
            found.append(Block(f"{path.relative_to(ROOT)}:{line}", code, skipped))
    return found


BLOCKS = blocks()
RUNNABLE = [block for block in BLOCKS if block.skipped is None]


def test_blocks_are_found_and_skips_are_listed() -> None:
    """The extraction finds the README's blocks, and every block not run says why."""
    skipped = [block for block in BLOCKS if block.skipped]
    print(f"\n{len(RUNNABLE)} blocks run, {len(skipped)} not run:")
    for block in skipped:
        print(f"  {block.source}: {block.skipped}")
    assert sum(block.source.startswith("README.md") for block in RUNNABLE) >= 6
    marked = [block for block in skipped if block.skipped.startswith("marked")]
    assert len(marked) <= 2, "keep fragments rare: make the block complete instead"


# -- pointing a snippet at the local servers ----------------------------------------------------


@pytest.fixture(scope="module")
def peer_server(client_keys: tuple[Path, dict[str, Path]]) -> Iterator[Peer]:
    """This module's peer accepts Planet's user scopes, which the snippets request by default."""
    jwks, _ = client_keys
    server = Peer.start(
        env={"AT_TTL": str(DEFAULT_TTL), "PKJWT_JWKS": str(jwks), "PLANET_SCOPES": "1"}
    )
    yield server
    server.stop()


def substitutions(
    peer: Peer, redis_url: str | None, postgres_url: str | None = None
) -> dict[str, str]:
    """Placeholders in the snippets' text -> values the local servers know (quoted literals)."""
    table = {
        "https://login.planet.com/": peer.issuer,  # user logins check the issuer they meet
        "my-registered-client-id": "native-app",
        "my-client-id": M2M_ID,
        "my-client-secret": M2M_SECRET,
        "my-client": "service-pkjwt",
        "my-web-app": WEB_APP[0],
        "my-web-app-secret": WEB_APP[1],
        "PLAK...": API_KEY,
    }
    if redis_url:
        table["redis://redis.internal:6379/0"] = redis_url
    if postgres_url:
        table["postgresql://app@db.internal:5432/app"] = postgres_url
    return {f'"{planet}"': f'"{local}"' for planet, local in table.items()}


def routes(peer: Peer, local_api: LocalApi) -> dict[str, str]:
    """Planet's URLs -> local ones, routed below authentication by tests/_snippet_runner.py."""
    parts = urlsplit(local_api.url)
    return {
        "https://api.planet.com": f"{parts.scheme}://{parts.netloc}",
        PLANET_M2M_ISSUER: peer.issuer,  # served under Planet's issuer name
    }


def localized(code: str, table: dict[str, str]) -> str:
    for planet, local in table.items():
        code = code.replace(planet, local)
    return code


# -- what a user does while a snippet runs ------------------------------------------------------


class _Forms(HTMLParser):
    """The action and inputs of the one POST form of a dev login page."""

    def __init__(self) -> None:
        super().__init__()
        self.action = ""
        self.fields: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {name: value or "" for name, value in attrs}
        if tag == "form" and attributes.get("method", "").lower() == "post":
            self.action, self.fields = attributes.get("action", ""), {}
        elif tag == "input" and "name" in attributes:
            self.fields[attributes["name"]] = attributes.get("value", "")


def web_login(authorization_url: str, max_pages: int = 8) -> str:
    """Sign in and consent at the peer over HTTP; returns the URL the browser is sent back to
    (the web service's callback, which is not fetched)."""
    redirect_uri = dict(httpx.URL(authorization_url).params)["redirect_uri"]
    with httpx.Client(timeout=15, trust_env=False) as http:
        response = http.get(authorization_url)
        for _ in range(max_pages):
            if response.is_redirect:
                location = urljoin(str(response.url), response.headers["location"])
                if location.startswith(redirect_uri):
                    return location
                response = http.get(location)
                continue
            response.raise_for_status()
            form = _Forms()
            form.feed(response.text)
            data = dict(form.fields)
            if "login" in data:
                data.update(login="alice", password=PASSWORD)
            response = http.post(urljoin(str(response.url), form.action), data=data)
    raise AssertionError(f"no redirect to {redirect_uri} after {max_pages} pages")


@dataclass
class Run:
    code: int
    output: str


def run_snippet(path: Path, environ: dict[str, str], cwd: Path) -> Run:
    """Run a snippet file; approve the device logins and web logins it asks the user for."""
    proc = subprocess.Popen(
        [sys.executable, str(RUNNER), str(path)],
        cwd=cwd,
        env=environ,
        stdin=subprocess.PIPE,
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

    threading.Thread(target=pump, name="snippet-output", daemon=True).start()
    deadline = time.monotonic() + RUN_TIMEOUT
    seen: list[str] = []
    assert proc.stdin is not None
    try:
        while (line := lines.get(timeout=max(deadline - time.monotonic(), 0.01))) is not None:
            seen.append(line)
            if link := DEVICE_LINK.search(line):
                approve_device_over_http(link.group(1))
            elif link := WEB_LOGIN.search(line):
                proc.stdin.write(web_login(link.group(1)) + "\n")
                proc.stdin.flush()
        code = proc.wait(timeout=max(deadline - time.monotonic(), 0.01))
    except (queue.Empty, subprocess.TimeoutExpired):
        proc.kill()
        proc.wait()
        raise AssertionError(f"still running after {RUN_TIMEOUT} s:\n{''.join(seen)}") from None
    finally:
        proc.stdin.close()
    return Run(code, "".join(seen))


# A block that runs itself with anyio.run runs on both backends; one written for an asyncio-only
# client (aiohttp, the Planet SDK) calls asyncio.run and runs on asyncio alone.
CASES = [
    pytest.param(block, backend, id=f"{block.source}-{backend}")
    for block in RUNNABLE
    for backend in (("asyncio", "trio") if "anyio.run(" in block.code else ("asyncio",))
]


@pytest.mark.parametrize(("block", "backend"), CASES)
def test_snippet_runs(
    block: Block,
    backend: str,
    env: dict[str, str],  # noqa: F811
    peer: Peer,
    api: LocalApi,  # noqa: F811
    tmp_path: Path,
    client_keys: tuple[Path, dict[str, Path]],
    request: pytest.FixtureRequest,
) -> None:
    """The block runs to the end with no undefined name, and every request it makes to Planet's
    API is authenticated (the local API accepted it)."""
    redis_url = request.getfixturevalue("redis").url if "redis://" in block.code else None
    postgres_url = (
        request.getfixturevalue("postgres").url if "postgresql://" in block.code else None
    )
    if "ensure_initialized" in block.code or "login_with_browser" in block.code:
        env = request.getfixturevalue("browser_env")
    snippet = tmp_path / "snippet.py"
    snippet.write_text(localized(block.code, substitutions(peer, redis_url, postgres_url)))
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    (workdir / "key.pem").write_bytes(client_keys[1]["rsa-1"].read_bytes())
    env = {
        **env,
        "PLANET_ASYNC_SNIPPET_ROUTES": json.dumps(routes(peer, api)),
        "PLANET_ASYNC_SNIPPET_ISSUERS": json.dumps([PLANET_M2M_ISSUER]),
        "PLANET_ASYNC_SNIPPET_BACKEND": backend,
        # `from_user_default_session()` finds a service account, as on a worker
        "PL_AUTH_CLIENT_ID": M2M_ID,
        "PL_AUTH_CLIENT_SECRET": M2M_SECRET,
    }
    env = {name: value for name, value in env.items() if not name.startswith("PLANET_ASYNC_EX")}
    result = run_snippet(snippet, env, workdir)
    assert result.code == 0, f"{block.source} exited {result.code}:\n{result.output}"
    assert api.rejected == 0, result.output
    if "https://api.planet.com" in block.code:
        assert api.accepted, f"{block.source} made no authenticated request:\n{result.output}"
