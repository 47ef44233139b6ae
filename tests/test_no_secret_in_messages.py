"""No secret in any message: a server echoing the request is redacted, and credentials that
cannot travel in a header are refused where they are given, without quoting them."""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path
from urllib.parse import quote_plus

import httpx
import pytest

from planet_async import (
    AuthorizationServer,
    AuthServerError,
    ClientCredentialsGrant,
    ClientSecretBasic,
    ClientSecretPost,
    ConfigurationError,
    FileStorage,
    HttpxTransport,
    InvalidTokenResponse,
    PlanetAuth,
    PlanetAuthError,
    PrivateKeyJWT,
    PublicClient,
    RefreshTokenGrant,
    StorageError,
    TokenManager,
    TokenSet,
)
from tests._helpers import API, FakeClock

pytestmark = pytest.mark.anyio

TOKEN_URL = "https://auth.test/token"
SECRET = "s3cr3t/with+odd=chars&more"
REFRESH = "rt-0123456789abcdef"


def echoing_server(status: int = 401, error: str = "invalid_client") -> AuthorizationServer:
    """A token endpoint whose error echoes the whole request back: headers and form."""

    def handler(request: httpx.Request) -> httpx.Response:
        echo = f"{request.headers.get('authorization')} {request.content.decode()}"
        form = dict(httpx.QueryParams(request.content.decode()))
        echo += " " + " ".join(f"{k}={v}" for k, v in form.items())
        auth = request.headers.get("authorization", "").removeprefix("Basic ")
        if auth:
            echo += " decoded " + base64.b64decode(auth).decode()
        body = {"error": f"{error} ({echo})", "error_description": f"request was: {echo}"}
        return httpx.Response(status, json=body)

    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return AuthorizationServer(token_endpoint=TOKEN_URL, transport=HttpxTransport(http))


def _secrets_of(*values: str) -> set[str]:
    forms = set()
    for value in values:
        forms |= {value, quote_plus(value), base64.b64encode(value.encode()).decode()}
    return forms


@pytest.mark.parametrize("status", [401, 503])
@pytest.mark.parametrize("method", ["basic", "post"])
async def test_client_secret_echoed_by_the_server_is_redacted(
    method: str, status: int, caplog: pytest.LogCaptureFixture
) -> None:
    """The client secret (raw, form-encoded, or inside Basic credentials) never reaches an
    exception or a log line, whatever the server echoes."""
    cls = ClientSecretBasic if method == "basic" else ClientSecretPost
    client = cls(client_id="svc", client_secret=SECRET)
    manager = TokenManager(ClientCredentialsGrant(echoing_server(status), client))
    basic = base64.b64encode(f"svc:{quote_plus(SECRET)}".encode()).decode()
    with caplog.at_level(logging.DEBUG), pytest.raises(AuthServerError) as info:
        await manager.header()
    texts = [str(info.value), str(getattr(info.value, "error_description", "")), caplog.text]
    for text in texts:
        for secret in _secrets_of(SECRET) | {basic}:
            assert secret not in text, (secret, text)
    assert "***" in str(info.value)
    assert "svc" in str(info.value)  # the client id is no secret, and helps


async def test_refresh_token_and_assertion_echoed_by_the_server_are_redacted(
    client_keys, caplog: pytest.LogCaptureFixture
) -> None:
    """A refresh token or a signed client assertion echoed back is masked too."""
    _, keys = client_keys
    clock = FakeClock()
    stored = TokenSet(
        access_token="at-old",
        issued_at=clock() - 500,
        expires_at=clock() - 400,
        refresh_token=REFRESH,
    )
    client = PrivateKeyJWT(client_id="app", private_key=keys["rsa-1"].read_text())
    grant = RefreshTokenGrant(echoing_server(400, "invalid_grant"), client)
    manager = TokenManager(grant, clock=clock)
    await manager.storage.save(manager.session, stored)
    with caplog.at_level(logging.DEBUG), pytest.raises(AuthServerError) as info:
        await manager.header()
    message = str(info.value)
    assert REFRESH not in message
    assert REFRESH not in caplog.text
    assert "client_assertion=***" in message
    assert message.count(".") < 20  # no JWT (three dot-separated parts) survived


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        ("PLAK123\r\nX-Evil: 1", "carriage return"),
        ("PLAK123\nabc", "line feed"),
        ("PLAK123\x00abc", "NUL"),
        ("PLAK 123abc", "a space"),
        (" PLAK\t123abc\n", "a tab"),
        ("", "empty"),
        (" \n", "empty"),
    ],
)
def test_api_key_that_cannot_be_a_header_is_refused_where_given(key: str, problem: str) -> None:
    """An API key with CR, LF, NUL or whitespace inside (whatever surrounds it), or nothing at
    all, is a `ConfigurationError` that names the problem, never the key."""
    with pytest.raises(ConfigurationError, match=problem) as info:
        PlanetAuth.from_api_key(key)
    if key.strip():
        assert "PLAK123" not in str(info.value)


@pytest.mark.parametrize("variable", ["PL_AUTH_API_KEY", "PL_API_KEY"])
def test_api_key_from_the_environment_is_checked_too(
    monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    """A key set with a stray line feed in the environment is refused before any request, and
    the error names the variable it came from (never the key)."""
    monkeypatch.setenv(variable, "PLAKsecret\r\nInjected: yes")
    with pytest.raises(ConfigurationError) as info:
        PlanetAuth.from_user_default_session()
    message = str(info.value)
    assert message.startswith(f"the API key from environment variable {variable} contains a ")
    assert "carriage return" in message
    assert "PLAKsecret" not in message


def test_api_key_from_planet_json_names_the_file(clean_env: Path) -> None:
    """A key in ~/.planet.json with a space inside names the file and the setting."""
    (clean_env / ".planet.json").write_text(json.dumps({"PL_API_KEY": "PLAKsecret 42"}))
    with pytest.raises(ConfigurationError) as info:
        PlanetAuth.from_user_default_session()
    message = str(info.value)
    assert f"the API key from {clean_env / '.planet.json'} (PL_API_KEY) contains a space" in message
    assert "PLAKsecret" not in message


async def test_access_token_with_a_line_break_from_the_server_is_a_typed_error() -> None:
    """A token endpoint handing out an access token with CR/LF gives `InvalidTokenResponse`
    naming the problem; the token is in no message, and no request carries it."""
    bad = "header-injection\r\nX-Evil: 1"

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "auth.test":
            return httpx.Response(200, json={"access_token": bad, "expires_in": 60})
        raise AssertionError("no API request should be sent")

    transport = httpx.MockTransport(handler)
    http = httpx.AsyncClient(transport=transport)
    server = AuthorizationServer(token_endpoint=TOKEN_URL, transport=HttpxTransport(http))
    grant = ClientCredentialsGrant(server, ClientSecretBasic(client_id="svc", client_secret="x"))
    async with httpx.AsyncClient(auth=PlanetAuth(TokenManager(grant)), transport=transport) as c:
        with pytest.raises(InvalidTokenResponse, match="carriage return") as info:
            await c.get(f"{API}/x")
    assert "header-injection" not in str(info.value)


async def test_access_token_given_or_stored_with_a_line_break_is_refused(tmp_path: Path) -> None:
    """`set_token` refuses such a token; a stored one is a `StorageError` that says to log in."""
    grant = RefreshTokenGrant(
        AuthorizationServer("https://login.test"), PublicClient(client_id="a")
    )
    bad = TokenSet(access_token="at\nbad-token", issued_at=0, refresh_token="rt")
    manager = TokenManager(grant, storage=FileStorage(tmp_path))
    with pytest.raises(ConfigurationError, match="line feed") as info:
        await manager.set_token(bad)
    assert "bad-token" not in str(info.value)
    (tmp_path / "default").mkdir()
    (tmp_path / "default" / "token.json").write_text(json.dumps(bad.to_json_dict()))
    with pytest.raises(StorageError, match="log in again") as stored_info:
        await manager.header()
    assert isinstance(stored_info.value, PlanetAuthError)
    assert "bad-token" not in str(stored_info.value)
