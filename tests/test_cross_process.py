"""Processes sharing one FileStorage session renew it once per expiry, against the real peer.

Four worker processes (tests/_worker.py, two on asyncio and two on trio) share one token file and
send requests for a while; the peer issues access tokens that live only TTL seconds, so the
session is renewed several times while they run.

Why the bounds below hold when the library is right: the manager's defaults (refresh_ahead 0.75,
jitter 0.1) put each process's soft threshold between 65% and 75% of a token's lifetime after its
receipt, and the first process past it renews, under the file lock, after re-reading the file.
Every other process reaches its own threshold later, re-reads the file, finds the fresh token and
adopts it without a request. token.json keeps whole seconds (`_iat`, as the `planet` CLI writes
it), so a process that adopts a token from the file sees it up to 1 s older than it is: two
renewals are therefore at least 0.65 * TTL - 1 s apart, and at most 0.75 * TTL s plus a request
interval and some scheduling slack.

Why they fail when it is wrong: without the lock, the four processes start together with an empty
file and each requests its own first token (four tokens within milliseconds, each used by one
process); without the re-read after the lock, every process renews for itself at its own
threshold (about four times the grants, every token used by one process).
"""

from __future__ import annotations

import functools
import itertools
import math
from pathlib import Path

import pytest

from tests._fleet import Fleet, jwt_claims
from tests._helpers import VerifyingApi
from tests._peer import Peer

# Its bounds are timing bounds: it runs alone, after the parallel part of the suite.
pytestmark = pytest.mark.serial

BACKENDS = ("asyncio", "trio", "asyncio", "trio")  # one worker process each
TTL = 5  # seconds an access token lives, for this test
SECONDS = 14.0  # how long each worker sends requests
INTERVAL_MS = 50  # between one worker's requests
SLACK = 0.5  # seconds of scheduling delay allowed on a busy two-core machine

FASTEST_RENEWAL = 0.65 * TTL - 1.0  # 2.25 s
SLOWEST_RENEWAL = 0.75 * TTL + INTERVAL_MS / 1000 + SLACK  # 4.3 s
MIN_GRANTS = 1 + math.floor((SECONDS - SLACK) / SLOWEST_RENEWAL)  # 4
MAX_GRANTS = 1 + math.floor((SECONDS + SLACK) / FASTEST_RENEWAL)  # 7
# 2 * FASTEST_RENEWAL > SLOWEST_RENEWAL: every process leaves a token before the one after next is
# issued, so none skips a token (but perhaps the last, issued when the others may have stopped).
# `iat` is whole seconds on the peer's clock: FASTEST_RENEWAL apart, less request latency.
MIN_IAT_GAP = math.floor(FASTEST_RENEWAL - 0.1)  # 2


def test_processes_share_one_renewal_per_expiry(peer: Peer, tmp_path: Path) -> None:
    """Processes sharing a token file make one token request per renewal and all use each token."""
    peer.set_access_token_ttl(TTL)
    root = tmp_path / "planet"
    logs = tmp_path / "logs"
    logs.mkdir()

    worker_args = [peer.issuer, str(root), "fleet", str(SECONDS), str(INTERVAL_MS)]
    with Fleet(worker_args, BACKENDS, logs) as fleet:
        fleet.go()  # release them together, with an empty token file
        reports = fleet.reports(timeout=SECONDS + 20)
    grants = peer.grants("client_credentials")

    orders = [[token for token, _ in report["tokens"]] for report in reports]  # first use
    used = [set(order) for order in orders]
    claims = {token: jwt_claims(token) for token in set().union(*used)}
    issued = sorted(claims, key=lambda token: claims[token]["iat"])
    iats = [claims[token]["iat"] for token in issued]
    gaps = [later - earlier for earlier, later in itertools.pairwise(iats)]
    requests = sum(report["requests"] for report in reports)
    print(
        f"\n{len(reports)} processes ({', '.join(BACKENDS)}), {requests} requests in {SECONDS:g} s;"
        f" tokens live {TTL} s: {grants} grants (1 + {grants - 1} renewals),"
        f" renewals per process {[report['renewals'] for report in reports]},"
        f" iat gaps {gaps} s"
    )

    for index, report in enumerate(reports):
        assert (report["errors"], report["rejected"]) == (0, 0), fleet.stderr(index)
        assert report["requests"] >= SECONDS * 1000 / INTERVAL_MS * 0.5  # it kept sending
    # Every token request reached the peer through a manager's count, and nothing else asked.
    assert grants == sum(report["renewals"] for report in reports)
    # Every token obtained was used: no process got one it did not need.
    assert grants == len(issued)
    # The session was renewed several times, and never more than once per expiry.
    assert MIN_GRANTS <= grants <= MAX_GRANTS, (MIN_GRANTS, grants, MAX_GRANTS)
    # Two processes renewing for the same expiry would make two tokens in the same second or so.
    assert all(gap >= MIN_IAT_GAP for gap in gaps), gaps
    # Each process moved forward through the same tokens: it used every one but perhaps the last
    # (which may come when the others have stopped), in the order they were issued.
    for index in range(len(reports)):
        assert used[index] >= set(issued[:-1]), f"worker {index} skipped a token"
        assert orders[index] == [t for t in issued if t in used[index]], index

    verifier = VerifyingApi(peer.issuer)
    for token in issued:
        iat = claims[token]["iat"]
        assert claims[token]["exp"] - iat == TTL
        verifier.clock = functools.partial(float, iat)  # as of its issue: it has expired by now
        assert verifier.verify(token)
