"""In-process storage: a dict of bytes behind a lock.

An instance, not a module global: tests make their own. One process-wide
default instance backs ``DataLocation('memory', ...)``, because a location
carries only a key; :func:`default_memory_storage` returns it.
"""

from __future__ import annotations

import threading
from typing import Any

from spacer_worker.exceptions import MemoryKeyNotFoundError
from spacer_worker.storage.base import Storage, as_bytes


class MemoryStorage(Storage):
    """Thread-safe key -> bytes store living in this process."""

    def __init__(self) -> None:
        self._blobs: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def describe(self, key: str) -> str:
        return f"memory key {key!r}"

    def load_bytes(self, key: str) -> bytes:
        with self._lock:
            try:
                return self._blobs[key]
            except KeyError:
                raise MemoryKeyNotFoundError(
                    f"No {self.describe(key)} in this process's memory "
                    f"storage (memory storage is not shared between "
                    f"processes).") from None

    def store(self, key: str, stream: Any) -> None:
        blob = as_bytes(stream)  # a private copy: later edits do not leak in
        with self._lock:
            self._blobs[key] = blob

    def delete(self, path: str) -> None:
        with self._lock:
            self._blobs.pop(path, None)

    def exists(self, path: str) -> bool:
        with self._lock:
            return path in self._blobs

    def keys(self) -> list[str]:
        with self._lock:
            return list(self._blobs)

    def clear(self) -> None:
        with self._lock:
            self._blobs.clear()


_default: MemoryStorage | None = None
_default_lock = threading.Lock()


def default_memory_storage() -> MemoryStorage:
    """The instance behind ``DataLocation('memory', ...)`` in this process."""
    global _default
    with _default_lock:
        if _default is None:
            _default = MemoryStorage()
        return _default


def clear_memory_storage() -> None:
    """Empty the default instance (PySpacer has a function of this name)."""
    default_memory_storage().clear()
