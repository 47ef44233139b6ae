"""The renewal's wall time on a loop busy with 256 httpx2 downloads, against an idle loop, with
the token request on the caller's loop or on the renewal loop (see `clients.run_renewal`)."""

from __future__ import annotations

from .clients import run_renewal as run

__all__ = ["run"]
