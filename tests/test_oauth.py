"""The token endpoint protocol: client authentication, grants, discovery, expiry, timeouts."""

from __future__ import annotations

import base64
import calendar
import random
import time
import traceback
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import unquote_plus

import anyio
import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from joserfc import jwk, jwt

from planet_async import (
    AuthorizationServer,
    AuthServerError,
    AuthServerUnavailable,
    ClientCredentialsGrant,
    ClientSecretBasic,
    ClientSecretPost,
    ConfigurationError,
    HttpxTransport,
    InvalidTokenResponse,
    LoginRequired,
    PlanetAuth,
    PrivateKeyJWT,
    PublicClient,
    RefreshTokenGrant,
    TokenManager,
    TokenSet,
)
from planet_async._oauth import parse_retry_after
from tests._helpers import API, FakeClock, token_response

pytestmark = pytest.mark.anyio

ISSUER = "https://auth.test/realms/main"
TOKEN_URL = "https://auth.test/realms/main/protocol/openid-connect/token"
OIDC_CONFIG_URL = "https://auth.test/realms/main/.well-known/openid-configuration"
RFC8414_URL = "https://auth.test/.well-known/oauth-authorization-server/realms/main"
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

Handler = Callable[[httpx.Request], "httpx.Response | Awaitable[httpx.Response]"]


class Recorder:
    """Records every request to the authorization server and answers with `respond`."""

    def __init__(self, respond: Handler | None = None) -> None:
        self.requests: list[httpx.Request] = []
        self.respond = respond or (lambda request: token_response())

    async def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        response = self.respond(request)
        return await response if isinstance(response, Awaitable) else response

    @property
    def urls(self) -> list[str]:
        return [str(r.url) for r in self.requests]

    def form(self, index: int = -1) -> dict[str, str]:
        request = self.requests[index]
        assert request.method == "POST"
        assert request.headers["content-type"] == "application/x-www-form-urlencoded"
        return dict(httpx.QueryParams(request.content.decode()))

    def server(self, issuer: str | None = None, **kwargs: Any) -> AuthorizationServer:
        if issuer is None:
            kwargs.setdefault("token_endpoint", TOKEN_URL)
        http = httpx.AsyncClient(transport=httpx.MockTransport(self.handler))
        return AuthorizationServer(issuer, transport=HttpxTransport(http), **kwargs)


def metadata(issuer: str = ISSUER, **extra: Any) -> dict[str, Any]:
    return {
        "issuer": issuer,
        "token_endpoint": f"{issuer}/protocol/openid-connect/token",
        "device_authorization_endpoint": f"{issuer}/protocol/openid-connect/auth/device",
        **extra,
    }


# -- client authentication -------------------------------------------------------------------------


async def test_client_secret_basic_form_urlencodes_id_and_secret() -> None:
    """client_secret_basic form-urlencodes id and secret (RFC 6749 2.3.1); none goes in the body."""
    client_id = "svc:1 %+é"
    secret = "p:w %+é/x"
    endpoint = Recorder()
    grant = ClientCredentialsGrant(
        endpoint.server(), ClientSecretBasic(client_id=client_id, client_secret=secret)
    )
    await grant.renew(None, clock=FakeClock())

    # Appendix B: UTF-8, then form-urlencoded: a space is "+", everything else reserved is %XX.
    credentials = "svc%3A1+%25%2B%C3%A9:p%3Aw+%25%2B%C3%A9%2Fx"
    expected = "Basic " + base64.b64encode(credentials.encode("ascii")).decode("ascii")
    request = endpoint.requests[0]
    assert request.headers["authorization"] == expected
    # What a server decodes must be the original id and secret.
    user, _, password = base64.b64decode(expected[6:]).decode().partition(":")
    assert (unquote_plus(user), unquote_plus(password)) == (client_id, secret)
    form = endpoint.form()
    assert form == {"grant_type": "client_credentials"}
    assert request.url == TOKEN_URL


async def test_client_secret_post_sends_credentials_in_the_form() -> None:
    """client_secret_post sends client_id and client_secret in the form, no Authorization header."""
    endpoint = Recorder()
    client = ClientSecretPost(client_id="svc-post", client_secret="post secret+é")
    await ClientCredentialsGrant(endpoint.server(), client).renew(None, clock=FakeClock())
    assert "authorization" not in endpoint.requests[0].headers
    assert endpoint.form() == {
        "grant_type": "client_credentials",
        "client_id": "svc-post",
        "client_secret": "post secret+é",
    }


@pytest.mark.parametrize(
    ("scopes", "expected"),
    [
        ((), None),
        (("read",), "read"),
        (("read", "offline_access", "write"), "read write"),
        (("offline_access",), None),
    ],
)
async def test_client_credentials_scope(scopes: tuple[str, ...], expected: str | None) -> None:
    """scope is sent space-separated only when scopes are given, and never offline_access."""
    endpoint = Recorder()
    client = ClientSecretPost(client_id="svc", client_secret="s")
    grant = ClientCredentialsGrant(endpoint.server(), client, scopes=scopes)
    await grant.renew(None, clock=FakeClock())
    form = endpoint.form()
    assert form["grant_type"] == "client_credentials"
    assert form.get("scope") == expected


# -- private_key_jwt -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def private_keys() -> dict[str, PrivateKey]:
    """One RSA and one EC P-256 private key (cryptography objects)."""
    return {
        "RS256": rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "ES256": ec.generate_private_key(ec.SECP256R1()),
    }


PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


def _pem(key: PrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def _public_jwk(key: PrivateKey) -> jwk.RSAKey | jwk.ECKey:
    public: jwk.RSAKey | jwk.ECKey
    if isinstance(key, rsa.RSAPrivateKey):
        public = jwk.RSAKey.import_key(key.public_key())
    else:
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        public = jwk.ECKey.import_key(key.public_key())
    return public


@pytest.mark.parametrize("alg", ["RS256", "ES256"])
@pytest.mark.parametrize("form", ["pem", "jwk"])
async def test_private_key_jwt_assertion(
    private_keys: dict[str, PrivateKey], alg: str, form: str
) -> None:
    """The client assertion verifies with the public key and has the RFC 7523 claims."""
    key = private_keys[alg]
    if form == "pem":
        client = PrivateKeyJWT(client_id="svc-jwt", private_key=_pem(key), key_id="key-1")
    else:
        key_class = jwk.RSAKey if alg == "RS256" else jwk.ECKey
        as_jwk = key_class.import_key(_pem(key)).as_dict(private=True)
        client = PrivateKeyJWT(client_id="svc-jwt", private_key={**as_jwk, "kid": "key-1"})
    clock = FakeClock()
    endpoint = Recorder()
    grant = ClientCredentialsGrant(endpoint.server(), client)
    await grant.renew(None, clock=clock)
    await grant.renew(None, clock=clock)

    jtis = set()
    for index in (0, 1):
        form_data = endpoint.form(index)
        assert "authorization" not in endpoint.requests[index].headers
        assert form_data["client_assertion_type"] == JWT_BEARER
        assert form_data["client_id"] == "svc-jwt"
        assert "client_secret" not in form_data
        token = jwt.decode(form_data["client_assertion"], _public_jwk(key), algorithms=[alg])
        assert token.header == {"alg": alg, "kid": "key-1", "typ": "JWT"}
        claims = token.claims
        assert claims["iss"] == claims["sub"] == "svc-jwt"
        assert claims["aud"] == TOKEN_URL
        assert claims["exp"] > clock.now
        assert claims["iat"] <= clock.now
        assert 0 < claims["exp"] - claims["iat"] <= 60
        jtis.add(claims["jti"])
    assert len(jtis) == 2


_P224_PEM = _pem(ec.generate_private_key(ec.SECP224R1()))


@pytest.mark.parametrize(
    ("key", "material"),
    [
        (
            "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAAS-GARBAGE-KEY\n"
            "-----END PRIVATE KEY-----\n",
            "GARBAGE-KEY",
        ),
        ({"kty": "RSA", "n": "GARBAGE-N", "e": "AQAB", "d": "GARBAGE-D"}, "GARBAGE-D"),
        ({"kty": "EC", "crv": "P-256", "x": "AAAA", "y": "BBBB", "d": "GARBAGE-D"}, "GARBAGE-D"),
        ('{"kty": "RSA", "d": "GARBAGE-D"', "GARBAGE-D"),
        ("just-a-GARBAGE-string", "GARBAGE"),
        (_P224_PEM, _P224_PEM.splitlines()[1][8:40]),
    ],
    ids=["pem", "rsa-jwk", "ec-jwk", "broken-json", "text", "p224"],
)
def test_unusable_private_key_is_a_configuration_error(key: Any, material: str) -> None:
    """A key that cannot be used raises ConfigurationError whose traceback never quotes the key."""
    with pytest.raises(ConfigurationError) as info:
        PrivateKeyJWT(client_id="svc-jwt", private_key=key)
    assert "private_key_jwt" in str(info.value)
    rendered = "".join(traceback.format_exception(info.value))
    assert material not in rendered


def test_client_auth_validation_errors_never_quote_secrets() -> None:
    """A malformed client configuration fails without echoing the secret it was given."""
    with pytest.raises(ValueError, match="client_id") as info:
        ClientSecretBasic(client_secret="cs-Never-Shown")  # type: ignore[call-arg,arg-type]
    assert "cs-Never-Shown" not in str(info.value)
    assert "cs-Never-Shown" not in repr(
        ClientSecretPost(client_id="c", client_secret="cs-Never-Shown")
    )


# -- refresh token grant ---------------------------------------------------------------------------


def _session(refresh_token: str | None = "rt-old") -> TokenSet:
    return TokenSet(
        access_token="at-old",
        issued_at=1_799_999_000.0,
        expires_at=1_799_999_300.0,
        refresh_token=refresh_token,
    )


async def test_refresh_sends_the_refresh_token() -> None:
    """The refresh grant posts grant_type=refresh_token with the session's refresh token."""
    endpoint = Recorder(lambda r: token_response("at-new", refresh_token="rt-new"))
    grant = RefreshTokenGrant(endpoint.server(), PublicClient(client_id="cli"))
    await grant.renew(_session(), clock=FakeClock())
    assert endpoint.form() == {
        "grant_type": "refresh_token",
        "refresh_token": "rt-old",
        "client_id": "cli",
    }


@pytest.mark.parametrize(
    ("answered", "kept"), [(None, "rt-old"), ("rt-rotated", "rt-rotated")], ids=["kept", "rotated"]
)
async def test_refresh_keeps_or_rotates_the_refresh_token(answered: str | None, kept: str) -> None:
    """Without a refresh_token in the response the old one stays; with one, it replaces the old."""
    extra: dict[str, Any] = {"refresh_token": answered} if answered else {}
    endpoint = Recorder(lambda r: token_response("at-new", **extra))
    grant = RefreshTokenGrant(endpoint.server(), PublicClient(client_id="cli"))
    token = await grant.renew(_session(), clock=FakeClock())
    assert token.access_token.get_secret_value() == "at-new"
    assert token.refresh_token is not None
    assert token.refresh_token.get_secret_value() == kept


@pytest.mark.parametrize("session", [None, _session(refresh_token=None)], ids=["none", "no-rt"])
async def test_refresh_without_refresh_token_needs_login(session: TokenSet | None) -> None:
    """With no refresh token the grant raises LoginRequired, saying how to log in, and sends
    nothing."""
    endpoint = Recorder()
    grant = RefreshTokenGrant(endpoint.server(), PublicClient(client_id="cli"))
    with pytest.raises(LoginRequired, match="run `planet-async auth login`"):
        await grant.renew(session, clock=FakeClock())
    assert endpoint.requests == []


# -- discovery -------------------------------------------------------------------------------------


async def test_discovery_uses_openid_configuration() -> None:
    """The token endpoint comes from /.well-known/openid-configuration when it is there."""

    def respond(request: httpx.Request) -> httpx.Response:
        if request.url == OIDC_CONFIG_URL:
            return httpx.Response(200, json=metadata())
        return token_response()

    endpoint = Recorder(respond)
    grant = ClientCredentialsGrant(
        endpoint.server(ISSUER), ClientSecretPost(client_id="svc", client_secret="s")
    )
    await grant.renew(None, clock=FakeClock())
    assert endpoint.urls == [OIDC_CONFIG_URL, TOKEN_URL]
    assert endpoint.requests[0].method == "GET"


@pytest.mark.parametrize(
    ("issuer", "oidc_url", "rfc8414_url"),
    [
        (ISSUER, OIDC_CONFIG_URL, RFC8414_URL),
        (
            "https://auth.test",
            "https://auth.test/.well-known/openid-configuration",
            "https://auth.test/.well-known/oauth-authorization-server",
        ),
        (
            "https://auth.test/",
            "https://auth.test/.well-known/openid-configuration",
            "https://auth.test/.well-known/oauth-authorization-server",
        ),
    ],
)
async def test_discovery_falls_back_to_rfc8414(
    issuer: str, oidc_url: str, rfc8414_url: str
) -> None:
    """A 404 at the OpenID configuration falls back to RFC 8414, with the issuer's path appended."""

    def respond(request: httpx.Request) -> httpx.Response:
        if request.url == rfc8414_url:
            return httpx.Response(200, json=metadata(issuer, token_endpoint="https://t.test/tok"))
        return httpx.Response(404, json={"error": "not found"})

    endpoint = Recorder(respond)
    server = endpoint.server(issuer)
    assert await server.endpoint("token_endpoint") == "https://t.test/tok"
    assert endpoint.urls == [oidc_url, rfc8414_url]


async def test_discovery_is_cached_per_issuer() -> None:
    """Servers with the same issuer share one metadata request; another issuer gets its own."""

    def respond(request: httpx.Request) -> httpx.Response:
        issuer = str(request.url).split("/.well-known/")[0]
        return httpx.Response(200, json=metadata(issuer))

    endpoint = Recorder(respond)
    first, second = endpoint.server(ISSUER), endpoint.server(ISSUER)
    assert await first.endpoint("token_endpoint") == TOKEN_URL
    assert await second.endpoint("token_endpoint") == TOKEN_URL
    assert await second.endpoint("device_authorization_endpoint") == (
        f"{ISSUER}/protocol/openid-connect/auth/device"
    )
    assert endpoint.urls == [OIDC_CONFIG_URL]

    other = endpoint.server("https://auth.test/realms/other")
    await other.endpoint("token_endpoint")
    assert endpoint.urls == [
        OIDC_CONFIG_URL,
        "https://auth.test/realms/other/.well-known/openid-configuration",
    ]


async def test_explicit_token_endpoint_needs_no_discovery() -> None:
    """With token_endpoint given, the only request is the token request itself."""
    endpoint = Recorder()
    server = endpoint.server(ISSUER, token_endpoint="https://explicit.test/token")
    grant = ClientCredentialsGrant(server, ClientSecretPost(client_id="svc", client_secret="s"))
    await grant.renew(None, clock=FakeClock())
    assert endpoint.urls == ["https://explicit.test/token"]


async def test_metadata_for_another_issuer_is_refused() -> None:
    """Metadata for a different issuer raises AuthServerError (RFC 8414 3.3) and is not cached."""
    endpoint = Recorder(
        lambda r: httpx.Response(200, json=metadata("https://evil.test/realms/main"))
    )
    server = endpoint.server(ISSUER)
    for _ in range(2):
        with pytest.raises(AuthServerError) as info:
            await server.endpoint("token_endpoint")
        assert "https://evil.test/realms/main" in str(info.value)
        assert OIDC_CONFIG_URL in str(info.value)
    assert endpoint.urls == [OIDC_CONFIG_URL, OIDC_CONFIG_URL]


async def test_html_at_discovery_is_a_clear_error() -> None:
    """An HTML page where metadata should be gives an error naming the URL and what came back."""
    endpoint = Recorder(lambda r: httpx.Response(200, html="<html><body>Welcome</body></html>"))
    with pytest.raises(InvalidTokenResponse) as info:
        await endpoint.server(ISSUER).endpoint("token_endpoint")
    message = str(info.value)
    assert RFC8414_URL in message
    assert "text/html" in message
    assert "token_endpoint" in message  # what to do about it
    assert info.value.endpoint == RFC8414_URL
    assert endpoint.urls == [OIDC_CONFIG_URL, RFC8414_URL]


# -- expiry ----------------------------------------------------------------------------------------


async def test_expires_in_counts_from_receipt() -> None:
    """expires_at is the local time the response arrived plus expires_in."""
    clock = FakeClock()
    sent_at = clock.now

    def respond(request: httpx.Request) -> httpx.Response:
        clock.advance(3)  # the server takes its time: expiry counts from receipt, not sending
        return token_response("at-1", expires_in=300)

    grant = ClientCredentialsGrant(
        Recorder(respond).server(), ClientSecretPost(client_id="svc", client_secret="s")
    )
    token = await grant.renew(None, clock=clock)
    assert token.issued_at == sent_at + 3
    assert token.expires_at == sent_at + 303


def _jwt_access_token(claims: dict[str, Any]) -> str:
    return jwt.encode({"alg": "HS256"}, claims, jwk.OctKey.generate_key(256))


@pytest.mark.parametrize(
    ("expires_in", "expected_offset"), [(None, 1234), (60, 60)], ids=["jwt-exp", "expires_in-wins"]
)
async def test_jwt_exp_is_the_fallback(expires_in: int | None, expected_offset: float) -> None:
    """Without expires_in a JWT access token's exp (read unverified) is the expiry."""
    clock = FakeClock()
    access = _jwt_access_token({"sub": "svc", "exp": int(clock.now) + 1234})
    endpoint = Recorder(lambda r: token_response(access, expires_in=expires_in))
    grant = ClientCredentialsGrant(
        endpoint.server(), ClientSecretPost(client_id="svc", client_secret="s")
    )
    token = await grant.renew(None, clock=clock)
    assert token.expires_at == clock.now + expected_offset


async def test_opaque_token_without_expiry_is_used_until_rejected() -> None:
    """An opaque token with no expires_in never expires as far as the manager is concerned."""
    clock = FakeClock()
    endpoint = Recorder(lambda r: token_response("opaque-token", expires_in=None))
    grant = ClientCredentialsGrant(
        endpoint.server(), ClientSecretPost(client_id="svc", client_secret="s")
    )
    manager = TokenManager(grant, clock=clock, rng=random.Random(0))
    seen: list[str | None] = []

    def api(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("authorization"))
        return httpx.Response(200)

    async with httpx.AsyncClient(
        auth=PlanetAuth(manager), transport=httpx.MockTransport(api)
    ) as client:
        for _ in range(3):
            assert (await client.get(f"{API}/data/v1/searches")).status_code == 200
            clock.advance(365 * 24 * 3600)
    assert seen == ["Bearer opaque-token"] * 3
    assert len(endpoint.requests) == 1
    assert (await manager.token()).expires_at is None


# -- Retry-After -----------------------------------------------------------------------------------

_NOW = float(calendar.timegm((2027, 1, 15, 8, 0, 0)))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", 120.0),
        (" 7 ", 7.0),
        ("0", 0.0),
        ("Fri, 15 Jan 2027 08:00:30 GMT", 30.0),  # IMF-fixdate
        ("Friday, 15-Jan-27 08:00:30 GMT", 30.0),  # obsolete RFC 850
        ("Fri Jan 15 08:00:30 2027", 30.0),  # obsolete asctime: no zone, but GMT all the same
        ("Fri, 15 Jan 2027 07:59:00 GMT", 0.0),  # in the past: no wait
        ("1.5", None),
        ("-5", None),
        ("soon", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    """Retry-After is delta-seconds or an HTTP date; anything else is ignored."""
    assert parse_retry_after(value, now=_NOW) == expected


@pytest.mark.skipif(not hasattr(time, "tzset"), reason="needs time.tzset (POSIX)")
@pytest.mark.parametrize("zone", ["America/New_York", "Asia/Tokyo"])
def test_parse_retry_after_dates_are_gmt_in_any_local_zone(
    monkeypatch: pytest.MonkeyPatch, zone: str
) -> None:
    """The local time zone never shifts an HTTP date."""
    monkeypatch.setenv("TZ", zone)
    time.tzset()
    try:
        for value in ("Fri, 15 Jan 2027 08:00:30 GMT", "Fri Jan 15 08:00:30 2027"):
            assert parse_retry_after(value, now=_NOW) == 30.0
    finally:
        monkeypatch.undo()
        time.tzset()


# -- timeouts --------------------------------------------------------------------------------------


async def _stall(request: httpx.Request) -> httpx.Response:
    await anyio.sleep(10)
    raise AssertionError("the request should have been cancelled by the timeout")


@pytest.mark.parametrize("call", ["token", "discovery"])
async def test_every_call_is_bounded_by_the_timeout(call: str) -> None:
    """A stalled authorization server costs the configured timeout, then AuthServerUnavailable."""
    endpoint = Recorder(_stall)
    if call == "token":
        server, url = endpoint.server(timeout=0.2), TOKEN_URL
    else:
        server, url = endpoint.server(ISSUER, timeout=0.2), OIDC_CONFIG_URL
    grant = ClientCredentialsGrant(server, ClientSecretPost(client_id="svc", client_secret="s"))
    started = time.monotonic()
    with pytest.raises(AuthServerUnavailable) as info:
        await grant.renew(None, clock=FakeClock())
    elapsed = time.monotonic() - started
    assert 0.15 <= elapsed < 1.5
    assert url in str(info.value)
    assert info.value.endpoint == url
    assert endpoint.urls == [url]


@pytest.mark.parametrize(
    "url", ["http://auth.example.com", "ftp://auth.example.com", "auth.example.com"]
)
def test_credentials_never_go_to_a_plain_http_server(url: str) -> None:
    """An authorization server URL must be https; plain http only on loopback (tests)."""
    with pytest.raises(ConfigurationError, match="must be https"):
        AuthorizationServer(url)
    with pytest.raises(ConfigurationError, match="must be https"):
        AuthorizationServer(token_endpoint=f"{url}/token")
    AuthorizationServer("http://127.0.0.1:8080")
    AuthorizationServer(token_endpoint="http://localhost:9/token")


async def test_discovered_plain_http_endpoint_is_refused() -> None:
    """Metadata pointing the token endpoint at plain http is refused before any secret is sent."""
    sent: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(str(request.url))
        return httpx.Response(
            200,
            json={"issuer": "https://auth.test", "token_endpoint": "http://auth.test/token"},
        )

    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    server = AuthorizationServer("https://auth.test", transport=HttpxTransport(http))
    with pytest.raises(ConfigurationError, match="must be https"):
        await server.endpoint("token_endpoint")
    assert sent == ["https://auth.test/.well-known/openid-configuration"]
    await http.aclose()


# -- introspection: is a refresh token still unspent? -----------------------------------------

INTROSPECTION_URL = "https://auth.test/realms/main/introspect"


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (200, {"active": True}, True),
        (200, {"active": False}, False),
        (401, {"error": "invalid_client"}, None),  # introspection not allowed for this client
        (200, {"no": "answer"}, None),
    ],
)
async def test_a_refresh_grant_asks_whether_its_refresh_token_is_still_active(
    status: int, body: dict[str, Any], expected: bool | None
) -> None:
    """`still_active` sends the refresh token to the introspection endpoint, with the client's
    credentials and the hint, and reads `active`; an answer that says nothing is "cannot tell"."""
    endpoint = Recorder(lambda request: httpx.Response(status, json=body))
    server = endpoint.server(introspection_endpoint=INTROSPECTION_URL)
    client = ClientSecretPost(client_id="app", client_secret="app-secret")
    grant = RefreshTokenGrant(server, client)
    current = TokenSet(access_token="at", refresh_token="rt-1", issued_at=0, expires_at=60)
    assert await grant.still_active(current, clock=FakeClock()) is expected
    assert endpoint.urls == [INTROSPECTION_URL]
    assert endpoint.form() == {
        "token": "rt-1",
        "token_type_hint": "refresh_token",
        "client_id": "app",
        "client_secret": "app-secret",
    }


async def test_a_server_without_introspection_cannot_tell_and_one_failing_is_unavailable() -> None:
    """No introspection endpoint: None, with no request. A 503: AuthServerUnavailable, so the
    caller neither spends the refresh token nor takes the answer for "inactive"."""
    endpoint = Recorder(lambda request: httpx.Response(503, headers={"retry-after": "7"}))
    current = TokenSet(access_token="at", refresh_token="rt-1", issued_at=0, expires_at=60)
    grant = RefreshTokenGrant(endpoint.server(), PublicClient(client_id="app"))
    assert await grant.still_active(current, clock=FakeClock()) is None
    assert endpoint.requests == []
    server = endpoint.server(introspection_endpoint=INTROSPECTION_URL)
    with pytest.raises(AuthServerUnavailable, match="503") as raised:
        await RefreshTokenGrant(server, PublicClient(client_id="app")).still_active(
            current, clock=FakeClock()
        )
    assert raised.value.retry_after == 7
    assert "rt-1" not in str(raised.value)
