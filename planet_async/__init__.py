"""planet_async: async-first authentication for Planet's APIs."""

import logging as _logging

from ._adapter import AuthAdapter as AuthAdapter
from ._adapter import SyncSession as SyncSession
from ._auth import PLANET_API_ORIGINS as PLANET_API_ORIGINS
from ._auth import PLANET_M2M_ISSUER as PLANET_M2M_ISSUER
from ._auth import PlanetAuth as PlanetAuth
from ._auth import RenewingTransport as RenewingTransport
from ._errors import AsyncOnlyError as AsyncOnlyError
from ._errors import AuthServerError as AuthServerError
from ._errors import AuthServerUnavailable as AuthServerUnavailable
from ._errors import BrowserMismatch as BrowserMismatch
from ._errors import CallbackError as CallbackError
from ._errors import ConfigurationError as ConfigurationError
from ._errors import InvalidClientError as InvalidClientError
from ._errors import InvalidGrantError as InvalidGrantError
from ._errors import InvalidIdToken as InvalidIdToken
from ._errors import InvalidTokenResponse as InvalidTokenResponse
from ._errors import IssuerMismatch as IssuerMismatch
from ._errors import LockLost as LockLost
from ._errors import LoginDenied as LoginDenied
from ._errors import LoginError as LoginError
from ._errors import LoginRequired as LoginRequired
from ._errors import LoginTimeout as LoginTimeout
from ._errors import MissingExtra as MissingExtra
from ._errors import OAuthError as OAuthError
from ._errors import PlanetAuthError as PlanetAuthError
from ._errors import SessionExpired as SessionExpired
from ._errors import StorageError as StorageError
from ._errors import UnknownLogin as UnknownLogin
from ._events import TokenEvent as TokenEvent
from ._events import TokenEventKind as TokenEventKind
from ._events import TokenListener as TokenListener
from ._http import HttpxTransport as HttpxTransport
from ._manager import TokenManager as TokenManager
from ._models import TokenSet as TokenSet
from ._oauth import AuthorizationServer as AuthorizationServer
from ._oauth import ClientAuth as ClientAuth
from ._oauth import ClientSecretBasic as ClientSecretBasic
from ._oauth import ClientSecretPost as ClientSecretPost
from ._oauth import PrivateKeyJWT as PrivateKeyJWT
from ._oauth import PublicClient as PublicClient
from ._oauth import ServerMetadata as ServerMetadata
from ._transport import HttpRequest as HttpRequest
from ._transport import HttpResponse as HttpResponse
from ._transport import HttpTransport as HttpTransport
from ._user import BrowserOpener as BrowserOpener
from ._user import UserLogin as UserLogin
from ._user import login_with_browser as login_with_browser
from ._user import login_with_device as login_with_device
from ._version import __version__ as __version__
from .flows import OFFLINE_ACCESS as OFFLINE_ACCESS
from .flows import PLANET_SCOPE as PLANET_SCOPE
from .flows import USER_SCOPES as USER_SCOPES
from .flows import AuthorizationCodeFlow as AuthorizationCodeFlow
from .flows import ClientCredentialsGrant as ClientCredentialsGrant
from .flows import CompletedLogin as CompletedLogin
from .flows import DeviceAuthorization as DeviceAuthorization
from .flows import DeviceCodeFlow as DeviceCodeFlow
from .flows import DeviceFlowState as DeviceFlowState
from .flows import Grant as Grant
from .flows import LoopbackListener as LoopbackListener
from .flows import PendingAuthorization as PendingAuthorization
from .flows import RefreshTokenGrant as RefreshTokenGrant
from .storage import EncryptedStorage as EncryptedStorage
from .storage import FileStorage as FileStorage
from .storage import MemoryStorage as MemoryStorage
from .storage import PostgresStorage as PostgresStorage
from .storage import RecordStore as RecordStore
from .storage import RedisStorage as RedisStorage
from .storage import Storage as Storage

__all__ = [
    "OFFLINE_ACCESS",
    "PLANET_API_ORIGINS",
    "PLANET_M2M_ISSUER",
    "PLANET_SCOPE",
    "USER_SCOPES",
    "AsyncOnlyError",
    "AuthAdapter",
    "AuthServerError",
    "AuthServerUnavailable",
    "AuthorizationCodeFlow",
    "AuthorizationServer",
    "BrowserMismatch",
    "BrowserOpener",
    "CallbackError",
    "ClientAuth",
    "ClientCredentialsGrant",
    "ClientSecretBasic",
    "ClientSecretPost",
    "CompletedLogin",
    "ConfigurationError",
    "DeviceAuthorization",
    "DeviceCodeFlow",
    "DeviceFlowState",
    "EncryptedStorage",
    "FileStorage",
    "Grant",
    "HttpRequest",
    "HttpResponse",
    "HttpTransport",
    "HttpxTransport",
    "InvalidClientError",
    "InvalidGrantError",
    "InvalidIdToken",
    "InvalidTokenResponse",
    "IssuerMismatch",
    "LockLost",
    "LoginDenied",
    "LoginError",
    "LoginRequired",
    "LoginTimeout",
    "LoopbackListener",
    "MemoryStorage",
    "MissingExtra",
    "OAuthError",
    "PendingAuthorization",
    "PlanetAuth",
    "PlanetAuthError",
    "PostgresStorage",
    "PrivateKeyJWT",
    "PublicClient",
    "RecordStore",
    "RedisStorage",
    "RefreshTokenGrant",
    "RenewingTransport",
    "ServerMetadata",
    "SessionExpired",
    "Storage",
    "StorageError",
    "SyncSession",
    "TokenEvent",
    "TokenEventKind",
    "TokenListener",
    "TokenManager",
    "TokenSet",
    "UnknownLogin",
    "UserLogin",
    "login_with_browser",
    "login_with_device",
]

# A library logs; the application decides where it goes.
_logging.getLogger("planet_async").addHandler(_logging.NullHandler())
