"""Token sets: what a token endpoint returns, as the library keeps it."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Mapping
from typing import Any, TypeGuard, TypeVar

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from ._errors import ConfigurationError
from ._jwt import read_claims_unverified

__all__ = ["TokenSet", "load_revealed_json", "reveal_json"]

_Model = TypeVar("_Model", bound=BaseModel)

# Token response keys TokenSet models itself; anything else is kept in `extra`.
_KNOWN_KEYS = frozenset(
    {
        "access_token",
        "token_type",
        "expires_in",
        "refresh_token",
        "scope",
        "id_token",
        "_iat",
        "_exp",
    }
)


class TokenSet(BaseModel):
    """The tokens of one session, with the times that decide when to renew them.

    `expires_at` comes from `expires_in` measured against the local clock when the response
    arrived (so a skewed server clock does not matter); a JWT access token's `exp`, read without
    trusting the token, is the fallback; None means unknown, and the token is used until the API
    answers 401.

    Attributes:
        access_token: The bearer token.
        token_type: As the server sent it; only bearer tokens are supported.
        issued_at: Epoch seconds when the token was received.
        expires_at: Epoch seconds when it stops working, if known.
        refresh_token: Kept across refreshes that do not return a new one.
        scope: The granted scope, as the server sent it.
        id_token: An OpenID Connect ID token, if one came with the response.
        extra: Other members of the token response, kept so a saved file keeps them.
    """

    # Times are finite (a file can be written back only then), and a validation error must not
    # quote its input: the input holds the tokens.
    model_config = ConfigDict(
        frozen=True, extra="forbid", allow_inf_nan=False, hide_input_in_errors=True
    )

    access_token: SecretStr
    token_type: str = "Bearer"
    issued_at: float
    expires_at: float | None = None
    refresh_token: SecretStr | None = None
    scope: str | None = None
    id_token: SecretStr | None = None
    extra: dict[str, Any] = Field(default_factory=dict)

    @property
    def lifetime(self) -> float | None:
        """Seconds between receipt and expiry, or None if the expiry is unknown."""
        return None if self.expires_at is None else self.expires_at - self.issued_at

    @classmethod
    def from_response(cls, payload: Mapping[str, Any], *, received_at: float) -> TokenSet:
        """Build a token set from a token endpoint's JSON object.

        Raises:
            ValueError: `payload` has no usable `access_token`, or a malformed or out-of-range
                `expires_in`.
        """
        access_token = payload.get("access_token")
        if not isinstance(access_token, str) or not access_token:
            raise ValueError("no access_token in the response")
        token_type = payload.get("token_type", "Bearer")
        if not isinstance(token_type, str) or token_type.lower() != "bearer":
            raise ValueError("token_type is not Bearer")
        expires_at = None
        expires_in = payload.get("expires_in")
        if expires_in is not None:
            expires_at = received_at + _seconds(expires_in)
            if not math.isfinite(expires_at):
                raise ValueError("expires_in is out of range")
        else:
            expires_at = _jwt_exp(access_token)
        scope = _optional_str(payload.get("scope"))
        return _sharing_fields_set(
            cls(
                access_token=SecretStr(access_token),
                # The same few values in every token set: one string each, not one per session.
                token_type=sys.intern(token_type),
                issued_at=received_at,
                expires_at=expires_at,
                refresh_token=_optional_secret(payload.get("refresh_token")),
                scope=sys.intern(scope) if scope is not None else None,
                id_token=_optional_secret(payload.get("id_token")),
                extra={k: v for k, v in payload.items() if k not in _KNOWN_KEYS},
            )
        )

    @classmethod
    def from_json_dict(cls, data: Mapping[str, Any]) -> TokenSet:
        """Read the `planet` CLI's `token.json`: a token response plus `_iat` and `_exp`.

        Raises:
            ValueError: The document is not a usable OAuth token file.
        """
        issued_at = data.get("_iat")
        if _is_number(issued_at):
            token = cls.from_response(data, received_at=float(issued_at))
        else:
            # Without a receipt time `expires_in` means nothing; fall back to the JWT's claims.
            claims = read_claims_unverified(str(data.get("access_token", ""))) or {}
            iat = claims.get("iat")
            rest = {k: v for k, v in data.items() if k != "expires_in"}
            token = cls.from_response(rest, received_at=float(iat) if _is_number(iat) else 0.0)
        exp = data.get("_exp")
        if _is_number(exp):
            token = _sharing_fields_set(token.model_copy(update={"expires_at": float(exp)}))
        return token

    def to_json_dict(self) -> dict[str, Any]:
        """The `token.json` layout the `planet` CLI reads; secrets in clear, so handle with care."""
        data: dict[str, Any] = dict(self.extra)
        data["access_token"] = self.access_token.get_secret_value()
        data["token_type"] = self.token_type
        data["_iat"] = int(self.issued_at)
        if self.expires_at is not None:
            data["expires_in"] = max(0, round(self.expires_at - self.issued_at))
            data["_exp"] = math.floor(self.expires_at)
        if self.refresh_token is not None:
            data["refresh_token"] = self.refresh_token.get_secret_value()
        if self.scope is not None:
            data["scope"] = self.scope
        if self.id_token is not None:
            data["id_token"] = self.id_token.get_secret_value()
        return data

    def same_access_token(self, other: TokenSet | None) -> bool:
        """Whether `other` holds the same access token (compared without exposing either)."""
        return other is not None and (
            other.access_token.get_secret_value() == self.access_token.get_secret_value()
        )

    def same_refresh_token(self, other: TokenSet | None) -> bool:
        """Whether `other` holds the same refresh token (both None counts as the same)."""
        mine = self.refresh_token.get_secret_value() if self.refresh_token else None
        theirs = other.refresh_token.get_secret_value() if other and other.refresh_token else None
        return other is not None and mine == theirs


_ALL_FIELDS = set(TokenSet.model_fields)
"""What pydantic records as given for a token set built with every field: one set shared by
all of them. Per instance it costs 728 bytes, a quarter of a session a `SessionPool` holds."""


def _sharing_fields_set(token: TokenSet) -> TokenSet:
    """`token`, recording its fields as all given (they are) in the set every token set shares.

    Nothing changes the set in place: a frozen model is never assigned to, and `model_copy`
    copies it before adding the updated names (all already in it).
    """
    if token.__pydantic_fields_set__ == _ALL_FIELDS:
        object.__setattr__(token, "__pydantic_fields_set__", _ALL_FIELDS)
    return token


def _seconds(value: object) -> float:
    if isinstance(value, str) and value.strip().isdecimal():
        try:
            value = int(value)
        except ValueError:  # more digits than Python converts
            raise ValueError("expires_in is out of range") from None
    if _is_number(value) and value >= 0:
        return float(value)
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    raise ValueError(f"expires_in is {'out of range' if numeric else 'not a number'}")


def _jwt_exp(token: str) -> float | None:
    claims = read_claims_unverified(token)
    exp = claims.get("exp") if claims else None
    return float(exp) if _is_number(exp) else None


def _is_number(value: object) -> TypeGuard[float]:
    """Whether `value` is a finite number that fits a float (JSON integers have no limit)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _optional_str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _optional_secret(value: object) -> SecretStr | None:
    return SecretStr(value) if isinstance(value, str) and value else None


def reveal_json(model: BaseModel) -> str:
    """A model as JSON with its `SecretStr` fields in clear (``model_dump_json`` masks them)."""
    data = {
        name: value.get_secret_value() if isinstance(value, SecretStr) else value
        for name, value in model
    }
    return json.dumps(data)


def load_revealed_json(cls: type[_Model], text: str | bytes, what: str) -> _Model:
    """Load what `reveal_json` wrote of a `cls` (a pending login, kept by a web service).

    Raises:
        ConfigurationError: `text` is not that; the message quotes nothing of it (it may hold a
            PKCE verifier or a device code).
    """
    try:
        return cls.model_validate_json(text)
    except ValidationError:
        raise ConfigurationError(
            f"this is not {what} written by {cls.__name__}.to_json; start the login again"
        ) from None
