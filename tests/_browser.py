"""Drive the test peer's dev login pages: with a real headless Chromium, or with plain HTTP.

oidc-provider's dev pages (devInteractions) ask for a device code (prefilled when the browser opens
``verification_uri_complete``) and its confirmation, then a sign-in (any login and password; the
login becomes the token's ``sub``), then consent. Both drivers here click or post through them the
way a user would, and neither knows anything about planet_async.

`Chromium` owns one browser in a thread of its own and drives it with Playwright's sync API, which
belongs to the thread that started it and runs no event loop of ours. Async tests, on asyncio and
trio alike, hand it a login and get a `concurrent.futures.Future` back at once, so a login's
``show`` or ``open_browser`` callback returns promptly while the browser works; they collect the
outcome with ``await anyio.to_thread.run_sync(future.result)``.
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import TypeVar
from urllib.parse import parse_qs, urljoin, urlsplit

import anyio
import httpx
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, sync_playwright

from planet_async import PlanetAuth, Storage, TokenSet

T = TypeVar("T")

CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    # Nothing but loopback: a page that reaches for the internet fails instead of waiting.
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
)
STEP_TIMEOUT = 15.0  # seconds any one page may take, well inside pytest's 60 s per test
PASSWORD = "any password"  # the dev pages accept anything


@dataclass(frozen=True)
class PageSeen:
    """The last page a login left the browser on."""

    url: str
    title: str
    text: str
    seconds: float = 0.0  # how long the user's part took in the browser


class Chromium:
    """One headless Chromium, in a thread of its own; each login gets a fresh cookie jar.

    Start it with `Chromium.launch(path)`; always `close()` it.
    """

    def __init__(self, executor: concurrent.futures.ThreadPoolExecutor) -> None:
        self._executor = executor
        self._playwright: Playwright | None = None
        self._browser: Browser | None = None
        self.launch_seconds = 0.0

    @classmethod
    def launch(cls, executable_path: str) -> Chromium:
        executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="chromium"
        )
        chromium = cls(executor)
        try:
            executor.submit(chromium._start, executable_path).result(timeout=60)
        except BaseException:
            chromium.close()
            raise
        return chromium

    def _start(self, executable_path: str) -> None:
        started = time.perf_counter()
        self._playwright = sync_playwright().start()
        self._browser = self._playwright.chromium.launch(
            executable_path=executable_path, headless=True, args=list(CHROMIUM_ARGS)
        )
        self.launch_seconds = time.perf_counter() - started

    def _stop(self) -> None:
        if self._browser is not None:
            self._browser.close()
            self._browser = None
        if self._playwright is not None:
            self._playwright.stop()
            self._playwright = None

    def close(self) -> None:
        try:
            self._executor.submit(self._stop).result(timeout=30)
        finally:
            self._executor.shutdown(wait=True)

    def submit(self, job: Callable[[Page], T]) -> concurrent.futures.Future[T]:
        """Run `job` on a new page in a new browser context, in the browser's thread."""

        def run() -> T:
            assert self._browser is not None, "the browser is closed"
            context: BrowserContext = self._browser.new_context()
            try:
                context.set_default_timeout(STEP_TIMEOUT * 1000)
                return job(context.new_page())
            finally:
                context.close()

        return self._executor.submit(run)

    def approve_device(
        self, verification_uri_complete: str, *, login: str = "alice"
    ) -> concurrent.futures.Future[PageSeen]:
        """Open the device login link, confirm the code, sign in as `login` and consent."""

        def job(page: Page) -> PageSeen:
            started = time.perf_counter()
            page.goto(verification_uri_complete)
            page.locator("button[autofocus][form='op.deviceConfirmForm']").click()
            _sign_in_and_consent(page, login)
            page.locator("h1", has_text="Sign-in Success").wait_for()
            return _seen(page, started)

        return self.submit(job)

    def log_in(
        self, authorization_url: str, *, login: str = "alice"
    ) -> concurrent.futures.Future[PageSeen]:
        """Open an authorization URL, sign in as `login`, consent, and follow the redirect back
        to the app's loopback listener; the result is the page the listener served."""
        redirect_uri = parse_qs(urlsplit(authorization_url).query)["redirect_uri"][0]

        def job(page: Page) -> PageSeen:
            started = time.perf_counter()
            page.goto(authorization_url)
            _sign_in_and_consent(page, login)
            page.wait_for_url(lambda url: url.startswith(redirect_uri))
            return _seen(page, started)

        return self.submit(job)


def _sign_in_and_consent(page: Page, login: str) -> None:
    page.locator("input[name=login]").fill(login)
    page.locator("input[name=password]").fill(PASSWORD)
    page.locator("form:has(input[name=prompt][value=login]) button[type=submit]").click()
    page.locator("form:has(input[name=prompt][value=consent]) button[type=submit]").click()


def _seen(page: Page, started: float) -> PageSeen:
    return PageSeen(
        url=page.url,
        title=page.title(),
        text=page.inner_text("body"),
        seconds=time.perf_counter() - started,
    )


# -- the same pages over plain HTTP, for tests that need a login but not a browser --------------


@dataclass
class _Form:
    action: str
    fields: dict[str, str] = field(default_factory=dict)


class _Forms(HTMLParser):
    """The POST forms of a page, with their inputs' names and values (buttons left out)."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[_Form] = []
        self._open: _Form | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {name: value or "" for name, value in attrs}
        if tag == "form" and attributes.get("method", "get").lower() == "post":
            self._open = _Form(attributes.get("action", ""))
            self.forms.append(self._open)
        elif tag == "input" and self._open is not None and "name" in attributes:
            self._open.fields[attributes["name"]] = attributes.get("value", "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._open = None


def approve_device_over_http(
    verification_uri_complete: str, *, login: str = "alice", max_pages: int = 6
) -> str:
    """Confirm a device code, sign in as `login` and consent, posting the dev pages' forms with
    a cookie jar like a browser would; returns the final page's HTML.

    Raises:
        AssertionError: The pages did not end in the success page.
    """
    with httpx.Client(follow_redirects=True, timeout=STEP_TIMEOUT, trust_env=False) as http:
        response = http.get(verification_uri_complete)
        for _ in range(max_pages):
            response.raise_for_status()
            if "Sign-in Success" in response.text:
                return response.text
            parser = _Forms()
            parser.feed(response.text)
            assert len(parser.forms) == 1, f"expected one form at {response.url}"
            form = parser.forms[0]
            data = dict(form.fields)
            if "login" in data:
                data.update(login=login, password=PASSWORD)
            response = http.post(urljoin(str(response.url), form.action), data=data)
    raise AssertionError(f"the dev pages did not end in success after {max_pages} pages")


def log_in_over_http(
    authorization_url: str,
    *,
    login: str = "alice",
    max_pages: int = 8,
    http: httpx.Client | None = None,
) -> str:
    """Sign in as `login` and consent through the dev pages for an authorization URL, posting
    their forms with a cookie jar like a browser would; return the URL the provider sends the
    browser back to (the app's callback with `code`, `state` and `iss`), without fetching it.

    Raises:
        AssertionError: The pages did not end in a redirect to the authorization's redirect_uri.
    """
    redirect_uri = parse_qs(urlsplit(authorization_url).query)["redirect_uri"][0]
    own = http is None
    client = http or httpx.Client(timeout=STEP_TIMEOUT, trust_env=False)
    try:
        response = client.get(authorization_url)
        for _ in range(max_pages):
            if response.is_redirect:
                location = urljoin(str(response.url), response.headers["location"])
                if location.startswith(redirect_uri):
                    return location
                response = client.get(location)
                continue
            response.raise_for_status()
            parser = _Forms()
            parser.feed(response.text)
            assert len(parser.forms) == 1, f"expected one form at {response.url}"
            form = parser.forms[0]
            data = dict(form.fields)
            if "login" in data:
                data.update(login=login, password=PASSWORD)
            response = client.post(urljoin(str(response.url), form.action), data=data)
    finally:
        if own:
            client.close()
    raise AssertionError(f"the dev pages did not redirect back after {max_pages} pages")


async def device_login_saved(issuer: str, storage: Storage, session: str) -> TokenSet:
    """Log `native-app` in at the peer with a device code approved over HTTP (asking for a
    refresh token), and save the session to `storage` as `session`."""
    auth = PlanetAuth.for_user(
        "native-app",
        issuer=issuer,
        scopes=("openid", "offline_access"),
        storage=storage,
        session=session,
        device_interval=0.1,
    )
    assert auth.user is not None
    flow = auth.user.device_flow()
    pending = await flow.start()
    assert pending.verification_uri_complete is not None
    await anyio.to_thread.run_sync(approve_device_over_http, pending.verification_uri_complete)
    token = await flow.complete(pending)
    await auth.user.save(token)
    return token
