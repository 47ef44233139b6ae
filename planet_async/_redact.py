"""Taking secrets out of text that is about to reach an exception message or a log line."""

from __future__ import annotations

import base64
from collections.abc import Iterable
from urllib.parse import quote, quote_plus

from ._errors import ConfigurationError

__all__ = ["MASK", "clean_api_key", "redact", "require_header_safe", "secret_forms"]

MASK = "***"

_SHORTEST = 4
"""Shorter values are not masked: replacing every "a" in a message would say nothing useful,
and no real credential is that short."""


def secret_forms(value: str) -> set[str]:
    """`value` and the encodings in which a server may echo it back (form, URL, Base64)."""
    forms = {value, quote_plus(value, safe=""), quote(value, safe="")}
    raw = value.encode()
    forms.add(base64.b64encode(raw).decode("ascii"))
    forms.add(base64.urlsafe_b64encode(raw).decode("ascii").rstrip("="))
    return forms


def redact(text: str, secrets: Iterable[str | None]) -> str:
    """`text` with every occurrence of each secret (longest first) replaced by ``***``."""
    found = {s for s in secrets if s and len(s) >= _SHORTEST and s in text}
    for secret in sorted(found, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


def require_header_safe(value: str, what: str) -> str:
    """`value` if it can be sent as a credential in an HTTP header as it is.

    Raises:
        ConfigurationError: It is empty, has surrounding whitespace, or holds a control character
            (CR and LF would split the header). The message names the problem, never the value.
    """
    if not value or not value.strip():
        raise ConfigurationError(f"the {what} is empty")
    if value != value.strip():
        raise ConfigurationError(
            f"the {what} has whitespace around it; remove it (a copy-and-paste left-over?)"
        )
    for char in value:
        if not char.isprintable() or char.isspace():
            raise ConfigurationError(
                f"the {what} contains {_describe(char)}, which cannot be sent in an HTTP header; "
                "check where it was copied from"
            )
    return value


def clean_api_key(value: str, what: str = "API key") -> str:
    """An API key as given, without the whitespace around it (the line feed a key file ends with,
    a space pasted along), if what is left can be sent in an HTTP header.

    Args:
        value: The key.
        what: What the key is and where it came from, for the message
            (``"API key from environment variable PL_API_KEY"``).

    Raises:
        ConfigurationError: Nothing is left, or it holds whitespace or a control character. The
            message names `what` and the problem, never the key.
    """
    return require_header_safe(value.strip(), what)


def _describe(char: str) -> str:
    names = {
        "\r": "a carriage return (CR)",
        "\n": "a line feed (LF)",
        "\x00": "a NUL byte",
        " ": "a space",
        "\t": "a tab",
    }
    return names.get(char, f"the character U+{ord(char):04X}")
