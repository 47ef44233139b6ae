"""planet_async.otel: a manager's events as OpenTelemetry metrics, read back with the SDK."""

from __future__ import annotations

import random
import sys
import time
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from planet_async import (
    AuthorizationServer,
    ClientCredentialsGrant,
    ClientSecretBasic,
    InvalidClientError,
    MemoryStorage,
    MissingExtra,
    TokenManager,
)
from planet_async.otel import SESSION, instrument
from tests._helpers import FakeClock
from tests._peer import Peer

pytestmark = pytest.mark.anyio

Points = dict[str, dict[frozenset[tuple[str, Any]], Any]]


def manager_at(
    peer: Peer, clock: FakeClock, storage: MemoryStorage, *, session: str, secret: str
) -> TokenManager:
    client = ClientSecretBasic(client_id="service-basic", client_secret=secret)
    grant = ClientCredentialsGrant(AuthorizationServer(peer.issuer), client)
    return TokenManager(grant, storage=storage, session=session, clock=clock, rng=random.Random(0))


def collect(reader: InMemoryMetricReader) -> Points:
    """{metric name: {attributes: point}} of everything the reader holds now."""
    found: Points = {}
    data = reader.get_metrics_data()
    assert data is not None
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            assert scope.scope.name == "planet_async"
            for metric in scope.metrics:
                points = found.setdefault(metric.name, {})
                for point in metric.data.data_points:
                    points[frozenset(point.attributes.items())] = point
    return found


def values(points: Points, name: str) -> dict[frozenset[tuple[str, Any]], float]:
    return {attributes: point.value for attributes, point in points.get(name, {}).items()}


def attrs(**kw: str) -> frozenset[tuple[str, Any]]:
    return frozenset(kw.items())


async def test_renewals_adoptions_rejections_and_expiry_at_the_peer(peer: Peer) -> None:
    """Against the real peer: an adopted token, a renewal, a 401 and its renewal, and a refused
    client become exact counts, a duration per completed renewal, and the seconds left."""
    clock = FakeClock(start=time.time())
    storage = MemoryStorage()
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    other = manager_at(peer, clock, storage, session="fleet", secret="service-basic-secret")
    manager = manager_at(peer, clock, storage, session="fleet", secret="service-basic-secret")
    refused = manager_at(peer, clock, MemoryStorage(), session="refused", secret="wrong")
    instrument(manager, meter_provider=provider)
    instrument(refused, meter_provider=provider)

    await other.header()  # saved by another process, as far as `manager` can tell
    first = await manager.header()  # adopted from storage
    clock.advance(50)  # past the soft threshold: renew at the peer
    second = await manager.header()
    assert second != first
    third = await manager.renew_rejected(second)  # the API answered 401 to `second`
    assert third not in (None, second)
    with pytest.raises(InvalidClientError):
        await refused.header()
    clock.advance(7)

    points = collect(reader)
    fleet, refused_session = attrs(**{SESSION: "fleet"}), attrs(**{SESSION: "refused"})
    succeeded = attrs(**{SESSION: "fleet", "outcome": "succeeded"})
    failed = attrs(**{SESSION: "refused", "outcome": "failed", "error.type": "InvalidClientError"})
    assert values(points, "planet_async.renewal.started") == {fleet: 3, refused_session: 1}
    assert values(points, "planet_async.renewal.completed") == {succeeded: 3, failed: 1}
    assert values(points, "planet_async.token.adopted") == {fleet: 1}
    assert values(points, "planet_async.token.rejected") == {fleet: 1}
    durations = points["planet_async.renewal.duration"]
    assert {a: p.count for a, p in durations.items()} == {succeeded: 3, failed: 1}
    assert all(p.sum >= 0 for p in durations.values())
    # the third token was obtained at the peer 7 s ago and lives 60 s; `refused` has none
    assert values(points, "planet_async.token.expires_in") == {fleet: 53}
    assert peer.grants("client_credentials") == 3


async def test_every_manager_of_a_provider_is_observed_until_uninstrumented(peer: Peer) -> None:
    """Two managers on one provider each get their own expiry reading; after uninstrumenting
    one, it is neither counted nor observed."""
    clock = FakeClock(start=time.time())
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    secret = "service-basic-secret"
    one = manager_at(peer, clock, MemoryStorage(), session="one", secret=secret)
    two = manager_at(peer, clock, MemoryStorage(), session="two", secret=secret)
    instrument(one, meter_provider=provider)
    stop_two = instrument(two, meter_provider=provider)
    await one.header()
    clock.advance(10)
    await two.header()
    assert values(collect(reader), "planet_async.token.expires_in") == {
        attrs(**{SESSION: "one"}): 50,
        attrs(**{SESSION: "two"}): 60,
    }

    stop_two()
    await two.renew()
    points = collect(reader)
    assert values(points, "planet_async.token.expires_in") == {attrs(**{SESSION: "one"}): 50}
    assert values(points, "planet_async.renewal.started") == {
        attrs(**{SESSION: "one"}): 1,
        attrs(**{SESSION: "two"}): 1,  # cumulative: the renewal before stop_two()
    }


def test_missing_extra_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without opentelemetry-api, instrument() says which extra to install."""
    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    server = AuthorizationServer(token_endpoint="https://auth.test/token")
    client = ClientSecretBasic(client_id="svc", client_secret="svc-secret")
    manager = TokenManager(ClientCredentialsGrant(server, client))
    with pytest.raises(MissingExtra, match=r"needs the otel extra: .*pip install .*\[otel\]"):
        instrument(manager)
