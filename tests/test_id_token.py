"""ID token verification against faults a real provider will not produce on demand: foreign
signatures, another audience, an expired token, a rotated key. The provider is a small fake
transport serving discovery and a JWK Set; the clock is injected."""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest
from joserfc import jwk, jwt

from planet_async import (
    AuthorizationServer,
    AuthServerUnavailable,
    HttpRequest,
    HttpResponse,
    InvalidIdToken,
)
from planet_async._id_token import verify_id_token
from planet_async._oauth import JWKS_REFETCH_INTERVAL

pytestmark = pytest.mark.anyio

ISSUER = "https://login.example"
NOW = 1_800_000_000.0


class Provider:
    """Discovery and a JWK Set, counting how often the set is fetched."""

    def __init__(self, *keys: jwk.Key) -> None:
        self.keys = list(keys)
        self.jwks_fetches = 0

    async def send(self, request: HttpRequest, *, timeout: float) -> HttpResponse:
        if request.url.endswith("/.well-known/openid-configuration"):
            body: dict[str, Any] = {
                "issuer": ISSUER,
                "token_endpoint": f"{ISSUER}/token",
                "jwks_uri": f"{ISSUER}/jwks",
            }
        else:
            assert request.url == f"{ISSUER}/jwks"
            self.jwks_fetches += 1
            body = {"keys": [k.as_dict(private=False) for k in self.keys]}
        return HttpResponse(200, {"content-type": "application/json"}, json.dumps(body).encode())


def _key(kid: str) -> jwk.RSAKey:
    return jwk.RSAKey.generate_key(2048, parameters={"kid": kid, "alg": "RS256", "use": "sig"})


def _token(key: jwk.Key, alg: str = "RS256", **overrides: Any) -> str:
    claims = {
        "iss": ISSUER,
        "aud": "web-app",
        "sub": "alice",
        "nonce": "n-1",
        "iat": int(NOW),
        "exp": int(NOW) + 300,
        **overrides,
    }
    claims = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode({"alg": alg, "kid": key.kid}, claims, key)


async def _verify(provider: Provider, token: str, now: float = NOW) -> dict[str, Any]:
    server = AuthorizationServer(ISSUER, transport=provider)
    return await verify_id_token(server, token, client_id="web-app", nonce="n-1", now=now)


@pytest.fixture(scope="module")
def key() -> jwk.RSAKey:
    return _key("k1")


async def test_a_valid_token_gives_its_claims(key: jwk.RSAKey) -> None:
    """A token signed by a published key, for this client and login, is accepted."""
    claims = await _verify(Provider(key), _token(key))
    assert claims["sub"] == "alice"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"iss": "https://other.example"}, "issued by"),
        ({"aud": "another-client"}, "not client"),
        ({"aud": ["web-app", "x"], "azp": "x"}, "issued to"),
        ({"nonce": "n-2"}, "nonce"),
        ({"nonce": None}, "nonce"),
        ({"exp": None}, "no `exp`"),
        ({"exp": int(NOW) - 61}, "expired"),
        ({"iat": int(NOW) + 3600}, "future"),
        ({"sub": ""}, "no `sub`"),
    ],
)
async def test_each_claim_is_checked(
    key: jwk.RSAKey, overrides: dict[str, Any], message: str
) -> None:
    """iss, aud (and azp), nonce, exp, iat and sub each refuse a token on their own."""
    with pytest.raises(InvalidIdToken, match=message):
        await _verify(Provider(key), _token(key, **overrides))


async def test_expiry_allows_the_leeway(key: jwk.RSAKey) -> None:
    """A token expired by less than the leeway (60 s) still passes; the clock is injected."""
    token = _token(key, exp=int(NOW) - 30)
    assert (await _verify(Provider(key), token))["sub"] == "alice"


async def test_a_signature_by_another_key_with_the_same_kid_is_refused(key: jwk.RSAKey) -> None:
    """A token signed by a key the provider did not publish fails, whatever kid it names."""
    forged = _token(_key("k1"))
    with pytest.raises(InvalidIdToken, match="signature"):
        await _verify(Provider(key), forged)


@pytest.mark.parametrize("alg", ["none", "HS256"])
async def test_unsigned_and_symmetric_tokens_are_refused(key: jwk.RSAKey, alg: str) -> None:
    """Only the provider's public-key signatures count: no "none", no HMAC."""
    header = json.dumps({"alg": alg, "kid": "k1"}).encode()
    body = json.dumps({"iss": ISSUER, "aud": "web-app", "sub": "x", "nonce": "n-1"}).encode()
    from base64 import urlsafe_b64encode

    def b64(data: bytes) -> str:
        return urlsafe_b64encode(data).rstrip(b"=").decode()

    token = f"{b64(header)}.{b64(body)}.{b64(b'sig')}"
    with pytest.raises(InvalidIdToken, match="signed with"):
        await _verify(Provider(key), token)


async def test_an_unknown_kid_fetches_the_keys_once_more(key: jwk.RSAKey) -> None:
    """After the provider rotates its keys, the first token with the new kid refetches the JWK
    Set once and passes; a kid that is still unknown is refused without another request until
    JWKS_REFETCH_INTERVAL has passed, then it prompts one more fetch."""
    provider = Provider(key)
    server = AuthorizationServer(ISSUER, transport=provider)
    await verify_id_token(server, _token(key), client_id="web-app", nonce="n-1", now=NOW)
    assert provider.jwks_fetches == 1

    new = _key("k2")
    provider.keys = [key, new]
    later = NOW + JWKS_REFETCH_INTERVAL
    claims = await verify_id_token(server, _token(new), client_id="web-app", nonce="n-1", now=later)
    assert claims["sub"] == "alice"
    assert provider.jwks_fetches == 2

    unknown = _token(_key("k3"))
    for now in (later, later + JWKS_REFETCH_INTERVAL - 1):
        with pytest.raises(InvalidIdToken, match="no key"):
            await verify_id_token(server, unknown, client_id="web-app", nonce="n-1", now=now)
    assert provider.jwks_fetches == 2
    with pytest.raises(InvalidIdToken, match="no key"):
        await verify_id_token(
            server, unknown, client_id="web-app", nonce="n-1", now=later + JWKS_REFETCH_INTERVAL
        )
    assert provider.jwks_fetches == 3


class SlowProvider(Provider):
    """A Provider whose key set answers only when `answer` is set, or fails with `failure`."""

    def __init__(self, *keys: jwk.Key) -> None:
        super().__init__(*keys)
        self.answer = anyio.Event()
        self.failure: int | None = None

    async def send(self, request: HttpRequest, *, timeout: float) -> HttpResponse:
        if request.url.endswith("/jwks"):
            await self.answer.wait()
            if self.failure is not None:
                self.jwks_fetches += 1
                return HttpResponse(self.failure, {}, b"")
        return await super().send(request, timeout=timeout)


@pytest.mark.parametrize("kid_known", [True, False], ids=["cold-cache", "new-kid"])
async def test_logins_completing_at_once_fetch_the_keys_once(
    key: jwk.RSAKey, kid_known: bool
) -> None:
    """50 callbacks verifying at once send one request for the key set: with a cold cache, and
    when their tokens name a key the cached set lacks."""
    new = _key("k2")
    provider = SlowProvider(key)
    server = AuthorizationServer(ISSUER, transport=provider)
    if not kid_known:
        provider.answer.set()
        await verify_id_token(server, _token(key), client_id="web-app", nonce="n-1", now=NOW)
        provider.answer = anyio.Event()
        provider.keys = [key, new]
    token = _token(key if kid_known else new)
    later = NOW + JWKS_REFETCH_INTERVAL
    subjects: list[str] = []

    async def verify() -> None:
        claims = await verify_id_token(server, token, client_id="web-app", nonce="n-1", now=later)
        subjects.append(claims["sub"])

    async with anyio.create_task_group() as tasks:
        for _ in range(50):
            tasks.start_soon(verify)
        await anyio.wait_all_tasks_blocked()
        provider.answer.set()
    assert subjects == ["alice"] * 50
    assert provider.jwks_fetches == (1 if kid_known else 2)


async def test_callers_sharing_a_failed_fetch_all_get_its_error(key: jwk.RSAKey) -> None:
    """When the one shared fetch fails (a 503), every caller waiting on it gets that error, and
    no caller sends a request of its own; the next call fetches again."""
    provider = SlowProvider(key)
    provider.failure = 503
    server = AuthorizationServer(ISSUER, transport=provider)
    errors: list[BaseException] = []

    async def verify() -> None:
        try:
            await verify_id_token(server, _token(key), client_id="web-app", nonce="n-1", now=NOW)
        except AuthServerUnavailable as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tasks:
        for _ in range(20):
            tasks.start_soon(verify)
        await anyio.wait_all_tasks_blocked()
        provider.answer.set()
    assert len(errors) == 20
    assert provider.jwks_fetches == 1
    provider.failure = None
    claims = await verify_id_token(server, _token(key), client_id="web-app", nonce="n-1", now=NOW)
    assert claims["sub"] == "alice"


async def test_garbage_is_not_a_token(key: jwk.RSAKey) -> None:
    """Something that is not a compact JWS is refused without quoting it."""
    with pytest.raises(InvalidIdToken, match="not a signed JWT") as info:
        await _verify(Provider(key), "not-a-jwt-secret-value")
    assert "secret-value" not in str(info.value)
