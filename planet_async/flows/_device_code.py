"""The device authorization grant (RFC 8628): log in on another device by entering a code."""

from __future__ import annotations

import enum
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping

import anyio
from pydantic import BaseModel, ConfigDict, SecretStr

from .._errors import (
    AuthServerUnavailable,
    InvalidTokenResponse,
    LoginDenied,
    LoginTimeout,
    OAuthError,
)
from .._models import TokenSet, load_revealed_json, reveal_json
from .._oauth import AuthorizationServer, ClientAuth, parse_json_response, scope_param
from ._scopes import USER_SCOPES, normalize_scopes

__all__ = ["DeviceAuthorization", "DeviceCodeFlow", "DeviceFlowState"]

logger = logging.getLogger(__name__)

DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
_SLOW_DOWN_STEP = 5.0  # RFC 8628 3.5: each slow_down adds 5 seconds to the interval


class DeviceFlowState(enum.Enum):
    """Where a device login stands."""

    NEW = "new"
    AWAITING_USER = "awaiting_user"
    COMPLETE = "complete"
    DENIED = "denied"
    EXPIRED = "expired"


class DeviceAuthorization(BaseModel):
    """What `DeviceCodeFlow.start` returns: what to show the user, and what to poll with.

    It is serializable (``model_dump_json``), so the two steps can run in different processes;
    the device code inside is a secret and is kept as one.

    Attributes:
        user_code: The code the user types, e.g. ``WDJB-MJHT``.
        verification_uri: Where the user types it.
        verification_uri_complete: A URL with the code in it, for a link or a QR code.
        expires_at: Epoch seconds after which the codes are dead.
        interval: Seconds between polls.
    """

    # A validation error must not quote its input: the input holds the device code.
    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    device_code: SecretStr
    user_code: str
    verification_uri: str
    verification_uri_complete: str | None = None
    expires_at: float
    interval: float

    def to_json(self) -> str:
        """Serialize with the device code in clear, to finish the login in another process."""
        return reveal_json(self)

    @classmethod
    def from_json(cls, text: str | bytes) -> DeviceAuthorization:
        """Load what `to_json` wrote.

        Raises:
            ConfigurationError: `text` is not what `to_json` wrote.
        """
        return load_revealed_json(cls, text, "a device login")

    def instructions(self) -> str:
        """A short text telling the user what to do."""
        text = f"To log in, visit {self.verification_uri} and enter the code {self.user_code}"
        if self.verification_uri_complete:
            text += f"\n(or open {self.verification_uri_complete})"
        return text


class DeviceCodeFlow:
    """A device login as a state machine: `start`, show the user the code, then `complete`.

    Polling honours the server's `interval` (RFC 8628 requires 5 s when it sends none), adds
    5 s on `slow_down`, keeps going on `authorization_pending` and through passing server
    failures, and stops with `LoginDenied` on `access_denied` and `LoginTimeout` on
    `expired_token` or when the code's lifetime is over. It never blocks the event loop, and an
    anyio cancel scope stops it at any point.

    Args:
        server: The authorization server.
        client: The client (`PublicClient` for native apps; confidential clients work too).
        scopes: Scopes to request, as names or one space-separated string; by default
            ``planet`` and ``offline_access``.
        default_interval: Seconds between polls when the server gives no `interval`.
        extra_params: More form fields for the device authorization request.
        clock: Wall-clock seconds; injectable for tests.
        sleep: How to wait between polls; injectable for tests.
    """

    def __init__(
        self,
        server: AuthorizationServer,
        client: ClientAuth,
        *,
        scopes: str | Iterable[str] = USER_SCOPES,
        default_interval: float = 5.0,
        extra_params: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ) -> None:
        self.server = server
        self.client = client
        self.scopes = normalize_scopes(scopes)
        self.default_interval = default_interval
        self.extra_params = dict(extra_params or {})
        self._clock = clock
        self._sleep = sleep
        self.state = DeviceFlowState.NEW

    @property
    def description(self) -> str:
        return f"device login for client {self.client.client_id!r}"

    def __repr__(self) -> str:
        return f"DeviceCodeFlow({self.client.client_id!r}, state={self.state.value})"

    async def start(self) -> DeviceAuthorization:
        """Ask the server for a device code and the user code to show.

        Raises:
            AuthServerError: The server refused or failed.
        """
        form = {**scope_param(self.scopes), **self.extra_params}
        endpoint, response = await self.server.post_form(
            "device_authorization_endpoint",
            form,
            self.client,
            clock=self._clock,
            context=self.description,
        )
        received = self._clock()
        data = parse_json_response(
            response, endpoint=endpoint, received_at=received, context=self.description
        )
        try:
            pending = _device_authorization(data, received, self.default_interval)
        except (KeyError, TypeError, ValueError, OverflowError):
            raise InvalidTokenResponse(
                f"{endpoint} sent an unusable device authorization response "
                "(needs device_code, user_code, verification_uri, expires_in)",
                endpoint=endpoint,
            ) from None
        self.state = DeviceFlowState.AWAITING_USER
        return pending

    async def complete(self, pending: DeviceAuthorization) -> TokenSet:
        """Poll until the user has approved, then return the session's tokens.

        Raises:
            LoginDenied: The user declined.
            LoginTimeout: The code expired before the user approved.
            AuthServerError: The server refused the client or answered nonsense.
        """
        interval = pending.interval
        form = {
            "grant_type": DEVICE_CODE_GRANT,
            "device_code": pending.device_code.get_secret_value(),
        }
        while True:
            if self._clock() + interval >= pending.expires_at:
                self.state = DeviceFlowState.EXPIRED
                raise LoginTimeout(
                    f"the device code expired before the login was approved "
                    f"({self.description}); start again"
                )
            await self._sleep(interval)
            try:
                token = await self.server.request_token(
                    form, self.client, clock=self._clock, context=self.description
                )
            except AuthServerUnavailable as exc:
                # A passing failure is no reason to lose the user's login: wait longer, retry.
                interval = max(interval + _SLOW_DOWN_STEP, exc.retry_after or 0.0)
                logger.warning("%s: %s; polling again in %.0f s", self.description, exc, interval)
                continue
            except OAuthError as exc:
                interval = self._next_interval(exc, interval)
                continue
            self.state = DeviceFlowState.COMPLETE
            return token

    def _next_interval(self, exc: OAuthError, interval: float) -> float:
        if exc.error == "authorization_pending":
            return interval
        if exc.error == "slow_down":
            return interval + _SLOW_DOWN_STEP
        if exc.error == "access_denied":
            self.state = DeviceFlowState.DENIED
            raise LoginDenied(f"the login was declined ({self.description})") from None
        if exc.error == "expired_token":
            self.state = DeviceFlowState.EXPIRED
            raise LoginTimeout(
                f"the device code expired before the login was approved ({self.description}); "
                "start again"
            ) from None
        raise exc


def _device_authorization(
    data: Mapping[str, object], received: float, default_interval: float
) -> DeviceAuthorization:
    expires_in = data["expires_in"]
    interval = data.get("interval", default_interval)
    if not isinstance(expires_in, (int, float)) or isinstance(expires_in, bool):
        raise TypeError("expires_in")
    if not isinstance(interval, (int, float)) or isinstance(interval, bool):
        raise TypeError("interval")
    if not (math.isfinite(expires_in) and expires_in > 0 and math.isfinite(interval)):
        raise ValueError("expires_in or interval out of range")
    complete = data.get("verification_uri_complete")
    return DeviceAuthorization(
        device_code=SecretStr(_text(data["device_code"])),
        user_code=_text(data["user_code"]),
        verification_uri=_text(data.get("verification_uri") or data["verification_url"]),
        verification_uri_complete=complete if isinstance(complete, str) else None,
        expires_at=received + float(expires_in),
        interval=max(float(interval), 0.0),
    )


def _text(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise TypeError("expected a non-empty string")
    return value
