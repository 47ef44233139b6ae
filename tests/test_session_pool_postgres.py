"""SessionPool on a real PostgreSQL server: a sign-out reaches the other replica (LISTEN/NOTIFY),
also after the server restarted."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from typing import Any

import anyio
import pytest

from planet_async import AuthorizationServer, EncryptedStorage, PostgresStorage, SessionExpired
from planet_async.web import SessionPool
from tests._postgres import PostgresServer
from tests._web_login import web_client, web_login

pytestmark = pytest.mark.anyio

KEY = secrets.token_bytes(32)


def replica(peer: Any, url: str, **kwargs: Any) -> SessionPool:
    """A pool as one replica of a web service has it: its own PostgresStorage, encrypted."""
    storage = EncryptedStorage(PostgresStorage(url, timeout=2), {"k": KEY})
    return SessionPool(AuthorizationServer(peer.issuer), web_client(), storage, **kwargs)


class SignOuts:
    """The keys a pool was told were signed out elsewhere (its `on_sign_out`)."""

    def __init__(self) -> None:
        self.keys: list[str] = []
        self.seen = anyio.Event()

    def __call__(self, key: str) -> None:
        self.keys.append(key)
        self.seen.set()

    async def wait(self) -> None:
        with anyio.fail_after(10):  # a guard against a hang; the drop comes in milliseconds
            await self.seen.wait()
        self.seen = anyio.Event()


async def test_sign_out_reaches_the_other_replica(peer: Any, postgres: PostgresServer) -> None:
    """Sign-out on one replica: the other, told by a PostgreSQL notice sent in the delete's
    transaction, drops the user (no timer involved), and its next request for them raises
    SessionExpired without a token request."""
    told = SignOuts()
    async with (
        replica(peer, postgres.url) as one,
        replica(peer, postgres.url, on_sign_out=told) as two,
    ):
        await one.sign_in("lee", await web_login(peer.issuer, "lee"))
        await two.sign_in("max", await web_login(peer.issuer, "max"))
        await two.header("lee")
        assert "lee" in two
        peer.reset()
        assert await one.sign_out("lee") is True
        assert postgres.sql(
            "SELECT token FROM planet_async_sessions WHERE session = %s", one.key("lee")
        ) == [(None,)]
        await told.wait()
        assert told.keys == [two.key("lee")]
        assert "lee" not in two
        assert "max" in two
        with pytest.raises(SessionExpired):
            await two.header("lee")
        assert (await two.header("max"))["Authorization"].startswith("Bearer ")
        assert peer.grants("refresh_token") == 0


async def test_sign_out_reaches_the_other_replica_after_a_server_restart(
    peer: Any, start_postgres: Callable[..., PostgresServer]
) -> None:
    """A restart breaks the other replica's watch; it listens again (dropping the users it held,
    whose sign-outs it may have missed, so they are read again), and hears the next sign-out."""
    server = start_postgres()
    told = SignOuts()
    async with (
        replica(peer, server.url) as one,
        replica(peer, server.url, on_sign_out=told) as two,
    ):
        await one.sign_in("lee", await web_login(peer.issuer, "lee"))
        await two.header("lee")
        server.stop()
        server.start()
        deadline = time.monotonic() + 10
        while "lee" in two and time.monotonic() < deadline:  # noqa: ASYNC110
            await anyio.sleep(0.05)
        assert "lee" not in two  # dropped when its watch came back, not told of a sign-out
        assert told.keys == []
        await two.header("lee")  # read again from PostgreSQL
        assert await one.sign_out("lee") is True
        await told.wait()
        assert told.keys == [two.key("lee")]
        assert "lee" not in two
