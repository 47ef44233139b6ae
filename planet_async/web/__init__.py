"""For web services: the Planet sessions of many users, on any number of replicas.

`SessionPool` holds the users' sessions, keyed by the application's own user id; `WebLogin` logs
them in (a confidential client's browser login, whose callback may land on any replica). Nothing
here imports a web framework; `planet_async.starlette` builds the routes on them.
"""

from .._errors import SessionExpired as SessionExpired
from ._login import LoginStart as LoginStart
from ._login import WebLogin as WebLogin
from ._pool import SessionPool as SessionPool

__all__ = ["LoginStart", "SessionExpired", "SessionPool", "WebLogin"]
