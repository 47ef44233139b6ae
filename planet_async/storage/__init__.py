"""Where sessions are kept: the async `Storage` protocol and its implementations."""

from ._config import STORAGE_VARIABLE as STORAGE_VARIABLE
from ._config import storage_from_environment as storage_from_environment
from ._config import storage_from_url as storage_from_url
from ._encrypted import EncryptedStorage as EncryptedStorage
from ._file import FileStorage as FileStorage
from ._generations import Generation as Generation
from ._generations import may_replace as may_replace
from ._memory import MemoryStorage as MemoryStorage
from ._postgres import PostgresStorage as PostgresStorage
from ._protocol import RecordStore as RecordStore
from ._protocol import Storage as Storage
from ._redis import RedisStorage as RedisStorage

__all__ = [
    "STORAGE_VARIABLE",
    "EncryptedStorage",
    "FileStorage",
    "Generation",
    "MemoryStorage",
    "PostgresStorage",
    "RecordStore",
    "RedisStorage",
    "Storage",
    "may_replace",
    "storage_from_environment",
    "storage_from_url",
]
