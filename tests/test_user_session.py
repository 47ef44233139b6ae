"""User sessions (`PlanetAuth.for_user`): when a login is needed, logging in, renewing with the
refresh token afterwards, and no secret of any of it in logs, reprs or error messages."""

from __future__ import annotations

import logging
import secrets
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import anyio
import httpx
import pytest
from pydantic import SecretStr

from planet_async import (
    USER_SCOPES,
    AuthorizationServer,
    CallbackError,
    ConfigurationError,
    FileStorage,
    HttpxTransport,
    InvalidGrantError,
    LoginDenied,
    LoginRequired,
    MemoryStorage,
    PlanetAuth,
    PlanetAuthError,
    PublicClient,
    RefreshTokenGrant,
    TokenManager,
    TokenSet,
    UserLogin,
)
from tests._helpers import API, FakeClock

pytestmark = pytest.mark.anyio

ISSUER = "https://login.test"
DISCOVERY_URL = f"{ISSUER}/.well-known/openid-configuration"
TOKEN_URL = f"{ISSUER}/oauth/token"
DEVICE_URL = f"{ISSUER}/oauth/device"
AUTHORIZE_URL = f"{ISSUER}/oauth/authorize"
USER_CODE = "QXRT-PLWM"


class FakeLogin:
    """Planet's login server on a MockTransport: discovery, device authorization and the token
    endpoint for every grant. Issues unguessable tokens and remembers every secret it saw or
    issued; `refuse` maps a grant type to the OAuth error it answers with."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.refuse: dict[str, str] = {}
        self.secrets: set[str] = set()
        self.access_tokens: list[str] = []
        self.refresh_tokens: list[str] = []

    def _new(self, prefix: str) -> str:
        value = f"{prefix}-{secrets.token_urlsafe(18)}"
        self.secrets.add(value)
        return value

    def handler(self, request: httpx.Request) -> httpx.Response:
        url = str(request.url)
        if request.method == "GET" and url == DISCOVERY_URL:
            self.requests.append(("discovery", {}))
            return httpx.Response(
                200,
                json={
                    "issuer": ISSUER,
                    "token_endpoint": TOKEN_URL,
                    "device_authorization_endpoint": DEVICE_URL,
                    "authorization_endpoint": AUTHORIZE_URL,
                    "authorization_response_iss_parameter_supported": True,
                },
            )
        form = dict(httpx.QueryParams(request.content.decode()))
        self.secrets.update(v for k, v in form.items() if k in ("code", "code_verifier"))
        if url == DEVICE_URL:
            self.requests.append(("device", form))
            body = {
                "device_code": self._new("dc"),
                "user_code": USER_CODE,
                "verification_uri": f"{ISSUER}/activate",
                "expires_in": 600,
                "interval": 0,  # poll at once: these tests do not wait for a user
            }
            return httpx.Response(200, json=body)
        assert url == TOKEN_URL, url
        grant = form["grant_type"].rsplit(":", 1)[-1]
        self.requests.append((grant, form))
        if grant in self.refuse:
            return httpx.Response(400, json={"error": self.refuse[grant]})
        access, refresh = self._new("at"), self._new("rt")
        self.access_tokens.append(access)
        self.refresh_tokens.append(refresh)
        body = {"access_token": access, "token_type": "Bearer", "expires_in": 3600}
        if grant != "client_credentials":
            body["refresh_token"] = refresh
        return httpx.Response(200, json=body)

    @property
    def grants(self) -> list[str]:
        return [grant for grant, _ in self.requests]

    def forms(self, grant: str) -> list[dict[str, str]]:
        return [form for name, form in self.requests if name == grant]


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeLogin:
    """Every AuthorizationServer in the test talks to one FakeLogin."""
    server = FakeLogin()
    transport = HttpxTransport(httpx.AsyncClient(transport=httpx.MockTransport(server.handler)))
    monkeypatch.setattr(AuthorizationServer, "transport", property(lambda self: transport))
    return server


def stored_token(*, valid: bool, refresh: bool) -> TokenSet:
    now = time.time()
    return TokenSet(
        access_token=SecretStr("at-stored"),
        issued_at=now - 1800,
        expires_at=now + 1800 if valid else now - 60,
        refresh_token=SecretStr("rt-stored") if refresh else None,
    )


async def raw_get(url: str) -> bytes:
    """A GET with a raw socket: httpx would log the callback URL (code and state) at INFO."""
    parts = urlsplit(url)
    request = (
        f"GET {parts.path}?{parts.query} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        "Connection: close\r\n\r\n"
    )
    chunks: list[bytes] = []
    async with await anyio.connect_tcp(parts.hostname or "", parts.port or 80) as stream:
        await stream.send(request.encode())
        while True:
            try:
                chunks.append(await stream.receive())
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                break
    return b"".join(chunks)


class RawBrowser:
    """A browser that is opened on the authorization URL and comes back with a fresh code."""

    def __init__(self, **overrides: str | None) -> None:
        self.overrides = overrides
        self.urls: list[str] = []
        self.opened = anyio.Event()
        self.pages: list[bytes] = []
        self.secrets: set[str] = set()

    async def open(self, url: str) -> bool:
        self.urls.append(url)
        self.opened.set()
        return True

    async def come_back(self) -> None:
        await self.opened.wait()
        sent = {k: v[0] for k, v in parse_qs(urlsplit(self.urls[0]).query).items()}
        code = f"code-{secrets.token_urlsafe(18)}"
        self.secrets |= {code, sent["state"], sent["nonce"]}
        values: dict[str, str | None] = {"code": code, "state": sent["state"], "iss": ISSUER}
        values.update(self.overrides)
        query = urlencode({k: v for k, v in values.items() if v is not None})
        self.pages.append(await raw_get(f"{sent['redirect_uri']}?{query}"))


async def browser_login(auth: PlanetAuth, browser: RawBrowser) -> TokenSet:
    """Log in with `browser`; a login error is raised as itself, not in an exception group."""
    outcome: list[TokenSet | PlanetAuthError] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(browser.come_back)
        try:
            outcome.append(await auth.login_with_browser(open_browser=browser.open, timeout=5))
        except PlanetAuthError as exc:
            outcome.append(exc)
    if isinstance(outcome[0], PlanetAuthError):
        raise outcome[0]
    return outcome[0]


async def test_new_session_is_not_initialized(fake: FakeLogin) -> None:
    """A user session with empty storage needs a login; finding that out makes no request."""
    auth = PlanetAuth.for_user("cli-app", issuer=ISSUER)
    assert auth.user is not None
    assert not await auth.is_initialized()
    assert fake.requests == []


@pytest.mark.parametrize(
    ("valid", "refresh", "initialized"),
    [(True, True, True), (False, True, True), (True, False, True), (False, False, False)],
    ids=["valid+refresh", "expired+refresh", "valid only", "expired only"],
)
async def test_stored_session_initializes(
    fake: FakeLogin, valid: bool, refresh: bool, initialized: bool
) -> None:
    """A stored session counts when its access token is still valid or it has a refresh token."""
    storage = MemoryStorage()
    await storage.save("cli-app", stored_token(valid=valid, refresh=refresh))
    auth = PlanetAuth.for_user("cli-app", issuer=ISSUER, storage=storage)
    assert await auth.is_initialized() is initialized
    assert fake.requests == []


async def test_saved_login_initializes(fake: FakeLogin) -> None:
    """user.save() makes a login's tokens the session's, in memory and in storage."""
    storage = MemoryStorage()
    auth = PlanetAuth.for_user("cli-app", issuer=ISSUER, storage=storage)
    assert auth.user is not None
    await auth.user.save(stored_token(valid=True, refresh=True))
    assert await auth.is_initialized()
    later = PlanetAuth.for_user("cli-app", issuer=ISSUER, storage=storage)
    assert await later.is_initialized()
    assert fake.requests == []


async def test_ensure_initialized_without_a_way_to_log_in(fake: FakeLogin) -> None:
    """With neither browser nor prompt allowed, a session that needs a login raises
    LoginRequired, naming the session; nothing is requested."""
    auth = PlanetAuth.for_user("cli-app", issuer=ISSUER)
    with pytest.raises(LoginRequired, match="'cli-app'"):
        await auth.ensure_initialized(allow_open_browser=False, allow_tty_prompt=False)
    assert fake.requests == []


@pytest.mark.parametrize("allowed", [True, False])
async def test_ensure_initialized_does_nothing_when_initialized(
    fake: FakeLogin, allowed: bool
) -> None:
    """An initialized session is left alone: no request, no browser, whatever is allowed."""
    storage = MemoryStorage()
    await storage.save("cli-app", stored_token(valid=False, refresh=True))
    auth = PlanetAuth.for_user("cli-app", issuer=ISSUER, storage=storage)
    opened: list[str] = []

    def opener(url: str) -> bool:
        opened.append(url)
        return True

    await auth.ensure_initialized(
        allow_open_browser=allowed, allow_tty_prompt=allowed, open_browser=opener
    )
    assert fake.requests == []
    assert opened == []


async def test_ensure_initialized_runs_the_device_login(
    fake: FakeLogin, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without a browser but with a terminal, the device login runs, prints the code and
    saves the session."""
    storage = FileStorage(tmp_path)
    auth = PlanetAuth.for_user("cli-app", issuer=ISSUER, storage=storage)
    await auth.ensure_initialized(allow_open_browser=False, allow_tty_prompt=True)
    assert fake.grants == ["discovery", "device", "device_code"]
    assert fake.forms("device") == [{"client_id": "cli-app", "scope": "planet offline_access"}]
    assert USER_CODE in capsys.readouterr().out
    assert await auth.is_initialized()
    stored = await storage.load("cli-app")
    assert stored is not None
    assert stored.refresh_token is not None
    assert stored.refresh_token.get_secret_value() == fake.refresh_tokens[0]


async def test_ensure_initialized_prefers_the_browser(fake: FakeLogin) -> None:
    """With a browser allowed, the session logs in through it and the loopback redirect."""
    auth = PlanetAuth.for_user("cli-app", issuer=ISSUER)
    browser = RawBrowser()
    async with anyio.create_task_group() as tg:
        tg.start_soon(browser.come_back)
        await auth.ensure_initialized(allow_open_browser=True, open_browser=browser.open)
    assert fake.grants == ["discovery", "authorization_code"]
    assert b"200 OK" in browser.pages[0]
    assert await auth.is_initialized()


@pytest.mark.parametrize("kind", ["m2m", "api key"])
async def test_m2m_and_api_keys_need_no_login(fake: FakeLogin, kind: str) -> None:
    """M2M and API-key auths are always initialized, ensure_initialized is a no-op, and their
    login methods raise ConfigurationError."""
    if kind == "m2m":
        auth = PlanetAuth.from_client_credentials("svc", "svc-secret", token_endpoint=TOKEN_URL)
    else:
        auth = PlanetAuth.from_api_key("PLAK-key")
    assert auth.user is None
    assert await auth.is_initialized()
    await auth.ensure_initialized(allow_open_browser=False, allow_tty_prompt=False)
    with pytest.raises(ConfigurationError, match="for_user"):
        await auth.login_with_device(show=print)
    with pytest.raises(ConfigurationError, match="for_user"):
        await auth.login_with_browser(open_browser=lambda url: True, timeout=1)
    assert fake.requests == []


async def test_login_then_renew_with_the_refresh_token(fake: FakeLogin, tmp_path: Path) -> None:
    """After a device login the stored session holds the refresh token; when the API refuses
    the access token, the session renews with it (RefreshTokenGrant) and stores the rotated one."""
    storage = FileStorage(tmp_path)
    auth = PlanetAuth.for_user("cli-app", issuer=ISSUER, storage=storage)
    shown: list[Any] = []
    await auth.login_with_device(show=shown.append)
    assert [p.user_code for p in shown] == [USER_CODE]
    stored = await storage.load("cli-app")
    assert stored is not None
    assert stored.refresh_token is not None
    first_refresh = fake.refresh_tokens[0]
    assert stored.refresh_token.get_secret_value() == first_refresh

    seen: list[str] = []

    def api(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["authorization"])
        first = f"Bearer {fake.access_tokens[0]}"
        return httpx.Response(401 if request.headers["authorization"] == first else 200)

    async with httpx.AsyncClient(auth=auth, transport=httpx.MockTransport(api)) as client:
        response = await client.get(f"{API}/data/v1/searches")
    assert response.status_code == 200
    assert seen == [f"Bearer {fake.access_tokens[0]}", f"Bearer {fake.access_tokens[1]}"]
    assert fake.forms("refresh_token") == [
        {"grant_type": "refresh_token", "refresh_token": first_refresh, "client_id": "cli-app"}
    ]
    stored = await storage.load("cli-app")
    assert stored is not None
    assert stored.refresh_token is not None
    assert stored.refresh_token.get_secret_value() == fake.refresh_tokens[1]


async def test_expired_login_renews_on_the_next_request(fake: FakeLogin) -> None:
    """A logged-in session whose access token expired renews with its refresh token before the
    next request, without the user."""
    clock = FakeClock(start=time.time())
    server = AuthorizationServer(ISSUER)
    client = PublicClient(client_id="cli-app")
    manager = TokenManager(RefreshTokenGrant(server, client), session="cli-app", clock=clock)
    auth = PlanetAuth(manager)
    auth.user = UserLogin(manager, server, client, scopes=USER_SCOPES)
    await auth.login_with_device(show=lambda pending: None)
    clock.advance(3600)
    seen: list[str] = []

    def api(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["authorization"])
        return httpx.Response(200)

    async with httpx.AsyncClient(auth=auth, transport=httpx.MockTransport(api)) as http:
        await http.get(f"{API}/data/v1/searches")
    assert fake.grants == ["discovery", "device", "device_code", "refresh_token"]
    assert fake.forms("refresh_token")[0]["refresh_token"] == fake.refresh_tokens[0]
    assert seen == [f"Bearer {fake.access_tokens[1]}"]


@pytest.mark.parametrize(
    ("scopes", "sent"),
    [(["planet", "offline_access"], "planet"), (["offline_access"], None)],
)
async def test_m2m_never_asks_for_offline_access(
    fake: FakeLogin, scopes: list[str], sent: str | None
) -> None:
    """The client credentials grant drops `offline_access`, even when asked for it."""
    auth = PlanetAuth.from_client_credentials(
        "svc", "svc-secret", token_endpoint=TOKEN_URL, scopes=scopes
    )
    assert auth.manager is not None
    await auth.manager.token()
    [form] = fake.forms("client_credentials")
    assert form.get("scope") == sent


async def test_no_secret_in_logs_reprs_or_errors(
    fake: FakeLogin, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A browser login, a device login, a refresh, two pending logins and five failed logins
    leave no code, verifier, state, nonce, device code or token in any log record (at DEBUG),
    repr, str or exception text."""
    caplog.set_level(logging.DEBUG)  # the root logger: ours, httpx's and httpcore's records
    storage = FileStorage(tmp_path)
    auth = PlanetAuth.for_user("cli-app", issuer=ISSUER, storage=storage)
    assert auth.user is not None
    objects: list[object] = [auth, auth.user, auth.manager, storage]
    errors: list[BaseException] = []
    browsers: list[RawBrowser] = []

    # Logins and a refresh that succeed.
    browsers.append(RawBrowser())
    objects.append(await browser_login(auth, browsers[-1]))
    objects.append(await auth.login_with_device(show=objects.append))
    assert auth.manager is not None
    objects.append(await auth.manager.renew())

    # Pending logins, driven step by step.
    flow = auth.user.authorization_code_flow("http://127.0.0.1:8400/callback")
    pending = await flow.start()
    device_flow = auth.user.device_flow()
    device_pending = await device_flow.start()
    objects += [flow, pending, device_flow, device_pending]
    hidden = {
        pending.state.get_secret_value(),
        pending.nonce.get_secret_value(),
        pending.code_verifier.get_secret_value(),
        device_pending.device_code.get_secret_value(),
    }

    # Failures: a forged redirect, a declined browser login, a refused code, a declined device
    # login, a refused refresh token.
    for browser, refuse in [
        (RawBrowser(state="forged-state"), {}),
        (RawBrowser(error="access_denied", code=None), {}),
        (RawBrowser(), {"authorization_code": "invalid_grant"}),
    ]:
        fake.refuse = refuse
        browsers.append(browser)
        with pytest.raises(PlanetAuthError) as info:
            await browser_login(auth, browser)
        errors.append(info.value)
    fake.refuse = {"device_code": "access_denied"}
    with pytest.raises(LoginDenied) as denied:
        await auth.login_with_device(show=objects.append)
    errors.append(denied.value)
    fake.refuse = {"refresh_token": "invalid_grant"}
    expired = stored_token(valid=False, refresh=True).model_copy(
        update={"refresh_token": SecretStr(f"rt-{secrets.token_urlsafe(18)}")}
    )
    assert expired.refresh_token is not None
    hidden.add(expired.refresh_token.get_secret_value())
    await storage.save("expired", expired)
    stale = PlanetAuth.for_user("cli-app", issuer=ISSUER, storage=storage, session="expired")
    assert stale.manager is not None
    with pytest.raises(InvalidGrantError) as refused:
        await stale.manager.token()
    errors.append(refused.value)
    objects += [stale, stale.manager]
    assert [type(e) for e in errors[:3]] == [CallbackError, LoginDenied, InvalidGrantError]

    for browser in browsers:
        hidden |= browser.secrets
    hidden |= fake.secrets
    assert len(fake.access_tokens) == len(fake.refresh_tokens) == 3  # browser, device, refresh
    assert all(t in hidden for t in fake.access_tokens + fake.refresh_tokens)
    assert len(hidden) >= 20
    texts = [record.getMessage() for record in caplog.records] + [caplog.text]
    texts += [repr(o) for o in objects] + [str(o) for o in objects]
    texts += [str(e) for e in errors] + [repr(e) for e in errors]
    texts += [str(e.__cause__) for e in errors if e.__cause__ is not None]
    assert any("device_authorization_endpoint request" in t for t in texts)
    assert any("token_endpoint request" in t for t in texts), "DEBUG records were not captured"
    for text in texts:
        for secret in hidden:
            assert secret not in text
