"""OpenTelemetry metrics for a `TokenManager`'s events.

Installed with the ``otel`` extra, from a clone of the repository:
``python3 -m pip install '.[otel]'``.

```python
from planet_async.otel import instrument

auth = PlanetAuth.from_client_credentials(...)
instrument(auth.manager)  # the global MeterProvider, or meter_provider=...
```

Instruments (meter `planet_async`), each with the attribute `planet_async.session`:

| name | kind | unit | more attributes |
|---|---|---|---|
| `planet_async.renewal.started` | counter | `{renewal}` | |
| `planet_async.renewal.completed` | counter | `{renewal}` | `outcome`, `error.type` |
| `planet_async.renewal.duration` | histogram | `s` | as `completed` |
| `planet_async.token.adopted` | counter | `{token}` | |
| `planet_async.token.rejected` | counter | `{response}` | |
| `planet_async.token.expires_in` | observable gauge | `s` | |

`outcome` is `succeeded` or `failed`; `error.type`, on failures only, is the exception's type name
(`AuthServerUnavailable`, `InvalidClientError`, `StorageError`, ...).

`opentelemetry-api` is imported only when `instrument` is called, never by `import planet_async`.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from ._events import TokenEvent
from ._extras import missing_extra
from ._manager import TokenManager

if TYPE_CHECKING:
    from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation

__all__ = ["instrument"]

SESSION = "planet_async.session"
"""The attribute naming the session on every instrument."""

_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
"""Renewal latency in seconds: a local token endpoint answers in milliseconds, a slow one in
seconds, and every call is bounded by the server timeout (10 s by default)."""


def instrument(
    manager: TokenManager, *, meter_provider: MeterProvider | None = None
) -> Callable[[], None]:
    """Report `manager`'s renewals, adoptions, 401 rejections and seconds until expiry as
    OpenTelemetry metrics.

    Instrumenting several managers with one provider is fine: they share the instruments and
    are told apart by the `planet_async.session` attribute.

    Args:
        manager: The session's manager (`PlanetAuth.manager`).
        meter_provider: Where the metrics go; default the global one
            (`opentelemetry.metrics.get_meter_provider()`).

    Returns:
        A function that stops reporting `manager` again.

    Raises:
        MissingExtra: `opentelemetry-api` is not installed.
    """
    try:
        from opentelemetry import metrics
    except ImportError:
        raise missing_extra("planet_async.otel", "otel") from None
    provider = meter_provider if meter_provider is not None else metrics.get_meter_provider()
    instruments = _instruments_for(provider)
    instruments.watch(manager)
    remove_listener = manager.add_listener(instruments.record)

    def uninstrument() -> None:
        remove_listener()
        instruments.unwatch(manager)

    return uninstrument


class _Instruments:
    """One provider's instruments, shared by every manager instrumented with it: the SDK keeps
    only the first callback of an observable gauge registered twice under one name."""

    def __init__(self, provider: MeterProvider) -> None:
        from opentelemetry.metrics import Observation

        from . import __version__

        self._observation = Observation
        self._lock = threading.Lock()  # the gauge is read from the exporter's thread
        self._managers: weakref.WeakSet[TokenManager] = weakref.WeakSet()
        meter = provider.get_meter("planet_async", __version__)
        self.started = meter.create_counter(
            "planet_async.renewal.started", "{renewal}", "Token renewals started"
        )
        self.completed = meter.create_counter(
            "planet_async.renewal.completed",
            "{renewal}",
            "Token renewals finished, by outcome (succeeded or failed)",
        )
        self.duration = meter.create_histogram(
            "planet_async.renewal.duration",
            "s",
            "How long token renewals took, by outcome",
            explicit_bucket_boundaries_advisory=_DURATION_BUCKETS,
        )
        self.adopted = meter.create_counter(
            "planet_async.token.adopted",
            "{token}",
            "Tokens taken from storage (saved by another process) instead of requested",
        )
        self.rejected = meter.create_counter(
            "planet_async.token.rejected", "{response}", "401 responses to the session's token"
        )
        meter.create_observable_gauge(
            "planet_async.token.expires_in",
            [self._observe],
            "s",
            "Seconds until the session's token in memory expires",
        )

    def watch(self, manager: TokenManager) -> None:
        with self._lock:
            self._managers.add(manager)

    def unwatch(self, manager: TokenManager) -> None:
        with self._lock:
            self._managers.discard(manager)

    def record(self, event: TokenEvent) -> None:
        attributes: dict[str, str] = {SESSION: event.session}
        kind = event.kind
        if kind == "renewal_started":
            self.started.add(1, attributes)
        elif kind == "token_adopted":
            self.adopted.add(1, attributes)
        elif kind == "token_rejected":
            self.rejected.add(1, attributes)
        else:
            attributes["outcome"] = kind.removeprefix("renewal_")
            if event.error is not None:
                attributes["error.type"] = event.error
            self.completed.add(1, attributes)
            if event.duration is not None:
                self.duration.record(event.duration, attributes)

    def _observe(self, options: CallbackOptions) -> Iterable[Observation]:
        with self._lock:
            managers = list(self._managers)
        observations = []
        for manager in managers:
            seconds = manager.expires_in()
            if seconds is not None:
                observations.append(self._observation(seconds, {SESSION: manager.session}))
        return observations


_by_provider: weakref.WeakKeyDictionary[Any, _Instruments] = weakref.WeakKeyDictionary()
_by_provider_lock = threading.Lock()


def _instruments_for(provider: MeterProvider) -> _Instruments:
    with _by_provider_lock:
        try:
            found = _by_provider.get(provider)
        except TypeError:  # a provider that cannot be weakly referenced: instruments of its own
            return _Instruments(provider)
        if found is None:
            found = _by_provider[provider] = _Instruments(provider)
        return found
