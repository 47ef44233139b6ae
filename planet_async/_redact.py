"""Taking secrets out of text that is about to reach an exception message or a log line."""

from __future__ import annotations

import base64
from collections.abc import Iterable
from urllib.parse import quote, quote_plus

__all__ = ["MASK", "redact", "secret_forms"]

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
