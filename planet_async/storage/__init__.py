"""Where sessions are kept: the async `Storage` protocol and its implementations."""

from ._file import FileStorage as FileStorage
from ._memory import MemoryStorage as MemoryStorage
from ._protocol import Storage as Storage
from ._redis import RedisStorage as RedisStorage

__all__ = ["FileStorage", "MemoryStorage", "RedisStorage", "Storage"]
