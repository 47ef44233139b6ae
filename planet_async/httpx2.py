"""The httpx2 adapter: `PlanetAuth` for ``httpx2.AsyncClient(auth=...)``.

httpx2 continues httpx's API with types of its own (an `httpx.Auth` is not an `httpx2.Auth`), so
this is a twin of `planet_async.PlanetAuth` with the same constructors, logins and guarantees.
Installed with the ``httpx2`` extra, from a clone of the repository:
``python3 -m pip install '.[httpx2]'``.
"""

from __future__ import annotations

from typing import ClassVar

from ._extras import missing_extra
from ._httpx_flow import HttpxStyleFlow

try:
    import httpx2
except ImportError:  # pragma: no cover - exercised in a subprocess without the extra
    raise missing_extra("planet_async.httpx2", "httpx2") from None

__all__ = ["PlanetAuth"]


class PlanetAuth(HttpxStyleFlow, httpx2.Auth):
    """Authenticates httpx2 requests to Planet's APIs, with an OAuth2 session or an API key.

    Behaves exactly as `planet_async.PlanetAuth` does for httpx: the header goes only to
    allowlisted origins, a 401 from one of them to the current token renews it once and resends
    a replayable request. It serves ``httpx2.AsyncClient`` and the sync ``httpx2.Client`` (whose
    renewals run on the process's renewal loop). To share one session with an httpx client,
    build it with `from_adapter`.
    """

    _replayable: ClassVar[tuple[type, ...]] = (httpx2.ByteStream,)
