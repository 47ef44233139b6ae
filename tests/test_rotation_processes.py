"""Processes sharing one user session renew it in turn, never reusing a rotated refresh token.

The parent logs a user in once (device flow, approved on the peer's dev pages) and saves the
session in a FileStorage. Four worker processes (tests/_worker.py --user, two on asyncio and two on
trio) then share it, each renewing with the session's refresh token when its access token ages;
the peer rotates refresh tokens and, if an old one is ever presented again, answers
`invalid_grant` and revokes the whole grant. So one process renewing with a refresh token that
another has already used would show as an error at the peer, and kill the session for everyone.

Why the bounds hold when the library is right (the reasoning of tests/test_cross_process.py):
each process's soft threshold is 65% to 75% of a token's lifetime after its receipt, and the
first process past it renews, under the file lock, after re-reading the file; the others find the
new token there. token.json keeps whole seconds (`_iat`), so a process that adopted a token from
the file sees it up to 1 s older than it is: renewals are at least 0.65 * TTL - 1 s apart, and at
most 0.75 * TTL s plus a request interval and some scheduling slack.

Why TTL is 8 s and not 5: "at least half a lifetime apart" must hold in the worst case, so
0.65 * TTL - 1 >= TTL / 2, i.e. TTL >= 6.7 s; with TTL = 5 two correct renewals may be only
2.25 s apart. At 8 s the fastest renewal is 4.2 s, and the peer's whole-second `iat` differ by at
least 4, half the lifetime.
"""

from __future__ import annotations

import itertools
import math
import time
from pathlib import Path

import anyio
import pytest

from planet_async import (
    AuthorizationServer,
    FileStorage,
    PublicClient,
    RefreshTokenGrant,
    TokenManager,
    TokenSet,
)
from tests._browser import device_login_saved
from tests._fleet import Fleet, jwt_claims
from tests._helpers import VerifyingApi
from tests._peer import Peer

# Its bounds are timing bounds: it runs alone, after the parallel part of the suite.
pytestmark = pytest.mark.serial

BACKENDS = ("asyncio", "trio", "asyncio", "trio")  # one worker process each
CLIENT_ID = "native-app"
SESSION = "user"
DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
TTL = 8  # seconds an access token lives, for this test
SECONDS = 16.0  # how long each worker sends requests
INTERVAL_MS = 50  # between one worker's requests
SLACK = 0.5  # seconds of scheduling delay allowed on a busy two-core machine
MAX_LEAD = 2.0  # seconds from the login's token to "go", at most (< FASTEST_RENEWAL)

FASTEST_RENEWAL = 0.65 * TTL - 1.0  # 4.2 s
SLOWEST_RENEWAL = 0.75 * TTL + INTERVAL_MS / 1000 + SLACK  # 6.55 s
MIN_REFRESHES = math.floor((SECONDS - SLACK) / SLOWEST_RENEWAL)  # 2
MAX_REFRESHES = math.floor((MAX_LEAD + SECONDS + SLACK) / FASTEST_RENEWAL)  # 4
# 2 * FASTEST_RENEWAL > SLOWEST_RENEWAL: every process leaves a token before the one after next is
# issued, so none skips a token (but perhaps the last, issued when the others may have stopped).
assert FASTEST_RENEWAL >= TTL / 2
assert 2 * FASTEST_RENEWAL > SLOWEST_RENEWAL


async def _log_in(issuer: str, root: Path) -> tuple[TokenSet, float]:
    """A device login, approved over HTTP, saved to the FileStorage; returns the token and how
    long the login took."""
    started = time.perf_counter()
    token = await device_login_saved(issuer, FileStorage(root), SESSION)
    return token, time.perf_counter() - started


async def _come_back_later(issuer: str, root: Path) -> tuple[TokenSet, TokenSet, TokenSet, int]:
    """The session as a program would find it an hour later: what was stored, the token it
    renews to, what is stored after that, and how many token requests it made."""
    storage = FileStorage(root)
    before = await storage.load(SESSION)
    assert before is not None
    grant = RefreshTokenGrant(AuthorizationServer(issuer), PublicClient(client_id=CLIENT_ID))
    manager = TokenManager(
        grant, storage=storage, session=SESSION, clock=lambda: time.time() + 3600
    )
    token = await manager.token()
    after = await storage.load(SESSION)
    assert after is not None
    return before, token, after, manager.renewals


def test_processes_share_a_rotating_refresh_token(peer: Peer, tmp_path: Path) -> None:
    """Processes sharing a user session make exactly one refresh per renewal, each with the
    newest refresh token: no invalid_grant, and the stored refresh token still works at the end."""
    peer.set_access_token_ttl(TTL)
    root = tmp_path / "planet"
    logs = tmp_path / "logs"
    logs.mkdir()

    worker_args = [peer.issuer, str(root), SESSION, str(SECONDS), str(INTERVAL_MS), "--user"]
    with Fleet(worker_args, BACKENDS, logs) as fleet:
        login, login_seconds = anyio.run(_log_in, peer.issuer, root)
        fleet.go()  # release them together, with a fresh login in the file
        lead = time.time() - login.issued_at
        reports = fleet.reports(timeout=SECONDS + 20)
    refreshes = peer.grants("refresh_token")
    errors = peer.errors()

    used = [[token for token, _ in report["tokens"]] for report in reports]
    first_used: dict[str, float] = {}
    for report in reports:
        for token, when in report["tokens"]:
            first_used[token] = min(when, first_used.get(token, math.inf))
    claims = {token: jwt_claims(token) for token in first_used}
    issued = sorted(claims, key=lambda token: claims[token]["iat"])
    iat_gaps = [claims[b]["iat"] - claims[a]["iat"] for a, b in itertools.pairwise(issued)]
    use_gaps = [first_used[b] - first_used[a] for a, b in itertools.pairwise(issued)]
    renewals = [report["renewals"] for report in reports]
    lifetimes = (lead + SECONDS) / TTL
    print(
        f"\ndevice login (approved over HTTP): {login_seconds:.2f} s; "
        f"{len(reports)} processes ({', '.join(BACKENDS)}) for {SECONDS:g} s, "
        f"{sum(r['requests'] for r in reports)} requests; tokens live {TTL} s, "
        f"{lifetimes:.1f} lifetimes: {refreshes} refreshes "
        f"(renewals per process {renewals}), peer errors {errors or 'none'}; "
        f"gaps between tokens: iat {iat_gaps} s, first use "
        f"{[round(gap, 2) for gap in use_gaps]} s"
    )

    assert lead < MAX_LEAD, lead
    for index, report in enumerate(reports):
        assert (report["errors"], report["rejected"]) == (0, 0), fleet.stderr(index)
        assert report["requests"] >= SECONDS * 1000 / INTERVAL_MS * 0.5  # it kept sending
    # Nothing was refused, and so no grant was revoked: no refresh token was used twice.
    assert errors == {}
    assert peer.grants(DEVICE_CODE_GRANT) == 1
    # Every refresh reached the peer through a manager's count, and each gave one new token that
    # was used; the first token is the login's.
    assert refreshes == sum(renewals) == len(issued) - 1
    assert issued[0] == login.access_token.get_secret_value()
    assert MIN_REFRESHES <= refreshes <= MAX_REFRESHES, (MIN_REFRESHES, refreshes, MAX_REFRESHES)
    # Two processes renewing for the same expiry would make two tokens within moments.
    assert all(gap >= TTL / 2 for gap in iat_gaps), iat_gaps
    # Each process moved forward through the same tokens: it used every one but perhaps the last,
    # in the order they were issued.
    for index, tokens in enumerate(used):
        assert set(tokens) >= set(issued[:-1]), f"worker {index} skipped a token"
        assert tokens == [t for t in issued if t in tokens], index

    # The session survives the fleet: the stored refresh token is the newest (the peer would
    # refuse any other, and revoke the grant), and a later program renews with it.
    before, token, after, requests = anyio.run(_come_back_later, peer.issuer, root)
    assert before.access_token.get_secret_value() == issued[-1]
    assert requests == 1
    assert peer.grants("refresh_token") == refreshes + 1
    assert peer.errors() == {}
    assert not token.same_refresh_token(before)
    assert after.same_refresh_token(token)
    assert after.same_access_token(token)
    assert VerifyingApi(peer.issuer).verify(token.access_token.get_secret_value())
