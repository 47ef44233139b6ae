"""The OAuth2 scopes Planet defines."""

from __future__ import annotations

__all__ = ["OFFLINE_ACCESS", "PLANET_SCOPE", "USER_SCOPES"]

PLANET_SCOPE = "planet"
"""Access to Planet's APIs."""

OFFLINE_ACCESS = "offline_access"
"""Ask for a refresh token, so a user session renews without a new login. Users only, not M2M."""

USER_SCOPES = (PLANET_SCOPE, OFFLINE_ACCESS)
"""What user logins request by default."""
