"""Bad input gets a typed error that says what to do, never a raw library exception or a secret.

Private keys for private_key_jwt, scopes, session names, token responses and the `planet` CLI's
files: each malformed shape raises ConfigurationError or StorageError (or is handled as the
documented corrupt case), and no message or traceback quotes the secret it was given.
"""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa, x25519
from joserfc import jwk, jwt
from joserfc.errors import SecurityWarning
from pydantic import SecretStr

from planet_async import (
    AuthorizationCodeFlow,
    AuthorizationServer,
    ClientCredentialsGrant,
    ClientSecretPost,
    ConfigurationError,
    DeviceAuthorization,
    DeviceCodeFlow,
    HttpxTransport,
    InvalidTokenResponse,
    PendingAuthorization,
    PlanetAuth,
    PrivateKeyJWT,
    PublicClient,
    RefreshTokenGrant,
    StorageError,
    TokenManager,
    TokenSet,
    UserLogin,
)
from planet_async._auth import auth_for_client
from planet_async.profiles import (
    AuthClientConfig,
    PlanetHome,
    choose_session,
    normalize_profile_name,
)
from tests._helpers import FakeClock, token_response

pytestmark = pytest.mark.anyio

TOKEN_URL = "https://auth.test/token"
SECRET = "at-Never-Shown"
DEVICE_URL = "https://auth.test/device"
AUTHORIZE_URL = "https://auth.test/authorize"


class TokenEndpoint:
    """A token endpoint (and a device authorization endpoint) that keeps the forms it got.

    The token endpoint answers every request with a token; the device endpoint with a code.
    """

    def __init__(self) -> None:
        self.forms: list[dict[str, str]] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.forms.append(dict(httpx.QueryParams(request.content.decode())))
        if str(request.url) == DEVICE_URL:
            return httpx.Response(
                200,
                json={
                    "device_code": "dc-1",
                    "user_code": "WDJB-MJHT",
                    "verification_uri": "https://auth.test/activate",
                    "expires_in": 600,
                },
            )
        return token_response(refresh_token="rt-2")

    def server(self) -> AuthorizationServer:
        http = httpx.AsyncClient(transport=httpx.MockTransport(self.handler))
        return AuthorizationServer(
            token_endpoint=TOKEN_URL,
            device_authorization_endpoint=DEVICE_URL,
            authorization_endpoint=AUTHORIZE_URL,
            transport=HttpxTransport(http),
        )


def _rendered(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc))


# -- private keys for private_key_jwt -------------------------------------------------------------

SigningKey = (
    rsa.RSAPrivateKey
    | ec.EllipticCurvePrivateKey
    | ed25519.Ed25519PrivateKey
    | ed448.Ed448PrivateKey
)

KEYS: dict[str, tuple[Callable[[], SigningKey], str]] = {
    "rsa": (lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256"),
    "p256": (lambda: ec.generate_private_key(ec.SECP256R1()), "ES256"),
    "p384": (lambda: ec.generate_private_key(ec.SECP384R1()), "ES384"),
    "p521": (lambda: ec.generate_private_key(ec.SECP521R1()), "ES512"),
    "secp256k1": (lambda: ec.generate_private_key(ec.SECP256K1()), "ES256K"),
    "ed25519": (ed25519.Ed25519PrivateKey.generate, "EdDSA"),
    "ed448": (ed448.Ed448PrivateKey.generate, "EdDSA"),
}


@pytest.fixture(scope="module")
def keys() -> dict[str, SigningKey]:
    """One private key of every kind private_key_jwt can sign with."""
    return {name: make() for name, (make, _) in KEYS.items()}


def _encode(
    key: Any,
    encoding: serialization.Encoding,
    form: serialization.PrivateFormat = serialization.PrivateFormat.PKCS8,
    password: bytes | None = None,
) -> bytes:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    return bytes(key.private_bytes(encoding, form, encryption))


def _material(key: SigningKey, form: str) -> tuple[Any, str | None]:
    """The key as `form`, and the password it needs."""
    pem, der = serialization.Encoding.PEM, serialization.Encoding.DER
    if form == "pem":
        return _encode(key, pem).decode(), None
    if form == "pem-bytes":
        return _encode(key, pem), None
    if form == "der-pkcs8":
        return _encode(key, der), None
    if form == "der-traditional":
        return _encode(key, der, serialization.PrivateFormat.TraditionalOpenSSL), None
    if form == "der-encrypted":
        return _encode(key, der, password=b"pass phrase"), "pass phrase"
    if form == "pem-encrypted":
        return _encode(key, pem, password=b"pass phrase").decode(), "pass phrase"
    assert form == "jwk"
    return jwk.import_key(_encode(key, pem), _kty(key)).as_dict(private=True), None


def _kty(key: Any) -> Any:
    if isinstance(key, rsa.RSAPrivateKey):
        return "RSA"
    return "EC" if isinstance(key, ec.EllipticCurvePrivateKey) else "OKP"


def _verify(assertion: str, key: SigningKey, alg: str) -> dict[str, Any]:
    public = jwk.import_key(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        _kty(key),
    )
    with warnings.catch_warnings():
        # joserfc's verifier warns that "EdDSA" is deprecated (RFC 9864); signing must not.
        warnings.filterwarnings("ignore", "EdDSA is deprecated", SecurityWarning)
        token = jwt.decode(assertion, public, algorithms=[alg])
    assert token.header["alg"] == alg
    return dict(token.claims)


FORMS = [
    "pem",
    "pem-bytes",
    "pem-encrypted",
    "der-pkcs8",
    "der-traditional",
    "der-encrypted",
    "jwk",
]


@pytest.mark.parametrize(
    ("kind", "form"),
    [
        (kind, form)
        for kind in KEYS
        for form in FORMS
        # Edwards keys have no traditional (non-PKCS#8) encoding.
        if not (form == "der-traditional" and kind.startswith("ed"))
    ],
)
async def test_every_supported_key_signs_a_verifiable_assertion(
    keys: dict[str, SigningKey], kind: str, form: str
) -> None:
    """RSA, EC on P-256/P-384/P-521/secp256k1, Ed25519 and Ed448, as PEM, DER or JWK, sign with
    the algorithm their curve calls for, and the assertion verifies with the public key."""
    key, alg = keys[kind], KEYS[kind][1]
    material, password = _material(key, form)
    client = PrivateKeyJWT(client_id="svc", private_key=material, password=password)
    endpoint = TokenEndpoint()
    await ClientCredentialsGrant(endpoint.server(), client).renew(None, clock=FakeClock())
    claims = _verify(endpoint.forms[0]["client_assertion"], key, alg)
    assert claims["iss"] == claims["sub"] == "svc"
    assert claims["aud"] == TOKEN_URL


@pytest.mark.parametrize(
    ("kind", "algorithm"),
    [("rsa", "PS256"), ("rsa", "RS512"), ("ed25519", "Ed25519"), ("ed448", "Ed448")],
)
async def test_an_algorithm_that_fits_the_key_is_used(
    keys: dict[str, SigningKey], kind: str, algorithm: str
) -> None:
    """An explicit algorithm the key can sign with is the one in the assertion header."""
    key = keys[kind]
    pem = _encode(key, serialization.Encoding.PEM).decode()
    client = PrivateKeyJWT(client_id="svc", private_key=pem, algorithm=algorithm)
    endpoint = TokenEndpoint()
    await ClientCredentialsGrant(endpoint.server(), client).renew(None, clock=FakeClock())
    _verify(endpoint.forms[0]["client_assertion"], key, algorithm)


@pytest.mark.parametrize(
    ("kind", "algorithm"),
    [
        ("rsa", "ES256"),
        ("rsa", "HS256"),
        ("rsa", "none"),
        ("p256", "ES384"),
        ("p384", "ES256"),
        ("secp256k1", "ES256"),
        ("ed25519", "RS256"),
        ("ed25519", "Ed448"),
        ("p256", "XX999"),
    ],
)
def test_an_algorithm_that_does_not_fit_the_key_is_refused_at_construction(
    keys: dict[str, SigningKey], kind: str, algorithm: str
) -> None:
    """An explicit algorithm the key cannot sign with is a ConfigurationError naming both."""
    pem = _encode(keys[kind], serialization.Encoding.PEM).decode()
    with pytest.raises(ConfigurationError, match=f"cannot sign with '{algorithm}'"):
        PrivateKeyJWT(client_id="svc", private_key=pem, algorithm=algorithm)


# A DSA key made once with `openssl dsaparam -noout -genkey 2048`, not with cryptography, which
# (from 51) warns while making or loading one: the test is that DSA is refused, whatever it warns.
_DSA_KEY = """\
-----BEGIN PRIVATE KEY-----
MIICXAIBADCCAjUGByqGSM44BAEwggIoAoIBAQDUuxzPmR/Bm0vhTg/NAOpZ2FQ+
bF76BYDTrY1O33u0HGsScNm9Rbpy1/pwPvn9owl798uHS0Uh/1vvbrzccYVs3btF
2enXYhBnrRuK4JgLdWsHRLGKLq9GEIYSY0rlsdbWm0TxZV3FyQ4pw3N/qnIGvgka
eQzJrgqy5+/Tc2hbF3m7JOZ792owyK6lQF33QRdj3IeLT06Ahg47dK9hRBTxBeTg
++WR/nnWAGxVr0EWSd6JgVJrljUHr/oKHMpNN2Fuv0vRRVg+1wZoLiFq0y/21+q9
I+pDRAhwZbH4CtHApz0yWYaPLkYuhf1yoZYoNdBxMQLyr1FtySSX2yyFlhinAh0A
zkmLFup9ZI9FHlmW41ddokaTyL9v0pAq5wWPnwKCAQBiV+TyHawbgC8h5kQhqhwI
hhrb79XaxYMEXDU3AyyE+yFh09/jhcvho16n95fkZAGzyI5IqDsYCTKTKzJUB4a7
LDDtTF68qpnqMiPHx87nI0M57tHxAbGLf7utC1+a3nJppj0Oi6WVQ76erkvj6wpx
2APaR7yL0V3v1C7k+P/O/yEAKSKBLTmNDb/8F7zGIE29eBQYJcECfuH2GgR5h1+c
ymPKufEMGn7mVhIUdYpvoR1zEVd40WPP53XrinQs8dq+49/anR4JyT8b5btYqZj0
q3IALXRA8V9QC3MgHYT2LID8mW+eOCbq7/ayM66I7c/OPBUtD/FxGZONAt40ti7j
BB4CHBUtEI0nJiILzE6odwLQh/dGyBs8O6A9PSLpKTE=
-----END PRIVATE KEY-----
"""


def _pem_of(key: Any) -> str:
    return _encode(key, serialization.Encoding.PEM).decode()


@pytest.mark.filterwarnings("ignore:Key size should be >= 2048 bits")
def test_an_rsa_key_too_small_for_the_algorithm_is_refused_at_construction() -> None:
    """A 1024-bit RSA key with PS512 (which needs 1040 bits) fails when the client is built, not
    with cryptography's ValueError at the first token request."""
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505
    with pytest.raises(ConfigurationError, match=r"cannot sign with 'PS512'.*larger key"):
        PrivateKeyJWT(client_id="svc", private_key=_pem_of(small), algorithm="PS512")


@pytest.mark.parametrize(
    ("make", "named"),
    [
        (lambda: _pem_of(ec.generate_private_key(ec.SECP224R1())), "curve secp224r1"),
        (lambda: _pem_of(ec.generate_private_key(ec.BrainpoolP256R1())), "curve brainpoolP256r1"),
        (lambda: _DSA_KEY, "a DSA key"),
        (lambda: _pem_of(x25519.X25519PrivateKey.generate()), "a X25519 key"),
        (lambda: {"kty": "oct", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQ"}, "kty is 'oct'"),
        (lambda: {"kty": "OKP", "crv": "X25519", "x": "AA", "d": "AA"}, "crv is 'X25519'"),
        (lambda: {"kty": "EC", "crv": "P-999", "x": "AA", "y": "AA", "d": "AA"}, "'P-999'"),
        (lambda: {"x": "AA", "d": "AA"}, "kty is None"),
    ],
    ids=["p224", "brainpool", "dsa", "x25519", "oct-jwk", "x25519-jwk", "unknown-curve", "no-kty"],
)
def test_a_key_that_cannot_sign_is_refused_at_construction(
    make: Callable[[], Any], named: str
) -> None:
    """A key of a type or curve assertions cannot be signed with fails when it is given, with a
    ConfigurationError naming it and what is supported, not at the first token request."""
    with pytest.raises(ConfigurationError) as info:
        PrivateKeyJWT(client_id="svc", private_key=make())
    message = str(info.value)
    assert named in message
    assert "P-384" in message
    assert "Ed25519" in message


def test_a_public_jwk_is_refused(keys: dict[str, SigningKey]) -> None:
    """A JWK without its private part is a ConfigurationError saying a private key is needed."""
    public = jwk.import_key(_encode(keys["p256"], serialization.Encoding.PEM), "EC").as_dict()
    with pytest.raises(ConfigurationError, match="needs a private key"):
        PrivateKeyJWT(client_id="svc", private_key=public)


@pytest.mark.parametrize(
    ("form", "password", "advice"),
    [
        ("pem-encrypted", None, "give its password"),
        ("der-encrypted", None, "give its password"),
        ("pem-encrypted", "Wrong-Pass-Phrase", "check the password"),
        ("der-encrypted", "Wrong-Pass-Phrase", "check the password"),
        ("pem", "Needless-Pass-Phrase", "leave the password out"),
        ("der-pkcs8", "Needless-Pass-Phrase", "leave the password out"),
    ],
)
def test_a_password_problem_says_what_to_do(
    keys: dict[str, SigningKey], form: str, password: str | None, advice: str
) -> None:
    """An encrypted key without its password, a wrong password, or a password for a key that has
    none, is a ConfigurationError with advice that quotes neither key nor password."""
    material, _ = _material(keys["rsa"], form)
    with pytest.raises(ConfigurationError, match=advice) as info:
        PrivateKeyJWT(client_id="svc", private_key=material, password=password)
    rendered = _rendered(info.value)
    if password:
        assert password not in rendered
    assert "pass phrase" not in rendered


@pytest.mark.parametrize(
    "material",
    [
        b"\x30\x82\x01\x00 not DER at all \xff\xfe\x80",
        b"\xff\xfe\xfd\xfc",
        b"",
        b"-----BEGIN PRIVATE KEY-----\n\xff\xfe\x80GARBAGE\n-----END PRIVATE KEY-----\n",
        b'{"kty": "RSA", "n": "\xff\xfe"}',
        '{"a": ' * 100_000 + "1" + "}" * 100_000,
        {"kty": "EC", "crv": "P-256", "x": 1, "y": 2, "d": 3},
        {"kty": "EC", "crv": "P-256", "x": b"GARBAGE-X", "y": "AA", "d": "AA"},
        {"kty": "RSA", "n": "AQAB", "e": "AQAB", "d": "GARBAGE-D"},
        {"kty": "OKP", "crv": "Ed25519", "x": "AA", "d": "GARBAGE-D"},
        {"kty": "EC", "crv": ["P-256"], "x": "AA", "y": "AA", "d": "AA"},
    ],
    ids=[
        "der-garbage",
        "binary",
        "empty",
        "pem-not-utf8",
        "jwk-json-not-utf8",
        "jwk-nested",
        "jwk-numbers",
        "jwk-bytes",
        "rsa-jwk-bad-d",
        "okp-jwk-short-d",
        "jwk-crv-list",
    ],
)
def test_garbage_key_material_is_a_configuration_error(material: Any) -> None:
    """Bytes, text and JWKs that are no key raise ConfigurationError, never UnicodeDecodeError,
    RecursionError, KeyError, or a joserfc, cryptography or pydantic exception."""
    with pytest.raises(ConfigurationError, match="private_key_jwt") as info:
        PrivateKeyJWT(client_id="svc", private_key=material)
    assert "GARBAGE" not in _rendered(info.value)


def test_der_key_stays_out_of_repr(keys: dict[str, SigningKey]) -> None:
    """A DER key kept by PrivateKeyJWT appears in no repr or str of the client."""
    der = _encode(keys["p256"], serialization.Encoding.DER)
    client = PrivateKeyJWT(client_id="svc", private_key=der)
    for shown in (repr(client), str(client), client.model_dump_json()):
        assert der.hex() not in shown
        assert "MIG" not in shown  # the start of the key's base64


@pytest.mark.parametrize("lifetime", [0, -1, float("nan"), float("inf")])
def test_assertion_lifetime_must_be_positive_seconds(
    keys: dict[str, SigningKey], lifetime: float
) -> None:
    """A zero, negative or non-finite assertion lifetime fails at construction, not at signing."""
    with pytest.raises(ConfigurationError, match="assertion_lifetime"):
        PrivateKeyJWT(
            client_id="svc", private_key=_pem_of(keys["p256"]), assertion_lifetime=lifetime
        )


def test_profile_key_file_may_be_der(keys: dict[str, SigningKey], clean_env: Path) -> None:
    """A profile's client_privkey_file may hold a DER key, which was read as text and failed."""
    (clean_env / "client.der").write_bytes(_encode(keys["p384"], serialization.Encoding.DER))
    config = AuthClientConfig(
        client_type="oidc_client_credentials_pubkey",
        client_id="svc",
        token_endpoint=TOKEN_URL,
        client_privkey_file="~/client.der",
    )
    auth = auth_for_client(config, session="svc")
    assert auth.manager is not None
    grant = auth.manager.grant
    assert isinstance(grant, ClientCredentialsGrant)
    assert isinstance(grant.client, PrivateKeyJWT)


def test_profile_key_that_cannot_sign_names_the_profile(
    keys: dict[str, SigningKey], clean_env: Path
) -> None:
    """A profile whose key cannot sign is a ConfigurationError naming the profile and the key."""
    pem = _pem_of(ec.generate_private_key(ec.SECP224R1()))
    config = AuthClientConfig(
        client_type="oidc_client_credentials_pubkey",
        client_id="svc",
        token_endpoint=TOKEN_URL,
        client_privkey=SecretStr(pem),
    )
    with pytest.raises(ConfigurationError, match=r"profile 'svc'.*secp224r1"):
        auth_for_client(config, session="svc")


# -- scopes ----------------------------------------------------------------------------------------


def _session() -> TokenSet:
    return TokenSet(
        access_token=SecretStr("at-1"),
        issued_at=1_800_000_000.0,
        refresh_token=SecretStr("rt-1"),
    )


async def _scope_sent(kind: str, scopes: Any) -> str | None:
    """The `scope` a grant or login built with `scopes` sends to the authorization server."""
    endpoint = TokenEndpoint()
    server, client = (
        endpoint.server(),
        ClientSecretPost(client_id="c", client_secret=SecretStr("s")),
    )
    if kind == "client_credentials":
        await ClientCredentialsGrant(server, client, scopes=scopes).renew(None, clock=FakeClock())
    elif kind == "refresh_token":
        await RefreshTokenGrant(server, client, scopes=scopes).renew(_session(), clock=FakeClock())
    elif kind == "device_code":
        await DeviceCodeFlow(server, client, scopes=scopes).start()
    elif kind == "user_login":
        manager = TokenManager(RefreshTokenGrant(server, client))
        login = UserLogin(manager, server, client, scopes=scopes)
        await login.device_flow().start()
    else:
        assert kind == "authorization_code"
        flow = AuthorizationCodeFlow(
            server, client, redirect_uri="http://127.0.0.1/callback", scopes=scopes
        )
        pending = await flow.start()
        query = dict(parse_qsl(urlsplit(pending.authorization_url).query))
        if "offline_access" in query.get("scope", "").split():
            assert query["prompt"] == "consent"
        return query.get("scope")
    return endpoint.forms[0].get("scope")


SCOPE_TAKERS = [
    "client_credentials",
    "refresh_token",
    "device_code",
    "user_login",
    "authorization_code",
]


@pytest.mark.parametrize("kind", SCOPE_TAKERS)
@pytest.mark.parametrize(
    ("scopes", "sent"),
    [
        ("planet read", "planet read"),
        (" planet\tread\n  planet ", "planet read"),
        (["planet", "read", "planet"], "planet read"),
        ({"planet": 1, "read": 2}.keys(), "planet read"),
        ("", None),
        ((), None),
    ],
    ids=["string", "whitespace-and-duplicates", "list", "iterable", "empty-string", "empty"],
)
async def test_scopes_as_one_string_are_split_on_whitespace(
    kind: str, scopes: Any, sent: str | None
) -> None:
    """Every grant and login reads one string as space-separated scope names (it was split into
    characters), and drops duplicates keeping the order."""
    assert await _scope_sent(kind, scopes) == sent


async def test_client_credentials_never_asks_for_offline_access_in_a_string() -> None:
    """offline_access in a space-separated string is dropped for M2M, as in a list."""
    assert await _scope_sent("client_credentials", "read offline_access") == "read"


async def test_offline_access_in_a_string_asks_for_consent() -> None:
    """A browser login given "planet offline_access" sends prompt=consent, as for a list."""
    assert await _scope_sent("authorization_code", "planet offline_access") == (
        "planet offline_access"
    )


@pytest.mark.parametrize("kind", SCOPE_TAKERS)
@pytest.mark.parametrize(
    "scopes",
    [["planet read"], [""], ["a\x00b"], "planet a\x07b", ["planet", 1], [b"planet"], None, 5],
    ids=["space-in-item", "empty-item", "nul", "bell", "number", "bytes", "none", "int"],
)
async def test_malformed_scopes_are_a_configuration_error(kind: str, scopes: Any) -> None:
    """Items that are not scope names, and values that are not scopes at all, fail when the
    grant or login is built, with a ConfigurationError showing the accepted shapes."""
    with pytest.raises(ConfigurationError, match=r"scope names like \['planet'"):
        await _scope_sent(kind, scopes)


def test_profile_with_a_malformed_scope_names_the_profile() -> None:
    """An auth_client.json scope item holding a space is a ConfigurationError naming the profile."""
    config = AuthClientConfig.m2m("svc", "s", scopes=["planet offline_access"])
    with pytest.raises(ConfigurationError, match=r"profile 'svc'.*'planet offline_access'"):
        auth_for_client(config, session="svc")


# -- profile names and the `planet` CLI's files ---------------------------------------------------

PROFILE_NAMES = ["a\x00b", "a\nb", "a\x1bb", "a\ud800b", "x" * 256]
PROFILE_NAME_IDS = ["nul", "newline", "escape", "surrogate", "too-long"]


@pytest.mark.parametrize("name", PROFILE_NAMES, ids=PROFILE_NAME_IDS)
def test_profile_names_that_cannot_be_file_names_are_refused(tmp_path: Path, name: str) -> None:
    """Every PlanetHome method, normalize_profile_name and PlanetAuth.from_profile refuse such a
    name with a ConfigurationError saying why, and create nothing (they raised ValueError
    "embedded null byte", UnicodeEncodeError or OSError, or made odd directories)."""
    home = PlanetHome(tmp_path / "planet-home")
    attempts: list[Callable[[], object]] = [
        lambda: normalize_profile_name(name),
        lambda: home.profile_dir(name),
        lambda: home.read_auth_client(name),
        lambda: home.write_auth_client(name, AuthClientConfig.static_api_key("k")),
        lambda: home.read_token_file(name),
        lambda: home.write_token_file(name, {"api_key": "k"}),
        lambda: home.delete_token_file(name),
        lambda: home.delete_profile(name),
        lambda: home.set_default_profile(name),
        lambda: PlanetAuth.from_profile(name, home=home.home),
    ]
    for attempt in attempts:
        with pytest.raises(ConfigurationError, match="cannot be a profile name: it "):
            attempt()
    assert not home.home.exists()


def test_profile_name_from_the_environment_is_refused_with_its_origin(clean_env: Path) -> None:
    """A PL_AUTH_PROFILE holding a control character names the variable and the problem."""
    with pytest.raises(ConfigurationError, match=r"PL_AUTH_PROFILE.*control character"):
        choose_session(environ={"PL_AUTH_PROFILE": "a\x1bb"}, home=PlanetHome(clean_env))


@pytest.mark.parametrize(
    "content",
    [b"[" * 100_000, b'{"a":' * 100_000 + b"1" + b"}" * 100_000],
    ids=["lists", "dicts"],
)
@pytest.mark.parametrize(
    ("path", "read"),
    [
        (".planet.json", lambda home: home.read_config()),
        (".planet/p/auth_client.json", lambda home: home.read_auth_client("p")),
        (".planet/p/token.json", lambda home: home.read_token_file("p")),
        (".planet.json", lambda home: choose_session(environ={}, home=home)),
    ],
    ids=["planet.json", "auth_client.json", "token.json", "choose_session"],
)
def test_deeply_nested_settings_file_is_a_configuration_error(
    clean_env: Path, content: bytes, path: str, read: Callable[[PlanetHome], object]
) -> None:
    """A `planet` CLI file nested too deep to parse is a ConfigurationError naming the file,
    which is left as it is (it raised RecursionError)."""
    file = clean_env / path
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_bytes(content)
    with pytest.raises(ConfigurationError, match="is not a JSON object") as info:
        read(PlanetHome(clean_env))
    assert str(file) in str(info.value)
    assert file.read_bytes() == content


@pytest.mark.parametrize(
    "change",
    [
        lambda home: home.write_auth_client("p", AuthClientConfig.static_api_key("k")),
        lambda home: home.write_token_file("p", {"api_key": "k"}),
        lambda home: home.delete_token_file("p"),
        lambda home: home.delete_profile("p"),
    ],
    ids=["write_auth_client", "write_token_file", "delete_token_file", "delete_profile"],
)
def test_profile_directory_that_is_a_symlink_is_not_written_through(
    tmp_path: Path, change: Callable[[PlanetHome], object]
) -> None:
    """PlanetHome writes and deletes nothing through a profile directory that is a symbolic
    link: StorageError naming it, and the link's target keeps its files."""
    outside = tmp_path / "outside"
    outside.mkdir()
    for name in ("auth_client.json", "token.json"):
        (outside / name).write_text('{"theirs": true}')
    home = PlanetHome(tmp_path / "home")
    home.profiles_dir.mkdir(parents=True)
    (home.profiles_dir / "p").symlink_to(outside, target_is_directory=True)

    with pytest.raises(StorageError, match="symbolic link") as info:
        change(home)
    assert str(home.profiles_dir / "p") in str(info.value)
    assert sorted(os.listdir(outside)) == ["auth_client.json", "token.json"]
    assert (outside / "token.json").read_text() == '{"theirs": true}'


def test_failed_login_restores_a_corrupt_client_file_byte_for_byte(clean_env: Path) -> None:
    """When a login over a profile whose auth_client.json is not JSON fails, the file comes back
    as it was and the user sees the login's error, not a JSONDecodeError from the restore."""
    config = clean_env / ".planet" / "p" / "auth_client.json"
    config.parent.mkdir(parents=True)
    before = b'{"client_type": "oidc_client_credentials_secret", broken'
    config.write_bytes(before)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    command = [sys.executable, "-m", "planet_async.cli", "--home", str(clean_env)]
    login = ["auth", "login", "--client-id", "svc", "--client-secret", "cs-Never-Shown"]
    where = ["--allow-loopback-http", "--issuer", closed, "--profile", "p"]
    result = subprocess.run(
        [*command, *login, *where],
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert "could not be reached" in result.stderr
    assert "cs-Never-Shown" not in result.stderr
    assert config.read_bytes() == before


# -- what authorization servers send ---------------------------------------------------------------


def _jwt_with_payload(payload: bytes) -> str:
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")

    return ".".join([b64(b'{"alg": "none"}'), b64(payload), "c2ln"])


async def _token_from(body: dict[str, Any]) -> TokenSet:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=body)

    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    server = AuthorizationServer(token_endpoint=TOKEN_URL, transport=HttpxTransport(http))
    client = ClientSecretPost(client_id="c", client_secret=SecretStr("s"))
    return await ClientCredentialsGrant(server, client).renew(None, clock=FakeClock())


@pytest.mark.parametrize(
    "body",
    [
        {"access_token": SECRET, "expires_in": 10**400},
        {"access_token": SECRET, "expires_in": "9" * 5000},
    ],
    ids=["huge-int", "huge-digits"],
)
async def test_expires_in_too_large_is_an_invalid_token_response(body: dict[str, Any]) -> None:
    """An expires_in that is no finite time from now is InvalidTokenResponse, not OverflowError,
    and the message does not quote the token."""
    with pytest.raises(InvalidTokenResponse, match="expires_in is out of range") as info:
        await _token_from(body)
    assert SECRET not in str(info.value)


@pytest.mark.parametrize(
    "payload",
    [b"[" * 5000, b'{"exp": 1' + b"0" * 400 + b"}"],
    ids=["nested", "huge-exp"],
)
async def test_unreadable_jwt_claims_mean_an_unknown_expiry(payload: bytes) -> None:
    """A JWT access token without expires_in whose claims are nested too deep or hold an `exp`
    too large for a float is used as an opaque token (it raised RecursionError or
    OverflowError)."""
    access = _jwt_with_payload(payload)
    token = await _token_from({"access_token": access})
    assert token.access_token.get_secret_value() == access
    assert token.expires_at is None


@pytest.mark.parametrize(
    "extra", [{"expires_in": 10**400}, {"interval": 10**400}], ids=["expires_in", "interval"]
)
async def test_device_authorization_with_huge_numbers_is_an_invalid_response(
    extra: dict[str, Any],
) -> None:
    """A device authorization response with numbers too large for a float is
    InvalidTokenResponse (it raised OverflowError)."""
    body = {
        "device_code": "dc-Never-Shown",
        "user_code": "WDJB-MJHT",
        "verification_uri": "https://auth.test/activate",
        "expires_in": 600,
        **extra,
    }

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=body)

    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    server = AuthorizationServer(
        token_endpoint=TOKEN_URL,
        device_authorization_endpoint=DEVICE_URL,
        transport=HttpxTransport(http),
    )
    flow = DeviceCodeFlow(server, PublicClient(client_id="c"))
    with pytest.raises(InvalidTokenResponse, match="unusable device authorization") as info:
        await flow.start()
    assert "dc-Never-Shown" not in str(info.value)


@pytest.mark.parametrize("model", [PendingAuthorization, DeviceAuthorization])
@pytest.mark.parametrize(
    "text",
    [
        '{"state": "st-Never-Shown", "code_verifier": "cv-Never-Shown"}',
        '{"device_code": "dc-Never-Shown"}',
        "[" * 100_000,
        b"\xff\xfe",
    ],
    ids=["other-fields", "missing-fields", "nested", "binary"],
)
def test_saved_login_state_that_is_not_ours_is_a_configuration_error(
    model: Any, text: str | bytes
) -> None:
    """from_json of text that to_json did not write is a ConfigurationError saying to start
    again, which quotes none of the secrets in it (pydantic's error quoted its input)."""
    with pytest.raises(ConfigurationError, match="start the login again") as info:
        model.from_json(text)
    assert "Never-Shown" not in _rendered(info.value)


def test_from_client_credentials_takes_an_encrypted_key_with_its_password() -> None:
    """An encrypted key works through `from_client_credentials` with its password, and without
    it the error says to give one."""
    native = ec.generate_private_key(ec.SECP384R1())
    pem = native.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"key-password"),
    ).decode()
    endpoint = "https://auth.test/token"
    auth = PlanetAuth.from_client_credentials(
        "svc", private_key=pem, private_key_password="key-password", token_endpoint=endpoint
    )
    assert auth.manager is not None
    with pytest.raises(ConfigurationError, match="give its password"):
        PlanetAuth.from_client_credentials("svc", private_key=pem, token_endpoint=endpoint)
