"""The renewal loop: one event loop in a daemon thread, where synchronous callers' sessions renew.

A synchronous program (a `requests` script, an ``httpx.Client``, a notebook cell) has no event loop
to renew a token on, or, in a notebook, has one that is running and cannot be entered again. So a
session used from synchronous code lives on this loop: a thread calls into it and waits for the
answer, while the loop runs the renewal once for every thread that asked. The per-request path
never comes here while the token in memory is fresh; it reads the header and returns.

The loop starts on first use, runs in a daemon thread (it never keeps a process from exiting), and
starts again in a child process after ``fork`` (the thread does not survive a fork; the sessions'
tokens in memory do, and keep serving the child).
"""

from __future__ import annotations

import contextlib
import os
import threading
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

import anyio
import anyio.abc
import anyio.from_thread
import anyio.lowlevel
from anyio.from_thread import BlockingPortal

from ._errors import AsyncOnlyError, ConfigurationError

__all__ = ["RenewalLoop", "renewal_loop", "wake"]

_T = TypeVar("_T")


class Session(Protocol):
    """What the loop drives: a `TokenManager` (entered there, forgotten after a fork).

    A manager its owner has entered on another loop cannot be driven here as well (its renewals
    ahead would start in that loop's task group, from this thread): that is refused.
    """

    async def __aenter__(self) -> Any: ...

    async def __aexit__(self, *exc_info: Any) -> bool | None: ...

    def leave_loop(self) -> None: ...


class RenewalLoop:
    """An asyncio event loop in a daemon thread, and the sessions it drives.

    Every `TokenManager` it drives is entered on it (`async with manager`), so that past the
    refresh-ahead threshold the renewal runs there in the background while callers keep the
    current token.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._portal: BlockingPortal | None = None
        self._thread: threading.Thread | None = None
        self._driven: weakref.WeakSet[Session] = weakref.WeakSet()

    def __repr__(self) -> str:
        state = "running" if self._portal is not None else "not started"
        return f"RenewalLoop({state}, sessions={len(self._driven)})"

    def _start(self) -> BlockingPortal:
        ready = threading.Event()
        started: list[BlockingPortal] = []

        async def serve() -> None:
            async with BlockingPortal() as portal:
                started.append(portal)
                ready.set()
                await portal.sleep_until_stopped()

        # asyncio, whatever the program's own loops run on: callers hand it work from their
        # threads, and trio refuses such hand-overs from a thread that runs trio itself.
        thread = threading.Thread(
            target=anyio.run,
            args=(serve,),
            kwargs={"backend": "asyncio"},
            name="planet_async-renewals",
            daemon=True,
        )
        thread.start()
        ready.wait()
        self._thread = thread
        return started[0]

    def portal(self) -> BlockingPortal:
        """The running loop's portal; starts the loop on first use."""
        portal = self._portal
        if portal is None:
            with self._lock:
                portal = self._portal
                if portal is None:
                    portal = self._portal = self._start()
        return portal

    def in_loop_thread(self) -> bool:
        """Whether the caller runs on this loop (where blocking for it would deadlock)."""
        return self._thread is not None and threading.current_thread() is self._thread

    def drives(self, manager: Session) -> bool:
        """Whether `manager` lives on this loop (a synchronous caller has used it)."""
        return manager in self._driven

    def call(self, manager: Session, func: Callable[..., Awaitable[_T]], *args: Any) -> _T:
        """Run ``func(*args)``, a coroutine of `manager`'s, on the loop, where `manager` then
        lives; block until it is done.

        Raises:
            AsyncOnlyError: Called from the loop's own thread (a listener, say), which would
                wait for itself.
            ConfigurationError: `manager` is entered (``async with``) on another loop.
        """
        portal = self._portal_for_caller()
        if manager not in self._driven:
            self._drive(portal, manager)
        return portal.call(func, *args)

    async def run(self, manager: Session, func: Callable[..., Awaitable[_T]], *args: Any) -> _T:
        """`call` from an event loop: a worker thread waits, so the caller's loop runs on."""
        return await anyio.to_thread.run_sync(self.call, manager, func, *args)

    async def run_here(self, func: Callable[..., Awaitable[_T]], *args: Any) -> _T:
        """Await ``func(*args)`` run on the loop: a token request, whose steps then do not wait
        for turns of the caller's loop; the caller's loop takes one turn for the answer. Unlike
        `call`, the session stays where it lives (its storage is used from the caller's loop).
        """
        if self.in_loop_thread():
            return await func(*args)
        portal = self._portal_for_caller()
        # Not `to_thread.run_sync(portal.call, ...)`: on a busy loop each of its steps (a
        # checkpoint, the thread limiter, the result) waits behind every ready task. Here the
        # call is handed over at once, and the answer wakes the caller once.
        caller = anyio.lowlevel.current_token()
        done = anyio.Event()
        future = portal.start_task_soon(func, *args)
        future.add_done_callback(lambda _: wake(done, caller))
        await done.wait()
        return future.result()

    def _portal_for_caller(self) -> BlockingPortal:
        if self.in_loop_thread():
            raise AsyncOnlyError(
                "a synchronous planet_async call was made from the renewal thread itself "
                "(an event listener?); it would wait for itself"
            )
        return self.portal()

    def _drive(self, portal: BlockingPortal, manager: Session) -> None:
        with self._lock:
            if manager in self._driven:
                return
            self._driven.add(manager)
        try:
            portal.start_task(_host, manager)
        except RuntimeError:
            with self._lock:
                self._driven.discard(manager)
            raise ConfigurationError(
                f"{manager!r} is entered (`async with`) on another event loop, where it renews; "
                "a synchronous client cannot use it from here: give the sync client a session "
                "of its own, or leave the `async with` and share the session with `from_adapter`"
            ) from None

    def _after_fork_in_child(self) -> None:
        """The thread is gone in a child process: forget it, and what each session held of it
        (its task group, a renewal that was in flight), so the next call starts afresh."""
        self._lock = threading.Lock()
        self._portal = None
        self._thread = None
        driven = list(self._driven)
        self._driven = weakref.WeakSet()
        for manager in driven:
            manager.leave_loop()


async def _host(manager: Session, *, task_status: anyio.abc.TaskStatus[None]) -> None:
    """Keep a session entered on the loop, so it renews ahead in the background there. The
    session then lives as long as the process (sessions are few and small)."""
    async with manager:
        task_status.started()
        await anyio.sleep_forever()


_loop = RenewalLoop()
if hasattr(os, "register_at_fork"):  # POSIX; Windows has no fork
    os.register_at_fork(after_in_child=_loop._after_fork_in_child)


def wake(done: anyio.Event, caller: anyio.lowlevel.EventLoopToken) -> None:
    """Set `done` on the caller's loop, from the renewal loop, without waiting for it: the
    renewal loop must not wait for a busy loop to run the call. The call is queued on the
    caller's loop through its own thread-safe entry (asyncio's ``call_soon_threadsafe``, trio's
    ``TrioToken.run_sync_soon``), which returns at once."""
    native: Any = caller.native_token
    queue = getattr(native, "call_soon_threadsafe", None) or native.run_sync_soon
    # The caller's loop may have ended meanwhile (its task was cancelled): nothing to wake.
    # asyncio raises RuntimeError for a closed loop; trio's RunFinishedError is one too.
    with contextlib.suppress(RuntimeError):
        queue(done.set)


def renewal_loop() -> RenewalLoop:
    """The process's renewal loop."""
    return _loop
