"""Encryption at rest for any storage: what is stored is a JWE, under keys the application holds."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any

from joserfc import jwe
from joserfc.errors import JoseError
from joserfc.jwk import OctKey
from joserfc.registry import HeaderParameter
from pydantic import SecretStr

from .._errors import ConfigurationError, StorageError
from .._models import TokenSet
from ._generations import GENERATION_KEY
from ._protocol import Storage, require_storage

__all__ = ["EncryptedStorage"]

_ALG = "dir"
_ENC = "A256GCM"
_KEY_BYTES = 32
_MARK = "planet_async_encrypted"
"""Member of a stored (outer) token set whose value is the JWE's algorithm; its absence means
the session was stored in clear."""
_BINDING = "psk"  # protected header: a digest of the session name (the key it is stored under)

_REGISTRY = jwe.JWERegistry(
    header_registry={_BINDING: HeaderParameter("the session this value belongs to", "str", True)},
    algorithms=[_ALG, _ENC],
)


class EncryptedStorage:
    """A storage that keeps another storage's sessions encrypted: each is stored as a JWE
    (``dir`` + ``A256GCM``), so a dump of Redis, or a copy of the session files, holds no access
    token, refresh token or ID token.

    It wraps any `Storage` (Redis, files, your own) and forwards its lock and capabilities; only
    what is saved and loaded changes. The stored value is still a token set, so every storage
    keeps it unchanged: its ``access_token`` is the JWE, and it carries the issue and expiry
    times in clear (no secret: they let an operator see when a session expires) and a marker
    ``planet_async_encrypted``. The JWE's protected header names the key (``kid``) and binds the
    value to its session (``psk``, a digest of the session name, authenticated with the rest):
    a value copied under another session's key does not load.

    Keys are a key ring: the first key encrypts every save, and every key decrypts. To rotate,
    add the new key *after* the current one on every replica, then move it first: sessions are
    re-encrypted as they are renewed, nobody is logged out, and the old key can go once no
    stored value names it (or once the retention has passed).

    A value whose key is not in the ring, a wrong key, or a value altered or copied from another
    session raises `StorageError` naming the key id: never treated as absent, which would log
    the user out and hide the mistake.

    Args:
        inner: The storage that holds the encrypted values.
        keys: Key id -> 32-byte key (e.g. ``secrets.token_bytes(32)``), in order: the first
            encrypts. A mapping, or (key id, key) pairs.
        allow_plaintext: Load sessions stored in clear (before encryption was turned on); they are
            encrypted at their next save. Off by default: a clear value is then a `StorageError`.

    Raises:
        ConfigurationError: No key, a key that is not 32 bytes, an empty or repeated key id, or
            `inner` is not a Storage.
    """

    def __init__(
        self,
        inner: Storage,
        keys: Mapping[str, bytes] | Iterable[tuple[str, bytes]],
        *,
        allow_plaintext: bool = False,
    ) -> None:
        self.inner = require_storage(inner)
        pairs = list(keys.items()) if isinstance(keys, Mapping) else list(keys)
        if not pairs:
            raise ConfigurationError("EncryptedStorage needs at least one key")
        ring: dict[str, OctKey] = {}
        for kid, key in pairs:
            if not isinstance(kid, str) or not kid:
                raise ConfigurationError("every key of EncryptedStorage needs a non-empty key id")
            if kid in ring:
                raise ConfigurationError(f"key id {kid!r} is given twice")
            if not isinstance(key, bytes) or len(key) != _KEY_BYTES:
                raise ConfigurationError(
                    f"key {kid!r} must be {_KEY_BYTES} bytes (secrets.token_bytes(32)), "
                    f"not {len(key) if isinstance(key, bytes) else type(key).__name__}"
                )
            ring[kid] = OctKey.import_key(key)
        self._ring = ring
        self._current = pairs[0][0]
        self.allow_plaintext = allow_plaintext

    def __repr__(self) -> str:
        return f"EncryptedStorage({self.inner!r}, key_ids={list(self._ring)!r})"

    @property
    def key_ids(self) -> list[str]:
        """The ids of the key ring, the encrypting one first."""
        return list(self._ring)

    # -- forwarded ---------------------------------------------------------------------------------

    @property
    def lock_can_lapse(self) -> bool:
        return self.inner.lock_can_lapse

    def watch_deletions(self) -> AbstractAsyncContextManager[AsyncIterator[str]] | None:
        return self.inner.watch_deletions()

    def lock(self, session: str) -> AbstractAsyncContextManager[None]:
        return self.inner.lock(session)

    async def delete(self, session: str) -> None:
        await self.inner.delete(session)

    # -- encrypted -------------------------------------------------------------------------------

    async def save(self, session: str, token: TokenSet) -> None:
        await self.inner.save(session, self.seal(session, token))

    async def save_if_newer(self, session: str, token: TokenSet) -> bool:
        # The stamp is sealed inside and copied outside in clear, where the inner storage
        # compares it atomically with its write; `open` checks that the two agree.
        return await self.inner.save_if_newer(session, self.seal(session, token))

    async def load(self, session: str) -> TokenSet | None:
        stored = await self.inner.load(session)
        return None if stored is None else self.open(session, stored)

    def seal(self, session: str, token: TokenSet) -> TokenSet:
        """`token` as stored: a token set whose access token is the JWE of the whole of it."""
        plaintext = json.dumps(token.to_json_dict(), separators=(",", ":")).encode()
        protected = {"alg": _ALG, "enc": _ENC, "kid": self._current, _BINDING: _binding(session)}
        value = jwe.encrypt_compact(
            protected, plaintext, self._ring[self._current], registry=_REGISTRY
        )
        extra: dict[str, Any] = {_MARK: f"{_ALG}+{_ENC}"}
        if GENERATION_KEY in token.extra:
            extra[GENERATION_KEY] = token.extra[GENERATION_KEY]
        return TokenSet(
            access_token=SecretStr(value),
            issued_at=token.issued_at,
            expires_at=token.expires_at,
            extra=extra,
        )

    def open(self, session: str, stored: TokenSet) -> TokenSet:
        """The token set `stored` holds (see `seal`).

        Raises:
            StorageError: Its key is not in the ring, the key is wrong, the value was altered or
                belongs to another session, or it is in clear and `allow_plaintext` is off.
        """
        if _MARK not in stored.extra:
            if self.allow_plaintext:
                return stored
            raise StorageError(
                f"session {session!r} in {self.inner!r} is stored unencrypted; give "
                "EncryptedStorage allow_plaintext=True to read it (it is encrypted at its next "
                "save), or log the user in again"
            )
        value = stored.access_token.get_secret_value()
        kid = _kid_of(value)
        key = self._ring.get(kid) if kid is not None else None
        if key is None:
            raise StorageError(
                f"session {session!r} in {self.inner!r} is encrypted with key id {kid!r}, which "
                f"is not in the key ring {list(self._ring)!r}: add that key (keys are removed only "
                "once no stored session uses them)"
            )
        try:
            found = jwe.decrypt_compact(value, key, registry=_REGISTRY)
        except (JoseError, ValueError) as exc:
            raise StorageError(
                f"session {session!r} in {self.inner!r} does not decrypt with key id {kid!r} "
                f"({type(exc).__name__}): the key under that id is not the one it was encrypted "
                "with, or the value was altered"
            ) from None
        if found.protected.get(_BINDING) != _binding(session):
            raise StorageError(
                f"the value stored as session {session!r} in {self.inner!r} belongs to another "
                "session (it was copied or moved); refusing it"
            )
        try:
            assert found.plaintext is not None
            token = TokenSet.from_json_dict(json.loads(found.plaintext))
        except (AssertionError, ValueError) as exc:
            raise StorageError(
                f"session {session!r} in {self.inner!r} decrypts to no usable token set: {exc}"
            ) from None
        if token.extra.get(GENERATION_KEY) != stored.extra.get(GENERATION_KEY):
            # The clear copy decides conditional saves: one altered (or left from another
            # value) could make an older session win over a newer one.
            raise StorageError(
                f"session {session!r} in {self.inner!r}: the generation stored in clear is not "
                "the one sealed with the tokens; the value was altered, refusing it"
            )
        return token


def _binding(session: str) -> str:
    digest = hashlib.sha256(session.encode("utf-8", "surrogatepass")).digest()
    return base64.urlsafe_b64encode(digest[:16]).decode().rstrip("=")


def _kid_of(value: str) -> str | None:
    """The `kid` of a compact JWE's protected header, read before any key is chosen."""
    header = value.partition(".")[0]
    try:
        data: Any = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))
    except (ValueError, binascii.Error):
        return None
    kid = data.get("kid") if isinstance(data, dict) else None
    return kid if isinstance(kid, str) else None
