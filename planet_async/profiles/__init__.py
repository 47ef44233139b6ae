"""Sessions shared with the `planet` CLI: its files, its profiles, and how a session is chosen."""

from ._clients import BUILTIN_PROFILES as BUILTIN_PROFILES
from ._clients import AuthClientConfig as AuthClientConfig
from ._files import PlanetHome as PlanetHome
from ._files import normalize_profile_name as normalize_profile_name
from ._sessions import SessionSource as SessionSource
from ._sessions import choose_session as choose_session
from ._sessions import credential_for_client as credential_for_client
from ._sessions import credential_from_source as credential_from_source

__all__ = [
    "BUILTIN_PROFILES",
    "AuthClientConfig",
    "PlanetHome",
    "SessionSource",
    "credential_for_client",
    "credential_from_source",
    "choose_session",
    "normalize_profile_name",
]
