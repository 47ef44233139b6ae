"""What a stored value holds: the one reading of a session's stored JSON that every storage shares,
so that a value a storage cannot use is the same error, in the same words, wherever it is kept."""

from __future__ import annotations

import json
from typing import Any

from .._errors import StorageError
from .._models import TokenSet

__all__ = ["json_object", "stored_token"]


def json_object(raw: bytes | str) -> dict[str, Any] | None:
    """`raw` read as a JSON object; None for anything else (not JSON, nested too deep to parse,
    or JSON that is not an object): a value a storage moves aside as corrupt."""
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: nested too deep to parse
        return None
    return data if isinstance(data, dict) else None


def stored_token(
    data: dict[str, Any], where: str, remedy: str = "log in again to replace it"
) -> TokenSet:
    """The token set in a stored JSON object.

    Args:
        data: The stored object (the `planet` CLI's ``token.json`` format).
        where: What holds it, for the message (``session 's' in redis://...``, or a path).
        remedy: What the user can do, for the message.

    Raises:
        StorageError: The object is not a token set (another tool's format?). It is left where
            it is, never moved aside: what a storage cannot read may still be someone's.
    """
    try:
        return TokenSet.from_json_dict(data)
    except ValueError as exc:
        raise StorageError(f"{where} holds no usable OAuth token ({exc}); {remedy}") from None
