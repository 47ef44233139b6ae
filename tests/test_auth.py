"""PlanetAuth: which requests get credentials, API keys, and the sync-client decision."""

from __future__ import annotations

import anyio
import httpx
import pytest

from planet_async import (
    AsyncOnlyError,
    ConfigurationError,
    PlanetAuth,
    TokenManager,
    TokenSet,
)
from planet_async._background import renewal_loop
from planet_async.flows import Grant

pytestmark = pytest.mark.anyio


class StaticGrant:
    """A grant that hands out one long-lived token, so these tests are about headers only."""

    description = "static test grant"
    renews_without_lock = False

    def __init__(self) -> None:
        self.calls = 0

    async def renew(self, current, *, clock) -> TokenSet:
        self.calls += 1
        return TokenSet(access_token=f"tok-{self.calls}", issued_at=clock(), expires_at=None)


def oauth(**kwargs) -> PlanetAuth:
    grant: Grant = StaticGrant()
    return PlanetAuth(TokenManager(grant), **kwargs)


class Recorder:
    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.path == "/redirect":
            return httpx.Response(302, headers={"location": request.url.params["to"]})
        return httpx.Response(200)

    def auth_of(self, url: str) -> str | None:
        return next(r.headers.get("authorization") for r in self.requests if str(r.url) == url)


async def _send(auth: PlanetAuth, *urls: str, **client_kwargs) -> Recorder:
    recorder = Recorder()
    transport = httpx.MockTransport(recorder)
    async with httpx.AsyncClient(auth=auth, transport=transport, **client_kwargs) as client:
        for url in urls:
            await client.get(url)
    return recorder


async def test_default_origins_get_the_token_and_nothing_else_does() -> None:
    """Only Planet's HTTPS API origins receive the bearer token by default."""
    urls = {
        "https://api.planet.com/data/v1": "Bearer tok-1",
        "https://services.sentinel-hub.com/api/v1/process": "Bearer tok-1",
        "https://API.PLANET.COM/x": "Bearer tok-1",
        "https://example.com/x": None,
        "http://api.planet.com/x": None,
        "https://api.planet.com:8443/x": None,
        "https://api.planet.com.evil.test/x": None,
        "http://127.0.0.1:8080/x": None,
    }
    recorder = await _send(oauth(), *urls)
    for url, expected in urls.items():
        sent = next(r for r in recorder.requests if str(r.url).lower() == url.lower())
        assert sent.headers.get("authorization") == expected, url


async def test_redirect_to_another_origin_carries_no_token() -> None:
    """A redirect from an allowlisted origin to any other origin goes out without credentials."""
    start = "https://api.planet.com/redirect?to=https://evil.test/steal"
    recorder = await _send(oauth(), start, follow_redirects=True)
    assert recorder.auth_of(start) == "Bearer tok-1"
    assert recorder.auth_of("https://evil.test/steal") is None


async def test_manually_followed_next_request_carries_no_token() -> None:
    """`response.next_request` to another origin, sent by hand, gets no Authorization header."""
    recorder = Recorder()
    transport = httpx.MockTransport(recorder)
    async with httpx.AsyncClient(auth=oauth(), transport=transport) as client:
        response = await client.get("https://api.planet.com/redirect?to=https://evil.test/x")
        assert response.next_request is not None
        await client.send(response.next_request)
    assert recorder.auth_of("https://evil.test/x") is None


async def test_same_origin_redirect_keeps_the_token() -> None:
    """Following a redirect within an allowlisted origin stays authenticated."""
    start = "https://api.planet.com/redirect?to=https://api.planet.com/final"
    recorder = await _send(oauth(), start, follow_redirects=True)
    assert recorder.auth_of("https://api.planet.com/final") == "Bearer tok-1"


async def test_loopback_http_only_when_enabled() -> None:
    """Plain-HTTP loopback gets credentials only when explicitly listed or enabled."""
    url = "http://127.0.0.1:8080/x"
    assert (await _send(oauth(), url)).auth_of(url) is None
    listed = oauth(allowed_origins=["http://127.0.0.1:8080"])
    assert (await _send(listed, url)).auth_of(url) == "Bearer tok-1"
    assert (await _send(listed, "http://127.0.0.1:9090/x")).auth_of(
        "http://127.0.0.1:9090/x"
    ) is None
    enabled = oauth(allow_loopback_http=True)
    for any_port in ("http://localhost:1234/x", "http://[::1]:5/x", url):
        assert (await _send(enabled, any_port)).auth_of(any_port) == "Bearer tok-1"
    assert (await _send(enabled, "http://example.com/x")).auth_of("http://example.com/x") is None


@pytest.mark.parametrize("origin", ["http://example.com", "ftp://api.planet.com", "not a url"])
def test_insecure_or_malformed_origins_are_refused(origin: str) -> None:
    """Credentials can never be configured to travel in clear text off the machine."""
    with pytest.raises(ConfigurationError):
        oauth(allowed_origins=[origin])


async def test_api_key_header_and_origins() -> None:
    """API keys go as `api-key <key>` to api.planet.com, never to services.sentinel-hub.com."""
    auth = PlanetAuth.from_api_key("PLAK-secret")
    planet = "https://api.planet.com/data/v1"
    sentinel = "https://services.sentinel-hub.com/api/v1"
    recorder = await _send(auth, planet, sentinel)
    assert recorder.auth_of(planet) == "api-key PLAK-secret"
    assert recorder.auth_of(sentinel) is None
    with pytest.raises(ConfigurationError, match="does not accept Planet API keys"):
        PlanetAuth.from_api_key(
            "PLAK-secret", allowed_origins=["https://services.sentinel-hub.com"]
        )


def test_sync_client_with_api_key_works() -> None:
    """API keys need no I/O, so a sync httpx.Client works."""
    recorder = Recorder()
    auth = PlanetAuth.from_api_key("PLAK-secret")
    with httpx.Client(auth=auth, transport=httpx.MockTransport(recorder)) as client:
        client.get("https://api.planet.com/x")
    assert recorder.auth_of("https://api.planet.com/x") == "api-key PLAK-secret"


def test_sync_client_with_oauth_renews_on_the_renewal_loop() -> None:
    """An OAuth2 session in a sync httpx.Client gets its token from the renewal loop, once, and
    the next requests read it from memory."""
    recorder = Recorder()
    auth = oauth()
    with httpx.Client(auth=auth, transport=httpx.MockTransport(recorder)) as client:
        for _ in range(3):
            client.get("https://api.planet.com/x")
    assert [r.headers["authorization"] for r in recorder.requests] == ["Bearer tok-1"] * 3
    assert auth.manager is not None
    assert auth.manager.grant.calls == 1  # type: ignore[attr-defined]
    assert renewal_loop().drives(auth.manager)


def test_a_sync_call_from_the_renewal_thread_is_refused() -> None:
    """A blocking call made on the renewal loop's own thread (a listener, say) would wait for
    itself: it raises AsyncOnlyError instead."""
    auth = oauth()
    loop = renewal_loop()

    async def from_the_loop() -> str:
        return auth.header_sync()

    assert auth.manager is not None
    with pytest.raises(AsyncOnlyError, match="renewal thread"):
        loop.call(auth.manager, from_the_loop)


def test_constructor_needs_exactly_one_credential() -> None:
    """Neither or both of a manager and an API key is a configuration error."""
    with pytest.raises(ConfigurationError):
        PlanetAuth()
    with pytest.raises(ConfigurationError):
        PlanetAuth(TokenManager(StaticGrant()), api_key="k")
    with pytest.raises(ConfigurationError):
        PlanetAuth(api_key="  ")


def test_repr_hides_the_api_key() -> None:
    """The API key never shows in a repr."""
    assert "PLAK-secret" not in repr(PlanetAuth.from_api_key("PLAK-secret"))


async def test_a_session_entered_on_a_loop_is_refused_to_sync_callers() -> None:
    """A manager entered (`async with`) on the caller's loop renews there; a sync client asking
    for it gets a ConfigurationError saying so, instead of racing that loop from another thread."""
    auth = oauth()
    assert auth.manager is not None
    async with auth.manager:
        with pytest.raises(ConfigurationError, match="entered"):
            await anyio.to_thread.run_sync(auth.header_sync)
    assert not renewal_loop().drives(auth.manager)
