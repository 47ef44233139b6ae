"""Grants: how a session gets its tokens."""

from ._base import Grant as Grant
from ._client_credentials import ClientCredentialsGrant as ClientCredentialsGrant
from ._refresh import RefreshTokenGrant as RefreshTokenGrant

__all__ = ["ClientCredentialsGrant", "Grant", "RefreshTokenGrant"]
