"""The authorization code grant with PKCE: the request, the checks on the redirect back, the
code exchange, and the split across two requests of a web service."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from joserfc import jwk, jwt
from pydantic import SecretStr

from planet_async import (
    AuthorizationCodeFlow,
    AuthorizationServer,
    CallbackError,
    ClientSecretBasic,
    ConfigurationError,
    HttpxTransport,
    LoginDenied,
    LoginTimeout,
    PendingAuthorization,
    PrivateKeyJWT,
    PublicClient,
)
from tests._helpers import FakeClock, token_response

pytestmark = pytest.mark.anyio

ISSUER = "https://auth.test"
DISCOVERY_URL = f"{ISSUER}/.well-known/openid-configuration"
AUTHORIZE_URL = f"{ISSUER}/oauth2/authorize"
TOKEN_URL = f"{ISSUER}/oauth2/token"
REDIRECT = "http://127.0.0.1:8400/callback"
CODE = "code-9b1e-single-use"
UNRESERVED = re.compile(r"^[A-Za-z0-9\-._~]{43,128}$")


def s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def query(url: str) -> dict[str, str]:
    params = parse_qs(urlsplit(url).query, keep_blank_values=True)
    assert all(len(values) == 1 for values in params.values()), params
    return {name: values[0] for name, values in params.items()}


class FakeServer:
    """Discovery document and token endpoint of an authorization server; records requests."""

    def __init__(self, *, iss_supported: bool | None = None) -> None:
        self.metadata: dict[str, Any] = {
            "issuer": ISSUER,
            "authorization_endpoint": AUTHORIZE_URL,
            "token_endpoint": TOKEN_URL,
        }
        if iss_supported is not None:
            self.metadata["authorization_response_iss_parameter_supported"] = iss_supported
        self.requests: list[httpx.Request] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.method == "GET" and str(request.url) == DISCOVERY_URL:
            return httpx.Response(200, json=self.metadata)
        assert str(request.url) == TOKEN_URL
        return token_response("at-1", refresh_token="rt-1")

    @property
    def token_requests(self) -> list[httpx.Request]:
        return [r for r in self.requests if str(r.url) == TOKEN_URL]

    def form(self, index: int = -1) -> dict[str, str]:
        return dict(httpx.QueryParams(self.token_requests[index].content.decode()))

    def server(self, *, discover: bool = True) -> AuthorizationServer:
        http = HttpxTransport(httpx.AsyncClient(transport=httpx.MockTransport(self.handler)))
        if discover:
            return AuthorizationServer(ISSUER, transport=http)
        return AuthorizationServer(
            token_endpoint=TOKEN_URL, authorization_endpoint=AUTHORIZE_URL, transport=http
        )


def callback(pending: PendingAuthorization, **params: str | None) -> str:
    """The redirect back for `pending`: a code, its state and the issuer, unless overridden
    (None leaves a parameter out)."""
    values: dict[str, str | None] = {
        "code": CODE,
        "state": pending.state.get_secret_value(),
        "iss": ISSUER,
    }
    values.update(params)
    return f"{pending.redirect_uri}?{urlencode({k: v for k, v in values.items() if v is not None})}"


async def test_start_builds_the_authorization_request() -> None:
    """The authorization URL goes to the explicit endpoint with every parameter a PKCE login
    needs, and the challenge is the S256 of the pending login's verifier."""
    fake = FakeServer()
    flow = AuthorizationCodeFlow(fake.server(discover=False), PublicClient(client_id="native"))
    pending = await flow.start(REDIRECT)
    parts = urlsplit(pending.authorization_url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == AUTHORIZE_URL
    verifier = pending.code_verifier.get_secret_value()
    assert query(pending.authorization_url) == {
        "response_type": "code",
        "client_id": "native",
        "redirect_uri": REDIRECT,
        "state": pending.state.get_secret_value(),
        "nonce": pending.nonce.get_secret_value(),
        "code_challenge": s256(verifier),
        "code_challenge_method": "S256",
        "scope": "planet offline_access",
        "prompt": "consent",
    }
    assert pending.redirect_uri == REDIRECT
    assert fake.requests == []  # explicit endpoints need no discovery


async def test_start_uses_the_discovered_endpoint() -> None:
    """With an issuer, the authorization endpoint comes from its metadata (fetched once)."""
    fake = FakeServer()
    fake.metadata["authorization_endpoint"] = f"{ISSUER}/elsewhere/auth?tenant=planet"
    flow = AuthorizationCodeFlow(
        fake.server(), PublicClient(client_id="native"), redirect_uri=REDIRECT
    )
    first = await flow.start()
    await flow.start()
    parts = urlsplit(first.authorization_url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == f"{ISSUER}/elsewhere/auth"
    params = query(first.authorization_url)
    assert params["tenant"] == "planet"
    assert params["response_type"] == "code"
    assert [str(r.url) for r in fake.requests] == [DISCOVERY_URL]


@pytest.mark.parametrize(
    ("scopes", "prompt"),
    [
        (("planet", "offline_access"), "consent"),
        (("offline_access",), "consent"),
        (("planet",), None),
        (("openid", "planet"), None),
    ],
)
async def test_prompt_consent_only_with_offline_access(
    scopes: tuple[str, ...], prompt: str | None
) -> None:
    """`prompt=consent` is sent exactly when `offline_access` is requested."""
    flow = AuthorizationCodeFlow(
        FakeServer().server(discover=False), PublicClient(client_id="native"), scopes=scopes
    )
    params = query((await flow.start(REDIRECT)).authorization_url)
    assert params.get("prompt") == prompt
    assert params["scope"] == " ".join(scopes)


async def test_pkce_state_and_nonce_are_unique_and_well_formed() -> None:
    """Every login gets its own verifier (43-128 unreserved characters), state and nonce, each
    long enough not to be guessed."""
    flow = AuthorizationCodeFlow(
        FakeServer().server(discover=False), PublicClient(client_id="native")
    )
    logins = [await flow.start(REDIRECT) for _ in range(20)]
    verifiers = {p.code_verifier.get_secret_value() for p in logins}
    states = {p.state.get_secret_value() for p in logins}
    nonces = {p.nonce.get_secret_value() for p in logins}
    assert len(verifiers) == len(states) == len(nonces) == 20
    assert not verifiers & states
    assert not states & nonces
    assert all(UNRESERVED.match(v) for v in verifiers)
    assert all(len(s) >= 22 for s in states | nonces)  # at least 128 bits in base64url


async def test_start_needs_a_redirect_uri() -> None:
    """Without a redirect URI (in the flow or the call) start refuses."""
    flow = AuthorizationCodeFlow(
        FakeServer().server(discover=False), PublicClient(client_id="native")
    )
    with pytest.raises(ConfigurationError, match="redirect_uri"):
        await flow.start()


async def test_check_callback_returns_the_code() -> None:
    """A redirect with the right state and issuer yields its code; a trailing slash on the
    issuer, or no `iss` where the server does not promise one, is accepted."""
    fake = FakeServer()
    flow = AuthorizationCodeFlow(fake.server(), PublicClient(client_id="native"))
    pending = await flow.start(REDIRECT)
    assert flow.check_callback(pending, callback(pending)) == CODE
    assert flow.check_callback(pending, callback(pending, iss=f"{ISSUER}/")) == CODE
    assert flow.check_callback(pending, callback(pending, iss=None)) == CODE
    assert fake.token_requests == []


def _wrong_state(pending: PendingAuthorization) -> dict[str, str | None]:
    state = pending.state.get_secret_value()
    return {"state": state[:-1] + ("A" if state[-1] != "A" else "B")}


BAD_CALLBACKS: dict[str, tuple[Any, type[Exception], str]] = {
    "wrong state": (_wrong_state, CallbackError, "state"),
    "state prefix": (lambda p: {"state": p.state.get_secret_value()[:8]}, CallbackError, "state"),
    "state suffixed": (
        lambda p: {"state": p.state.get_secret_value() + "x"},
        CallbackError,
        "state",
    ),
    "missing state": (lambda p: {"state": None}, CallbackError, "state"),
    "empty state": (lambda p: {"state": ""}, CallbackError, "state"),
    "wrong iss": (lambda p: {"iss": "https://evil.test"}, CallbackError, "evil.test"),
    "empty iss": (lambda p: {"iss": ""}, CallbackError, "issuer"),
    "access_denied": (lambda p: {"error": "access_denied", "code": None}, LoginDenied, "declined"),
    "other error": (
        lambda p: {"error": "invalid_scope", "error_description": "no such scope", "code": None},
        CallbackError,
        "invalid_scope",
    ),
    "no code": (lambda p: {"code": None}, CallbackError, "no authorization code"),
    "empty code": (lambda p: {"code": ""}, CallbackError, "no authorization code"),
    "forged denial": (
        lambda p: {"error": "access_denied", "code": None, **_wrong_state(p)},
        CallbackError,
        "state",
    ),
}


@pytest.mark.parametrize("case", list(BAD_CALLBACKS))
async def test_bad_callback_is_refused_without_using_the_code(case: str) -> None:
    """Each invalid redirect raises its own error from finish(), and no code is exchanged."""
    make_params, error, text = BAD_CALLBACKS[case]
    fake = FakeServer()
    flow = AuthorizationCodeFlow(fake.server(), PublicClient(client_id="native"))
    pending = await flow.start(REDIRECT)
    url = callback(pending, **make_params(pending))
    with pytest.raises(error) as info:
        flow.check_callback(pending, url)
    assert text in str(info.value)
    with pytest.raises(error):
        await flow.finish(pending, url)
    assert fake.token_requests == []
    message = str(info.value)
    assert CODE not in message
    assert pending.state.get_secret_value() not in message


async def test_missing_iss_is_refused_when_the_server_promises_it() -> None:
    """With `authorization_response_iss_parameter_supported`, a redirect without `iss` is
    refused (RFC 9207 mix-up defence); the same server's redirect with `iss` is accepted."""
    fake = FakeServer(iss_supported=True)
    flow = AuthorizationCodeFlow(fake.server(), PublicClient(client_id="native"))
    pending = await flow.start(REDIRECT)
    assert pending.require_iss
    with pytest.raises(CallbackError, match="issuer"):
        await flow.finish(pending, callback(pending, iss=None))
    assert fake.token_requests == []
    assert flow.check_callback(pending, callback(pending)) == CODE


async def test_old_pending_login_is_a_timeout() -> None:
    """A redirect that comes back after the pending login's lifetime raises LoginTimeout."""
    fake = FakeServer()
    clock = FakeClock()
    flow = AuthorizationCodeFlow(
        fake.server(), PublicClient(client_id="native"), lifetime=600, clock=clock
    )
    pending = await flow.start(REDIRECT)
    clock.advance(600)
    assert flow.check_callback(pending, callback(pending)) == CODE  # the last valid moment
    clock.advance(1)
    with pytest.raises(LoginTimeout, match="too long"):
        await flow.finish(pending, callback(pending))
    assert fake.token_requests == []


async def test_finish_exchanges_the_code_with_the_verifier() -> None:
    """finish() posts the authorization_code grant with the code, the redirect URI and the
    PKCE verifier, and returns the tokens."""
    fake = FakeServer()
    flow = AuthorizationCodeFlow(fake.server(), PublicClient(client_id="native"))
    pending = await flow.start(REDIRECT)
    token = await flow.finish(pending, callback(pending))
    assert token.access_token.get_secret_value() == "at-1"
    assert len(fake.token_requests) == 1
    assert fake.form() == {
        "grant_type": "authorization_code",
        "code": CODE,
        "redirect_uri": REDIRECT,
        "code_verifier": pending.code_verifier.get_secret_value(),
        "client_id": "native",
    }
    assert "authorization" not in fake.token_requests[0].headers


async def test_confidential_client_secret_basic_sends_its_credentials() -> None:
    """A web service's client_secret_basic credentials go in the Basic header of the exchange."""
    fake = FakeServer()
    client = ClientSecretBasic(client_id="web-app", client_secret=SecretStr("web-secret"))
    flow = AuthorizationCodeFlow(fake.server(), client)
    pending = await flow.start("https://app.example/cb")
    await flow.finish(pending, callback(pending))
    expected = base64.b64encode(b"web-app:web-secret").decode()
    assert fake.token_requests[0].headers["authorization"] == f"Basic {expected}"
    form = fake.form()
    assert form["grant_type"] == "authorization_code"
    assert form["code_verifier"] == pending.code_verifier.get_secret_value()
    assert "client_secret" not in form


async def test_confidential_client_private_key_jwt_sends_an_assertion() -> None:
    """A private_key_jwt client signs an assertion for the token endpoint with its RSA key."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    fake = FakeServer()
    flow = AuthorizationCodeFlow(
        fake.server(), PrivateKeyJWT(client_id="web-pkjwt", private_key=pem, key_id="k1")
    )
    pending = await flow.start("https://app.example/cb")
    await flow.finish(pending, callback(pending))
    form = fake.form()
    assert form["client_id"] == "web-pkjwt"
    assert form["client_assertion_type"] == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    public = jwk.RSAKey.import_key(key.public_key())
    decoded = jwt.decode(form["client_assertion"], public, algorithms=["RS256"])
    assert decoded.header["kid"] == "k1"
    assert decoded.claims["iss"] == decoded.claims["sub"] == "web-pkjwt"
    assert decoded.claims["aud"] == TOKEN_URL
    assert form["code"] == CODE
    assert form["code_verifier"] == pending.code_verifier.get_secret_value()


class PkceServer:
    """A token endpoint that checks what a real one checks: the code it issued, the client's
    secret, the redirect URI and the S256 challenge of the authorization request."""

    def __init__(self) -> None:
        self.codes: dict[str, dict[str, str]] = {}
        self.exchanges = 0

    def authorize(self, authorization_url: str) -> str:
        """The user approves: remember the request, send the browser back with a code."""
        params = query(authorization_url)
        code = secrets.token_urlsafe(16)
        self.codes[code] = params
        back = {"code": code, "state": params["state"], "iss": ISSUER}
        return f"{params['redirect_uri']}?{urlencode(back)}"

    def handler(self, request: httpx.Request) -> httpx.Response:
        if str(request.url) == DISCOVERY_URL:
            body = {"issuer": ISSUER, "authorization_endpoint": AUTHORIZE_URL}
            return httpx.Response(200, json={**body, "token_endpoint": TOKEN_URL})
        form = dict(httpx.QueryParams(request.content.decode()))
        basic = base64.b64encode(b"web-app:web-secret").decode()
        issued = self.codes.pop(form.get("code", ""), None)  # single use
        if (
            request.headers.get("authorization") != f"Basic {basic}"
            or issued is None
            or form["redirect_uri"] != issued["redirect_uri"]
            or s256(form["code_verifier"]) != issued["code_challenge"]
        ):
            return httpx.Response(400, json={"error": "invalid_grant"})
        self.exchanges += 1
        return token_response("at-web", refresh_token="rt-web")


async def test_web_service_split_across_requests() -> None:
    """A web service starts the login in one request, keeps the pending state in its session
    store as JSON, and finishes it in another request with a new flow object."""
    server = PkceServer()

    def new_flow() -> AuthorizationCodeFlow:
        http = HttpxTransport(httpx.AsyncClient(transport=httpx.MockTransport(server.handler)))
        client = ClientSecretBasic(client_id="web-app", client_secret=SecretStr("web-secret"))
        return AuthorizationCodeFlow(AuthorizationServer(ISSUER, transport=http), client)

    session_store: dict[str, str] = {}
    # Request 1: /login
    pending = await new_flow().start(redirect_uri="https://app.example/cb")
    session_store["login"] = pending.to_json()
    redirect_back = server.authorize(pending.authorization_url)
    # Request 2: /cb
    pending2 = PendingAuthorization.from_json(session_store.pop("login"))
    assert pending2 == pending
    token = await new_flow().finish(pending2, redirect_back)
    assert token.access_token.get_secret_value() == "at-web"
    assert token.refresh_token is not None
    assert server.exchanges == 1


async def test_pending_login_hides_its_secrets() -> None:
    """repr, str and model_dump_json of a pending login show neither the verifier nor the state
    nor the nonce; to_json (for a server-side store) keeps all three."""
    flow = AuthorizationCodeFlow(
        FakeServer().server(discover=False), PublicClient(client_id="native")
    )
    pending = await flow.start(REDIRECT)
    hidden = {
        pending.code_verifier.get_secret_value(),
        pending.state.get_secret_value(),
        pending.nonce.get_secret_value(),
    }
    dumped = pending.model_dump_json()
    for text in (repr(pending), str(pending), dumped, repr(flow)):
        for secret in hidden:
            assert secret not in text
    assert query(pending.authorization_url)["state"] in hidden  # the URL itself is intact
    assert "code_challenge" in dumped
    assert REDIRECT in repr(pending)
    revealed = pending.to_json()
    assert all(secret in revealed for secret in hidden)
