"""Browser login through a real loopback listener on 127.0.0.1; httpx plays the browser."""

from __future__ import annotations

import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import anyio
import anyio.from_thread
import httpx
import pytest

from planet_async import (
    AuthorizationCodeFlow,
    AuthorizationServer,
    CallbackError,
    ConfigurationError,
    HttpxTransport,
    IssuerMismatch,
    LoginDenied,
    LoginTimeout,
    LoopbackListener,
    PublicClient,
    login_with_browser,
)
from tests._helpers import token_response

pytestmark = pytest.mark.anyio

ISSUER = "https://auth.test"
TOKEN_URL = f"{ISSUER}/token"
AUTHORIZE_URL = f"{ISSUER}/authorize"


class TokenEndpoint:
    """Discovery and token endpoint on a MockTransport; records the token requests' forms."""

    def __init__(self) -> None:
        self.forms: list[dict[str, str]] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            metadata = {
                "issuer": ISSUER,
                "authorization_endpoint": AUTHORIZE_URL,
                "token_endpoint": TOKEN_URL,
                "authorization_response_iss_parameter_supported": True,
            }
            return httpx.Response(200, json=metadata)
        self.forms.append(dict(httpx.QueryParams(request.content.decode())))
        return token_response("at-loopback", refresh_token="rt-loopback")

    def flow(self, redirect_uri: str | None = None) -> AuthorizationCodeFlow:
        http = HttpxTransport(httpx.AsyncClient(transport=httpx.MockTransport(self.handler)))
        server = AuthorizationServer(ISSUER, transport=http)
        return AuthorizationCodeFlow(
            server, PublicClient(client_id="native"), redirect_uri=redirect_uri
        )


def params_of(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


async def get(url: str, params: dict[str, str] | None = None) -> httpx.Response:
    async with httpx.AsyncClient(trust_env=False, timeout=5) as client:
        return await client.get(url, params=params)


class Browser:
    """The user's browser: is opened on the authorization URL, then follows the redirect back.

    `open_sync` runs in a worker thread (like `webbrowser.open`), `open_async` on the event
    loop. `come_back` waits until it was opened and requests `redirect_uri` with the code, the
    login's state and the issuer, as changed by `overrides` (None drops a parameter).
    """

    def __init__(self) -> None:
        self.opened_urls: list[str] = []
        self.opened = anyio.Event()
        self.pages: list[httpx.Response] = []

    def open_sync(self, url: str) -> bool:
        self.opened_urls.append(url)
        anyio.from_thread.run_sync(self.opened.set)
        return True

    async def open_async(self, url: str) -> bool:
        self.opened_urls.append(url)
        self.opened.set()
        return True

    @property
    def redirect_uri(self) -> str:
        return params_of(self.opened_urls[0])["redirect_uri"]

    async def come_back(self, *, path: str | None = None, **overrides: str | None) -> None:
        await self.opened.wait()
        sent = params_of(self.opened_urls[0])
        values: dict[str, str | None] = {"code": "c", "state": sent["state"], "iss": ISSUER}
        values.update(overrides)
        url = self.redirect_uri
        if path is not None:
            url = urlsplit(url)._replace(path=path).geturl()
        query = {k: v for k, v in values.items() if v is not None}
        self.pages.append(await get(url, query))


async def login_and_browse(
    flow: AuthorizationCodeFlow,
    visits: list[Callable[[Browser], Awaitable[None]]],
    *,
    sync_opener: bool = False,
    timeout: float = 5,
) -> tuple[Any, Browser]:
    """Run login_with_browser while the browser makes `visits` in order; return the login's
    result (or the exception it raised) and the browser."""
    browser = Browser()
    outcome: list[Any] = []

    async def visit_all() -> None:
        for visit in visits:
            await visit(browser)

    opener = browser.open_sync if sync_opener else browser.open_async
    async with anyio.create_task_group() as tg:
        tg.start_soon(visit_all)
        try:
            outcome.append(await login_with_browser(flow, open_browser=opener, timeout=timeout))
        except Exception as exc:
            outcome.append(exc)
    return outcome[0], browser


async def can_connect(host: str, port: int) -> bool:
    try:
        stream = await anyio.connect_tcp(host, port)
    except OSError:
        return False
    await stream.aclose()
    return True


async def assert_closed(url: str) -> None:
    assert not await can_connect("127.0.0.1", urlsplit(url).port or 80)


def non_loopback_ipv4() -> str | None:
    """An IPv4 address of this machine that is not loopback, found without sending a packet."""
    candidates: list[str] = []
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("10.255.255.255", 1))  # UDP connect only picks a route; nothing is sent
        candidates.append(probe.getsockname()[0])
    except OSError:
        pass
    finally:
        probe.close()
    try:
        infos = socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)
        candidates += [str(info[4][0]) for info in infos]
    except OSError:
        pass
    for address in candidates:
        if not address.startswith("127.") and address != "0.0.0.0":  # noqa: S104 - a comparison
            return address
    return None


@pytest.mark.parametrize("sync_opener", [False, True], ids=["async opener", "sync opener"])
async def test_browser_login_completes(sync_opener: bool) -> None:
    """The opener gets the authorization URL; the redirect back to the listener completes the
    login, the browser sees a success page, and the port is closed afterwards."""
    endpoint = TokenEndpoint()
    result, browser = await login_and_browse(
        endpoint.flow(), [Browser.come_back], sync_opener=sync_opener
    )
    assert not isinstance(result, Exception), result
    assert result.access_token.get_secret_value() == "at-loopback"
    assert len(browser.opened_urls) == 1
    sent = params_of(browser.opened_urls[0])
    assert browser.opened_urls[0].startswith(f"{AUTHORIZE_URL}?")
    assert urlsplit(sent["redirect_uri"]).hostname == "127.0.0.1"
    assert [page.status_code for page in browser.pages] == [200]
    assert "Logged in" in browser.pages[0].text
    assert browser.pages[0].headers["cache-control"] == "no-store"
    assert endpoint.forms == [
        {
            "grant_type": "authorization_code",
            "code": "c",
            "redirect_uri": sent["redirect_uri"],
            "code_verifier": endpoint.forms[0]["code_verifier"],
            "client_id": "native",
        }
    ]
    await assert_closed(browser.redirect_uri)
    with pytest.raises(httpx.ConnectError):  # a second callback finds nobody listening
        await get(browser.redirect_uri, {"code": "c2", "state": sent["state"]})


@pytest.mark.parametrize(
    ("overrides", "error", "text"),
    [
        ({"state": "forged-state"}, CallbackError, "state"),
        ({"state": None}, CallbackError, "state"),
        ({"iss": "https://evil.test"}, IssuerMismatch, "evil.test"),
        ({"iss": None}, IssuerMismatch, "issuer"),
        ({"error": "access_denied", "code": None}, LoginDenied, "declined"),
        ({"error": "server_error", "code": None}, CallbackError, "server_error"),
        ({"code": None}, CallbackError, "no authorization code"),
    ],
    ids=["wrong state", "no state", "wrong iss", "no iss", "denied", "error", "no code"],
)
async def test_bad_redirect_fails_the_login(
    overrides: dict[str, str | None], error: type[Exception], text: str
) -> None:
    """An invalid redirect back raises its LoginError from login_with_browser (not wrapped in
    an exception group), shows the browser a 400 page, exchanges no code and closes the port."""
    endpoint = TokenEndpoint()

    async def visit(browser: Browser) -> None:
        await browser.come_back(**overrides)

    result, browser = await login_and_browse(endpoint.flow(), [visit])
    assert type(result) is error
    assert text in str(result)
    assert [page.status_code for page in browser.pages] == [400]
    assert "Login failed" in browser.pages[0].text
    assert endpoint.forms == []
    await assert_closed(browser.redirect_uri)


async def test_other_paths_get_404_and_are_ignored() -> None:
    """Requests to other paths (a favicon, the root) get 404 and do not end the login; the
    valid redirect that follows completes it."""
    endpoint = TokenEndpoint()

    async def favicon(browser: Browser) -> None:
        await browser.opened.wait()
        origin = urlsplit(browser.redirect_uri)
        browser.pages.append(await get(f"http://{origin.netloc}/favicon.ico"))
        browser.pages.append(await get(f"http://{origin.netloc}/"))

    async def wrong_path_with_params(browser: Browser) -> None:
        await browser.come_back(path="/elsewhere")

    result, browser = await login_and_browse(
        endpoint.flow(), [favicon, wrong_path_with_params, Browser.come_back]
    )
    assert not isinstance(result, Exception), result
    assert [page.status_code for page in browser.pages] == [404, 404, 404, 200]
    assert len(endpoint.forms) == 1


async def test_listener_binds_loopback_only() -> None:
    """The listener answers on 127.0.0.1 and is unreachable through the machine's other
    addresses."""
    address = non_loopback_ipv4()
    async with LoopbackListener() as listener:
        port = listener.port
        assert listener.redirect_uri == f"http://127.0.0.1:{port}/callback"
        assert await can_connect("127.0.0.1", port)
        if address is None:
            pytest.skip("this machine has no non-loopback IPv4 address to probe")
        assert not await can_connect(address, port)
    await assert_closed(f"http://127.0.0.1:{port}/")


async def test_timeout_without_callback() -> None:
    """With no redirect back, the login gives up with LoginTimeout after `timeout` and closes."""
    endpoint = TokenEndpoint()
    browser = Browser()
    started = time.monotonic()
    with pytest.raises(LoginTimeout, match="no browser came back"):
        await login_with_browser(endpoint.flow(), open_browser=browser.open_async, timeout=0.3)
    assert time.monotonic() - started < 2
    assert endpoint.forms == []
    await assert_closed(browser.redirect_uri)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_localhost_redirect_uri_keeps_its_name() -> None:
    """A registered http://localhost:PORT/cb keeps `localhost` in the redirect URI, listens on
    that port and path, and binds 127.0.0.1."""
    port = free_port()
    listener = LoopbackListener.for_redirect_uri(f"http://localhost:{port}/cb")
    async with listener:
        assert listener.redirect_uri == f"http://localhost:{port}/cb"
        assert listener.port == port
        assert listener.path == "/cb"
        assert await can_connect("127.0.0.1", port)
        address = non_loopback_ipv4()
        if address is not None:
            assert not await can_connect(address, port)


async def test_login_with_registered_localhost_redirect() -> None:
    """A flow registered with a fixed localhost port sends that exact redirect URI and gets the
    code back on it."""
    port = free_port()
    endpoint = TokenEndpoint()
    result, browser = await login_and_browse(
        endpoint.flow(f"http://localhost:{port}/cb"), [Browser.come_back]
    )
    assert not isinstance(result, Exception), result
    assert browser.redirect_uri == f"http://localhost:{port}/cb"
    assert endpoint.forms[0]["redirect_uri"] == f"http://localhost:{port}/cb"


@pytest.mark.parametrize(
    "redirect_uri",
    [
        "https://app.example/cb",
        "http://app.example/cb",
        "http://192.168.1.10:8080/cb",
        "http://0.0.0.0:8080/cb",
        "https://127.0.0.1:8080/cb",
    ],
)
async def test_non_loopback_redirect_uri_is_refused(redirect_uri: str) -> None:
    """A redirect URI the listener cannot serve on loopback is a ConfigurationError, raised
    before any browser is opened."""
    with pytest.raises(ConfigurationError, match="loopback"):
        LoopbackListener.for_redirect_uri(redirect_uri)
    browser = Browser()
    with pytest.raises(ConfigurationError):
        await login_with_browser(
            TokenEndpoint().flow(redirect_uri), open_browser=browser.open_async, timeout=1
        )
    assert browser.opened_urls == []


def test_listener_refuses_other_hosts() -> None:
    """The listener itself refuses to bind anything but loopback."""
    with pytest.raises(ConfigurationError):
        LoopbackListener(host="0.0.0.0")  # noqa: S104 - that it refuses is the point


async def test_no_browser_prints_the_url_and_still_listens() -> None:
    """When the opener fails, the URL is printed, and the listener still takes the redirect
    from a browser the user opened by hand."""
    endpoint = TokenEndpoint()
    printed: list[str] = []
    shown = anyio.Event()

    def output(text: str) -> None:
        printed.append(text)
        shown.set()

    browser = Browser()

    async def user_opens_the_printed_url() -> None:
        await shown.wait()
        url = next(word for word in printed[0].split() if word.startswith("https://"))
        await browser.open_async(url)
        await browser.come_back()

    async with anyio.create_task_group() as tg:
        tg.start_soon(user_opens_the_printed_url)
        token = await login_with_browser(
            endpoint.flow(), open_browser=lambda url: False, timeout=5, output=output
        )
    assert token.access_token.get_secret_value() == "at-loopback"
    assert len(printed) == 1
    assert [page.status_code for page in browser.pages] == [200]


def paste(printed: list[str], prompts: list[str], **overrides: str | None) -> Callable[[str], str]:
    """A `read_line` (runs in a worker thread) where the user pastes the redirect URL."""

    def read_line(prompt: str) -> str:
        prompts.append(prompt)
        url = next(word for word in printed[0].split() if word.startswith("https://"))
        sent = params_of(url)
        values: dict[str, str | None] = {"code": "pasted", "state": sent["state"], "iss": ISSUER}
        values.update(overrides)
        query = urlencode({k: v for k, v in values.items() if v is not None})
        return f"  {sent['redirect_uri']}?{query}\n"

    return read_line


async def test_pasted_redirect_completes_the_login() -> None:
    """With no browser and allow_tty_prompt, the user pastes the URL the browser was sent to,
    and the login completes with its code."""
    endpoint = TokenEndpoint()
    printed: list[str] = []
    prompts: list[str] = []
    token = await login_with_browser(
        endpoint.flow(),
        open_browser=lambda url: False,
        allow_tty_prompt=True,
        timeout=5,
        output=printed.append,
        read_line=paste(printed, prompts),
    )
    assert token.access_token.get_secret_value() == "at-loopback"
    assert len(printed) == 1
    assert f"{AUTHORIZE_URL}?" in printed[0]
    assert prompts == ["Paste the URL your browser was sent to: "]
    assert [form["code"] for form in endpoint.forms] == ["pasted"]


async def test_pasted_redirect_with_wrong_state_is_refused() -> None:
    """A pasted URL whose state is not this login's raises CallbackError; no code is used."""
    endpoint = TokenEndpoint()
    printed: list[str] = []
    with pytest.raises(CallbackError, match="state"):
        await login_with_browser(
            endpoint.flow(),
            open_browser=lambda url: False,
            allow_tty_prompt=True,
            timeout=5,
            output=printed.append,
            read_line=paste(printed, [], state="someone-elses-state"),
        )
    assert endpoint.forms == []
