"""The helper process's side, and what it shares with the library: standard library and httpx only.

The helper process (`_helper`) runs this file by its path, not as part of the package, so that it
starts in a quarter of a second with httpx alone instead of importing the whole library: it
needs no more than sending a request and putting what went wrong into words. The library
imports the same file as `planet_async._wire` for those words (`unreachable`), the limits
(`timeouts`) and the frames.

Frames on the pipes between the program and its helper are a 4-byte length and a JSON object.
A request: ``id``, ``method``, ``url``, ``headers``, ``form`` (or null) and ``timeout``. Its
answer: ``id`` with ``status``, ``headers`` and ``content`` (the body's bytes as latin-1 text), or
with ``error`` (why it could not be sent, in words). The helper's first frame is ``ready``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx

__all__ = ["frame", "frames", "serve", "timeouts", "unreachable"]

SENDERS = 16
"""Requests the helper sends at once; more wait for a thread."""
_CHUNK = 65536


def frame(message: dict[str, Any]) -> bytes:
    body = json.dumps(message, separators=(",", ":")).encode()
    return len(body).to_bytes(4, "big") + body


def frames(buffer: bytearray) -> list[dict[str, Any]]:
    """Take the complete frames off the front of `buffer`."""
    found = []
    while (message := _one_frame(buffer)) is not None:
        found.append(message)
    return found


def _one_frame(buffer: bytearray) -> dict[str, Any] | None:
    """Take the first frame off the front of `buffer`, if it is complete."""
    if len(buffer) < 4:
        return None
    size = int.from_bytes(buffer[:4], "big")
    if len(buffer) < 4 + size:
        return None
    message: dict[str, Any] = json.loads(bytes(buffer[4 : 4 + size]))
    del buffer[: 4 + size]
    return message


def timeouts(timeout: float) -> httpx.Timeout:
    """httpx's own limits inside a call's overall `timeout`: connecting (TCP, then TLS) gets half
    of it, so that a server that never finishes the handshake is given up by httpx, which closes
    the socket, rather than by the overall deadline, whose cancellation in the middle of a TLS
    handshake leaves the socket to the garbage collector (httpcore closes it on errors only)."""
    return httpx.Timeout(timeout, connect=timeout / 2)


def unreachable(url: str, exc: httpx.TransportError, timeout: float) -> str:
    """What went wrong reaching `url`, in words a person can act on: the name did not resolve,
    the connection was refused, TLS failed (and why), or the server kept silent."""
    if isinstance(exc, httpx.ConnectTimeout):  # the TCP connection or the TLS handshake
        return f"{url} could not be reached: no connection within {timeout / 2:g} s"
    if isinstance(exc, httpx.TimeoutException):
        return f"{url} did not answer within {timeout:g} s"
    parts = urlsplit(url)
    host = parts.hostname or "?"
    port = parts.port or (443 if parts.scheme == "https" else 80)
    causes = list(_causes(exc))

    def first(kind: type[BaseException]) -> BaseException | None:
        return next((cause for cause in causes if isinstance(cause, kind)), None)

    if isinstance(found := first(socket.gaierror), socket.gaierror):
        detail = found.strerror or str(found)
        why = f"the host name {host!r} could not be resolved ({detail}): check the URL and DNS"
    elif isinstance(found := first(ssl.SSLCertVerificationError), ssl.SSLCertVerificationError):
        detail = found.verify_message or found.reason or "no reason given"
        why = f"TLS failed: the server's certificate was refused ({detail})"
    elif isinstance(found := first(ssl.SSLError), ssl.SSLError):
        reason = found.reason or type(found).__name__
        plain = " (is it a plain http server?)" if reason == "WRONG_VERSION_NUMBER" else ""
        why = f"TLS failed: {reason.replace('_', ' ').lower()}{plain}"
    elif first(ConnectionRefusedError) is not None:
        why = f"the connection to {host}:{port} was refused (is the server running there?)"
    elif errors := [c for c in causes if isinstance(c, OSError) and c.errno and c.strerror]:
        why = f"{errors[0].strerror} (connecting to {host}:{port})"
    else:
        why = type(exc).__name__
    return f"{url} could not be reached: {why}"


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """`exc`'s causes and contexts, and the members of exception groups among them, once each."""
    seen: set[int] = set()
    pending = [exc]
    while pending:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        pending.extend(getattr(current, "exceptions", ()))  # an ExceptionGroup's members
        pending.extend(x for x in (current.__cause__, current.__context__) if x is not None)


def serve() -> None:
    """The helper's side: answer each request frame on stdin with an answer frame on stdout,
    until stdin ends. SENDERS threads each take the next frame and send it themselves: a
    request wakes one thread, which answers it, with no event loop or hand-over in between
    (on a loaded machine each wake-up waits for a CPU)."""
    # Ctrl-C in a terminal reaches the whole process group: the program decides, and the helper
    # leaves when the program's end closes its input.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    out = os.dup(1)  # frames only on the pipe: anything else printed goes nowhere
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    sender = _Sender(0, out)
    sender.write({"ready": True})
    threads = [threading.Thread(target=sender.run, daemon=True) for _ in range(SENDERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


class _Sender:
    """The helper's reading, sending and writing, shared by its threads."""

    def __init__(self, fd_in: int, fd_out: int) -> None:
        self._in = fd_in
        self._out = fd_out
        # TLS verified as `HttpxTransport` does; no connection kept (token requests are rare:
        # a kept one would be stale), so each request gets a fresh one, as in the program.
        self._client = httpx.Client(
            verify=httpx.create_ssl_context(), limits=httpx.Limits(max_keepalive_connections=0)
        )
        self._reading = threading.Lock()
        self._writing = threading.Lock()
        self._buffer = bytearray()
        self._ended = False

    def write(self, message: dict[str, Any]) -> None:
        view = memoryview(frame(message))
        with self._writing:  # whole frames: they never interleave
            while view:
                view = view[os.write(self._out, view) :]

    def _next(self) -> dict[str, Any] | None:
        """The next request frame, or None at the end of the input."""
        with self._reading:
            while not self._ended:
                message = _one_frame(self._buffer)  # one: the others are for the other threads
                if message is not None:
                    return message
                data = os.read(self._in, _CHUNK)
                self._ended = not data
                self._buffer += data
            return None

    def run(self) -> None:
        while (message := self._next()) is not None:
            self.write(self.send(message))

    def send(self, message: dict[str, Any]) -> dict[str, Any]:
        """`message`'s request sent, as its answer frame. httpx bounds each phase by the
        request's timeout (connecting by half of it); the program waiting bounds the whole."""
        url, timeout = message["url"], message["timeout"]
        try:
            response = self._client.request(
                message["method"],
                url,
                headers=message["headers"],
                data=message["form"],
                timeout=timeouts(timeout),
                follow_redirects=False,
            )
            content = response.read()
        except httpx.TransportError as exc:
            return {"id": message["id"], "error": unreachable(url, exc, timeout)}
        except Exception as exc:  # reported to the program, which raises it
            return {"id": message["id"], "error": f"{url}: {type(exc).__name__}: {exc}"}
        return {
            "id": message["id"],
            "status": response.status_code,
            "headers": {k.lower(): v for k, v in response.headers.items()},
            "content": content.decode("latin-1"),
        }


if __name__ == "__main__":  # run by its path, as the helper process
    serve()
