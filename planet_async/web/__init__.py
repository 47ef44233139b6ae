"""Web services: browser logins across replicas, and (with issue 19a) a pool of user sessions."""

from ._login import LoginStart as LoginStart
from ._login import WebLogin as WebLogin

__all__ = ["LoginStart", "WebLogin"]
