"""The OAuth2 scopes Planet defines, and how scopes given by the caller are read."""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable

from .._errors import ConfigurationError

__all__ = ["OFFLINE_ACCESS", "PLANET_SCOPE", "USER_SCOPES", "normalize_scopes"]

PLANET_SCOPE = "planet"
"""Access to Planet's APIs."""

OFFLINE_ACCESS = "offline_access"
"""Ask for a refresh token, so a user session renews without a new login. Users only, not M2M."""

USER_SCOPES = (PLANET_SCOPE, OFFLINE_ACCESS)
"""What user logins request by default."""

_ADVICE = (
    "scopes must be scope names like ['planet', 'offline_access'] or one space-separated string"
)


def normalize_scopes(scopes: str | Iterable[str]) -> tuple[str, ...]:
    """Scope names from one space-separated string (OAuth's `scope` parameter) or an iterable.

    A string is split on whitespace, so ``"planet offline_access"`` is two scopes, not a
    sequence of characters. Duplicates are dropped; the order is kept.

    Raises:
        ConfigurationError: An item is not a string, is empty, or holds whitespace or a control
            character; or `scopes` is not iterable.
    """
    if isinstance(scopes, str):
        names: list[object] = list(scopes.split())
    else:
        try:
            names = list(scopes)
        except TypeError:
            raise ConfigurationError(f"{_ADVICE}, not {type(scopes).__name__}") from None
    found: dict[str, None] = {}
    for name in names:
        if not isinstance(name, str) or not name or any(map(_not_in_a_scope, name)):
            raise ConfigurationError(f"{_ADVICE}; {name!r} is not a scope name")
        found[name] = None
    return tuple(found)


def _not_in_a_scope(char: str) -> bool:
    return char.isspace() or unicodedata.category(char) == "Cc"
