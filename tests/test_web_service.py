"""The example web service (examples/web_service.py) as a fleet: 3 replicas (separate processes,
separate ports; two on uvicorn and asyncio, one on hypercorn and trio) on one real Redis, the real
oidc-provider, a local API that checks every token, and real headless Chromium logging users in
through the provider's pages.

Each login starts on one replica and the test sends its callback to another: the provider sends
the browser to the service's public URL, where nothing listens; the test catches that request and
opens the same URL on another replica's port, with the browser's own cookies, as a load balancer
would. The tests drive Chromium with Playwright's async API on an asyncio loop of their own, so
that several users log in at the same time in one browser (one context, one cookie jar, per user).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit

import anyio
import httpx
import pytest

from planet_async import (
    AuthorizationServer,
    ClientSecretBasic,
    MemoryStorage,
    RedisStorage,
)
from planet_async.web import SessionPool
from tests._api import RevocableApi
from tests._browser import CHROMIUM_ARGS, PASSWORD, STEP_TIMEOUT
from tests._helpers import VerifyingApi
from tests._peer import Peer
from tests._redis import RedisServer, free_port

playwright_api = pytest.importorskip("playwright.async_api")

# Three app processes, a provider and a browser start with the first test: more than the
# default 60 s per test on a loaded 2-core machine.
pytestmark = [pytest.mark.peer, pytest.mark.fleet, pytest.mark.slow, pytest.mark.timeout(180)]

ROOT = Path(__file__).resolve().parent.parent
REPLICAS = 3
USERS = 5
CLIENT_ID, CLIENT_SECRET = "web-fleet", "web-fleet-secret"
KEY_SECRET = "a-test-key-secret-of-32-bytes...."


@dataclass
class Fleet:
    peer: Peer
    api: RevocableApi
    urls: list[str]  # each replica's own URL, http://127.0.0.1:PORT
    public: str  # the service's public URL (the load balancer's, which the test plays)
    redis_url: str

    def other(self, url: str, step: int = 1) -> str:
        """The replica `step` places after the one whose URL (any URL on it) is given."""
        base = "{0.scheme}://{0.netloc}".format(urlsplit(url))
        return self.urls[(self.urls.index(base) + step) % len(self.urls)]


def _wait_until_up(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"replica exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1, trust_env=False).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)  # readiness poll of a starting process, bounded by the deadline
    raise RuntimeError(f"replica {url} did not start in 30 s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def fleet(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """The provider, the API and three replicas of the example app, for this module."""
    redis_server.flush()
    ports = [free_port() for _ in range(REPLICAS)]
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    public = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    peer = Peer.start(env={"WEB_REDIRECT_URIS": f"{public}/auth/callback"})
    api = RevocableApi(VerifyingApi(peer.issuer).verify)
    logs = tmp_path_factory.mktemp("replicas")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for index, port in enumerate(ports):
            env = {
                **os.environ,
                "PLANET_WEB_ISSUER": peer.issuer,
                "PLANET_WEB_CLIENT_ID": CLIENT_ID,
                "PLANET_WEB_CLIENT_SECRET": CLIENT_SECRET,
                "PLANET_WEB_SCOPES": "openid offline_access",
                "PLANET_WEB_DATA_URL": f"{api.origin}/users/{{user}}/items",
                "PLANET_WEB_REDIS_URL": redis_server.url,
                "PLANET_WEB_BASE_URL": public,
                "PLANET_WEB_SESSION_SECRET": "a-test-secret-shared-by-the-replicas",
                "PLANET_WEB_KEY_SECRET": KEY_SECRET,
                "PLANET_WEB_ENCRYPTION_KEYS": f"k1={base64.urlsafe_b64encode(b'k' * 32).decode()}",
                "PLANET_WEB_REPLICA": f"replica-{index}",
            }
            log = logs / f"replica-{index}.log"
            with open(log, "wb") as out:
                procs.append(
                    subprocess.Popen(
                        _server_command(index, port),
                        cwd=ROOT,
                        env=env,
                        stdin=subprocess.DEVNULL,
                        stdout=out,
                        stderr=out,
                    )
                )
        for proc, url, index in zip(procs, urls, range(REPLICAS), strict=True):
            _wait_until_up(url, proc, logs / f"replica-{index}.log")
        yield Fleet(peer, api, urls, public, redis_server.url)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        api.close()
        peer.stop()


def _server_command(index: int, port: int) -> list[str]:
    """The last replica runs on trio (hypercorn's trio worker), the others on asyncio (uvicorn):
    the same app, sharing logins and sessions across event loops of both kinds."""
    app = "examples.web_service:app"
    if index == REPLICAS - 1:
        return [
            sys.executable,
            "-m",
            "hypercorn",
            app,
            "--bind",
            f"127.0.0.1:{port}",
            "--worker-class",
            "trio",
            "--log-level",
            "WARNING",
        ]
    return [
        sys.executable,
        "-m",
        "uvicorn",
        app,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]


# -- a user in the browser ---------------------------------------------------------------------


async def _sign_in_at_provider(page, login: str) -> None:
    await page.locator("input[name=login]").fill(login)
    await page.locator("input[name=password]").fill(PASSWORD)
    await page.locator("form:has(input[name=prompt][value=login]) button[type=submit]").click()
    await page.locator("form:has(input[name=prompt][value=consent]) button[type=submit]").click()


async def _login_until_callback(context, start_url: str, login: str) -> str:
    """Open `start_url` (a replica's /auth/login), sign in as `login` at the provider, and return
    the callback URL the provider sent the browser to, without letting the browser open it."""
    page = await context.new_page()
    caught: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def catch(request) -> None:
        if urlsplit(request.url).path == "/auth/callback" and not caught.done():
            caught.set_result(request.url)

    # The provider redirects the browser to the public URL, where nothing listens: the test
    # plays the load balancer, and opens the same URL on a replica of its choice.
    context.on("request", catch)
    try:
        await page.goto(start_url)
        await _sign_in_at_provider(page, login)
        try:
            return await asyncio.wait_for(caught, STEP_TIMEOUT)
        except TimeoutError:
            text = await page.inner_text("body")
            raise AssertionError(f"no callback; the browser is at {page.url}: {text}") from None
    finally:
        context.remove_listener("request", catch)
        await page.close()


async def _open(context, url: str) -> tuple[int, str, str]:
    """Open `url` in a new page: the final status, URL and text."""
    page = await context.new_page()
    try:
        response = await page.goto(url)
        assert response is not None
        return response.status, page.url, await page.inner_text("body")
    finally:
        await page.close()


def _on(fleet: Fleet, url: str, replica: str) -> str:
    """`url` moved to another replica (host and port), as a load balancer would send it."""
    parts = urlsplit(url)
    return parts._replace(netloc=urlsplit(replica).netloc).geturl()


async def _with_browser(chromium_path: str, scenario) -> object:
    async with playwright_api.async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=chromium_path, headless=True, args=list(CHROMIUM_ARGS)
        )
        try:
            return await scenario(browser)
        finally:
            await browser.close()


async def _new_context(browser):
    context = await browser.new_context()
    context.set_default_timeout(STEP_TIMEOUT * 1000)
    return context


async def _stored_sessions(fleet: Fleet, users: list[str]) -> list[str]:
    """The stored values of `users`' sessions, as Redis holds them (keys as the replicas make
    them)."""
    keys = SessionPool(
        AuthorizationServer(fleet.peer.issuer),
        ClientSecretBasic(client_id=CLIENT_ID, client_secret=CLIENT_SECRET),
        MemoryStorage(),
        key_secret=KEY_SECRET.encode(),
    )
    redis = RedisStorage(fleet.redis_url)
    found = []
    for user in users:
        token = await redis.load(keys.key(user))
        assert token is not None, user
        found.append(json.dumps(token.to_json_dict()))
    return found


# -- the tests -----------------------------------------------------------------------------------


def test_users_log_in_concurrently_across_replicas(fleet: Fleet, chromium_path: str) -> None:
    """Five users log in at once in real Chromium through the provider's pages; each login
    starts on one replica and its callback lands on another. Then each user's data is fetched
    through a third replica, with a token whose `sub` is that user's (the API refuses others)."""
    fleet.api.reset()
    fleet.peer.reset()

    async def user(browser, index: int) -> tuple[str, str, dict]:
        context = await _new_context(browser)
        try:
            start = fleet.urls[index % REPLICAS]
            callback = await _login_until_callback(context, f"{start}/auth/login", f"user-{index}")
            status, landed, text = await _open(context, _on(fleet, callback, fleet.other(start)))
            assert status == 200, text
            data_url = f"{fleet.other(start, 2)}/data"
            page = await context.new_page()
            response = await page.goto(data_url)
            assert response is not None
            body = await response.json()
            await page.close()
            return text, landed, body
        finally:
            await context.close()

    async def scenario(browser) -> list:
        return await asyncio.gather(*(user(browser, index) for index in range(USERS)))

    results = asyncio.run(_with_browser(chromium_path, scenario))

    for index, (text, landed, body) in enumerate(results):
        start = fleet.urls[index % REPLICAS]
        assert f"Logged in as user-{index}" in text
        # The page after the callback is the callback replica's own home page.
        assert f"replica-{(index + 1) % REPLICAS}" in text
        assert landed == f"{fleet.other(start)}/"
        assert body["user"] == f"user-{index}"
        assert body["status"] == 200
        assert body["api"]["sub"] == f"user-{index}"
        assert body["replica"] == f"replica-{(index + 2) % REPLICAS}"
    assert fleet.peer.grants("authorization_code") == USERS
    hits = [hit for hit in fleet.api.hits if hit.path.startswith("/users/")]
    assert len(hits) == USERS
    assert [hit.status for hit in hits] == [200] * USERS
    # What Redis holds for each user is encrypted: not the token the API saw.
    stored = anyio.run(_stored_sessions, fleet, [f"user-{index}" for index in range(USERS)])
    for hit in hits:
        token = (hit.authorization or "").partition(" ")[2]
        assert token
        assert all(token not in text for text in stored)
    assert all("planet_async_encrypted" in text for text in stored)


def test_refused_callbacks(fleet: Fleet, chromium_path: str) -> None:
    """A replayed callback, a callback opened in another browser, and a callback whose `iss`
    names another server are each refused with a 400 page, on another replica than the start;
    none of them logs anybody in, and only the one good callback exchanges a code."""
    fleet.peer.reset()

    async def scenario(browser) -> dict[str, tuple[int, str]]:
        seen: dict[str, tuple[int, str]] = {}
        # A browser (context) per login: the provider remembers who signed in in a browser.
        replayer, owner, stranger, mixed = [await _new_context(browser) for _ in range(4)]
        try:
            start = f"{fleet.urls[0]}/auth/login"
            # Replayed: the first use logs in on replica 1, the replay on replica 2 is refused.
            callback = await _login_until_callback(replayer, start, "replay-user")
            status, _, _ = await _open(replayer, _on(fleet, callback, fleet.urls[1]))
            assert status == 200
            status, _, text = await _open(replayer, _on(fleet, callback, fleet.urls[2]))
            seen["replayed"] = (status, text)

            # Another browser: the stranger opens the owner's callback (login CSRF); then the
            # owner's own attempt finds the login spent.
            callback = await _login_until_callback(owner, start, "csrf-user")
            status, _, text = await _open(stranger, _on(fleet, callback, fleet.urls[1]))
            seen["other browser"] = (status, text)
            status, _, text = await _open(owner, _on(fleet, callback, fleet.urls[2]))
            seen["after the other browser"] = (status, text)
            status, _, text = await _open(stranger, f"{fleet.urls[0]}/")
            seen["stranger's home"] = (status, text)

            # Mix-up: a redirect that claims to come from another issuer.
            callback = await _login_until_callback(mixed, start, "mixup-user")
            parts = urlsplit(_on(fleet, callback, fleet.urls[1]))
            params = dict(parse_qsl(parts.query))
            assert params["iss"] == fleet.peer.issuer
            params["iss"] = "https://evil.example"
            status, _, text = await _open(mixed, parts._replace(query=urlencode(params)).geturl())
            seen["wrong iss"] = (status, text)
            status, _, text = await _open(mixed, f"{fleet.urls[0]}/")
            seen["mixed's home"] = (status, text)
        finally:
            for context in (replayer, owner, stranger, mixed):
                await context.close()
        return seen

    seen = asyncio.run(_with_browser(chromium_path, scenario))

    assert seen["replayed"][0] == 400
    assert "used already" in seen["replayed"][1]
    assert seen["other browser"][0] == 400
    assert "another browser" in seen["other browser"][1]
    assert seen["after the other browser"][0] == 400
    assert "used already" in seen["after the other browser"][1]
    assert "Log in with Planet" in seen["stranger's home"][1]
    assert seen["wrong iss"][0] == 400
    assert "evil.example" in seen["wrong iss"][1]
    assert "Log in with Planet" in seen["mixed's home"][1]
    assert fleet.peer.grants("authorization_code") == 1


def test_sign_out_on_one_replica_reaches_the_others_within_a_second(
    fleet: Fleet, chromium_path: str
) -> None:
    """A user signed in on two devices: signing out on one replica stops the other device's
    requests on every replica within one second (they are sent to log in again), though its
    cookie still names the user and the replicas held the user's valid token in memory."""

    async def scenario(browser) -> dict[str, str]:
        context = await _new_context(browser)
        try:
            callback = await _login_until_callback(
                context, f"{fleet.urls[0]}/auth/login", "leaving-user"
            )
            status, _, _ = await _open(context, _on(fleet, callback, fleet.urls[1]))
            assert status == 200
            return {c["name"]: c["value"] for c in await context.cookies(fleet.urls[0])}
        finally:
            await context.close()

    cookies = asyncio.run(_with_browser(chromium_path, scenario))
    device = {"session": cookies["session"]}  # the other device's cookie, kept after sign-out

    with httpx.Client(trust_env=False, timeout=10, cookies=device) as other_device:
        for url in fleet.urls:  # every replica serves the user, and holds the session now
            response = other_device.get(f"{url}/data")
            assert response.status_code == 200, response.text
            assert response.json()["api"]["sub"] == "leaving-user"
        with httpx.Client(trust_env=False, timeout=10, cookies=device) as first_device:
            response = first_device.post(f"{fleet.urls[0]}/auth/logout")
        assert response.status_code == 303
        signed_out = time.monotonic()

        refused: dict[str, float] = {}
        while len(refused) < 2 and time.monotonic() - signed_out < 1.0:
            for url in fleet.urls[1:]:
                if url in refused:
                    continue
                response = other_device.get(f"{url}/data")
                if response.status_code == 303:
                    assert response.headers["location"].startswith("/auth/login")
                    refused[url] = time.monotonic() - signed_out
                else:
                    assert response.status_code == 200
    print(f"\nsign-out seen by the other replicas after {sorted(refused.values())} s")
    assert set(refused) == set(fleet.urls[1:]), f"still served after 1 s: {refused}"
