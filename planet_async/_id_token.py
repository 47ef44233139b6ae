"""OpenID Connect ID tokens, verified before anyone is logged in (OIDC Core 3.1.3.7).

The access token is the API's business and is never verified here; the ID token is ours: it
says who logged in, so a web service that keys its users' sessions by its `sub` must know that
the provider signed it, for this client, for this login (`nonce`), and recently.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Mapping
from typing import Any

from joserfc import jwk, jws, jwt
from joserfc.errors import JoseError

from ._errors import ConfigurationError, InvalidIdToken
from ._oauth import AuthorizationServer

__all__ = ["DEFAULT_LEEWAY", "verify_id_token"]

DEFAULT_LEEWAY = 60.0
"""Seconds of clock difference allowed when checking `exp` and `iat`."""

# Signatures with the provider's public keys only: "none" proves nothing, and an HMAC one would
# be keyed with our own client secret.
_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)


async def verify_id_token(
    server: AuthorizationServer,
    id_token: str,
    *,
    client_id: str,
    nonce: str,
    now: float,
    leeway: float = DEFAULT_LEEWAY,
) -> dict[str, Any]:
    """Verify an ID token from `server`'s token endpoint and return its claims.

    The signature is checked against the server's JWK Set (fetched from its discovered
    `jwks_uri`, cached, and fetched again when the token names a key the cache lacks, at most
    once every `JWKS_REFETCH_INTERVAL` seconds);
    then `iss` (the server's issuer), `aud` (`client_id`, and `azp` when present), `exp` and
    `iat` (with `leeway` seconds of clock difference), `nonce` (this login's), and `sub`.

    Raises:
        InvalidIdToken: Any check failed; the message says which, and never quotes the token.
        ConfigurationError: The server has no issuer to check `iss` against, or no `jwks_uri`.
        AuthServerError: The key set could not be fetched.
    """
    if server.issuer is None:
        raise ConfigurationError("an ID token can be verified only with the server's issuer URL")
    try:
        header = jws.extract_compact(id_token.encode("ascii")).headers()
    except (JoseError, ValueError, UnicodeError, RecursionError):
        raise InvalidIdToken("the ID token is not a signed JWT") from None
    alg, kid = header.get("alg"), header.get("kid")
    if alg not in _ALGORITHMS:
        raise InvalidIdToken(
            f"the ID token is signed with {alg!r}; only the provider's public-key signatures "
            f"({', '.join(sorted(_ALGORITHMS))}) are accepted"
        )
    key = _find_key(await server.jwks(now=now), kid, alg)
    if key is None:  # the provider may have rotated its keys since they were cached
        key = _find_key(await server.jwks(refresh=True, now=now), kid, alg)
    if key is None:
        raise InvalidIdToken(f"the provider's key set has no key {kid!r} for {alg}")
    try:
        claims = dict(jwt.decode(id_token, key, algorithms=[alg]).claims)
    except (JoseError, ValueError, TypeError):
        raise InvalidIdToken("the ID token's signature does not verify") from None
    _check_claims(
        claims, issuer=server.issuer, client_id=client_id, nonce=nonce, now=now, leeway=leeway
    )
    return claims


def _find_key(key_set: Mapping[str, Any], kid: object, alg: str) -> jwk.Key | None:
    candidates = [
        entry
        for entry in key_set.get("keys", [])
        if isinstance(entry, dict)
        and entry.get("use", "sig") == "sig"
        and entry.get("alg", alg) == alg
        and (kid is None or entry.get("kid") == kid)
    ]
    if len(candidates) != 1:  # none, or no kid to choose between several
        return None
    try:
        return jwk.import_key(candidates[0])
    except (JoseError, ValueError, TypeError, LookupError):
        return None


def _check_claims(
    claims: Mapping[str, Any],
    *,
    issuer: str,
    client_id: str,
    nonce: str,
    now: float,
    leeway: float,
) -> None:
    iss = claims.get("iss")
    if not isinstance(iss, str) or iss.rstrip("/") != issuer.rstrip("/"):
        raise InvalidIdToken(f"the ID token was issued by {_shown(iss)}, not {issuer!r}")
    aud = claims.get("aud")
    audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
    if client_id not in audiences:
        raise InvalidIdToken(f"the ID token is for {_shown(aud)}, not client {client_id!r}")
    azp = claims.get("azp")
    if azp is not None and azp != client_id:
        raise InvalidIdToken(f"the ID token was issued to {_shown(azp)}, not {client_id!r}")
    exp = claims.get("exp")
    if not isinstance(exp, (int, float)) or isinstance(exp, bool):
        raise InvalidIdToken("the ID token has no `exp`")
    if now > exp + leeway:
        raise InvalidIdToken(f"the ID token expired {now - exp:.0f} s ago")
    iat = claims.get("iat")
    if iat is not None and (not _is_number(iat) or float(iat) > now + leeway):
        raise InvalidIdToken("the ID token's `iat` is in the future: check this host's clock")
    got = claims.get("nonce")
    if not isinstance(got, str) or not hmac.compare_digest(got.encode(), nonce.encode()):
        raise InvalidIdToken(
            "the ID token's `nonce` is missing or belongs to another login (a replayed or "
            "injected token); start the login again"
        )
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub:
        raise InvalidIdToken("the ID token has no `sub`")


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _shown(value: object) -> str:
    """A claim for a message: short, printable, JSON-quoted."""
    text = json.dumps(value)[:80]
    return "".join(c if c.isprintable() else "?" for c in text)
