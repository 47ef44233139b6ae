"""For web services: the Planet sessions of many users, on any number of replicas.

`SessionPool` holds the users' sessions, keyed by the application's own user id. Nothing here
imports a web framework; the Starlette/FastAPI integration builds on it.
"""

from .._errors import SessionExpired as SessionExpired
from ._pool import SessionPool as SessionPool

__all__ = ["SessionExpired", "SessionPool"]
