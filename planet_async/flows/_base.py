"""What the TokenManager needs from a grant."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from .._models import TokenSet

__all__ = ["Grant"]


class Grant(Protocol):
    """Obtains and renews the tokens of one session.

    The TokenManager calls `renew` at most once at a time per session, under the storage lock.
    """

    @property
    def renews_without_lock(self) -> bool:
        """Whether renewing needs no shared state (client credentials: asking again), so the
        TokenManager may renew without the storage's lock when it cannot be had. False for a
        rotating refresh token, which must never be spent twice."""
        ...

    @property
    def description(self) -> str:
        """Names the grant and client for messages and logs; never a secret."""
        ...

    async def renew(self, current: TokenSet | None, *, clock: Callable[[], float]) -> TokenSet:
        """Return a fresh token set, given the session's current one (None if there is none).

        Raises:
            LoginRequired: No token can be had without the user (e.g. no refresh token).
            AuthServerError: The authorization server failed or refused.
        """
        ...
