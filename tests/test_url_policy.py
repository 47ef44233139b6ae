"""One URL policy: what loopback is, which issuers and endpoints may receive secrets, and which
request origins get credentials (exactly, in canonical form, never through a redirect)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from planet_async import (
    AuthorizationServer,
    ConfigurationError,
    HttpxTransport,
    PlanetAuth,
    TokenManager,
    TokenSet,
)
from planet_async._urls import OriginPolicy, is_loopback, origin_of
from planet_async.profiles import AuthClientConfig, PlanetHome

pytestmark = pytest.mark.anyio

LOOPBACK = ["127.0.0.1", "127.5.6.7", "127.255.255.254", "::1", "[::1]", "localhost", "LOCALHOST."]
NOT_LOOPBACK = [
    "127.0.0.1.example.net",
    "127.example.net",
    "localhost.example.net",
    "mylocalhost",
    "0x7f000001",
    "2130706433",
    "127.1",
    "::ffff:127.0.0.1",
    "0.0.0.0",  # noqa: S104 - a host name under test, nothing binds to it
    "::",
    "128.0.0.1",
    "",
]


@pytest.mark.parametrize("host", LOOPBACK)
def test_loopback_is_127_slash_8_colon_colon_1_or_localhost(host: str) -> None:
    """IP literals in 127.0.0.0/8, ``::1`` and the name ``localhost`` are loopback."""
    assert is_loopback(host)


@pytest.mark.parametrize("host", NOT_LOOPBACK)
def test_nothing_else_is_loopback(host: str) -> None:
    """Names that merely start like a loopback address, and other encodings, are not."""
    assert not is_loopback(host)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1.example.net/",
        "http://127.0.0.1.example.net:8080/realms/x",
        "http://localhost.example.net/",
        "http://[::ffff:127.0.0.1]/",
        "http://user:pass@127.0.0.1/",
    ],
)
def test_plain_http_issuer_must_be_a_loopback_literal(url: str) -> None:
    """An http issuer on a DNS name (or with credentials in it) is refused before any request."""
    with pytest.raises(ConfigurationError, match="refusing"):
        AuthorizationServer(url)


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:9/", "http://127.3.2.1/x", "http://[::1]:9/", "http://localhost:9"]
)
def test_plain_http_issuer_on_loopback_is_allowed(url: str) -> None:
    """Loopback issuers over http are fine (tests, local proxies)."""
    assert AuthorizationServer(url).issuer == url


@pytest.mark.parametrize(
    "url", ["https://login.example.com/?tenant=x", "https://login.example.com/#x", "https://a.b/?"]
)
def test_issuer_with_a_query_or_fragment_is_refused(url: str) -> None:
    """RFC 8414 section 2: an issuer has no query or fragment."""
    with pytest.raises(ConfigurationError, match="no query or fragment"):
        AuthorizationServer(url)


async def test_discovered_endpoint_on_a_dns_name_over_http_is_refused() -> None:
    """Discovery cannot send secrets over http to a name that only looks like loopback."""
    issuer = "https://login.test"

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, json={"issuer": issuer, "token_endpoint": "http://127.0.0.1.example.net/token"}
        )

    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    server = AuthorizationServer(issuer, transport=HttpxTransport(http))
    with pytest.raises(ConfigurationError, match="discovered token_endpoint"):
        await server.endpoint("token_endpoint")
    await http.aclose()


@pytest.mark.parametrize("origin", ["http://127.0.0.1.example.net:8080", "http://example.com"])
def test_allowlisted_http_origin_must_be_loopback(origin: str) -> None:
    """Credentials can be allowlisted for http only on loopback, by the same rule."""
    with pytest.raises(ConfigurationError, match="only https origins"):
        PlanetAuth(api_key="PLAK123456", allowed_origins=[origin])


def test_the_command_refuses_a_lookalike_loopback_issuer(tmp_path: Path) -> None:
    """`planet-async` applies the same rule, even with --allow-loopback-http."""
    home = PlanetHome(tmp_path)
    home.write_auth_client(
        "svc", AuthClientConfig.m2m("svc", "svc-secret", auth_server="http://127.0.0.1.example.net")
    )
    command = [sys.executable, "-m", "planet_async.cli", "--home", str(tmp_path)]
    command += ["--allow-loopback-http", "--profile", "svc", "auth", "print-access-token"]
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "refusing authorization server http://127.0.0.1.example.net" in result.stderr
    assert "svc-secret" not in result.stderr + result.stdout


# -- which requests get credentials ---------------------------------------------------------------


class CountingGrant:
    description = "counting test grant"
    renews_without_lock = False

    def __init__(self) -> None:
        self.calls = 0

    async def renew(self, current, *, clock) -> TokenSet:
        self.calls += 1
        return TokenSet(access_token=f"tok-{self.calls}", issued_at=clock(), expires_at=None)


class Site:
    """Redirects /go?to=URL, answers 401 where told, and records what each request carried."""

    def __init__(self, unauthorized: set[str] = frozenset()) -> None:  # type: ignore[assignment]
        self.unauthorized = unauthorized
        self.seen: list[tuple[str, str | None]] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.seen.append((str(request.url), request.headers.get("authorization")))
        if request.url.path == "/go":
            return httpx.Response(302, headers={"location": request.url.params["to"]})
        if request.url.host in self.unauthorized:
            return httpx.Response(401)
        return httpx.Response(200)


@pytest.mark.parametrize(
    "target", ["https://elsewhere.test/x", "https://services.sentinel-hub.com/x"]
)
async def test_401_from_a_redirect_target_does_not_renew_the_token(target: str) -> None:
    """A 401 from another origin reached through a redirect says nothing about our token: it is
    neither discarded nor renewed."""
    grant = CountingGrant()
    manager = TokenManager(grant)
    site = Site(unauthorized={httpx.URL(target).host})
    async with httpx.AsyncClient(
        auth=PlanetAuth(manager),
        transport=httpx.MockTransport(site.handler),
        follow_redirects=True,
    ) as client:
        response = await client.get("https://api.planet.com/go", params={"to": target})
        assert response.status_code == 401
        assert (await client.get("https://api.planet.com/x")).status_code == 200
    assert grant.calls == 1
    assert site.seen == [
        (
            f"https://api.planet.com/go?to={target.replace(':', '%3A').replace('/', '%2F')}",
            "Bearer tok-1",
        ),
        (target, None),
        ("https://api.planet.com/x", "Bearer tok-1"),
    ]


def test_http_origin_on_port_80_needs_its_https_twin() -> None:
    """httpx keeps the header on an http->https redirect to the same host, so allowlisting
    http://host on port 80 alone is refused, with the fix in the message."""
    with pytest.raises(ConfigurationError, match="list https://localhost too"):
        PlanetAuth(api_key="PLAK123456", allowed_origins=["http://localhost"])
    PlanetAuth(api_key="PLAK123456", allowed_origins=["http://localhost", "https://localhost"])
    PlanetAuth(api_key="PLAK123456", allowed_origins=["http://localhost:8080"])


@pytest.mark.parametrize("follow", [True, False], ids=["followed", "next_request"])
async def test_no_header_on_an_http_to_https_redirect_that_is_not_allowlisted(
    follow: bool,
) -> None:
    """With any loopback http origin allowed, an http://host (port 80) request gets no header,
    because httpx would carry it on to https://host, another origin that is not allowlisted."""
    site = Site()
    auth = PlanetAuth(api_key="PLAK123456", allow_loopback_http=True)
    async with httpx.AsyncClient(
        auth=auth, transport=httpx.MockTransport(site.handler), follow_redirects=follow
    ) as client:
        response = await client.get("http://localhost/go", params={"to": "https://localhost/x"})
        if not follow:
            assert response.next_request is not None
            await client.send(response.next_request)
        await client.get("http://localhost:8080/x")
    assert [header for _, header in site.seen] == [None, None, "api-key PLAK123456"]


@pytest.mark.parametrize(
    "origin",
    [
        "https://services.sentinel-hub.com.",
        "https://SERVICES.sentinel-hub.com",
        "https://services.sentinel-hub.com:443",
    ],
)
def test_api_key_never_allowlisted_for_sentinel_hub_in_any_spelling(origin: str) -> None:
    """Hosts are compared canonically: no spelling of Sentinel Hub's origin takes an API key."""
    with pytest.raises(ConfigurationError, match="does not accept Planet API keys"):
        PlanetAuth(api_key="PLAK123456", allowed_origins=[origin])


async def test_hosts_are_compared_in_canonical_form() -> None:
    """A trailing dot or capitals name the same origin: Planet's API gets the token, Sentinel Hub
    never gets an API key."""
    site = Site()
    urls = [
        "https://api.planet.com./x",
        "https://API.Planet.com/x",
        "https://services.sentinel-hub.com./x",
        "https://api.planet.com.evil.test/x",
    ]
    async with httpx.AsyncClient(
        auth=PlanetAuth(api_key="PLAK123456"), transport=httpx.MockTransport(site.handler)
    ) as client:
        for url in urls:
            await client.get(url)
    assert [header for _, header in site.seen] == [
        "api-key PLAK123456",
        "api-key PLAK123456",
        None,
        None,
    ]


def test_origin_policy_canonicalizes_what_it_is_given() -> None:
    """Allowlist entries and request origins meet in one canonical form."""
    policy = OriginPolicy(["HTTPS://Api.Planet.Com.:443", "http://[::1]:8080"])
    assert policy.origins == {origin_of("https://api.planet.com"), origin_of("http://[::1]:8080")}
    assert policy.allows("https", "api.planet.com.", None)
    assert policy.allows("http", "::1", 8080)
    assert not policy.allows("http", "::1", 8081)
    assert not policy.allows("https", "api.planet.com", 8443)


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://api.planet.com/data/v1?x=1", True),
        ("https://api.planet.com", True),
        ("https://api.planet.com?x=1", True),
        ("https://API.planet.com:443/x", True),
        ("https://user@api.planet.com/x", True),
        ("https://api.planet.com:8443/x", False),
        ("http://api.planet.com/x", False),
        ("https://api.planet.com.evil.test/x", False),
        ("https://evil.test/https://api.planet.com/", False),
        ("https://api.planet.com:99999/x", False),  # no port: unparseable, no credentials
        ("http://127.0.0.1:8080/x", True),
    ],
)
def test_allows_url_decides_as_allows(url: str, allowed: bool) -> None:
    """The text form of the allowlist check (requests hands URLs as text) decides as the parsed
    one, twice in a row (the second from memory)."""
    policy = OriginPolicy(["https://api.planet.com", "http://127.0.0.1:8080"])
    assert policy.allows_url(url) is allowed
    assert policy.allows_url(url) is allowed
