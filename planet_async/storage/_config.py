"""Choosing a storage without code: a URL, from `PLANET_ASYNC_STORAGE` or `--storage`."""

from __future__ import annotations

import os
from collections.abc import Mapping
from urllib.parse import unquote, urlsplit

from .._errors import ConfigurationError
from ._file import FileStorage
from ._postgres import PostgresStorage
from ._protocol import Storage
from ._redis import RedisStorage, mask_url

__all__ = ["STORAGE_VARIABLE", "storage_from_environment", "storage_from_url"]

STORAGE_VARIABLE = "PLANET_ASYNC_STORAGE"
"""The environment variable naming where token sets are kept, for fleets."""


def storage_from_url(url: str) -> Storage:
    """The storage a URL names.

    - ``redis://[[user]:password@]host[:port][/db]``, ``rediss://...`` (TLS) or ``unix://...``:
      a `RedisStorage` (needs the ``redis`` extra).
    - ``postgresql://[user[:password]@]host[:port]/dbname[?param=value]`` (or ``postgres://``):
      a `PostgresStorage` (needs the ``postgres`` extra).
    - ``file:///path/to/dir``: a `FileStorage` rooted there (the `planet` CLI's layout).

    Raises:
        ConfigurationError: Any other URL.
    """
    scheme = urlsplit(url).scheme.lower()
    if scheme in ("redis", "rediss", "unix"):
        return RedisStorage(url)
    if scheme in ("postgresql", "postgres"):
        return PostgresStorage(url)
    if scheme == "file":
        parts = urlsplit(url)
        if parts.netloc not in ("", "localhost"):
            raise ConfigurationError(f"{url!r}: a file URL names a local directory, file:///path")
        return FileStorage(unquote(parts.path))
    raise ConfigurationError(
        f"{mask_url(url)!r} is not a storage URL: use redis://host:port/db, rediss://... (TLS), "
        "postgresql://user@host:port/dbname or file:///path/to/dir"
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
