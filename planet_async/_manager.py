"""TokenManager: one session's current token, renewed once at a time, ahead of expiry."""

from __future__ import annotations

import logging
import math
import random
import secrets
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from types import TracebackType

import anyio
import anyio.abc
import anyio.lowlevel

from ._background import renewal_loop, wake
from ._errors import (
    AuthServerUnavailable,
    ConfigurationError,
    InvalidGrantError,
    LockLost,
    LoginRequired,
    PlanetAuthError,
    StorageError,
    fresh_copy,
)
from ._events import TokenEvent, TokenEventKind, TokenListener
from ._helper import helper
from ._models import TokenSet
from ._redact import redact, require_header_safe
from ._transport import HttpResponse
from .flows._base import Grant
from .flows._client_credentials import ClientCredentialsGrant
from .flows._refresh import RefreshTokenGrant
from .storage._generations import Generation, Order, compare
from .storage._memory import MemoryStorage
from .storage._protocol import Storage, require_storage

__all__ = ["TokenManager"]

logger = logging.getLogger(__name__)

_NEVER = math.inf

_RENEWING = "_planet_async_renewing"
"""Marks a stored session whose refresh token a process is spending right now (lease storages)."""

_RENEWING_FOR = 120.0
"""Seconds such a mark holds other processes back from the refresh token it names. A renewal
whose token request fails takes its mark away again while its lease holds (`_unmark`): only a
process that stalled past its lease leaves one behind."""

_RESTORED = "_planet_async_restored"
"""Marks a session a process stored again from its memory after finding the storage without it
(`lost_session_wait`): nobody spends its refresh token before the time it names."""

_STORE_RETRY_BASE = 0.25
_STORE_RETRY_CAP = 2.0
"""Seconds before another attempt after the storage failed (doubling from the base, capped).
A store outage is not an authorization-server failure: it has this short schedule of its own and
never spends the server's backoff budget."""


class _Superseded(StorageError):
    """A conditional save was refused: the storage holds a newer session (see
    `planet_async.storage.may_replace`). Returned by `_save`, never raised."""


@dataclass(frozen=True)
class _Current:
    """The token in use, its header, and the two moments that decide how it is renewed."""

    token: TokenSet
    header: str
    soft: float  # from here on, renew in the background while this token keeps serving
    hard: float  # from here on, callers wait for a new token


_HELPER_MARGIN = 5.0
"""Seconds a renewal waits for the helper process beyond the request's own timeout, which the
helper enforces itself (answering `AuthServerUnavailable`)."""

_WAKE_BATCH = 256
"""Waiters woken per scheduling step. Waking 10,000 at once is one ~8 ms stall of the loop;
in batches, the loop runs other tasks in between."""


class _Flight:
    """One renewal in progress; every waiter gets its outcome."""

    __slots__ = (
        "_events",
        "_in_batch",
        "after_401",
        "error",
        "finished",
        "force",
        "header",
        "rejected",
    )

    def __init__(
        self, rejected: TokenSet | None, *, after_401: bool = False, force: bool = False
    ) -> None:
        self._events = [anyio.Event()]
        self._in_batch = 0
        self.finished = False
        self.rejected = rejected  # a token that must not be adopted again, even from storage
        self.after_401 = after_401
        self.force = force  # ask the server, even if storage holds a fresh token
        self.header: str | None = None
        self.error: BaseException | None = None

    async def wait(self) -> None:
        if self.finished:
            await anyio.lowlevel.checkpoint()  # still a point where cancellation arrives
            return
        if self._in_batch == _WAKE_BATCH:
            self._events.append(anyio.Event())
            self._in_batch = 0
        self._in_batch += 1
        await self._events[-1].wait()

    async def release(self) -> None:
        """Wake every waiter, a batch per scheduling step; cancellation cannot stop it."""
        self.finished = True
        with anyio.CancelScope(shield=True):
            for index, event in enumerate(self._events):
                if index:
                    await anyio.lowlevel.checkpoint()
                event.set()


class TokenManager:
    """Owns one session: hands out its access token and renews it, once at a time.

    The fast path, a valid token in memory, takes no lock, does no I/O and decodes nothing. Past a
    soft threshold (about 70% of the token's lifetime, jittered so that processes sharing a session
    do not renew in step) one background renewal starts while the current token keeps serving.
    Only past a hard threshold (the expiry less a safety margin) do callers wait, all of them for
    the same renewal. A failed renewal is retried after an exponential backoff with jitter (longer
    if the server sent `Retry-After`); meanwhile a still-valid token keeps serving, and callers get
    the error only when no valid token remains.

    Renewal happens under the storage's lock, after re-reading the stored session: if another
    process renewed meanwhile, its token is used and no request is made. Every token set it
    stores carries a generation (see `planet_async.storage.may_replace`): a stored copy older
    than the one in memory (a store that lost a save) is overwritten with it, never adopted and
    its refresh token never spent; a newer one, or another login's, is adopted; and every save of
    a renewal is conditional, so a newer stored session is never overwritten.

    A token set once obtained is never dropped because storage failed. It is adopted in memory
    first; if it cannot be saved (a full disk, a read-only directory, a storage service that is
    down) it keeps serving, one WARNING says so, and saving is retried under the lock on a later
    call (after a backoff), before the next renewal at the latest, unless the storage has
    meanwhile received a newer session, which then wins.
    If the lock cannot be taken at all, or the storage cannot even be read (a store that is down
    when the process starts), a still-valid stored token is used; past that, an M2M session
    (whose grant needs no shared state) renews without coordination, with a WARNING, and a user
    session does not renew (a rotating refresh token must never be spent twice). Callers get
    `StorageError` only when no valid token is left. A storage failure is not the authorization
    server's: the next attempt on the storage comes after a short wait of its own (0.25 s,
    doubling up to 2 s, never past the moment the current token stops being handed out), and
    the server's backoff is left as it was.

    Use it as an async context manager to give background renewals a task group of their own;
    without one, the first caller past the soft threshold performs the renewal (shielded from
    cancellation, bounded by the server timeout) while every other caller keeps the current token.

    Args:
        grant: How tokens are obtained and renewed (`ClientCredentialsGrant`, `RefreshTokenGrant`).
        storage: Where the session is kept; default `MemoryStorage()`.
        session: The session's name in the storage (a `planet` profile name for file storage).
        clock: Wall-clock seconds since the epoch; injectable for tests.
        refresh_ahead: Fraction of the lifetime after which to renew in the background.
        jitter: Up to this fraction of the lifetime is taken off the soft threshold at random.
        expiry_margin: Seconds before expiry at which a token is no longer handed out (capped at
            a tenth of the lifetime, so short-lived tokens stay usable).
        backoff_base: Seconds before the first retry after a failure; doubles per failure.
        backoff_cap: Longest wait between retries, in seconds.
        rng: Source of jitter; injectable for tests.
        on_event: Called with a `TokenEvent` for each renewal started, succeeded or failed,
            token adopted from storage and 401 rejection; more with `add_listener`.
        off_loop: Make token requests on the process's renewal loop (a daemon thread), and put
            the new token in use from there, instead of on the caller's event loop: on a loop
            busy with hundreds of downloads, each step of a request on it waits behind every
            ready task, and a renewal took hundreds of milliseconds instead of tens (see the
            ``clients_renewal`` benchmark). Storage is still used from the caller's loop. By
            default, on when the grant says it belongs to no event loop (``grant.loop_free``:
            the library's grants with their default transport, not one given an
            ``httpx.AsyncClient``); a grant of your own, or a subclass of ours, runs on the
            caller's loop.
        task_group: Run background renewals in this task group (one that many managers share,
            as a `SessionPool` does) instead of one of the manager's own from ``async with``.
        lost_session_wait: For a store that can come back empty (a Redis restarted without
            persistence; a lease storage), when the authorization server cannot say whether a
            refresh token is still active (no introspection endpoint). By default, a process
            that finds no stored session while it holds one with a refresh token asks the
            server (introspection, which spends nothing): it renews from memory only if the
            refresh token is still active, so an older one, rotated by another process since,
            is never spent (the server's reuse detection would revoke the whole session);
            otherwise it raises `LoginRequired` and adopts the newest holder's copy once that
            is stored again. With this set, it instead stores its copy again, marked so that
            no process spends that copy's refresh token for this many seconds; a process
            holding a newer generation writes its own back over it at its next renewal (see
            generations), and everyone adopts that one. Give at least the token lifetime: an
            active process renews, and so writes back, within one. Meanwhile the current token
            keeps serving; past its expiry callers get `StorageError` (with `retry_after`)
            until the wait ends, and then the copy is renewed.
    """

    def __init__(
        self,
        grant: Grant,
        *,
        storage: Storage | None = None,
        session: str = "default",
        clock: Callable[[], float] = time.time,
        refresh_ahead: float = 0.75,
        jitter: float = 0.1,
        expiry_margin: float = 30.0,
        backoff_base: float = 1.0,
        backoff_cap: float = 300.0,
        rng: random.Random | None = None,
        on_event: TokenListener | None = None,
        off_loop: bool | None = None,
        task_group: anyio.abc.TaskGroup | None = None,
        lost_session_wait: float | None = None,
    ) -> None:
        if not 0 < refresh_ahead <= 1 or not 0 <= jitter < refresh_ahead:
            raise ConfigurationError("need 0 < refresh_ahead <= 1 and 0 <= jitter < refresh_ahead")
        if backoff_base <= 0 or backoff_cap < backoff_base:
            raise ConfigurationError("need 0 < backoff_base <= backoff_cap")
        if lost_session_wait is not None and not (
            math.isfinite(lost_session_wait) and lost_session_wait >= 0
        ):
            raise ConfigurationError("lost_session_wait must be None or a number of seconds >= 0")
        self._lost_session_wait = lost_session_wait
        if not isinstance(getattr(grant, "renews_without_lock", None), bool):
            raise ConfigurationError(
                f"{type(grant).__name__} is not a planet_async Grant: it needs "
                "renews_without_lock (True or False); see planet_async.Grant"
            )
        self.grant = grant
        self.storage: Storage = require_storage(storage) if storage is not None else MemoryStorage()
        self.session = session
        self._clock = clock
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not secrets
        self._soft_fraction = refresh_ahead - jitter * self._rng.random()
        self._expiry_margin = expiry_margin
        # One attribute for the pair: past 30 attributes an instance's dict stops sharing its
        # keys with the others (CPython), and a SessionPool holds thousands of managers.
        self._backoff_bounds = (backoff_base, backoff_cap)
        self._current: _Current | None = None
        self._flight: _Flight | None = None
        self._unsaved: TokenSet | None = None  # obtained, adopted, not yet in storage
        self._unsaved_over: TokenSet | None = None  # what storage held when it was obtained
        self._unsaved_login = False  # the unsaved token is a login's: saved unconditionally
        self._save_failures = 0
        self._save_not_before = 0.0
        self._id: str | None = None  # names this manager in a stored session's marks (lazily)
        self._failures = 0
        self._store_failures = 0  # in a row; a schedule apart from the server's `_failures`
        self._rejections = 0
        self._not_before = 0.0
        self._rejected_not_before = 0.0
        self._last_error: BaseException | None = None
        self._task_group: anyio.abc.TaskGroup | None = task_group
        self._obtained: TokenSet | None = None  # what the server gave the renewal in flight
        # A capability of the library's grants; one of yours without it stays on the caller's
        # loop (the safe side: nothing but speed is lost).
        self._off_loop = getattr(grant, "loop_free", False) if off_loop is None else off_loop
        # Copied on change, never changed in place; empty (and shared) for most managers: a
        # SessionPool holds thousands, so what each one allocates up front counts.
        self._listeners: tuple[TokenListener, ...] = () if on_event is None else (on_event,)
        self._broken_listeners: set[int] | None = None  # ids of listeners that raised (logged once)
        self.renewals = 0
        """How many token requests this manager has made (successful or not)."""

    def __repr__(self) -> str:
        return f"TokenManager(session={self.session!r}, grant={self.grant.description!r})"

    # -- lifecycle -------------------------------------------------------------------------------

    async def __aenter__(self) -> TokenManager:
        if self._task_group is not None:
            raise RuntimeError("this TokenManager is already entered")
        task_group = anyio.create_task_group()
        await task_group.__aenter__()
        self._task_group = task_group
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        task_group, self._task_group = self._task_group, None
        assert task_group is not None
        task_group.cancel_scope.cancel()
        return await task_group.__aexit__(exc_type, exc, tb)

    # -- handing out tokens ----------------------------------------------------------------------

    def header_nowait(self) -> str | None:
        """The `Authorization` header value if a valid token is in memory, else None.

        This is the per-request fast path: no lock, no I/O, no await. Past the soft threshold it
        also starts a background renewal (when the manager has a task group).
        """
        fresh = self.fresh_header()
        if fresh is not None:
            return fresh
        current = self._current
        if current is None:
            return None
        now = self._clock()
        # Past the soft threshold, or holding a token that could not be saved yet: renew, which
        # first saves it (and then finds it still fresh).
        self.take_answer()  # a renewal's answer, if it came, is in use from here
        current = self._current
        assert current is not None
        if now >= current.hard:
            return None
        if self._flight is None and now >= self._not_before:
            if self._task_group is None:
                return None  # the caller renews in line; see header()
            self._task_group.start_soon(self._fly, self._start_flight(None))
        return current.header

    def take_answer(self) -> None:
        """While a renewal waits for the helper process (`_helper`), read its answer if it came,
        and put the new token in use here and now. The per-request path calls this past the
        refresh-ahead threshold, and after each response: on a busy event loop the next request
        comes sooner than the helper's reading thread gets the interpreter lock."""
        if self._flight is not None:
            helper().poll()

    def fresh_header(self) -> str | None:
        """The `Authorization` header value if the token in memory is valid and no renewal is
        due yet, else None. Reads memory and starts nothing, so any thread may call it: it is
        the per-request path of synchronous callers, whose renewals run on the renewal loop."""
        current = self._current
        if current is None:
            return None
        now = self._clock()
        if now < current.soft and (self._unsaved is None or now < self._save_not_before):
            return current.header
        return None

    def leave_loop(self) -> None:
        """Forget what belongs to the event loop this manager ran on: its task group and a
        renewal in flight. After a ``fork`` the child has neither; the token in memory stays."""
        self._task_group = None
        self._flight = None
        self._obtained = None

    async def header(self) -> str:
        """The `Authorization` header value for a valid token, renewing first if needed.

        Raises:
            LoginRequired: The session cannot be renewed without the user.
            AuthServerError: Renewal failed and no valid token remains.
            StorageError: The session storage failed.
        """
        found = self.header_nowait()
        if found is not None:
            return found
        flight = self._flight
        if flight is None:
            now = self._clock()
            if now < self._not_before and not self._valid(now):
                assert self._last_error is not None
                # A caller retrying in a loop must still let other tasks run.
                await anyio.lowlevel.checkpoint()
                raise fresh_copy(self._last_error)
            flight = self._start_flight(None)
            await self._launch(flight)
        return await self._outcome(flight)

    async def token(self) -> TokenSet:
        """The current token set, renewed first if it is no longer valid.

        Raises:
            PlanetAuthError: As `header` raises (`LoginRequired`, `AuthServerError`,
                `StorageError`).
        """
        await self.header()
        assert self._current is not None
        return self._current.token

    async def renew_rejected(self, header: str) -> str | None:
        """Renew after the API answered 401 to `header`; return the header to retry with.

        If the rejected token is still the current one it is discarded and renewed (once, however
        many requests report it); if it was already replaced, the replacement is returned. Returns
        None when no retry should be made: repeated rejections back off like failures do, so an
        API that refuses every token cannot make us hammer the authorization server.
        """
        self._emit("token_rejected")
        current = self._current
        flight = self._flight
        if current is not None and current.header != header:
            flight = None  # already replaced: hand out the replacement
        elif flight is None:
            now = self._clock()
            if now < max(self._not_before, self._rejected_not_before):
                await anyio.lowlevel.checkpoint()
                return None
            self._rejections += 1
            flight = self._start_flight(current.token if current else None, after_401=True)
            if current is not None:
                # Nobody gets the rejected token again, whatever happens to the renewal.
                self._current = _Current(current.token, current.header, -_NEVER, -_NEVER)
            await self._launch(flight)
        try:
            return await (self._outcome(flight) if flight is not None else self.header())
        except PlanetAuthError:
            return None

    async def renew(self) -> TokenSet:
        """Renew now, whatever the current token's age (e.g. for `auth refresh`).

        Raises:
            PlanetAuthError: As `header` raises (`LoginRequired`, `AuthServerError`,
                `StorageError`).
        """
        flight = self._flight
        if flight is None:
            flight = self._start_flight(None, force=True)
            await self._launch(flight)
        await self._outcome(flight, fall_back=False)
        assert self._current is not None
        return self._current.token

    async def set_token(self, token: TokenSet) -> None:
        """Make `token` the session's, in memory and in storage (after a login, for example).

        The token is adopted first. If it cannot be saved it still serves this manager and
        saving is retried before its next renewal, but the error is raised all the same: the
        session is not stored yet, so another process or a later run cannot use it.

        Raises:
            ConfigurationError: The access token cannot be sent in a header (CR, LF, NUL, ...).
            StorageError: The storage failed.
        """
        require_header_safe(token.access_token.get_secret_value(), "access token")
        if Generation.of(token) is None:
            token = Generation.first().on(token)  # a login: a lineage of its own
        self._adopt(token)
        try:
            async with self.storage.lock(self.session):
                stored = await self._load()
                # Unconditional: a login replaces whatever is stored, whatever its generation.
                error = await self._save(token, over=stored, conditional=False)
        except Exception as exc:
            error = self._storage_error(exc, "lock or read", token)
            self._keep_unsaved(token, over=None, error=error, login=True)
        if error is not None:
            raise error

    async def forget(self) -> TokenSet | None:
        """Delete the session from memory and storage; returns what was stored, if anything."""
        if (
            self._current is None
            and self._unsaved is None
            and await self.storage.load(self.session) is None
        ):
            return None  # nothing to delete: take no lock, which would create a lock file
        async with self.storage.lock(self.session):
            stored = await self.storage.load(self.session)
            await self.storage.delete(self.session)
        current, self._current = self._current, None
        self._unsaved = self._unsaved_over = None
        return stored or (current.token if current else None)

    @property
    def pending(self) -> bool:
        """Whether dropping this manager now could lose something: a renewal is in flight, or
        a token it obtained is not saved yet (see `settle`)."""
        return self._flight is not None or self._unsaved is not None

    async def settle(self) -> None:
        """Wait for a renewal in flight, then save a token that could not be saved before
        (under the lock, unless storage meanwhile holds a newer session). Afterwards, unless it
        raised, `pending` is False and the manager can be dropped without losing a token.

        Raises:
            StorageError: The token still cannot be saved; it is kept, to try again.
        """
        flight = self._flight
        if flight is not None:
            await flight.wait()
        unsaved = self._unsaved
        if unsaved is None:
            return
        try:
            async with self.storage.lock(self.session):
                await self._reconcile(await self._load())
        except Exception as exc:
            raise self._storage_error(exc, "save", unsaved) from None
        if self._unsaved is not None:
            raise StorageError(f"session {self.session!r}: the token is still not saved")

    def discard(self) -> None:
        """Forget the tokens in memory, and only there: the session was deleted elsewhere (a
        sign-out on another replica). The next call reads storage again."""
        self._current = None
        self._unsaved = self._unsaved_over = None

    async def is_initialized(self) -> bool:
        """Whether the session can produce a token without the user: a valid access token, or a
        refresh token, in memory or in storage."""
        now = self._clock()
        if self._valid(now) or (self._unsaved is not None and self._unsaved.refresh_token):
            return True
        stored = await self.storage.load(self.session)
        if stored is None:
            return False
        return stored.refresh_token is not None or now < self._deadlines(stored)[1]

    # -- watching --------------------------------------------------------------------------------

    def expires_in(self) -> float | None:
        """Seconds until the token in memory expires (negative once it has), or None without a
        token or a known expiry. Reads memory only: cheap enough to poll."""
        current = self._current
        if current is None or current.token.expires_at is None:
            return None
        return current.token.expires_at - self._clock()

    def add_listener(self, listener: TokenListener) -> Callable[[], None]:
        """Call `listener` with a `TokenEvent` for each renewal started, succeeded or failed,
        token adopted from storage and 401 rejection of this session.

        Listeners run on the event loop, in the task that renews: they must return quickly and
        never block (hand the event to a queue or a counter). One that raises is logged once, at
        WARNING, and never disturbs the renewal.

        Returns:
            A function that removes the listener again (calling it twice is harmless).
        """
        self._listeners = (*self._listeners, listener)

        def remove() -> None:
            if listener in self._listeners:
                listeners = list(self._listeners)
                listeners.remove(listener)
                self._listeners = tuple(listeners)

        return remove

    def _emit(
        self, kind: TokenEventKind, *, duration: float | None = None, error: str | None = None
    ) -> None:
        if not self._listeners:
            return
        event = TokenEvent(
            kind, self.session, duration=duration, error=error, expires_in=self.expires_in()
        )
        for listener in self._listeners:
            try:
                listener(event)
            except Exception as exc:
                self._listener_failed(listener, exc)

    def _listener_failed(self, listener: TokenListener, exc: Exception) -> None:
        if self._broken_listeners is None:
            self._broken_listeners = set()
        if id(listener) in self._broken_listeners:
            return  # one warning per listener, not one per event
        self._broken_listeners.add(id(listener))
        current = self._current
        logger.warning(
            "session %r: event listener %s raised %s: %s (ignored; not reported again)",
            self.session,
            getattr(listener, "__qualname__", type(listener).__qualname__),
            type(exc).__name__,
            redact(str(exc), _secrets_of(current.token if current else None)),
        )

    # -- renewal ---------------------------------------------------------------------------------

    def _valid(self, now: float) -> bool:
        return self._current is not None and now < self._current.hard

    def _start_flight(
        self, rejected: TokenSet | None, *, after_401: bool = False, force: bool = False
    ) -> _Flight:
        flight = self._flight = _Flight(rejected, after_401=after_401, force=force)
        return flight

    async def _launch(self, flight: _Flight) -> None:
        if self._task_group is not None:
            self._task_group.start_soon(self._fly, flight)
        else:
            # No task group to run it in: run it here, where cancelling this caller must not
            # cancel a renewal other callers are waiting for. The server timeout bounds it.
            with anyio.CancelScope(shield=True):
                await self._fly(flight)

    async def _outcome(self, flight: _Flight, *, fall_back: bool = True) -> str:
        await flight.wait()
        if flight.header is not None:
            return flight.header
        current = self._current
        if fall_back and current is not None and self._clock() < current.hard:
            return current.header  # a renewal ahead of time failed; the token still serves
        error = flight.error
        assert error is not None
        raise fresh_copy(error)

    async def _fly(self, flight: _Flight) -> None:
        before = self._current.token if self._current is not None else None
        self._obtained = None
        self._emit("renewal_started")
        started = time.perf_counter()
        try:
            token = await self._renew(flight.rejected, force=flight.force)
        except Exception as exc:
            flight.error = exc
            if isinstance(exc, StorageError):
                self._record_store_failure(exc)
            else:
                self._record_failure(exc)
            self._emit_failure(exc, started)
        except BaseException as exc:
            flight.error = PlanetAuthError(f"renewal of session {self.session!r} was cancelled")
            self._emit_failure(exc, started)
            raise
        else:
            flight.header = self._adopt(token, after_401=flight.after_401)
            if self._listeners:
                if token is not self._obtained and not token.same_access_token(before):
                    self._emit("token_adopted")  # from storage, not from the server
                self._emit("renewal_succeeded", duration=time.perf_counter() - started)
        finally:
            self._obtained = None
            if self._flight is flight:
                self._flight = None
            await flight.release()

    def _emit_failure(self, exc: BaseException, started: float) -> None:
        duration = time.perf_counter() - started
        self._emit("renewal_failed", duration=duration, error=type(exc).__name__)

    async def _renew(self, rejected: TokenSet | None, *, force: bool = False) -> TokenSet:
        if not force and self._current is None and self._unsaved is None:
            # The first call reads without the lock: a valid stored token needs no renewal, and
            # reading creates no lock file (a read-only command leaves the disk as it was).
            # Saves are atomic renames, so an unlocked read sees a whole file.
            try:
                stored = await self._load()
            except StorageError as exc:
                # The store is unreachable from the start (a pod scheduled before Redis is
                # ready): do as when the lock cannot be taken, without waiting on it again.
                return await self._renew_without_lock(exc, rejected, readable=False)
            if self._usable(stored, rejected):
                assert stored is not None
                logger.debug("session %r: using the stored token", self.session)
                return stored
        async with AsyncExitStack() as stack:
            try:
                await stack.enter_async_context(self.storage.lock(self.session))
            except Exception as exc:
                return await self._renew_without_lock(self._storage_error(exc, "lock"), rejected)
            stored = await self._load()
            latest = await self._reconcile(stored)
            if not force and self._usable(latest, rejected):
                assert latest is not None
                logger.debug("session %r: using the stored token", self.session)
                return latest
            base = (
                latest if latest is not None else (self._current.token if self._current else None)
            )
            marked = False
            if base is not None and base.refresh_token is not None:
                stored = await self._mark_renewing(base, stored)
                marked = self.storage.lock_can_lapse
            # Once a refresh token is sent it may be spent: its answer must be kept and stored
            # even if the caller is cancelled (leaving `async with manager`, say). The server's
            # timeout bounds the wait.
            with anyio.CancelScope(shield=True):
                try:
                    token = await self._spend(base, stored, rejected, force=force)
                except Exception:
                    if marked:
                        assert base is not None
                        await self._unmark(base)
                    raise
            return token

    async def _spend(
        self,
        base: TokenSet | None,
        stored: TokenSet | None,
        rejected: TokenSet | None,
        *,
        force: bool,
    ) -> TokenSet:
        """Ask the server for a token with `base`, then adopt and save it (under the lock)."""
        try:
            token = await self._request(base)
        except InvalidGrantError:
            # A writer that takes no lock (the `planet` CLI) may have rotated the refresh token
            # meanwhile: if the stored session changed since it was read, it is the newer one.
            again = await self._load()
            if (
                again is None
                or (stored is not None and _same_tokens(again, stored))
                or (base is not None and compare(base, again) is Order.HELD)
            ):
                raise
            logger.info("session %r: refresh token was rotated elsewhere; retrying", self.session)
            if not force and self._usable(again, rejected):
                return again
            stored = again
            token = await self._request(again)
        self._install(token)  # in use before it is saved: a failed save must not lose it
        outcome = await self._save(token, over=stored)
        if isinstance(outcome, (LockLost, _Superseded)):
            # Our lease lapsed (this process stalled), or the store holds a newer session
            # (another login, or a higher generation of this one): that one is the session's.
            newer = await self._load()
            if newer is not None and not (stored is not None and _same_tokens(newer, stored)):
                logger.warning(
                    "session %r: %s; using the session another process stored meanwhile",
                    self.session,
                    "the lock lapsed during the renewal"
                    if isinstance(outcome, LockLost)
                    else "the storage holds a newer session than the one just obtained",
                )
                self._unsaved = self._unsaved_over = None
                return newer
        return token

    async def _mark_renewing(self, base: TokenSet, stored: TokenSet | None) -> TokenSet | None:
        """Before spending `base`'s refresh token under a lock that can lapse (a lease), store
        a mark saying so: if this process then stalls past its lease and cannot store the
        rotated token, the next holder finds the mark and does not spend the old one (the
        server would refuse it, and revoke the session). Returns what storage now holds.

        Raises:
            StorageError: Another process's mark is fresh, or the mark cannot be stored (then
                nothing is spent).
        """
        restored = base.extra.get(_RESTORED)
        if (
            isinstance(restored, dict)
            and isinstance(restored.get("until"), (int, float))
            and self._clock() < restored["until"]
        ):
            raise StorageError(
                f"session {self.session!r}: the storage lost it and a process stored it again "
                "from memory; its refresh token is not spent for another "
                f"{restored['until'] - self._clock():.0f} s, so that a process holding a newer "
                "one can store that first"
            )
        mark = base.extra.get(_RENEWING)
        if (
            isinstance(mark, dict)
            and mark.get("by") != self._renewer_id()
            and isinstance(mark.get("at"), (int, float))
            and self._clock() - mark["at"] < _RENEWING_FOR
        ):
            raise StorageError(
                f"session {self.session!r}: another process is renewing it and has not stored "
                "the result yet; its refresh token is not spent twice, so this process waits "
                "for the stored session"
            )
        if not self.storage.lock_can_lapse:
            return stored
        marked = base.model_copy(
            update={
                "extra": {**base.extra, _RENEWING: {"by": self._renewer_id(), "at": self._clock()}}
            }
        )
        # Conditional (the mark is the same generation as `base`): never over a newer session
        # that reached the store since it was read.
        try:
            written = await self.storage.save_if_newer(self.session, marked)
        except Exception:
            # The mark can be stored all the same: a save refused as not durable (Redis's WAIT
            # after a failover left the shard without a replica) was written to the primary,
            # and one whose answer was lost may have been. Nothing is spent: take it away
            # again, or every other process would wait up to `_RENEWING_FOR` for a renewal
            # that never happened (and a manager made anew for the session, as a SessionPool
            # makes one, would be such another process). While the store is down this fails
            # too, quietly: the renewal's own failure is what is reported.
            await self._unmark(base, level=logging.DEBUG)
            raise
        if not written:
            raise StorageError(
                f"session {self.session!r}: the storage received a newer session while this "
                "process was about to renew it; nothing was spent, the next attempt uses it"
            )
        return marked

    async def _unmark(self, base: TokenSet, *, level: int = logging.WARNING) -> None:
        """The token request with `base` failed (a 5xx, no connection, `invalid_grant`, no
        answer in time), or the mark itself could not be stored (it may be all the same): store
        `base` again without this process's mark, while the lease is still ours, so that the
        others renew it, or meet the real error, instead of waiting up to `_RENEWING_FOR` for a
        result that will not come. A removal refused as not durable (``WAIT``) has still
        removed the mark from the primary.

        A request that was sent and whose answer was lost (a timeout mid-flight) may have spent
        the refresh token all the same. The mark is removed then too: keeping it would only
        delay the next attempt (this process, whose own mark never stops it, retries with the
        same token after its backoff anyway), and whether the token was spent is learnt only by
        sending it again (a server with a reuse grace period then answers; one without refuses
        it, and no client can recover a token whose answer never arrived).

        The mark stays where it must: when the lease lapsed (this process stalled, the fenced
        save is refused) or the stored session is no longer this process's marked one (a
        `SessionPool` deleted a refused session; another writer stored a newer one). Never
        raises: the caller raises the renewal's own error; a removal that fails is logged at
        `level`.
        """
        try:
            stored = await self._load()
            mark = stored.extra.get(_RENEWING) if stored is not None else None
            if (
                stored is None
                or not _same_tokens(stored, base)
                or not isinstance(mark, dict)
                or mark.get("by") != self._renewer_id()
            ):
                return
            await self.storage.save_if_newer(self.session, _without_mark(base))
        except LockLost:
            logger.info(
                "session %r: the lease lapsed during the failed renewal; the renewing mark "
                "stays until it expires",
                self.session,
            )
        except Exception as exc:
            logger.log(
                level,
                "session %r: may not have removed the renewing mark after the failed renewal "
                "(%s); if it is left, other processes wait up to %g s before renewing",
                self.session,
                str(self._storage_error(exc, "unmark")),
                _RENEWING_FOR,
            )

    def _renewer_id(self) -> str:
        if self._id is None:
            self._id = secrets.token_hex(8)
        return self._id

    async def _renew_without_lock(
        self, error: PlanetAuthError, rejected: TokenSet | None, *, readable: bool = True
    ) -> TokenSet:
        """The lock cannot be taken (a read-only directory, a storage service that is down).

        A still-valid stored token that this manager does not already have is used. Otherwise a
        grant that needs no shared state (client credentials) renews here, uncoordinated, with a
        WARNING; any other (a rotating refresh token must never be spent twice) leaves the error
        standing, and no token is requested that could not be kept.
        """
        try:
            stored = await self._load()
        except StorageError:
            stored = None
        current = self._current.token if self._current else None
        if (
            stored is not None
            and not stored.same_access_token(current)
            and not stored.same_access_token(rejected)
            and not (current is not None and compare(current, stored) is Order.HELD)
            and self._clock() < self._deadlines(stored)[1]
        ):
            logger.warning(
                "session %r: %s; using the stored token, which is still valid", self.session, error
            )
            return stored
        if self._valid(self._clock()) or not self.grant.renews_without_lock:
            raise error  # the current token still serves; or renewing alone is not safe
        logger.warning(
            "session %r: %s; renewing without coordination: other processes sharing the session "
            "may renew too until the storage is back",
            self.session,
            str(error),  # not the exception: a kept log record would keep its traceback alive
        )
        token = await self._request(current or stored)
        self._install(token)
        self._remember_unsaved(token, stored)  # saved when the storage is back
        return token

    async def _load(self) -> TokenSet | None:
        try:
            stored = await self.storage.load(self.session)
        except Exception as exc:
            raise self._storage_error(exc, "read") from exc
        if stored is not None:
            try:
                require_header_safe(stored.access_token.get_secret_value(), "stored access token")
            except ConfigurationError as exc:
                raise StorageError(
                    f"session {self.session!r} in {self.storage!r} is unusable: {exc}; "
                    "log in again to replace it"
                ) from None
        return stored

    async def _reconcile(self, stored: TokenSet | None) -> TokenSet | None:
        """The newest session: the stored one, or the one this manager holds when that is newer
        by generation (see `planet_async.storage.may_replace`), which it then writes back: one
        it could not save yet, or one the store has lost since (a failover that brought back an
        older copy). The older stored copy's refresh token is never spent: it may be spent
        already. Called under the lock."""
        unsaved = self._unsaved
        held = unsaved if unsaved is not None else (self._current.token if self._current else None)
        if held is None:
            return stored
        if stored is None and unsaved is None:
            return await self._restore_lost(held)
        if unsaved is not None and self._unsaved_login:
            return await self._reconcile_login(unsaved, stored)
        if stored is None:
            order = Order.HELD
        else:
            replaced = self._unsaved_over if unsaved is not None else None
            order = compare(held, stored, replaced=replaced)
        if order is Order.STORED or (order is Order.SAME and unsaved is None):
            if unsaved is not None:
                logger.info(
                    "session %r: storage holds a newer session than the unsaved one; using it",
                    self.session,
                )
                self._unsaved = self._unsaved_over = None
            return stored
        if unsaved is None:
            logger.warning(
                "session %r: the storage holds an older generation of the session than this "
                "process (it lost writes: a failover, a restore?); writing this one back",
                self.session,
            )
        held = _without_mark(held)
        if isinstance(await self._save(held, over=stored), _Superseded):
            return await self._load()
        return held

    async def _reconcile_login(self, unsaved: TokenSet, stored: TokenSet | None) -> TokenSet | None:
        """A login not stored yet: a new lineage, which generations cannot order against what
        is stored. It replaces what it found stored, or (when the storage could not even be read
        then) anything stored before it; a session stored since (another login, or a renewal of
        one) wins. Saved unconditionally, as a login is."""
        over = self._unsaved_over
        if stored is not None and not stored.same_access_token(unsaved):
            stored_is_older = (
                stored.same_access_token(over)
                if over is not None
                else stored.issued_at < math.floor(unsaved.issued_at)
            )
            if not stored_is_older:
                logger.info(
                    "session %r: storage holds a newer session than the unsaved login; using it",
                    self.session,
                )
                self._unsaved = self._unsaved_over = None
                return stored
        await self._save(unsaved, over=over, conditional=False)
        return unsaved

    async def _restore_lost(self, held: TokenSet) -> TokenSet | None:
        """The storage holds no session though this process holds one: a store that came back
        empty, or a deletion nobody told this process of. With `lost_session_wait`, store the
        copy again, marked so that its refresh token is not spent before the wait ends (see the
        argument); return what is stored now. Without it, None once the server says the
        refresh token is still active, or cannot tell (`_require_active`); and None with
        nothing to protect (no refresh token; a lock that cannot lapse, so a store that does
        not lose data): the copy in memory is renewed as it is."""
        wait = self._lost_session_wait
        if held.refresh_token is None or not self.storage.lock_can_lapse:
            return None
        if wait is None:
            await self._require_active(held)
            return None
        held = _without_mark(held)
        marked = held.model_copy(
            update={"extra": {**held.extra, _RESTORED: {"until": self._clock() + wait}}}
        )
        try:
            written = await self.storage.save_if_newer(self.session, marked)
        except Exception as exc:
            raise self._storage_error(exc, "store again", marked) from exc
        if not written:
            return await self._load()  # a newer one arrived meanwhile
        logger.warning(
            "session %r: the storage holds no session, though this process holds one (a store "
            "that came back empty?); stored it again, and its refresh token is not spent for "
            "%g s, so that a process holding a newer one can store that first",
            self.session,
            wait,
        )
        return marked

    async def _require_active(self, held: TokenSet) -> None:
        """Before renewing from memory a session the store has lost, ask the server whether its
        refresh token is still active (introspection, which spends nothing). Inactive means
        another process renewed the session with it after this one last read the store (that
        process holds the newest refresh token, and stores it again at its next renewal), or
        it was revoked: spending it would be refused, and a server that detects reuse would
        revoke the session for every process. Nothing is spent then; the next attempts (after
        the server backoff) adopt what the store holds by then. A server that cannot tell
        leaves the renewal as it was.

        Raises:
            LoginRequired: The server reports the refresh token inactive.
            AuthServerUnavailable: The server could not be asked.
        """
        ask = getattr(self.grant, "still_active", None)
        if ask is None:
            return
        active = await ask(held, clock=self._clock)
        if active is False:
            raise LoginRequired(
                f"session {self.session!r}: the storage holds no session (it came back empty, "
                "or the session was deleted) and the server reports this process's refresh "
                "token inactive: another process renewed the session since (it stores its newer "
                "copy again at its next renewal, and this process then uses it), or it was "
                "revoked (log in again). Nothing was spent"
            )
        if active:
            logger.info(
                "session %r: the storage holds no session, though this process holds one; the "
                "server reports its refresh token active (nobody renewed with it), so it is "
                "renewed from memory and stored again",
                self.session,
            )

    async def _save(
        self, token: TokenSet, *, over: TokenSet | None, conditional: bool = True
    ) -> PlanetAuthError | None:
        """Save `token`, which replaces `over` in storage: unless the storage holds a newer
        session (`conditional`; then `_Superseded` is returned and `token` is not kept to save
        later). On failure keep it, to save it later, and return the error; never raise, since
        the token is already in use."""
        try:
            if not conditional:
                await self.storage.save(self.session, token)
            elif not await self.storage.save_if_newer(self.session, token):
                self._unsaved = self._unsaved_over = None
                self._save_failures = 0
                return _Superseded(f"session {self.session!r}: the storage holds a newer one")
        except Exception as exc:
            error = self._storage_error(exc, "save", token)
            self._keep_unsaved(token, over=over, error=error, login=not conditional)
            return error
        if self._unsaved is not None:
            logger.info(
                "session %r: saved the session that could not be saved before", self.session
            )
        self._unsaved = self._unsaved_over = None
        self._save_failures = 0
        return None

    def _keep_unsaved(
        self, token: TokenSet, *, over: TokenSet | None, error: Exception, login: bool = False
    ) -> None:
        if self._unsaved is None:  # one warning per episode, not one per attempt
            logger.warning(
                "session %r: could not save the new token (%s); it keeps serving from memory, "
                "and saving will be retried before the next renewal",
                self.session,
                str(error),
            )
        self._remember_unsaved(token, over, login=login)

    def _remember_unsaved(
        self, token: TokenSet, over: TokenSet | None, *, login: bool = False
    ) -> None:
        """Keep `token` to save later (after a backoff), as replacing `over` in storage."""
        self._unsaved, self._unsaved_over = token, over
        self._unsaved_login = login
        self._save_failures += 1
        self._save_not_before = self._clock() + self._store_backoff(self._save_failures)

    def _storage_error(
        self, exc: Exception, action: str, token: TokenSet | None = None
    ) -> PlanetAuthError:
        """`exc` as the library's own error: a storage's foreign exceptions become
        `StorageError`, with no secret of `token` in the message."""
        if isinstance(exc, PlanetAuthError):
            return exc
        detail = redact(str(exc), _secrets_of(token))
        error = StorageError(
            f"{self.storage!r} could not {action} session {self.session!r}: "
            f"{type(exc).__name__}: {detail}"
        )
        error.__cause__ = exc
        return error

    async def _request(self, base: TokenSet | None) -> TokenSet:
        self.renewals += 1
        logger.debug("session %r: renewing (%s)", self.session, self.grant.description)
        stamp = Generation.after(base)  # the next generation of `base`'s login
        loop = renewal_loop()
        if self._off_loop and (token := await self._from_helper(base, stamp)) is not None:
            self._obtained = token
        elif self._off_loop and not loop.in_loop_thread():
            token = self._obtained = await loop.run_here(self._obtain_and_install, base, stamp)
        else:
            token = self._obtained = stamp.on(await self.grant.renew(base, clock=self._clock))
        return token

    async def _from_helper(self, base: TokenSet | None, stamp: Generation) -> TokenSet | None:
        """The token request sent by the helper process (`_helper`), for the library's grants
        with the default transport, once the helper is ready: written from here, its answer read
        and its token put in use on the helper's reading thread, with no turn of a loop to wait
        for. This loop saves it when its turn comes. None when the helper cannot take it."""
        grant = self.grant
        if not isinstance(grant, (ClientCredentialsGrant, RefreshTokenGrant)):
            return None
        if not grant.loop_free or not grant.server.helper_process:  # loop_free: not a subclass
            return None
        if not helper().ready:
            if self._current is not None:
                # A program that lived to renew a token it had in use: a helper for the next
                # renewal (this one is made as before). Short ones never start it.
                helper().start()
            return None
        prepared = await grant.prepare(base, clock=self._clock)
        outcome: list[TokenSet | Exception] = []
        caller = anyio.lowlevel.current_token()
        answered = anyio.Event()

        def answer(response: HttpResponse | AuthServerUnavailable) -> None:
            if isinstance(response, AuthServerUnavailable):
                outcome.append(response)
            else:
                try:
                    token = stamp.on(prepared.token(response, received_at=self._clock()))
                except Exception as exc:  # the renewal's error, raised on the caller's loop
                    outcome.append(exc)
                else:
                    self._install(token)
                    outcome.append(token)
            wake(answered, caller)

        timeout = grant.server.timeout
        ident = helper().submit(prepared.request, timeout, answer)
        if ident is None:
            return None
        with anyio.move_on_after(timeout + _HELPER_MARGIN):
            await answered.wait()
        if not outcome and helper().withdraw(ident):
            raise AuthServerUnavailable(
                f"{prepared.endpoint} did not answer within {timeout:g} s",
                endpoint=prepared.endpoint,
            )
        await answered.wait()  # answered meanwhile, or being answered right now
        result = outcome[0]
        if isinstance(result, Exception):
            raise result
        return result

    async def _obtain_and_install(self, base: TokenSet | None, stamp: Generation) -> TokenSet:
        """On the renewal loop: ask the server, and put the answer in use at once. The caller's
        loop saves it when its turn comes; meanwhile every request already gets the new token."""
        token = stamp.on(await self.grant.renew(base, clock=self._clock))
        self._install(token)
        return token

    def _usable(self, stored: TokenSet | None, rejected: TokenSet | None) -> bool:
        if stored is None or (rejected is not None and stored.same_access_token(rejected)):
            return False
        return self._clock() < self._deadlines(stored)[0]

    def _deadlines(self, token: TokenSet) -> tuple[float, float]:
        lifetime = token.lifetime
        if lifetime is None:
            return _NEVER, _NEVER
        assert token.expires_at is not None
        hard = token.expires_at - min(self._expiry_margin, max(lifetime, 0.0) * 0.1)
        soft = token.issued_at + lifetime * self._soft_fraction
        return min(soft, hard), hard

    def _install(self, token: TokenSet) -> str:
        soft, hard = self._deadlines(token)
        header = f"Bearer {token.access_token.get_secret_value()}"
        self._current = _Current(token, header, soft, hard)
        return header

    def _adopt(self, token: TokenSet, *, after_401: bool = False) -> str:
        header = self._install(token)
        self._failures = 0
        self._store_failures = 0
        self._last_error = None
        self._not_before = 0.0
        if after_401:
            # The next rejection waits a while: an API that refuses fresh tokens gets no storm.
            self._rejected_not_before = self._clock() + self._backoff(self._rejections)
        else:
            self._rejections = 0
        return header

    def _record_failure(self, exc: BaseException) -> None:
        self._failures += 1
        self._last_error = exc
        delay = self._backoff(self._failures)
        retry_after = getattr(exc, "retry_after", None)
        if isinstance(retry_after, (int, float)) and retry_after > delay:
            delay = min(float(retry_after), 3600.0)
        self._not_before = self._clock() + delay
        if isinstance(exc, StorageError) and exc.retry_after is None:
            exc.retry_after = delay  # a web service's 503 says when to come back
        logger.warning(
            "session %r: renewal failed (%s); next attempt in %.1f s",
            self.session,
            str(exc),  # not the exception: a log record must not keep its frames alive
            delay,
        )

    def _record_store_failure(self, exc: StorageError) -> None:
        """The storage failed a renewal (no lock, no read, another process's renewal pending):
        wait a short while, never past the moment the current token stops serving, so that an M2M
        session renews without coordination as soon as it needs a token, and leave the
        authorization server's backoff as it was."""
        self._store_failures += 1
        self._last_error = exc
        now = self._clock()
        delay = self._store_backoff(self._store_failures)
        current = self._current
        until = now + delay
        if current is not None and now < current.hard:
            until = min(until, current.hard)
        self._not_before = max(self._not_before, until)  # a server's Retry-After still holds
        if exc.retry_after is None:
            exc.retry_after = max(self._not_before - now, 0.0)  # a web service's 503 says when
        level = logging.WARNING if self._store_failures == 1 else logging.DEBUG
        logger.log(
            level,
            "session %r: the storage failed (%s); next attempt in %.1f s",
            self.session,
            str(exc),  # not the exception: a kept log record would keep its traceback alive
            self._not_before - now,
        )

    def _store_backoff(self, attempt: int) -> float:
        ceiling = min(_STORE_RETRY_CAP, _STORE_RETRY_BASE * 2 ** min(attempt - 1, 30))
        return float(ceiling * (0.5 + 0.5 * self._rng.random()))

    def _backoff(self, attempt: int) -> float:
        base, cap = self._backoff_bounds
        ceiling = min(cap, base * 2 ** min(attempt - 1, 30))
        return float(ceiling * (0.5 + 0.5 * self._rng.random()))


def _secrets_of(token: TokenSet | None) -> list[str]:
    """What must not appear in a message about `token`: its access and refresh tokens."""
    if token is None:
        return []
    secrets = [token.access_token.get_secret_value()]
    if token.refresh_token is not None:
        secrets.append(token.refresh_token.get_secret_value())
    return secrets


def _without_mark(token: TokenSet) -> TokenSet:
    if _RENEWING not in token.extra:
        return token
    extra = {key: value for key, value in token.extra.items() if key != _RENEWING}
    return token.model_copy(update={"extra": extra})


def _same_tokens(a: TokenSet, b: TokenSet) -> bool:
    return a.same_access_token(b) and a.same_refresh_token(b)
