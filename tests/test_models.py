"""TokenSet: reading token responses and the planet CLI's token.json, and keeping secrets."""

from __future__ import annotations

import pytest
from joserfc import jwt
from joserfc.jwk import OctKey

from planet_async import TokenSet


def _jwt(**claims) -> str:
    return jwt.encode({"alg": "HS256"}, claims, OctKey.generate_key(256))


def test_expires_in_is_measured_from_receipt() -> None:
    """`expires_in` counts from the local receipt time, whatever a JWT inside says."""
    access = _jwt(exp=5, iat=1)
    token = TokenSet.from_response({"access_token": access, "expires_in": 60}, received_at=1000.0)
    assert token.expires_at == 1060.0
    assert token.lifetime == 60.0


def test_jwt_exp_is_the_fallback_and_opaque_tokens_have_no_expiry() -> None:
    """Without `expires_in`, a JWT's `exp` is used; an opaque token's expiry is unknown."""
    jwt_token = TokenSet.from_response({"access_token": _jwt(exp=2000)}, received_at=1000.0)
    assert jwt_token.expires_at == 2000.0
    opaque = TokenSet.from_response({"access_token": "opaque-abc"}, received_at=1000.0)
    assert opaque.expires_at is None
    assert opaque.lifetime is None


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"access_token": ""},
        {"access_token": 5},
        {"access_token": "a", "expires_in": "soon"},
        {"access_token": "a", "expires_in": -1},
        {"access_token": "a", "expires_in": True},
        {"access_token": "a", "token_type": "DPoP"},
    ],
)
def test_unusable_responses_are_refused(payload: dict) -> None:
    """Malformed token responses raise ValueError instead of producing a broken token set."""
    with pytest.raises(ValueError, match=r"access_token|expires_in|token_type"):
        TokenSet.from_response(payload, received_at=0.0)


def test_planet_token_file_round_trip_keeps_unknown_keys() -> None:
    """to_json_dict writes the planet CLI's layout (`_iat`, `_exp`) and reads back the same."""
    response = {
        "access_token": "at",
        "expires_in": 3600,
        "refresh_token": "rt",
        "scope": "planet offline_access",
        "token_type": "Bearer",
        "id_token": "idt",
        "custom": {"kept": True},
    }
    token = TokenSet.from_response(response, received_at=1_795_920_600.5)
    data = token.to_json_dict()
    assert data["_iat"] == 1_795_920_600
    assert data["_exp"] == 1_795_924_200
    assert data["expires_in"] == 3600
    assert data["custom"] == {"kept": True}
    again = TokenSet.from_json_dict(data)
    assert again.refresh_token.get_secret_value() == "rt"
    assert again.expires_at == 1_795_924_200
    assert again.extra == {"custom": {"kept": True}}


def test_planet_written_file_without_iat_uses_the_jwt() -> None:
    """A token.json without `_iat`/`_exp` falls back to the JWT's claims, not to epoch zero."""
    data = {"access_token": _jwt(iat=1000, exp=4600), "expires_in": 3600, "token_type": "Bearer"}
    token = TokenSet.from_json_dict(data)
    assert token.issued_at == 1000.0
    assert token.expires_at == 4600.0


def test_repr_hides_tokens() -> None:
    """Neither repr nor str of a token set shows a token."""
    token = TokenSet.from_response(
        {"access_token": "secret-at", "refresh_token": "secret-rt", "id_token": "secret-id"},
        received_at=0.0,
    )
    for text in (repr(token), str(token)):
        assert "secret-" not in text
