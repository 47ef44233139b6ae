"""The Planet SDK adapter: a `planet.Session` that keeps the 401 recovery of `PlanetAuth`.

``planet.Session(auth=PlanetAuth...)`` works, but the SDK's response hook raises on a 401 before
an httpx `Auth` sees the response, so a token the API revoked keeps failing until its normal
renewal. `planet_session` builds the SDK's session with a `RenewingTransport` underneath, which
renews and resends before any hook runs. Needs the ``planet`` package (``pip install planet``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx

from ._auth import PlanetAuth, RenewingTransport
from ._errors import ConfigurationError, MissingExtra

if TYPE_CHECKING:
    import planet  # type: ignore[import-untyped]

__all__ = ["planet_session"]


def planet_session(auth: PlanetAuth | None = None, **options: Any) -> planet.Session:
    """A `planet.Session` authenticated by `auth`, retrying once with a renewed token when an
    allowlisted origin answers 401.

    Use it wherever the SDK takes a session: ``async with planet_session(auth) as session:
    client = planet.DataClient(session)``, or ``planet.Planet(session=planet_session(auth))``.
    A request whose body cannot be replayed is not resent; the renewed token then serves the
    SDK's next call.

    Args:
        auth: The session to use; `PlanetAuth.from_user_default_session()` if None (the same
            choice as the `planet` CLI and SDK).
        options: Passed to `planet.Session` (e.g. ``read_timeout_secs``).

    Raises:
        MissingExtra: The ``planet`` package is not installed.
        ConfigurationError: This version of the SDK builds its session in a way this helper does
            not know (it supports planet 3.x).
    """
    try:
        import planet  # type: ignore[import-untyped,unused-ignore]
    except ImportError:
        raise MissingExtra("planet_session needs the Planet SDK: pip install planet") from None
    if auth is None:
        auth = PlanetAuth.from_user_default_session()
    session = planet.Session(auth=auth, **options)
    # The SDK keeps its httpx client private; planet 3.x builds it in __init__ and never again.
    client = getattr(session, "_client", None)
    if not isinstance(client, httpx.AsyncClient) or not hasattr(client, "_mounts"):
        raise ConfigurationError(
            f"planet {getattr(planet, '__version__', '?')}'s Session has no httpx client to "
            "attach to; use planet.Session(auth=auth), which lacks the 401 recovery"
        )
    client._transport = RenewingTransport(auth, client._transport)
    client._mounts = {
        pattern: None if transport is None else RenewingTransport(auth, transport)
        for pattern, transport in client._mounts.items()
    }
    return session
