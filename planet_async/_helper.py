"""The helper process: token requests sent from a process of their own.

A renewal made in the program's own process shares its interpreter lock. When the program is busy
(an event loop with 256 downloads, say), every step of the HTTP exchange (resolving, connecting,
each read, each turn of a loop) waits for that lock, and a token request the server answers in
5 ms took 25 ms or more (the ``clients_renewal`` benchmark).

So a `TokenManager` hands its token requests, built and as plain data (`HttpRequest`), to one
helper process per program, which sends them with httpx as `HttpxTransport` does (`_wire`, which
it runs by its path: httpx and the standard library only) and writes back each answer. In the
program, the answer is read by whichever comes first: a request on the per-request path (`poll`,
while a renewal waits) or the helper's reading thread, which waits on the pipe outside the lock.
The manager's callback then puts the new token in use right there; the caller's loop only wrote
the request (it waits for no turn) and learns of the answer later, when it saves.

Secrets cross only the two pipes between the processes. The helper starts in the background the
first time a program renews a token it had in use; until it is ready, on Windows, in a frozen
application, with ``PLANET_ASYNC_HELPER_PROCESS=0``, and after it failed to start three times,
requests are made as before. It leaves when the program does (the end of its input), and is
started anew if it dies.

A request the helper was given is never sent again by the program: if the helper dies with it,
the server may have received it (and rotated a refresh token), so the caller gets
`AuthServerUnavailable`, as for a connection lost mid-request.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import select
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from . import _wire
from ._errors import AuthServerUnavailable
from ._redact import redact
from ._transport import HttpRequest, HttpResponse

__all__ = ["Answer", "HelperProcess", "helper"]

logger = logging.getLogger("planet_async")

Answer = Callable[[HttpResponse | AuthServerUnavailable], None]
"""Called, on the helper's reading thread, with a request's response or the error it met."""

_MAX_STARTS = 3
_READY_WITHIN = 30.0
"""Seconds a new helper has to say it is ready (it imports httpx first)."""
_CHUNK = 65536


class HelperProcess:
    """The program's helper process: `submit` requests from any thread; answers are given on the
    helper's reading thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._ready = False
        self._starting = False
        self._starts = 0
        self._pending: dict[int, tuple[HttpRequest, Answer]] = {}
        self._reading = threading.Lock()
        """Held by whoever reads the helper's answers: its reading thread, or a `poll`."""
        self._buffer = bytearray()
        self._next = 0
        self.sent = 0
        """Requests given to the helper: what tests and benchmarks count."""

    def __repr__(self) -> str:
        state = "ready" if self._ready else "not ready"
        return f"HelperProcess({state}, starts={self._starts}, sent={self.sent})"

    @property
    def ready(self) -> bool:
        return self._ready

    def submit(self, request: HttpRequest, timeout: float, answer: Answer) -> int | None:
        """Give `request` to the helper; `answer` is called with its outcome, once, unless
        `withdraw` comes first.

        Returns:
            The request's number, for `withdraw`; None when the helper is not ready (it is then
            started) or could not take the request whole: the caller sends it itself.
        """
        with self._lock:
            if not self._ready:
                self._start_locked()
                return None
            proc = self._proc
            assert proc is not None
            assert proc.stdin is not None
            self._next += 1
            ident = self._next
            data = _wire.frame(
                {
                    "id": ident,
                    "method": request.method,
                    "url": request.url,
                    "headers": dict(request.headers),
                    "form": dict(request.form) if request.form is not None else None,
                    "timeout": timeout,
                }
            )
            try:  # non-blocking: a helper that reads nothing never holds up the program
                written = os.write(proc.stdin.fileno(), data)
            except OSError:
                written = -1
            if written == len(data):
                self._pending[ident] = (request, answer)
                self.sent += 1
                return ident
            held = self._forget(proc, "it did not take a request")
        _fail(held, "it did not take a request")
        return None

    def withdraw(self, ident: int) -> bool:
        """Take request `ident`'s answer back: True if it was not given yet (and never will
        be). Its caller gave up waiting; the helper, which enforces the request's timeout
        itself, did not answer in time, so it is stopped."""
        with self._lock:
            if self._pending.pop(ident, None) is None:
                return False
            reason = "it did not answer in time"
            held = self._forget(self._proc, reason) if self._proc is not None else []
        _fail(held, reason)
        return True

    def start(self) -> None:
        """Start the helper in the background, unless it runs or is starting (or failed to
        start too often, or this platform has none)."""
        with self._lock:
            self._start_locked()

    def _start_locked(self) -> None:
        """Start a helper from a thread of its own, which then reads it."""
        if self._ready or self._starting or self._starts >= _MAX_STARTS or not _supported():
            return
        self._starting = True
        self._starts += 1
        threading.Thread(target=self._run, name="planet_async-helper", daemon=True).start()

    def _run(self) -> None:
        """The reading thread: start the helper, then wait for its frames, blocked outside the
        interpreter lock, and hand each answer to its caller."""
        try:
            proc = _spawn()
        except OSError as exc:
            logger.warning("token requests are made in-process: no helper process (%s)", exc)
            with self._lock:
                self._starting = False
            return
        fd = self._attach(proc)
        reason = "it exited"
        deadline = time.monotonic() + _READY_WITHIN
        try:
            while True:
                wait = None if self._ready else max(0.0, deadline - time.monotonic())
                if not select.select([fd], [], [], wait)[0]:  # only with a wait: not ready
                    reason = f"it was not ready within {_READY_WITHIN:g} s"
                    break
                with self._reading:
                    if not self._drain(proc, fd):
                        break
        except (OSError, ValueError) as exc:
            reason = f"{type(exc).__name__}: {exc}"
        with self._lock:
            held = self._forget(proc, reason) if self._proc is proc else []
        with self._reading:
            stdout = proc.stdout
            assert stdout is not None
            stdout.close()  # nothing reads it any more; `poll` checks this under the same lock
        _fail(held, reason)

    def _attach(self, proc: subprocess.Popen[bytes]) -> int:
        """Take `proc` as the helper, its pipes non-blocking; return the descriptor to read."""
        assert proc.stdin is not None
        assert proc.stdout is not None
        os.set_blocking(proc.stdin.fileno(), False)
        os.set_blocking(proc.stdout.fileno(), False)
        with self._reading:
            self._buffer = bytearray()
        with self._lock:
            self._proc = proc
        return proc.stdout.fileno()

    def poll(self) -> None:
        """Read the answers that have arrived, here and now, if a request is pending and no
        other thread is reading. A renewal's callers call this (the per-request path, while a
        renewal is in flight): the first request after the answer arrived then puts the new
        token in use, before the reading thread's wake-up, which in a busy program waits for
        the interpreter lock (up to its switch interval, 5 ms)."""
        proc = self._proc
        if not self._pending or proc is None or not self._reading.acquire(blocking=False):
            return
        try:
            if not proc.stdout.closed:  # type: ignore[union-attr]
                self._drain(proc, proc.stdout.fileno())  # type: ignore[union-attr]
        except (OSError, ValueError):
            pass  # the reading thread finds it too, and stops the helper
        finally:
            self._reading.release()

    def _drain(self, proc: subprocess.Popen[bytes], fd: int) -> bool:
        """Read what `fd` has (under `_reading`) and hand out the answers it completes; False
        at its end."""
        while True:
            try:
                data = _read_now(fd)
            except BlockingIOError:
                return True
            if not data:
                return False
            self._buffer += data
            for message in _wire.frames(self._buffer):
                self._answer(proc, message)

    def _answer(self, proc: subprocess.Popen[bytes], message: dict[str, Any]) -> None:
        if message.get("ready") is True:
            with self._lock:
                self._ready = self._proc is proc
                self._starting = False
            logger.debug("token requests are sent from helper process %d", proc.pid)
            return
        with self._lock:
            found = self._pending.pop(message.get("id", -1), None)
        if found is None:  # withdrawn
            return
        request, answer = found
        outcome: HttpResponse | AuthServerUnavailable
        if "error" in message:
            text = redact(str(message["error"]), request.secrets())
            outcome = AuthServerUnavailable(text, endpoint=request.url)
        else:
            outcome = HttpResponse(
                status_code=message["status"],
                headers=message["headers"],
                content=message["content"].encode("latin-1"),
            )
        _call(answer, outcome)

    def _forget(
        self, proc: subprocess.Popen[bytes], reason: str
    ) -> list[tuple[HttpRequest, Answer]]:
        """Stop `proc` (under the lock) and return the requests it held, for `_fail`. The next
        request starts another helper, up to _MAX_STARTS in all."""
        logger.warning("the helper process sending token requests stopped: %s", reason)
        self._proc = None
        self._ready = self._starting = False
        held = list(self._pending.values())
        self._pending = {}
        with contextlib.suppress(OSError):
            proc.kill()
        with contextlib.suppress(OSError):
            proc.stdin.close()  # type: ignore[union-attr]
        threading.Thread(target=proc.wait, daemon=True).start()  # reap it
        return held

    def _after_fork_in_child(self) -> None:
        """A forked child has the parent's pipes, not its helper or reading thread: close its
        copies (the parent's stay open) and start a helper of its own when needed."""
        proc = self._proc
        if proc is not None:
            for stream in (proc.stdin, proc.stdout):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()  # the file object too: its descriptor is never reused
        self.__init__()  # type: ignore[misc]


def _read_now(fd: int) -> bytes:
    """What non-blocking `fd` has, read without giving up the interpreter lock: ``os.read``
    releases it around the call and must then get it back, which in a busy program means
    waiting (up to its switch interval, 5 ms) behind the thread that took it meanwhile. The
    descriptor is non-blocking, so the call returns at once. Falls back to ``os.read`` where
    the C library cannot be called this way.

    Raises:
        BlockingIOError: Nothing to read yet.
    """
    if _libc_read is None:
        return os.read(fd, _CHUNK)
    buffer = ctypes.create_string_buffer(_CHUNK)
    got = _libc_read(fd, buffer, _CHUNK)
    if got < 0:
        error = ctypes.get_errno()
        raise OSError(error, os.strerror(error)) if error not in _AGAIN else BlockingIOError()
    return buffer.raw[:got]


def _libc() -> Any:
    """libc's ``read``, called with the interpreter lock held (``ctypes.PyDLL``), or None (no
    ctypes in this interpreter, or no C library to call)."""
    try:
        read = ctypes.PyDLL(None, use_errno=True).read
    except (OSError, AttributeError):
        return None
    read.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t)
    read.restype = ctypes.c_ssize_t
    return read


_AGAIN = {errno.EAGAIN, errno.EWOULDBLOCK}
try:
    import ctypes
except ImportError:  # an interpreter built without it: os.read, which gives the lock up
    _libc_read = None
else:
    _libc_read = _libc() if os.name == "posix" else None


def _fail(held: list[tuple[HttpRequest, Answer]], reason: str) -> None:
    """Answer each request a stopped helper held with an error."""
    for request, answer in held:
        error = AuthServerUnavailable(
            f"{request.url}: the helper process sending the token request stopped "
            f"({reason}); the server may have received the request",
            endpoint=request.url,
        )
        _call(answer, error)


def _call(answer: Answer, outcome: HttpResponse | AuthServerUnavailable) -> None:
    try:
        answer(outcome)
    except Exception:  # the reading thread must go on for the other requests
        logger.exception("a token request's answer could not be handled")


def _supported() -> bool:
    """Whether this program can have a helper: on POSIX (the reading thread waits with
    ``select`` on a pipe), run by a Python interpreter (not a frozen application, whose
    executable is the application itself), and not switched off with
    ``PLANET_ASYNC_HELPER_PROCESS=0``."""
    return (
        os.name == "posix"
        and bool(sys.executable)
        and not getattr(sys, "frozen", False)
        and os.environ.get("PLANET_ASYNC_HELPER_PROCESS", "1") != "0"
    )


def _spawn() -> subprocess.Popen[bytes]:
    """This interpreter, with this program's import path (for httpx), running `_wire` by its
    path: the helper needs httpx and the standard library only. No terminal output (its answers
    carry its errors)."""
    code = (
        f"import runpy, sys; sys.path[:] = {list(sys.path)!r}; "
        f"runpy.run_path({_wire.__file__!r}, run_name='__main__')"
    )
    return subprocess.Popen(  # noqa: S603 - this interpreter, this library's own file
        [sys.executable, "-c", code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        close_fds=True,
    )


_helper = HelperProcess()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_helper._after_fork_in_child)


def helper() -> HelperProcess:
    """The program's helper process."""
    return _helper
