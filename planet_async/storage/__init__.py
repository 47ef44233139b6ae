"""Where sessions are kept: the async `Storage` protocol and its implementations."""

from ._file import FileStorage as FileStorage
from ._memory import MemoryStorage as MemoryStorage
from ._protocol import Storage as Storage

__all__ = ["FileStorage", "MemoryStorage", "Storage"]
