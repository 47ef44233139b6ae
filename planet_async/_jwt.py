"""JWTs the client reads but cannot trust, and client assertions it signs (RFC 7523)."""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from joserfc import jwk, jws, jwt
from joserfc.errors import JoseError

from ._errors import ConfigurationError

__all__ = ["PrivateKey", "load_private_key", "read_claims_unverified", "sign_client_assertion"]

PrivateKey = jwk.RSAKey | jwk.ECKey

_ALG_FOR_KEY = {"RSA": "RS256", "EC": "ES256"}


def read_claims_unverified(token: str) -> dict[str, Any] | None:
    """Return a compact JWS's claims without verifying its signature, or None if it is not one.

    The client has no business trusting an access token (it is meant for the API, not for us),
    so this is used only to learn an `exp` when the token response gave no `expires_in`.
    """
    if token.count(".") != 2:
        return None
    try:
        payload = jws.extract_compact(token.encode("ascii")).payload
        claims = json.loads(payload)
    except (JoseError, ValueError, UnicodeError):
        return None
    return claims if isinstance(claims, dict) else None


def load_private_key(
    key: str | bytes | Mapping[str, Any], password: str | None = None
) -> PrivateKey:
    """Load an RSA or EC private key from PEM text or a JWK dict.

    Raises:
        ConfigurationError: The key cannot be read, or is not an RSA or EC private key.
    """
    try:
        if isinstance(key, Mapping):
            loaded = jwk.import_key(dict(key))
        else:
            data = key.encode() if isinstance(key, str) else key
            loaded = _import_pem(data, password)
    except (JoseError, ValueError, TypeError) as exc:
        raise ConfigurationError(
            "private key for private_key_jwt could not be loaded: "
            "give an RSA or EC (P-256) private key as PEM or JWK"
        ) from exc
    if not isinstance(loaded, (jwk.RSAKey, jwk.ECKey)) or not loaded.is_private:
        raise ConfigurationError("private_key_jwt needs an RSA or EC private key")
    return loaded


def _import_pem(data: bytes, password: str | None) -> PrivateKey:
    native = load_pem_private_key(data, password.encode() if password else None)
    if isinstance(native, rsa.RSAPrivateKey):
        rsa_key: jwk.RSAKey = jwk.RSAKey.import_key(native)
        return rsa_key
    if isinstance(native, ec.EllipticCurvePrivateKey):
        ec_key: jwk.ECKey = jwk.ECKey.import_key(native)
        return ec_key
    raise ValueError("unsupported key type")


def algorithm_for(key: PrivateKey) -> str:
    """The JWS algorithm used for a key: RS256 for RSA, ES256 for EC P-256."""
    return _ALG_FOR_KEY[key.key_type]


def sign_client_assertion(
    key: PrivateKey,
    *,
    client_id: str,
    audience: str,
    now: float,
    lifetime: float = 60.0,
    algorithm: str | None = None,
    key_id: str | None = None,
) -> str:
    """Sign a client assertion for `private_key_jwt` (RFC 7523 section 3, RFC 7521 section 4.2).

    `iss` and `sub` are the client id, `aud` the token endpoint, `jti` unique per call, and the
    assertion lives for `lifetime` seconds so a captured one is soon useless.
    """
    header: dict[str, Any] = {"alg": algorithm or algorithm_for(key)}
    if key_id or key.kid:
        header["kid"] = key_id or key.kid
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": audience,
        "jti": secrets.token_urlsafe(24),
        "iat": int(now),
        "exp": int(now + lifetime),
    }
    return jwt.encode(header, claims, key)
