"""The helper process (`planet_async._helper`): a TokenManager's token requests sent from a process
of their own, against the real authorization server.

The helper is one per program (here: per test worker), started by a first renewal. Each test
waits until it is ready and counts the requests it carried (`helper().sent`) from there.
"""

from __future__ import annotations

import logging
import os
import socket
import time

import anyio
import pytest

from planet_async import (
    AuthorizationServer,
    AuthServerUnavailable,
    ClientCredentialsGrant,
    ClientSecretBasic,
    HttpxTransport,
    MemoryStorage,
    PublicClient,
    RefreshTokenGrant,
    TokenManager,
    TokenSet,
)
from planet_async._helper import HelperProcess, _libc_read, _read_now, _spawn, helper
from planet_async._transport import HttpRequest, HttpResponse
from tests._browser import device_login_saved
from tests._helpers import FakeClock
from tests._peer import Peer

pytestmark = pytest.mark.anyio

M2M = ClientSecretBasic(client_id="service-basic", client_secret="service-basic-secret")


async def _ready() -> None:
    """Start the helper if it is not running, and wait (at most 30 s) until it is ready."""
    helper().start()
    with anyio.fail_after(30):
        while not helper().ready:  # noqa: ASYNC110 - the helper has no event to wait on
            await anyio.sleep(0.02)


def _m2m(peer: Peer, clock: FakeClock, **transport: bool) -> TokenManager:
    server = AuthorizationServer(peer.issuer, transport=HttpxTransport(**transport))
    return TokenManager(ClientCredentialsGrant(server, M2M), clock=clock)


async def test_renewals_are_sent_by_the_helper_once_it_is_ready(peer: Peer) -> None:
    """Each renewal of an M2M session is one request the helper carries and one grant at the
    server, and its token is the one in use."""
    await _ready()
    clock = FakeClock(start=time.time())
    manager = _m2m(peer, clock)
    before = helper().sent
    tokens = [await manager.renew() for _ in range(3)]
    assert helper().sent - before == 3
    assert peer.grants("client_credentials") == 3
    assert len({t.access_token.get_secret_value() for t in tokens}) == 3
    assert await manager.header() == f"Bearer {tokens[-1].access_token.get_secret_value()}"


async def test_a_transport_without_the_helper_sends_in_process(peer: Peer) -> None:
    """`HttpxTransport(helper_process=False)` keeps the requests in the program's own process."""
    await _ready()
    manager = _m2m(peer, FakeClock(start=time.time()), helper_process=False)
    before = helper().sent
    await manager.renew()
    assert helper().sent == before
    assert peer.grants("client_credentials") == 1


async def test_callers_at_expiry_make_one_request_through_the_helper(peer: Peer) -> None:
    """64 callers finding the token expired wait for one renewal, which the helper carries."""
    await _ready()
    clock = FakeClock(start=time.time())
    manager = _m2m(peer, clock)
    first = await manager.header()
    peer.reset()
    clock.advance(3600)
    before = helper().sent
    headers: list[str] = []

    async def call() -> None:
        headers.append(await manager.header())

    async with anyio.create_task_group() as tasks:
        for _ in range(64):
            tasks.start_soon(call)
    assert helper().sent - before == 1
    assert peer.grants("client_credentials") == 1
    assert len(set(headers)) == 1
    assert headers[0] != first


async def test_a_rotating_user_session_renews_through_the_helper(peer: Peer) -> None:
    """A user session's refresh grant goes through the helper too: each renewal spends the
    newest refresh token once (no invalid_grant), and the rotated one replaces it in storage."""
    await _ready()
    storage = MemoryStorage()
    login = await device_login_saved(peer.issuer, storage, "user")
    grant = RefreshTokenGrant(
        AuthorizationServer(peer.issuer), PublicClient(client_id="native-app")
    )
    manager = TokenManager(grant, storage=storage, session="user")
    peer.reset()
    before = helper().sent
    renewed = [await manager.renew() for _ in range(2)]
    assert helper().sent - before == 2
    assert peer.grants("refresh_token") == 2
    assert peer.errors() == {}
    assert renewed[-1].refresh_token is not None
    assert login.refresh_token is not None
    refresh_tokens = {
        t.refresh_token.get_secret_value() for t in (login, *renewed) if t.refresh_token
    }
    assert len(refresh_tokens) == 3  # rotated at each renewal
    stored = await storage.load("user")
    assert isinstance(stored, TokenSet)
    assert stored.same_access_token(renewed[-1])


async def test_a_helper_that_dies_mid_request_fails_it_without_sending_it_again(
    peer: Peer, caplog: pytest.LogCaptureFixture
) -> None:
    """When the helper dies with a request (the server may have it, and may have rotated a
    refresh token), the renewal fails with `AuthServerUnavailable`: the program does not send
    it again itself. The next renewal starts a new helper, and is made in-process meanwhile."""
    await _ready()
    proc = helper()._proc
    assert proc is not None
    manager = _m2m(peer, FakeClock(start=time.time()))
    peer.set_token_delay(2000)
    before = helper().sent
    caplog.set_level(logging.WARNING, logger="planet_async")

    async def kill_once_sent() -> None:
        with anyio.fail_after(10):
            while helper().sent == before:  # noqa: ASYNC110 - polled: nothing to wait on
                await anyio.sleep(0.01)
        proc.kill()

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(kill_once_sent)
        with pytest.raises(AuthServerUnavailable, match=r"helper process .* stopped"):
            await manager.renew()
    assert "the helper process sending token requests stopped" in caplog.text
    peer.set_token_delay(0)
    assert not helper().ready
    await manager.renew()  # in-process, while a new helper starts
    await _ready()
    assert helper()._proc is not proc
    await manager.renew()
    assert helper().sent - before == 2  # the lost request, and the last renewal


async def test_an_error_the_helper_meets_reads_as_in_process() -> None:
    """A server that cannot be reached gives the same `AuthServerUnavailable` through the helper
    as in-process: the helper's message, with no secret in it."""
    await _ready()
    with socket.socket() as sock:  # a port nothing listens on: bound, noted, closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/token"
    messages = []
    for use_helper in (True, False):
        server = AuthorizationServer(
            token_endpoint=url, transport=HttpxTransport(helper_process=use_helper)
        )
        manager = TokenManager(ClientCredentialsGrant(server, M2M), clock=time.time)
        before = helper().sent
        with pytest.raises(AuthServerUnavailable) as caught:
            await manager.renew()
        assert helper().sent - before == (1 if use_helper else 0)
        messages.append(str(caught.value))
    assert messages[0] == messages[1]
    assert "was refused" in messages[0]
    assert "service-basic-secret" not in messages[0]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork")
def test_a_forked_child_starts_a_helper_of_its_own(peer: Peer) -> None:
    """A child forked from a program with a helper does not read the parent's pipe: its first
    renewal is made in-process, later ones go through a helper of its own, and the parent's
    helper keeps serving the parent."""
    anyio.run(_ready)
    parent_proc = helper()._proc
    assert parent_proc is not None
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report, then leave without running pytest's exit code
        code = 1
        try:

            async def child() -> str:
                manager = _m2m(peer, FakeClock(start=time.time()))
                sent = helper().sent
                await manager.renew()
                in_process = helper().sent == sent
                await _ready()
                await manager.renew()
                own = helper()._proc is not None and helper()._proc.pid != parent_proc.pid
                return f"{in_process} {helper().sent - sent} {own}"

            os.write(write, anyio.run(child).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    report = os.read(read, 100).decode()
    os.close(read)
    assert os.waitstatus_to_exitcode(status) == 0
    assert report == "True 1 True"
    assert helper()._proc is parent_proc
    before = helper().sent
    anyio.run(_m2m(peer, FakeClock(start=time.time())).renew)
    assert helper().sent - before == 1


async def test_a_request_reads_the_answer_itself(peer: Peer) -> None:
    """`poll`, which the per-request path calls while a renewal waits for the helper, reads the
    answer and hands it over by itself: here no reading thread runs at all."""
    program = HelperProcess()
    proc = _spawn()
    try:
        fd = program._attach(proc)
        with anyio.fail_after(30):
            while not program.ready:
                await anyio.wait_readable(fd)
                with program._reading:
                    assert program._drain(proc, fd)
        prepared = await AuthorizationServer(peer.issuer).token_request(
            {"grant_type": "client_credentials"}, M2M, clock=time.time
        )
        answers: list[object] = []
        assert program.submit(prepared.request, 10, answers.append) is not None
        with anyio.fail_after(10):
            while not answers:
                program.poll()
                await anyio.sleep(0.002)
        assert isinstance(answers[0], HttpResponse)
        assert answers[0].status_code == 200
        assert peer.grants("client_credentials") == 1
    finally:
        with proc:  # closes its pipes, and waits for it
            proc.kill()


def test_the_helper_can_be_switched_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """With ``PLANET_ASYNC_HELPER_PROCESS=0`` no helper starts, and a request given to it is
    left to the caller (sent in-process)."""
    monkeypatch.setenv("PLANET_ASYNC_HELPER_PROCESS", "0")
    program = HelperProcess()
    program.start()
    request = HttpRequest("POST", "https://auth.test/token", form={"grant_type": "x"})
    assert program.submit(request, 10, lambda _: None) is None
    assert program._proc is None
    assert not program._starting
    monkeypatch.setenv("PLANET_ASYNC_HELPER_PROCESS", "1")
    program.start()
    assert program._starting  # started: the switch was what held it back
    deadline = time.monotonic() + 30
    while not program.ready and time.monotonic() < deadline:
        time.sleep(0.02)
    assert program.ready
    proc = program._proc
    assert proc is not None
    proc.kill()  # its reading thread then forgets it, and closes its pipes
    proc.wait()


def test_reading_an_answer_keeps_the_interpreter_lock_and_reads_like_os_read() -> None:
    """`_read_now` (libc's read, called without giving up the interpreter lock) reads a
    non-blocking pipe as ``os.read`` would: nothing yet is `BlockingIOError`, then the bytes
    written, then b"" at the end."""
    assert _libc_read is not None  # POSIX: the C library's read is there
    read, write = os.pipe()
    try:
        os.set_blocking(read, False)
        with pytest.raises(BlockingIOError):
            _read_now(read)
        os.write(write, b"frame")
        assert _read_now(read) == b"frame"
        os.close(write)
        write = -1
        assert _read_now(read) == b""
    finally:
        os.close(read)
        if write >= 0:
            os.close(write)
