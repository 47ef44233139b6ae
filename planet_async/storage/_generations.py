"""Generations: which of two copies of a session is the newer, decided by data, not by timing.

A distributed store can lose an acknowledged write (asynchronous replication, a failover, a
restart without persistence) and come back holding an older copy of a session than a process
has in memory. With rotating refresh tokens the older copy's refresh token is spent already:
adopting it ends the session. So every session the TokenManager stores carries a stamp, and no
one adopts an older copy or overwrites a newer one.

The stamp lives in the stored token set itself, as one extra member of the `planet` CLI's
``token.json`` (the CLI keeps members it does not know, so it still reads and writes the file)::

    "_planet_async_generation": {"lineage": "<16 hex>", "number": 7, "tag": "<8 hex>"}

- **lineage**: one per login. A login (`TokenManager.set_token`) starts a new one; a renewal
  keeps its base's. A session stored without a stamp (the `planet` CLI, an older planet_async)
  is renewed into a new lineage.
- **number**: grows by one with every renewal within the lineage (the first token of a lineage
  is 1); never reset, never reused.
- **tag**: random per token set, so that two different token sets of one generation (two
  writers after a split) are told apart without comparing, or storing a digest of, the tokens.

The rules, one for the store and one for a process:

- **A conditional save** (`may_replace`, what `Storage.save_if_newer` enforces atomically where
  the write happens): a stamped token set replaces the stored one only if nothing is stored, the
  stored one has no stamp (a foreign writer: a new login as far as anyone can tell, and the
  first renewal of it starts a lineage of its own), or it is of the same lineage with a lower
  number, or it is this very token set (the same tag: a retried save whose answer was lost, the
  renewing mark put on and taken off). A copy of another lineage is never overwritten by a
  conditional save: a process still holding the previous login's tokens cannot overwrite the new
  login. Only a login writes unconditionally.
- **Which copy a process uses** (`compare`): of the same lineage, the higher number; a stored
  copy of another lineage, or without a stamp, is a new login and wins; on equal numbers with
  different tags the stored copy wins: the store already arbitrated (the first conditional save
  of that number was accepted and the second refused), no clock and no secret is compared, and
  every process converges on the same copy. Both are valid token sets: a server that rotates
  refresh tokens answers only the first spender of a refresh token, so two copies of one
  generation can only exist where both may be used.

What this does not cover: a store that loses a whole login (it comes back with the session of
a previous login) hands that older login's session out, since lineages have no order that does
not depend on clocks; and a store that comes back empty is outside what a stamp can say.
"""

from __future__ import annotations

import enum
import math
import secrets
from dataclasses import dataclass
from typing import Any

from .._models import TokenSet

__all__ = ["GENERATION_KEY", "Generation", "Order", "compare", "may_replace"]

GENERATION_KEY = "_planet_async_generation"
"""The member of a stored token set (``TokenSet.extra``) that holds its `Generation`."""


@dataclass(frozen=True)
class Generation:
    """Where a token set stands in its session's history (see the module's docstring).

    Attributes:
        lineage: The login it descends from (random).
        number: Renewals since that login, plus one.
        tag: This token set (random).
    """

    lineage: str
    number: int
    tag: str

    @classmethod
    def of(cls, token: TokenSet | None) -> Generation | None:
        """The stamp `token` carries, or None (none, or a malformed one: that counts as none)."""
        if token is None:
            return None
        found: Any = token.extra.get(GENERATION_KEY)
        if not isinstance(found, dict):
            return None
        lineage, number, tag = found.get("lineage"), found.get("number"), found.get("tag")
        if isinstance(number, float) and math.isfinite(number) and number == math.floor(number):
            number = int(number)
        if (
            not isinstance(lineage, str)
            or not isinstance(tag, str)
            or not isinstance(number, int)
            or isinstance(number, bool)
            or number < 0
        ):
            return None
        return cls(lineage, number, tag)

    @classmethod
    def first(cls) -> Generation:
        """The stamp of a new login's token set."""
        return cls(secrets.token_hex(8), 1, secrets.token_hex(4))

    @classmethod
    def after(cls, base: TokenSet | None) -> Generation:
        """The stamp of the token set a renewal of `base` obtains: its lineage's next number,
        or a lineage of its own when `base` has no stamp."""
        stamp = cls.of(base)
        if stamp is None:
            return cls.first()
        return cls(stamp.lineage, stamp.number + 1, secrets.token_hex(4))

    def on(self, token: TokenSet) -> TokenSet:
        """`token`, carrying this stamp."""
        value = {"lineage": self.lineage, "number": self.number, "tag": self.tag}
        return token.model_copy(update={"extra": {**token.extra, GENERATION_KEY: value}})


def may_replace(token: TokenSet, stored: TokenSet | None) -> bool:
    """Whether a conditional save of `token` may overwrite `stored` (see the module docstring).

    A storage of your own implements ``save_if_newer`` with it: under its lock, load, check,
    and save only when this is True.
    """
    new = Generation.of(token)
    old = Generation.of(stored)
    if new is None or old is None:
        return True  # an unstamped write is a login's; an unstamped stored copy, a foreign one
    if new.lineage != old.lineage:
        return False
    return old.number < new.number or (old.number == new.number and old.tag == new.tag)


class Order(enum.Enum):
    """Which of a process's copy and the stored copy of a session is the one to use."""

    SAME = "same"
    STORED = "stored"  # adopt the stored copy
    HELD = "held"  # the process's copy is newer: write it back


def compare(held: TokenSet, stored: TokenSet, *, replaced: TokenSet | None = None) -> Order:
    """Which copy to use: `held` (the process's) or `stored`.

    Args:
        held: The token set the process holds.
        stored: The one the storage holds.
        replaced: What `held` was obtained over, when it was never stored: a stored copy that
            is still that one is older than `held` even without a stamp.
    """
    mine, theirs = Generation.of(held), Generation.of(stored)
    if held.same_access_token(stored) and held.same_refresh_token(stored):
        return Order.SAME
    if mine is not None and mine == theirs:
        # One stamp, other tokens: a writer that keeps members it does not know (the `planet`
        # CLI refreshing the file itself) stored newer tokens under our stamp.
        return Order.STORED
    if replaced is not None and stored.same_access_token(replaced):
        return Order.HELD
    if mine is not None and theirs is not None and mine.lineage == theirs.lineage:
        return Order.HELD if mine.number > theirs.number else Order.STORED
    return Order.STORED
