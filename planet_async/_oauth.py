"""The token endpoint: client authentication, token requests, error parsing, server discovery.

The protocol logic here builds plain requests and interprets plain responses; sending them is the
job of an `HttpTransport` (`_http.py` for httpx, the default), so this module never touches an
HTTP library itself. URLs are checked by the one URL policy, `_urls`.
"""

from __future__ import annotations

import base64
import dataclasses
import email.utils
import json
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import timezone
from typing import Any
from urllib.parse import quote_plus, urlsplit

import anyio
import anyio.lowlevel
from pydantic import BaseModel, ConfigDict, PrivateAttr, SecretStr, field_validator

from ._errors import (
    AuthServerError,
    AuthServerUnavailable,
    ConfigurationError,
    InvalidClientError,
    InvalidGrantError,
    InvalidTokenResponse,
    OAuthError,
    fresh_copy,
)
from ._http import HttpxTransport
from ._jwt import PrivateKey, check_signing_key, load_private_key, sign_client_assertion
from ._models import TokenSet
from ._redact import redact, require_header_safe
from ._transport import HttpRequest, HttpResponse, HttpTransport
from ._urls import require_issuer, require_secure_url

__all__ = [
    "AuthorizationServer",
    "ClientAuth",
    "ClientSecretBasic",
    "ClientSecretPost",
    "PrivateKeyJWT",
    "PublicClient",
    "ServerMetadata",
    "TokenRequest",
    "parse_token_response",
]

logger = logging.getLogger(__name__)

Clock = Callable[[], float]

DEFAULT_TIMEOUT = 10.0
"""Seconds any one call to an authorization server may take, from connect to the last byte."""


# -- client authentication (RFC 6749 section 2.3, OIDC Core section 9, RFC 7523) -----------------


class ClientAuth(BaseModel):
    """How a client proves its identity at the token endpoint."""

    # A validation error must not quote its input back: the input holds the secret or key.
    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    client_id: str

    def apply(
        self, headers: dict[str, str], form: dict[str, str], *, endpoint: str, now: float
    ) -> None:
        """Add this client's credentials to a token request's headers or form."""
        form["client_id"] = self.client_id


class PublicClient(ClientAuth):
    """A public client (a native app): it sends its `client_id` and no secret."""


class ClientSecretBasic(ClientAuth):
    """`client_secret_basic`: the client id and secret in an HTTP Basic header."""

    client_secret: SecretStr

    def apply(
        self, headers: dict[str, str], form: dict[str, str], *, endpoint: str, now: float
    ) -> None:
        # RFC 6749 2.3.1 and appendix B: both parts are form-urlencoded (a space becomes "+")
        # before they are joined and encoded.
        user = quote_plus(self.client_id, safe="")
        password = quote_plus(self.client_secret.get_secret_value(), safe="")
        encoded = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        headers["Authorization"] = f"Basic {encoded}"


class ClientSecretPost(ClientAuth):
    """`client_secret_post`: the client id and secret in the request body."""

    client_secret: SecretStr

    def apply(
        self, headers: dict[str, str], form: dict[str, str], *, endpoint: str, now: float
    ) -> None:
        form["client_id"] = self.client_id
        form["client_secret"] = self.client_secret.get_secret_value()


class PrivateKeyJWT(ClientAuth):
    """`private_key_jwt`: a short-lived assertion signed with the client's private key.

    The key is loaded, and the algorithm checked against it, when the client is built, so a key
    that cannot sign fails here and not at the first token request.

    Attributes:
        client_id: The registered client id.
        private_key: An RSA, EC (P-256, P-384, P-521, secp256k1), Ed25519 or Ed448 private key:
            PEM text or bytes, DER bytes (PKCS#8 or traditional), or a JWK (JSON text or dict).
        password: The password of an encrypted PEM or DER key.
        key_id: The `kid` to put in the assertion header, if the key does not carry one.
        algorithm: Overrides the signing algorithm. By default RS256 for RSA; ES256, ES384,
            ES512 or ES256K by EC curve; EdDSA for Ed25519 and Ed448.
        assertion_lifetime: Seconds the assertion is valid; keep it short.

    Raises:
        ConfigurationError: The key cannot be loaded or cannot sign, the algorithm does not fit
            it, or the lifetime is not a positive number of seconds.
    """

    private_key: SecretStr
    password: SecretStr | None = None
    key_id: str | None = None
    algorithm: str | None = None
    assertion_lifetime: float = 60.0
    _key: PrivateKey | None = PrivateAttr(default=None)

    def __init__(self, **data: Any) -> None:
        if "private_key" in data:
            data["private_key"] = _key_text(data["private_key"])
        super().__init__(**data)
        # Loaded after validation, not in it: pydantic would turn the ConfigurationError into a
        # ValidationError, and a bad key is a configuration error.
        self._key = self._load_key()

    @field_validator("private_key", mode="before")
    @classmethod
    def _key_as_text(cls, value: object) -> object:
        return _key_text(value)

    def _load_key(self) -> PrivateKey:
        if not (math.isfinite(self.assertion_lifetime) and self.assertion_lifetime > 0):
            raise ConfigurationError(
                "assertion_lifetime for private_key_jwt must be a positive number of seconds"
            )
        text = self.private_key.get_secret_value()
        source: str | bytes | dict[str, Any]
        if text.lstrip().startswith("{"):
            try:
                source = json.loads(text)
            except (ValueError, RecursionError):
                raise ConfigurationError(
                    "the private key for private_key_jwt is not valid JSON (JWK)"
                ) from None
        elif "-----BEGIN" in text:
            source = text
        else:
            try:
                source = base64.b64decode(text, validate=True)
            except ValueError:
                raise ConfigurationError(
                    "the private key for private_key_jwt is not PEM, DER or a JWK"
                ) from None
        password = self.password.get_secret_value() if self.password else None
        key = load_private_key(source, password)
        check_signing_key(key, self.algorithm)
        return key

    def apply(
        self, headers: dict[str, str], form: dict[str, str], *, endpoint: str, now: float
    ) -> None:
        form["client_id"] = self.client_id
        form["client_assertion_type"] = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
        if self._key is None:  # built without __init__ (model_validate, model_construct)
            self._key = self._load_key()
        form["client_assertion"] = sign_client_assertion(
            self._key,
            client_id=self.client_id,
            audience=endpoint,
            now=now,
            lifetime=self.assertion_lifetime,
            algorithm=self.algorithm,
            key_id=self.key_id,
        )


def _key_text(value: object) -> object:
    """Key material as the text kept in `PrivateKeyJWT.private_key`: PEM or JWK JSON as it is,
    DER as base64 (a `SecretStr` holds text, and DER is binary).

    Raises:
        ConfigurationError: A JWK dict that cannot be JSON.
    """
    if isinstance(value, Mapping):
        try:
            return json.dumps(dict(value))
        except (TypeError, ValueError, RecursionError):
            raise ConfigurationError(
                "the JWK for private_key_jwt must hold only JSON values (strings for its members)"
            ) from None
    if isinstance(value, (bytes, bytearray)):
        data = bytes(value)
        if data.lstrip().startswith(b"{") or b"-----BEGIN" in data:
            return data.decode("utf-8", "replace")
        return base64.b64encode(data).decode("ascii")
    return value


# -- responses ------------------------------------------------------------------------------------


def parse_retry_after(value: str | None, *, now: float) -> float | None:
    """Seconds to wait from a `Retry-After` header (delta-seconds or an HTTP date), if valid."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        # An HTTP date is always GMT, even in the asctime form that names no zone (RFC 9110 5.6.7).
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, when.timestamp() - now)


def _quoted(text: str, response: HttpResponse) -> str:
    """Text from a server's response, fit for a message: no secret of the request it answers,
    and no control characters."""
    text = redact(text, response.request_secrets)
    return "".join(c if c.isprintable() else "?" for c in text[:500])


def _describe_body(response: HttpResponse) -> str:
    content_type = response.headers.get("content-type", "").split(";")[0].strip() or "no type"
    content_type = _quoted(content_type, response)
    return f"HTTP {response.status_code}, {content_type}, {len(response.content)} bytes"


def _json_object(response: HttpResponse) -> dict[str, Any] | None:
    try:
        data = json.loads(response.content)
    except (ValueError, RecursionError):  # RecursionError: nested too deep to parse
        return None
    return data if isinstance(data, dict) else None


def parse_json_response(
    response: HttpResponse, *, endpoint: str, received_at: float, context: str = ""
) -> dict[str, Any]:
    """The JSON object of a successful OAuth response, or the typed error it stands for.

    Args:
        response: What the endpoint answered.
        endpoint: Its URL, for messages.
        received_at: The local clock when the response arrived (for `Retry-After` dates).
        context: Who asked (e.g. ``"client_credentials for client 'abc'"``), for messages.

    Raises:
        AuthServerUnavailable: 5xx or 429; carries `retry_after` when the server sent one.
        OAuthError: An RFC 6749 error response (`InvalidGrantError`, `InvalidClientError`, ...).
        InvalidTokenResponse: Anything else that is not a JSON object.
    """
    who = f" ({context})" if context else ""
    data = _json_object(response)
    status = response.status_code
    if status == 429 or status >= 500:
        code = (
            f": {_quoted(data['error'], response)}"
            if data and isinstance(data.get("error"), str)
            else ""
        )
        raise AuthServerUnavailable(
            f"{endpoint} is unavailable{who}: HTTP {status}{code}; "
            "planet_async will try again after a backoff",
            endpoint=endpoint,
            retry_after=parse_retry_after(response.headers.get("retry-after"), now=received_at),
        )
    if data is not None and isinstance(data.get("error"), str):
        raise _oauth_error(data, response, endpoint=endpoint, who=who)
    if status != 200 or data is None:
        what = "not an OAuth 2.0 response" if status != 200 else "which is not a JSON object"
        raise InvalidTokenResponse(
            f"{endpoint} answered {_describe_body(response)}{who}, {what}; "
            "check the issuer or endpoint settings",
            endpoint=endpoint,
        )
    return data


def parse_token_response(
    response: HttpResponse, *, endpoint: str, received_at: float, context: str = ""
) -> TokenSet:
    """Turn a token endpoint response into a token set or a typed error.

    Raises:
        AuthServerError: As `parse_json_response`; `InvalidTokenResponse` also when the JSON is
            not a usable token response.
    """
    data = parse_json_response(
        response, endpoint=endpoint, received_at=received_at, context=context
    )
    try:
        token = TokenSet.from_response(data, received_at=received_at)
        require_header_safe(token.access_token.get_secret_value(), "access token")
    except ValueError as exc:
        who = f" ({context})" if context else ""
        raise InvalidTokenResponse(
            f"token endpoint {endpoint} sent an unusable token response{who}: {exc}",
            endpoint=endpoint,
        ) from None
    return token


_ADVICE = {
    "invalid_client": "check the client id and its secret or key",
    "invalid_grant": "the grant (refresh token or code) is no longer valid: log in again",
    "invalid_scope": "ask for scopes the client is allowed",
    "unauthorized_client": "the client may not use this grant type",
    "unsupported_grant_type": "the server does not support this grant type",
}


def _oauth_error(
    data: Mapping[str, Any], response: HttpResponse, *, endpoint: str, who: str
) -> OAuthError:
    status = response.status_code
    error = _quoted(str(data["error"]), response)
    description = data.get("error_description")
    description = _quoted(description, response) if isinstance(description, str) else None
    detail = f" ({description})" if description else ""
    advice = _ADVICE.get(error, "see the error code in RFC 6749 section 5.2")
    cls: type[OAuthError] = {
        "invalid_client": InvalidClientError,
        "invalid_grant": InvalidGrantError,
    }.get(error, OAuthError)
    return cls(
        f"{endpoint} refused the request{who}: {error}{detail}; {advice}",
        error=error,
        error_description=description,
        status_code=status,
        endpoint=endpoint,
    )


# -- discovery (OIDC Discovery 1.0, RFC 8414) -----------------------------------------------------


class ServerMetadata(BaseModel):
    """The parts of an authorization server's metadata planet_async uses; the rest is kept."""

    model_config = ConfigDict(frozen=True, extra="allow")

    issuer: str
    token_endpoint: str
    authorization_endpoint: str | None = None
    device_authorization_endpoint: str | None = None
    revocation_endpoint: str | None = None
    introspection_endpoint: str | None = None
    jwks_uri: str | None = None
    userinfo_endpoint: str | None = None


_metadata_cache: dict[str, ServerMetadata] = {}


def _well_known_urls(issuer: str) -> list[str]:
    issuer = issuer.rstrip("/")
    parts = urlsplit(issuer)
    origin = f"{parts.scheme}://{parts.netloc}"
    return [
        f"{issuer}/.well-known/openid-configuration",
        f"{origin}/.well-known/oauth-authorization-server{parts.path}",
    ]


JWKS_REFETCH_INTERVAL = 30.0
"""Seconds between two fetches of a provider's key set prompted by an unknown key id."""


class _KeySetFetch:
    """A fetch of a JWK Set under way on one event loop; callers on that loop share it."""

    __slots__ = ("done", "error", "loop", "result")

    def __init__(self, loop: anyio.lowlevel.EventLoopToken) -> None:
        self.loop = loop
        self.done = anyio.Event()
        self.result: dict[str, Any] = {}
        self.error: Exception | None = None

    async def outcome(self) -> dict[str, Any]:
        await self.done.wait()
        if self.error is not None:
            raise fresh_copy(self.error)
        return self.result


class AuthorizationServer:
    """An OAuth 2.0 authorization server: where tokens come from.

    Endpoints are discovered from the issuer's metadata once per issuer and process; endpoints
    given explicitly win over discovered ones and need no discovery at all.

    Args:
        issuer: The issuer URL (e.g. ``https://login.planet.com/``).
        token_endpoint: The token endpoint, if it should not be discovered.
        transport: What sends the requests; default: httpx, a fresh connection per call.
        timeout: Seconds one call may take in all.
        endpoints: Other explicit endpoints (`device_authorization_endpoint`, ...).
    """

    def __init__(
        self,
        issuer: str | None = None,
        *,
        token_endpoint: str | None = None,
        transport: HttpTransport | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        **endpoints: str,
    ) -> None:
        if issuer is None and token_endpoint is None:
            raise ConfigurationError("give an issuer URL or a token_endpoint")
        if not (math.isfinite(timeout) and timeout > 0):
            raise ConfigurationError("timeout must be a positive number of seconds")
        self.issuer = issuer
        self._explicit = {k: v for k, v in endpoints.items() if v}
        if token_endpoint:
            self._explicit["token_endpoint"] = token_endpoint
        if issuer is not None:
            require_issuer(issuer)
        for url in self._explicit.values():
            require_secure_url(url, what="authorization server endpoint")
        self._transport = transport
        self.timeout = timeout
        self._jwks: dict[str, Any] | None = None
        self._jwks_at = -math.inf  # `now` of the last fetch of the key set
        self._jwks_fetch: _KeySetFetch | None = None

    def __repr__(self) -> str:
        return f"AuthorizationServer(issuer={self.issuer!r})"

    @property
    def transport(self) -> HttpTransport:
        if self._transport is None:
            self._transport = HttpxTransport()
        return self._transport

    @property
    def loop_free(self) -> bool:
        """Whether requests to this server may be made from any event loop: true with the
        default transport (a fresh connection per call), false with a transport given to it,
        which may belong to its owner's loop."""
        transport = self.transport
        # Exactly ours: a subclass may hold state of its owner's loop.
        return type(transport) is HttpxTransport and transport.loop_free

    async def endpoint(self, name: str) -> str:
        """The URL of endpoint `name` (e.g. ``"token_endpoint"``), discovering it if needed.

        Raises:
            ConfigurationError: The server does not offer that endpoint.
            AuthServerError: Discovery failed.
        """
        if name in self._explicit:
            return self._explicit[name]
        metadata = await self.metadata()
        url = getattr(metadata, name, None) or (metadata.model_extra or {}).get(name)
        if not isinstance(url, str) or not url:
            raise ConfigurationError(f"authorization server {self.issuer} has no {name}")
        return require_secure_url(url, what=f"discovered {name}")

    async def metadata(self) -> ServerMetadata:
        """The server's metadata, fetched once per issuer and cached for the process.

        Raises:
            AuthServerError: No metadata document could be fetched, or it is for another issuer.
        """
        if self.issuer is None:
            raise ConfigurationError("no issuer to discover endpoints from: give them explicitly")
        cached = _metadata_cache.get(self.issuer)
        if cached is not None:
            return cached
        last: AuthServerError | None = None
        for url in _well_known_urls(self.issuer):
            response = await self.transport.send(HttpRequest("GET", url), timeout=self.timeout)
            data = _json_object(response)
            if response.status_code != 200 or data is None:
                last = InvalidTokenResponse(
                    f"no authorization server metadata at {url} ({_describe_body(response)}); "
                    "check the issuer URL, or give token_endpoint explicitly",
                    endpoint=url,
                )
                if response.status_code == 429 or response.status_code >= 500:
                    raise AuthServerUnavailable(str(last), endpoint=url)
                continue
            try:
                metadata = ServerMetadata.model_validate(data)
            except ValueError:
                last = InvalidTokenResponse(
                    f"authorization server metadata at {url} has no token_endpoint", endpoint=url
                )
                continue
            if metadata.issuer.rstrip("/") != self.issuer.rstrip("/"):
                # RFC 8414 section 3.3: metadata for another issuer must not be used.
                raise AuthServerError(
                    f"metadata at {url} is for issuer {metadata.issuer!r}, "
                    f"not {self.issuer!r}; check the issuer URL",
                    endpoint=url,
                )
            _metadata_cache[self.issuer] = metadata
            return metadata
        assert last is not None
        raise last

    async def jwks(self, *, refresh: bool = False, now: float | None = None) -> dict[str, Any]:
        """The server's signing keys (its JWK Set, from the discovered `jwks_uri`), cached on
        this object.

        `refresh` fetches them again (a key the cache lacks may be a new one), but at most once
        every `JWKS_REFETCH_INTERVAL` seconds by `now` (default: the system clock): an ID token
        naming a key the set fetched a moment ago lacked does not send another request, so
        callbacks with made-up key ids cannot make this process flood the provider. Callers
        that ask while a fetch is under way on the same event loop share its result, or its
        error: one request however many logins complete at once.

        Raises:
            ConfigurationError: The server publishes no `jwks_uri`.
            AuthServerError: The key set could not be fetched or is not a JWK Set.
        """
        cached = self._jwks
        if cached is not None and not refresh:
            return cached
        loop = anyio.lowlevel.current_token()
        fetch = self._jwks_fetch
        if fetch is not None and fetch.loop == loop:
            return await fetch.outcome()
        when = time.time() if now is None else now
        if cached is not None and abs(when - self._jwks_at) < JWKS_REFETCH_INTERVAL:
            return cached
        fetch = self._jwks_fetch = _KeySetFetch(loop)
        try:
            fetch.result = await self._fetch_jwks()
        except Exception as exc:
            fetch.error = exc
            raise
        except BaseException:
            fetch.error = AuthServerError(f"fetching the key set of {self.issuer} was cancelled")
            raise
        finally:
            fetch.done.set()
            if self._jwks_fetch is fetch:
                self._jwks_fetch = None
        self._jwks, self._jwks_at = fetch.result, when
        return fetch.result

    async def _fetch_jwks(self) -> dict[str, Any]:
        url = await self.endpoint("jwks_uri")
        response = await self.transport.send(HttpRequest("GET", url), timeout=self.timeout)
        data = _json_object(response)
        if response.status_code == 429 or response.status_code >= 500:
            raise AuthServerUnavailable(
                f"{url} is unavailable: HTTP {response.status_code}", endpoint=url
            )
        if response.status_code != 200 or data is None or not isinstance(data.get("keys"), list):
            raise InvalidTokenResponse(
                f"no JSON Web Key Set at {url} ({_describe_body(response)}); check the issuer",
                endpoint=url,
            )
        return data

    async def post_form(
        self,
        endpoint_name: str,
        form: Mapping[str, str],
        client: ClientAuth,
        *,
        clock: Clock,
        context: str = "",
    ) -> tuple[str, HttpResponse]:
        """POST `form`, with the client's credentials, to one of the server's endpoints.

        Returns:
            The endpoint's URL and its response, whatever the status.

        Raises:
            AuthServerUnavailable: The server could not be reached or did not answer in time.
        """
        endpoint, request = await self._form_request(
            endpoint_name, form, client, clock=clock, context=context
        )
        response = await self.transport.send(request, timeout=self.timeout)
        return endpoint, dataclasses.replace(response, request_secrets=frozenset(request.secrets()))

    async def _form_request(
        self,
        endpoint_name: str,
        form: Mapping[str, str],
        client: ClientAuth,
        *,
        clock: Clock,
        context: str,
    ) -> tuple[str, HttpRequest]:
        endpoint = await self.endpoint(endpoint_name)
        # RFC 7523 3: a client assertion's audience is the token endpoint, wherever it is sent.
        audience = (
            endpoint if endpoint_name == "token_endpoint" else await self.endpoint("token_endpoint")
        )
        headers = {"Accept": "application/json"}
        body = dict(form)
        client.apply(headers, body, endpoint=audience, now=clock())
        logger.debug(
            "%s request: %s to %s", endpoint_name, context or body.get("grant_type"), endpoint
        )
        return endpoint, HttpRequest("POST", endpoint, headers=headers, form=body)

    async def token_request(
        self,
        form: Mapping[str, str],
        client: ClientAuth,
        *,
        clock: Clock,
        context: str = "",
        keep_refresh_token: SecretStr | None = None,
    ) -> TokenRequest:
        """A grant's request to the token endpoint, ready to send (the endpoint discovered, the
        client authenticated), and how to read its answer.

        Raises:
            AuthServerError: Discovery failed.
        """
        endpoint, request = await self._form_request(
            "token_endpoint", form, client, clock=clock, context=context
        )
        return TokenRequest(
            request,
            endpoint=endpoint,
            context=context,
            keep_refresh_token=keep_refresh_token,
        )

    async def request_token(
        self,
        form: Mapping[str, str],
        client: ClientAuth,
        *,
        clock: Clock,
        context: str = "",
    ) -> TokenSet:
        """POST a grant to the token endpoint and return the token set it answers with.

        Raises:
            AuthServerError: See `parse_token_response`; also when the server cannot be reached.
        """
        prepared = await self.token_request(form, client, clock=clock, context=context)
        return await prepared.send(self, clock=clock)

    @property
    def helper_process(self) -> bool:
        """Whether token requests to this server may be sent by the program's helper process
        (`_helper`): with the default transport, unless it was made with
        ``helper_process=False``."""
        transport = self.transport
        return type(transport) is HttpxTransport and transport.helper_process


@dataclasses.dataclass(frozen=True)
class TokenRequest:
    """A token request, built and ready to send, and the reading of its answer: the protocol
    logic without the sending, so that the request can be sent from elsewhere (the helper
    process) and its answer read there.

    Attributes:
        request: What to send.
        endpoint: The token endpoint's URL.
        context: What the request is for, for messages (the grant's description).
        keep_refresh_token: Kept when the answer carries no refresh token (RFC 6749 section 6:
            the server may keep the one the client has).
    """

    request: HttpRequest
    endpoint: str
    context: str = ""
    keep_refresh_token: SecretStr | None = None

    def __repr__(self) -> str:
        return f"TokenRequest({self.endpoint}, {self.context!r})"

    async def send(self, server: AuthorizationServer, *, clock: Clock) -> TokenSet:
        """Send it with `server`'s transport and read the answer."""
        response = await server.transport.send(self.request, timeout=server.timeout)
        return self.token(response, received_at=clock())

    def token(self, response: HttpResponse, *, received_at: float) -> TokenSet:
        """The token set `response` carries.

        Raises:
            AuthServerError: See `parse_token_response`.
        """
        response = dataclasses.replace(response, request_secrets=frozenset(self.request.secrets()))
        token = parse_token_response(
            response, endpoint=self.endpoint, received_at=received_at, context=self.context
        )
        if token.refresh_token is None and self.keep_refresh_token is not None:
            token = token.model_copy(update={"refresh_token": self.keep_refresh_token})
        return token


async def revoke_token(
    server: AuthorizationServer,
    client: ClientAuth,
    token: str,
    *,
    hint: str,
    clock: Clock,
) -> bool:
    """Revoke a token at the server (RFC 7009). Returns False if the server cannot revoke.

    Raises:
        AuthServerError: The server failed or refused the request.
    """
    try:
        await server.endpoint("revocation_endpoint")
    except ConfigurationError:
        return False
    endpoint, response = await server.post_form(
        "revocation_endpoint", {"token": token, "token_type_hint": hint}, client, clock=clock
    )
    if response.status_code != 200:
        parse_json_response(response, endpoint=endpoint, received_at=clock())
        raise InvalidTokenResponse(f"{endpoint} answered HTTP {response.status_code}")
    return True


async def token_is_active(
    server: AuthorizationServer,
    client: ClientAuth,
    token: str,
    *,
    hint: str,
    clock: Clock,
) -> bool | None:
    """Ask the server whether `token` is active (RFC 7662 introspection), without spending it.
    A refresh token that was rotated (spent) or revoked is inactive.

    Returns:
        The server's answer; None when it cannot tell: it offers no introspection endpoint, or
        refuses this client introspection (an error other than a 5xx or 429).

    Raises:
        AuthServerUnavailable: The server could not be reached, or answered a 5xx or 429.
    """
    try:
        await server.endpoint("introspection_endpoint")
    except ConfigurationError:
        return None
    endpoint, response = await server.post_form(
        "introspection_endpoint",
        {"token": token, "token_type_hint": hint},
        client,
        clock=clock,
        context="introspection",
    )
    if response.status_code == 429 or response.status_code >= 500:
        raise AuthServerUnavailable(
            f"{endpoint} answered HTTP {response.status_code}",
            endpoint=endpoint,
            retry_after=parse_retry_after(response.headers.get("retry-after"), now=clock()),
        )
    data = _json_object(response)
    if response.status_code != 200 or data is None or not isinstance(data.get("active"), bool):
        logger.info(
            "%s cannot tell whether a token is active (%s)", endpoint, _describe_body(response)
        )
        return None
    return bool(data["active"])


def scope_param(scopes: Sequence[str]) -> dict[str, str]:
    """The `scope` form field for `scopes`, or nothing when there are none."""
    return {"scope": " ".join(scopes)} if scopes else {}
