"""Grants and logins: how a session gets its tokens."""

from ._auth_code import AuthorizationCodeFlow as AuthorizationCodeFlow
from ._auth_code import CompletedLogin as CompletedLogin
from ._auth_code import PendingAuthorization as PendingAuthorization
from ._base import Grant as Grant
from ._client_credentials import ClientCredentialsGrant as ClientCredentialsGrant
from ._device_code import DeviceAuthorization as DeviceAuthorization
from ._device_code import DeviceCodeFlow as DeviceCodeFlow
from ._device_code import DeviceFlowState as DeviceFlowState
from ._loopback import LoopbackListener as LoopbackListener
from ._refresh import RefreshTokenGrant as RefreshTokenGrant
from ._scopes import OFFLINE_ACCESS as OFFLINE_ACCESS
from ._scopes import PLANET_SCOPE as PLANET_SCOPE
from ._scopes import USER_SCOPES as USER_SCOPES

__all__ = [
    "OFFLINE_ACCESS",
    "PLANET_SCOPE",
    "USER_SCOPES",
    "AuthorizationCodeFlow",
    "ClientCredentialsGrant",
    "CompletedLogin",
    "DeviceAuthorization",
    "DeviceCodeFlow",
    "DeviceFlowState",
    "Grant",
    "LoopbackListener",
    "PendingAuthorization",
    "RefreshTokenGrant",
]
