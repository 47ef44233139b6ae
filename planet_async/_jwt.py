"""JWTs the client reads but cannot trust, and client assertions it signs (RFC 7523)."""

from __future__ import annotations

import contextlib
import json
import secrets
import warnings
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import (
    load_der_private_key,
    load_pem_private_key,
)
from cryptography.utils import CryptographyDeprecationWarning
from joserfc import jwk, jws, jwt
from joserfc.errors import JoseError
from joserfc.jwa import JWSAlgModel

from ._errors import ConfigurationError

__all__ = [
    "PrivateKey",
    "assertion_algorithm",
    "check_signing_key",
    "load_private_key",
    "read_claims_unverified",
    "sign_client_assertion",
]

PrivateKey = jwk.RSAKey | jwk.ECKey | jwk.OKPKey

# The JWS algorithms a client assertion can be signed with, per key; the first is the default.
# "EdDSA" comes first for Edwards curves because servers (Keycloak among them) do not know
# RFC 9864's "Ed25519" and "Ed448" yet; the signature is the same.
_RSA_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
_CURVE_ALGORITHMS = {
    "P-256": ("ES256",),
    "P-384": ("ES384",),
    "P-521": ("ES512",),
    "secp256k1": ("ES256K",),
    "Ed25519": ("EdDSA", "Ed25519"),
    "Ed448": ("EdDSA", "Ed448"),
}
_SIGNING_KEY_TYPES = ("RSA", "EC", "OKP")
_SUPPORTED = "an RSA key, an EC key on P-256, P-384, P-521 or secp256k1, or an Ed25519 or Ed448 key"


class _AssertionRegistry(jws.JWSRegistry):
    """Signs with exactly the algorithms it is given, without joserfc's warning for "EdDSA".

    joserfc warns on every use that RFC 9864 deprecates the name "EdDSA"; it is still the name
    servers accept, and the caller has no way to act on the warning.
    """

    def get_alg(self, name: str) -> JWSAlgModel:
        if name == "EdDSA" and self.allowed and name in self.allowed:
            return self.algorithms[name]
        return super().get_alg(name)


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
    except (JoseError, ValueError, UnicodeError, RecursionError):
        return None
    return claims if isinstance(claims, dict) else None


def load_private_key(
    key: str | bytes | Mapping[str, Any], password: str | None = None
) -> PrivateKey:
    """Load a private key that can sign client assertions.

    Args:
        key: PEM text or bytes, DER bytes (PKCS#8 or traditional), or a JWK as a dict.
        password: The password of an encrypted PEM or DER key.

    Raises:
        ConfigurationError: The key cannot be read, is encrypted and the password is missing or
            wrong, or is not an RSA, EC (P-256, P-384, P-521, secp256k1), Ed25519 or Ed448
            private key.
    """
    if isinstance(key, Mapping):
        return _import_jwk(key)
    data = key.encode() if isinstance(key, str) else key
    secret = password.encode() if password else None
    try:
        with warnings.catch_warnings():
            # A DSA key is refused below with a ConfigurationError; cryptography (>= 51) warning
            # that DSA is deprecated while loading it must not pre-empt that, under -W error too.
            warnings.filterwarnings("ignore", "DSA is deprecated", CryptographyDeprecationWarning)
            if isinstance(key, str) or b"-----BEGIN" in data:
                native = load_pem_private_key(data, secret)
            else:
                native = load_der_private_key(data, secret)
    except TypeError as exc:
        if secret is None:
            raise ConfigurationError(
                "the private key for private_key_jwt is encrypted: give its password"
            ) from exc
        raise ConfigurationError(
            "the private key for private_key_jwt is not encrypted, but a password was given: "
            "leave the password out"
        ) from exc
    except (ValueError, UnsupportedAlgorithm) as exc:
        hint = "check the password, and " if secret is not None else ""
        raise ConfigurationError(
            f"the private key for private_key_jwt could not be loaded: {hint}"
            f"give {_SUPPORTED} as PEM, DER or JWK"
        ) from exc
    return _import_native(native)


def _import_native(native: object) -> PrivateKey:
    if isinstance(native, rsa.RSAPrivateKey):
        rsa_key: jwk.RSAKey = jwk.RSAKey.import_key(native)
        return rsa_key
    if isinstance(native, ec.EllipticCurvePrivateKey):
        ec_key: jwk.ECKey = jwk.ECKey.import_key(native)
        return _signing_key(ec_key, f"an EC key on curve {native.curve.name}")
    if isinstance(native, (ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey)):
        okp_key: jwk.OKPKey = jwk.OKPKey.import_key(native)
        return _signing_key(okp_key, f"an {okp_key.curve_name} key")
    raise _unsupported(f"a {type(native).__name__.removesuffix('PrivateKey')} key")


def _import_jwk(data: Mapping[str, Any]) -> PrivateKey:
    kty, crv = data.get("kty"), data.get("crv")
    if kty not in _SIGNING_KEY_TYPES:
        raise _unsupported(f"a JWK whose kty is {kty!r}")
    if kty != "RSA" and not (isinstance(crv, str) and crv in _CURVE_ALGORITHMS):
        raise _unsupported(f"an {kty} JWK whose crv is {crv!r}")
    try:
        loaded = jwk.import_key(dict(data))
    except (JoseError, ValueError, TypeError, LookupError) as exc:
        raise ConfigurationError(
            f"the {kty} JWK for private_key_jwt could not be loaded: it lacks members or has "
            "malformed ones"
        ) from exc
    if not loaded.is_private:
        raise ConfigurationError("private_key_jwt needs a private key; this JWK is a public key")
    assert isinstance(loaded, (jwk.RSAKey, jwk.ECKey, jwk.OKPKey))
    return _signing_key(loaded, f"an {kty} JWK whose crv is {crv!r}")


def _signing_key(key: PrivateKey, description: str) -> PrivateKey:
    if not _algorithms_for(key):
        raise _unsupported(description)
    return key


def _unsupported(what: str) -> ConfigurationError:
    return ConfigurationError(f"private_key_jwt cannot sign with {what}: give {_SUPPORTED}")


def _algorithms_for(key: PrivateKey) -> tuple[str, ...]:
    found: tuple[str, ...] = ()
    if isinstance(key, jwk.RSAKey):
        found = _RSA_ALGORITHMS
    else:
        with contextlib.suppress(KeyError):  # an EC curve JOSE has no name for
            found = _CURVE_ALGORITHMS.get(key.curve_name, ())
    # An older joserfc may lack some (ES256K, the RFC 9864 names).
    return tuple(name for name in found if name in jws.JWSRegistry.algorithms)


def assertion_algorithm(key: PrivateKey, algorithm: str | None = None) -> str:
    """The JWS algorithm to sign with `key`: `algorithm` if it fits the key, else the default.

    The default is RS256 for RSA, ES256, ES384, ES512 or ES256K by EC curve, and EdDSA for
    Ed25519 and Ed448.

    Raises:
        ConfigurationError: `algorithm` cannot be used with this key.
    """
    usable = _algorithms_for(key)
    if algorithm is None:
        return usable[0]
    if algorithm not in usable:
        curve = f" on {key.curve_name}" if not isinstance(key, jwk.RSAKey) else ""
        raise ConfigurationError(
            f"private_key_jwt cannot sign with {algorithm!r} and a {key.key_type} key{curve}: "
            f"use {', '.join(usable)}, or leave the algorithm out"
        )
    return algorithm


def check_signing_key(key: PrivateKey, algorithm: str | None = None) -> str:
    """Check, with a trial signature, that `key` signs with `algorithm`; return the algorithm.

    The trial finds what the tables cannot, such as an RSA key too small for PS512.

    Raises:
        ConfigurationError: `algorithm` does not fit the key, or signing with it fails.
    """
    alg = assertion_algorithm(key, algorithm)
    try:
        jws.serialize_compact(
            {"alg": alg}, b"trial", key, registry=_AssertionRegistry(algorithms=[alg])
        )
    except (JoseError, ValueError, TypeError) as exc:
        raise ConfigurationError(
            f"private_key_jwt cannot sign with {alg!r} and this {key.key_type} key (is the key "
            "too small for it?): use a larger key or another algorithm"
        ) from exc
    return alg


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

    Raises:
        ConfigurationError: `algorithm` cannot be used with this key.
    """
    alg = assertion_algorithm(key, algorithm)
    header: dict[str, Any] = {"alg": alg}
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
    return jwt.encode(header, claims, key, registry=_AssertionRegistry(algorithms=[alg]))
