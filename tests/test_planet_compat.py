"""Compatibility with the real `planet` SDK and its auth library, planet-auth, both ways.

Sessions written by planet_async are loaded and used by `planet` and sessions written by
`planet` are loaded, used and renewed by planet_async, against the real authorization server
(the peer, whose tokens are JWTs) and a stand-in API that verifies the peer's signatures. The
`planet` side runs in worker threads: its auth is synchronous and does blocking I/O.

`planet.Session(auth=...)` takes our PlanetAuth for the SDK's own async requests; those tests run
on asyncio only (see `ASYNCIO_ONLY`).

Differences from `planet` these tests do not paper over (see also planet-formats.md):
- `PL_AUTH_API_KEY` is read only by planet_async (the SDK reads `PL_API_KEY`).
- planet_async lets the environment as a whole beat ``~/.planet.json``; the SDK decides per key,
  so there a profile saved in the file beats an API key in the environment.
- A `PL_AUTH_PROFILE` that does not exist is an error here; the SDK logs a warning and moves on
  to the next setting (in the end the built-in ``planet-user``).
- A static_apikey profile's ``bearer_token_prefix`` is honoured by planet-auth; planet_async always
  sends ``api-key`` (the only prefix Planet's API keys use).
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel
import h11
import httpx
import planet  # type: ignore[import-untyped]
import planet.http  # type: ignore[import-untyped]
import planet_auth
import planet_auth_utils
import pytest
from click.testing import CliRunner
from planet.cli.cli import main as planet_cli  # type: ignore[import-untyped]
from pydantic import SecretStr

from planet_async import DeviceCodeFlow, FileStorage, PlanetAuth, TokenSet
from planet_async.profiles import AuthClientConfig, PlanetHome, choose_session
from tests._browser import approve_device_over_http
from tests._helpers import API, VerifyingApi
from tests._peer import Peer

pytestmark = pytest.mark.anyio

# planet.Session runs its own asyncio machinery (asyncio.sleep in its limiter and retries, an
# asyncio loop thread for its sync wrappers): it cannot run under trio.
ASYNCIO_ONLY = pytest.mark.parametrize("anyio_backend", ["asyncio"])

DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
API_KEY = "PLAKcompat0123456789"


def _m2m_profile(peer: Peer) -> AuthClientConfig:
    return AuthClientConfig.m2m(
        "service-basic", "service-basic-secret", auth_server=peer.issuer, scopes=["api:read"]
    )


def _planet_get(auth: httpx.Auth, handler: Callable[[httpx.Request], httpx.Response]) -> str:
    """One request to api.planet.com with `planet`'s (synchronous) auth; the header it sent."""
    seen: list[str] = []

    def recording(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("authorization", ""))
        return handler(request)

    with httpx.Client(auth=auth, transport=httpx.MockTransport(recording)) as client:
        assert client.get(f"{API}/data/v1/searches").status_code == 200
    return seen[0]


async def _planet_get_in_thread(
    auth: httpx.Auth, handler: Callable[[httpx.Request], httpx.Response]
) -> str:
    return await anyio.to_thread.run_sync(_planet_get, auth, handler)


async def _our_get(auth: PlanetAuth, handler: Callable[[httpx.Request], httpx.Response]) -> str:
    seen: list[str] = []

    def recording(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("authorization", ""))
        return handler(request)

    async with httpx.AsyncClient(auth=auth, transport=httpx.MockTransport(recording)) as client:
        assert (await client.get(f"{API}/data/v1/searches")).status_code == 200
    return seen[0]


def _planet_command(*args: str) -> str:
    """Run the real `planet` CLI in this process (HOME is the test's); its output."""
    result = CliRunner().invoke(planet_cli, list(args))
    assert result.exit_code == 0, (result.output, result.exception)
    return result.output


def _token_file(home: Path, profile: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((home / ".planet" / profile / "token.json").read_text())
    return data


def _ok(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200)


# -- files ---------------------------------------------------------------------------------------

OUR_CLIENT_TYPES: dict[str, dict[str, Any]] = {
    "oidc_device_code": {},
    "oidc_device_code_secret": {"client_secret": "secret"},
    "oidc_device_code_pubkey": {"client_privkey": "<pem>"},
    "oidc_auth_code": {"redirect_uri": "http://localhost:8080/cb"},
    "oidc_auth_code_secret": {"redirect_uri": "http://localhost:8080/cb", "client_secret": "s"},
    "oidc_auth_code_pubkey": {
        "redirect_uri": "http://localhost:8080/cb",
        "client_privkey_file": "~/client.pem",
    },
    "oidc_client_credentials_secret": {"client_secret": "secret"},
    "oidc_client_credentials_pubkey": {"client_privkey": "<pem>"},
    "static_apikey": {"api_key": API_KEY, "bearer_token_prefix": "api-key"},
    "planet_legacy": {"legacy_auth_endpoint": "https://api.planet.com/v0/auth/login"},
}


@pytest.mark.parametrize("client_type", list(OUR_CLIENT_TYPES))
def test_every_client_type_we_write_loads_in_planet_auth(
    client_type: str, clean_env: Path, client_keys: tuple[Path, dict[str, Path]]
) -> None:
    """Each auth_client.json kind written by PlanetHome is read by planet-auth as that kind and
    makes a working planet-auth client."""
    pem = client_keys[1]["rsa-1"].read_text()
    (clean_env / "client.pem").write_text(pem)
    fields = {k: pem if v == "<pem>" else v for k, v in OUR_CLIENT_TYPES[client_type].items()}
    if client_type.startswith("oidc_"):
        fields.update(
            client_id="compat-client",
            auth_server="https://issuer.example/",
            audiences=["https://api.planet.com/"],
            scopes=["planet", "offline_access"],
        )
    config_file = AuthClientConfig.model_validate({"client_type": client_type, **fields})
    PlanetHome().write_auth_client("Ours", config_file)

    name, config = planet_auth_utils.PlanetAuthFactory.load_auth_client_config_from_profile("ours")
    assert name == "ours"
    assert config.meta()["client_type"] == client_type
    client = planet_auth.AuthClient.from_config(config)
    assert isinstance(client, config.meta()["auth_client_class"])
    if client_type.startswith("oidc_"):
        assert getattr(config, "client_id")() == "compat-client"  # noqa: B009 - untyped base


def test_profiles_written_by_planet_are_read_and_rewritten_byte_for_byte(clean_env: Path) -> None:
    """auth_client.json files made by the `planet` SDK are read with their kind, and writing them
    back gives the very same bytes (its `_comment` and `_hidden` keys included)."""
    planet.Auth.from_oauth_user_auth_code("web-app", "http://localhost:8080/cb", profile_name="Web")
    planet.Auth.from_oauth_user_device_code("device-app", profile_name="device")
    planet.Auth.from_oauth_m2m("svc-id", "svc-secret")  # profile named after the client id
    planet_auth_utils.PlanetAuthFactory.initialize_auth_client_context_from_custom_config(
        client_config={
            "client_type": "static_apikey",
            "api_key": API_KEY,
            "bearer_token_prefix": "api-key",
        },
        initial_token_data={},
        profile_name="key",
    )
    home = PlanetHome()
    assert home.list_profiles() == [
        "device",
        "key",
        "svc-id",
        "web",
        "planet-user",
        "planet-m2m",
        "legacy",
    ]
    kinds = {}
    for name in ("web", "device", "svc-id", "key"):
        config = home.read_auth_client(name)
        assert config is not None
        kinds[name] = config.kind
        home.write_auth_client(f"copy-{name}", config)
        original = (home.profile_dir(name) / "auth_client.json").read_bytes()
        assert (home.profile_dir(f"copy-{name}") / "auth_client.json").read_bytes() == original
    assert kinds == {"web": "user", "device": "user", "svc-id": "m2m", "key": "api_key"}
    web = home.read_auth_client("web")
    assert web is not None
    assert web.model_extra == {"_comment": "OIDC/OAuth server used by Planet Public API endpoints"}
    assert PlanetAuth.from_profile("svc-id").manager is not None
    assert PlanetAuth.from_profile("web").user is not None


# -- M2M sessions against the peer ---------------------------------------------------------------


async def test_m2m_session_written_by_us_is_used_by_planet(peer: Peer, clean_env: Path) -> None:
    """A token we obtained and saved is sent as is by planet's Auth and printed by its CLI: no
    new grant."""
    PlanetHome().write_auth_client("svc", _m2m_profile(peer))
    api = VerifyingApi(peer.issuer)
    ours = PlanetAuth.from_profile("svc")
    sent = await _our_get(ours, api.handler)
    assert peer.grants("client_credentials") == 1
    saved = _token_file(clean_env, "svc")
    assert sent == f"Bearer {saved['access_token']}"
    # ... and our session's generation, a member the planet CLI keeps and ignores
    assert set(saved) == {
        "_exp",
        "_iat",
        "_planet_async_generation",
        "access_token",
        "expires_in",
        "scope",
        "token_type",
    }

    theirs = planet.Auth.from_profile("svc")
    assert await _planet_get_in_thread(theirs, api.handler) == sent
    printed = await anyio.to_thread.run_sync(
        _planet_command, "--auth-profile", "svc", "auth", "print-access-token"
    )
    assert printed.strip() == saved["access_token"]
    assert peer.grants("client_credentials") == 1
    assert api.rejected == 0


async def test_m2m_session_written_by_planet_is_used_and_renewed_by_us(
    peer: Peer, clean_env: Path
) -> None:
    """planet's saved token is used as is; once it expires we renew it and save ours, which
    planet's Auth then reloads and sends without a grant of its own.

    Waits for a real 2 s token to expire (about 2 s): planet-auth reads expiry from the JWT in
    whole seconds, so only the wall clock can make it reload the file."""
    peer.set_access_token_ttl(2)
    PlanetHome().write_auth_client("svc", _m2m_profile(peer))
    api = VerifyingApi(peer.issuer)
    # The JWT's iat is whole seconds, and our refresh-ahead point (65-75% of 2 s after iat) must
    # stay well ahead of our first use of planet's token: start early in a second.
    if time.time() % 1 > 0.5:
        await anyio.sleep(1.01 - time.time() % 1)

    theirs = planet.Auth.from_profile("svc")
    first = await _planet_get_in_thread(theirs, api.handler)
    assert peer.grants("client_credentials") == 1
    planet_saved = _token_file(clean_env, "svc")
    assert first == f"Bearer {planet_saved['access_token']}"

    ours = PlanetAuth.from_profile("svc")
    assert await _our_get(ours, api.handler) == first
    assert peer.grants("client_credentials") == 1  # planet's token was good enough

    await anyio.sleep(planet_saved["_exp"] + 0.1 - time.time())
    renewed = await _our_get(ours, api.handler)
    assert renewed != first
    assert peer.grants("client_credentials") == 2
    our_saved = _token_file(clean_env, "svc")
    assert renewed == f"Bearer {our_saved['access_token']}"

    # planet's Auth sees its token expired, reloads the file first, and finds ours.
    assert await _planet_get_in_thread(theirs, api.handler) == renewed
    assert peer.grants("client_credentials") == 2
    assert api.rejected == 0
    assert api.accepted == 4


# -- a user session against the peer -------------------------------------------------------------


async def _device_login(auth: PlanetAuth) -> TokenSet:
    """A device login for `auth`'s profile, approved on the peer's dev pages over plain HTTP."""
    user = auth.user
    assert user is not None

    async def no_wait(seconds: float) -> None:
        await anyio.lowlevel.checkpoint()  # the code is approved before the first poll

    flow = DeviceCodeFlow(
        user.server, user.client, scopes=user.scopes, extra_params=user.extra_params, sleep=no_wait
    )
    pending = await flow.start()
    assert pending.verification_uri_complete is not None
    await anyio.to_thread.run_sync(approve_device_over_http, pending.verification_uri_complete)
    token = await flow.complete(pending)
    await user.save(token)
    return token


async def test_user_session_is_shared_both_ways(peer: Peer, clean_env: Path) -> None:
    """A device-code profile: our login is used by planet; `planet auth refresh` rotates the
    refresh token; we use planet's token and renew with its rotated refresh token; planet then
    uses ours. One login, two refreshes, no other grant."""
    PlanetHome().write_auth_client(
        "native",
        AuthClientConfig.user(
            "native-app", auth_server=peer.issuer, scopes=["openid", "offline_access"]
        ),
    )
    api = VerifyingApi(peer.issuer)
    login = await _device_login(PlanetAuth.from_profile("native"))
    assert login.refresh_token is not None
    assert peer.grants(DEVICE_CODE_GRANT) == 1

    # planet uses our login as it is.
    sent = await _planet_get_in_thread(planet.Auth.from_profile("native"), api.handler)
    assert sent == f"Bearer {login.access_token.get_secret_value()}"
    assert peer.grants("refresh_token") == 0

    # planet's CLI refreshes: a new access token and a rotated refresh token in the file.
    await anyio.to_thread.run_sync(_planet_command, "--auth-profile", "native", "auth", "refresh")
    assert peer.grants("refresh_token") == 1
    by_planet = _token_file(clean_env, "native")
    assert by_planet["refresh_token"] != login.refresh_token.get_secret_value()

    # We use planet's token, then renew with planet's (rotated) refresh token.
    ours = PlanetAuth.from_profile("native")
    assert await _our_get(ours, api.handler) == f"Bearer {by_planet['access_token']}"
    assert ours.manager is not None
    renewed = await ours.manager.renew()
    assert peer.grants("refresh_token") == 2
    assert peer.errors() == {}  # the rotated-away refresh token was never sent
    by_us = _token_file(clean_env, "native")
    assert by_us["access_token"] == renewed.access_token.get_secret_value()
    assert by_us["refresh_token"] != by_planet["refresh_token"]

    # planet picks up our renewal.
    sent = await _planet_get_in_thread(planet.Auth.from_profile("native"), api.handler)
    assert sent == f"Bearer {by_us['access_token']}"
    assert peer.grants("refresh_token") == 2
    assert peer.grants(DEVICE_CODE_GRANT) == 1
    assert api.rejected == 0


# -- API keys ------------------------------------------------------------------------------------


@pytest.mark.parametrize("key_in", ["auth_client.json", "token.json"])
def test_api_key_profile_written_by_us_is_used_by_planet(key_in: str) -> None:
    """A static_apikey profile we wrote: planet's Auth and ours send the same api-key header."""
    home = PlanetHome()
    if key_in == "auth_client.json":
        home.write_auth_client("key", AuthClientConfig.static_api_key(API_KEY))
    else:
        home.write_auth_client("key", AuthClientConfig(client_type="static_apikey"))
        home.write_token_file("key", {"api_key": API_KEY, "bearer_token_prefix": "api-key"})
    theirs = _planet_get(planet.Auth.from_profile("key"), _ok)
    ours = _planet_get(PlanetAuth.from_profile("key"), _ok)  # API keys work with sync clients
    assert theirs == ours == f"api-key {API_KEY}"


def test_api_key_profile_written_by_planet_is_used_by_us() -> None:
    """A static_apikey profile planet-auth wrote: the same api-key header from both."""
    planet_auth_utils.PlanetAuthFactory.initialize_auth_client_context_from_custom_config(
        client_config={
            "client_type": "static_apikey",
            "api_key": API_KEY,
            "bearer_token_prefix": "api-key",
        },
        initial_token_data={},
        profile_name="Their-Key",
    )
    ours = _planet_get(PlanetAuth.from_profile("their-key"), _ok)
    theirs = _planet_get(planet.Auth.from_profile("their-key"), _ok)
    assert ours == theirs == f"api-key {API_KEY}"


def test_legacy_key_in_planet_json_is_used_by_both(clean_env: Path) -> None:
    """The old SDK's ~/.planet.json {"key": ...}: both default sessions send it as api-key."""
    (clean_env / ".planet.json").write_text(json.dumps({"key": API_KEY}))
    theirs = _planet_get(planet.Auth.from_user_default_session(), _ok)
    ours = _planet_get(PlanetAuth.from_user_default_session(), _ok)
    assert theirs == ours == f"api-key {API_KEY}"


def _planet_choice() -> tuple[str, str | None]:
    """What planet's default session resolves to: ("api_key", header) or ("profile", name)."""
    context = planet_auth_utils.PlanetAuthFactory.initialize_auth_client_context()
    if isinstance(context.auth_client(), planet_auth.StaticApiKeyAuthClient):
        return "api_key", _planet_get(context.request_authenticator(), _ok)
    return "profile", str(context.profile_name()).lower()


def _our_choice() -> tuple[str, str | None]:
    source = choose_session()
    if source.kind == "api_key":
        return "api_key", _planet_get(PlanetAuth.from_user_default_session(), _ok)
    return "profile", source.profile


@pytest.mark.parametrize(
    ("env", "file", "expected"),
    [
        ({}, None, ("profile", "planet-user")),
        ({"PL_AUTH_PROFILE": "Mine"}, None, ("profile", "mine")),
        ({}, {"PL_AUTH_PROFILE": "mine"}, ("profile", "mine")),
        ({}, {"PL_AUTH_PROFILE": "mine", "key": API_KEY}, ("profile", "mine")),
        (
            {"PL_AUTH_CLIENT_ID": "Svc-ID", "PL_AUTH_CLIENT_SECRET": "s"},
            None,
            ("profile", "planet-m2m-svc-id"),
        ),
        ({"PL_API_KEY": API_KEY}, {"key": "other"}, ("api_key", f"api-key {API_KEY}")),
        ({}, {"PL_API_KEY": API_KEY}, ("api_key", f"api-key {API_KEY}")),
        ({}, {"key": API_KEY}, ("api_key", f"api-key {API_KEY}")),
        ({"PL_AUTH_PROFILE": "mine"}, {"PL_AUTH_PROFILE": "planet-user"}, ("profile", "mine")),
    ],
)
def test_default_session_agrees_with_planet(
    env: dict[str, str],
    file: dict[str, str] | None,
    expected: tuple[str, str | None],
    clean_env: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Where planet documents its choice, ours is the same credential, and client credentials
    keep their tokens in the same profile directory as planet's (planet-m2m-<client id>)."""
    PlanetHome().write_auth_client("mine", AuthClientConfig.user("mine-client"))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    if file is not None:
        (clean_env / ".planet.json").write_text(json.dumps(file))
    assert _planet_choice() == expected
    assert _our_choice() == expected


# -- planet.Session with our auth ----------------------------------------------------------------


class _LocalApi:
    """A real HTTP/1.1 API on 127.0.0.1, served in the test's own event loop: it accepts only
    the peer's tokens for api.planet.com (signature, issuer, audience, expiry) and counts them.

    It runs in the test's loop rather than in threads: hundreds of handler threads contending
    for the GIL with the event loop would make the concurrency test slow, not more real.
    """

    def __init__(self, verifier: VerifyingApi, port: int) -> None:
        self.verifier = verifier
        self.origin = f"http://127.0.0.1:{port}"
        self.accepted = 0
        self.rejected = 0
        self.tokens: set[str] = set()

    def _respond(self, request: h11.Request) -> tuple[int, bytes]:
        header = dict(request.headers).get(b"authorization", b"").decode()
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not self.verifier.verify(token):
            self.rejected += 1
            return 401, b'{"message": "unauthorized"}'
        self.accepted += 1
        self.tokens.add(token)
        return 200, json.dumps({"path": request.target.decode()}).encode()

    async def handle(self, stream: anyio.abc.SocketStream) -> None:
        connection = h11.Connection(h11.SERVER)
        request: h11.Request | None = None
        async with stream:
            while True:
                event = connection.next_event()
                if event is h11.NEED_DATA:
                    try:
                        connection.receive_data(await stream.receive())
                    except (anyio.EndOfStream, anyio.BrokenResourceError):
                        connection.receive_data(b"")
                elif isinstance(event, h11.Request):
                    request = event
                elif isinstance(event, h11.EndOfMessage):
                    assert request is not None
                    status, body = self._respond(request)
                    headers = [
                        ("content-type", "application/json"),
                        ("content-length", str(len(body))),
                    ]
                    for outgoing in (
                        h11.Response(status_code=status, headers=headers),
                        h11.Data(data=body),
                        h11.EndOfMessage(),
                    ):
                        await stream.send(connection.send(outgoing))
                    if connection.our_state is not h11.DONE:
                        return
                    connection.start_next_cycle()
                else:  # ConnectionClosed (or a client that wants more than HTTP/1.1): done
                    return


@asynccontextmanager
async def _local_api(peer: Peer) -> AsyncIterator[_LocalApi]:
    """Serve a `_LocalApi` on an ephemeral port for the duration of the block."""
    verifier = await anyio.to_thread.run_sync(VerifyingApi, peer.issuer)
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)  # noqa: S610 - not Django
    api = _LocalApi(verifier, port)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, api.handle)
        try:
            yield api
        finally:
            tg.cancel_scope.cancel()


@pytest.fixture
def unthrottled_sdk(monkeypatch: pytest.MonkeyPatch) -> None:
    """planet.Session spaces requests 100 ms apart (200 would take 20 s): lift that cadence. Its
    cap of 50 requests in flight stays, as in real use."""
    monkeypatch.setattr(planet.http, "RATE_LIMIT", 0)


@ASYNCIO_ONLY
async def test_planet_session_uses_our_auth(peer: Peer) -> None:
    """planet.Session(auth=<ours>): the SDK's DataClient and raw requests reach a real local
    API with our bearer token, obtained once."""
    PlanetHome().write_auth_client("svc", _m2m_profile(peer))
    async with _local_api(peer) as local_api:
        auth = PlanetAuth.from_profile("svc", allowed_origins=[local_api.origin])
        async with planet.Session(auth=auth) as session:
            data = planet.DataClient(session, base_url=f"{local_api.origin}/data/v1")
            item = await data.get_item("PSScene", "20250101_000000_00_0000")
            assert item == {"path": "/data/v1/item-types/PSScene/items/20250101_000000_00_0000"}
            response = await session.request("GET", f"{local_api.origin}/data/v1/searches")
            assert response.json() == {"path": "/data/v1/searches"}
            assert session.outcomes == {"Successful": 2}  # no retries hid a failure
        assert local_api.accepted == 2
        assert local_api.rejected == 0
        assert len(local_api.tokens) == 1
        assert peer.grants("client_credentials") == 1


@ASYNCIO_ONLY
async def test_planet_session_renews_an_expired_token_once_under_concurrency(
    peer: Peer, unthrottled_sdk: None, clean_env: Path
) -> None:
    """200 concurrent planet.Session requests at an expired saved token: exactly one token
    request at the peer, and every request carries the one new token."""
    PlanetHome().write_auth_client("svc", _m2m_profile(peer))
    now = time.time()
    stale = TokenSet(
        access_token=SecretStr("expired-token"),
        issued_at=now - 120,
        expires_at=now - 60,
        scope="api:read",
    )
    await FileStorage(clean_env / ".planet").save("svc", stale)
    peer.set_token_delay(300)  # the renewal is still in flight when all 200 have asked for it

    statuses: list[int] = []
    async with _local_api(peer) as local_api:
        auth = PlanetAuth.from_profile("svc", allowed_origins=[local_api.origin])
        async with planet.Session(auth=auth) as session:

            async def one(index: int) -> None:
                url = f"{local_api.origin}/data/v1/items/{index}"
                statuses.append((await session.request("GET", url)).status_code)

            async with anyio.create_task_group() as tg:
                for index in range(200):
                    tg.start_soon(one, index)
            assert session.outcomes == {"Successful": 200}  # no retries hid a failure

        assert statuses == [200] * 200
        assert peer.grants("client_credentials") == 1
        assert local_api.accepted == 200
        assert local_api.rejected == 0
        assert len(local_api.tokens) == 1
        (token,) = local_api.tokens
        assert _token_file(clean_env, "svc")["access_token"] == token
