"""What a `TokenManager` tells the jobs watching it: renewals, adoptions, rejections."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

__all__ = ["TokenEvent", "TokenEventKind", "TokenListener"]

TokenEventKind = Literal[
    "renewal_started",
    "renewal_succeeded",
    "renewal_failed",
    "token_adopted",
    "token_rejected",
]


@dataclass(frozen=True)
class TokenEvent:
    """One thing that happened to a session, as a `TokenManager` reports it to its listeners.

    Every `renewal_started` is followed by exactly one `renewal_succeeded` or `renewal_failed`,
    one per renewal however many callers wait for it. `token_adopted` comes between the two
    when the renewal found a token in storage (saved by another process, or by an earlier run)
    and used it instead of asking the authorization server. `token_rejected` is one 401 from
    the API for the session's token. No event carries a token or any other secret.

    Attributes:
        kind: What happened.
        session: The session's name in its storage.
        duration: Seconds the renewal took (monotonic clock); only on `renewal_succeeded` and
            `renewal_failed`.
        error: The exception's type name (`AuthServerUnavailable`, `StorageError`, ...); only on
            `renewal_failed`.
        expires_in: Seconds until the token in memory expires, when the event happened (after a
            successful renewal, the new token's); negative once it has expired; None without a
            token or a known expiry.
    """

    kind: TokenEventKind
    session: str
    duration: float | None = None
    error: str | None = None
    expires_in: float | None = None


TokenListener = Callable[[TokenEvent], None]
"""Called with each event, on the event loop: it must return quickly and never block."""
