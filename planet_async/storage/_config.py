"""Choosing a storage without code: a URL, from `PLANET_ASYNC_STORAGE` or `--storage`."""

from __future__ import annotations

import os
from collections.abc import Mapping
from urllib.parse import unquote, urlsplit

from .._errors import ConfigurationError
from ._file import FileStorage
from ._postgres import PostgresStorage
from ._protocol import Storage
from ._redis import RedisStorage
from ._url import describe_url

__all__ = ["STORAGE_VARIABLE", "storage_from_environment", "storage_from_url"]

STORAGE_VARIABLE = "PLANET_ASYNC_STORAGE"
"""The environment variable naming where token sets are kept, for fleets."""


def storage_from_url(url: str) -> Storage:
    """The storage a URL names.

    - ``redis://[[user]:password@]host[:port][/db][?retention=30d]``, ``rediss://...`` (TLS)
      or ``unix://...``: a `RedisStorage` (needs the ``redis`` extra);
      ``redis+sentinel://host:port[,host:port...]/service[/db][?sentinel_password=...]``
      names the primary some sentinels watch, ``redis+cluster://host:port[,host:port...]``
      (``rediss+cluster://``) a Redis Cluster.
    - ``postgresql://[user[:password]@]host[:port]/dbname[?param=value]`` (or ``postgres://``):
      a `PostgresStorage` (needs the ``postgres`` extra).
    - ``file:///path/to/dir``: a `FileStorage` rooted there (the `planet` CLI's layout).

    Raises:
        ConfigurationError: Any other URL, or one that cannot be used (the message never quotes
            its password, however malformed the URL).
    """
    try:
        scheme = urlsplit(url).scheme.lower()
    except ValueError:
        scheme = ""
    if scheme in ("redis", "rediss", "unix", "redis+sentinel", "redis+cluster", "rediss+cluster"):
        return RedisStorage(url)
    if scheme in ("postgresql", "postgres"):
        return PostgresStorage(url)
    if scheme == "file":
        parts = urlsplit(url)
        if "@" in url or parts.netloc not in ("", "localhost"):
            # An @ is where a URL carries a user name and password: none belongs here. A
            # directory whose name holds one is written %40.
            raise ConfigurationError(
                "a file storage URL names a local directory, file:///path/to/dir, with no host, "
                "user or password (write an @ in the path as %40)"
            )
        return FileStorage(unquote(parts.path))
    raise ConfigurationError(
        f"{describe_url(url)} is not a storage URL: use redis://host:port/db, rediss://... "
        "(TLS), postgresql://user@host:port/dbname or file:///path/to/dir"
    )


def storage_from_environment(environ: Mapping[str, str] | None = None) -> Storage | None:
    """The storage `PLANET_ASYNC_STORAGE` names, or None when it is not set.

    Raises:
        ConfigurationError: The variable holds something that is not a storage URL.
    """
    environ = os.environ if environ is None else environ
    url = environ.get(STORAGE_VARIABLE, "").strip()
    if not url:
        return None
    try:
        return storage_from_url(url)
    except ConfigurationError as exc:
        raise ConfigurationError(f"environment variable {STORAGE_VARIABLE}: {exc}") from None
