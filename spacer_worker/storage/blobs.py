"""Bytes at a ``DataLocation``: the base every format helper builds on."""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from spacer_worker.storage.factory import storage_for


def load_bytes(loc: Any) -> bytes:
    """The whole object at ``loc``.

    Every read goes through the backend's ``load`` (so a test patching
    ``URLStorage.load``, as CoralNet's do, is obeyed); a PySpacer-style
    ``load`` returning a BytesIO is accepted too.
    """
    data = storage_for(loc).load(loc.key)
    if not isinstance(data, bytes) and hasattr(data, 'getvalue'):
        data = data.getvalue()
    return data


# Set for the run of a task on a leased worker (spacer_worker.worker.
# delivery): it checks the run still holds its message, and takes the write
# (returns True) when ``loc`` is an output, staged until the run commits.
write_guard: ContextVar[Callable[[Any, bytes], bool] | None] = ContextVar(
    'spacer_write_guard', default=None)


def store_bytes(loc: Any, data: bytes) -> None:
    """Write ``data`` at ``loc`` whole (atomic on every backend)."""
    guard = write_guard.get()
    if guard is not None and guard(loc, data):
        return
    storage_for(loc).store(loc.key, data)


def delete(loc: Any) -> None:
    """Remove the object at ``loc``; a missing object is not an error."""
    storage_for(loc).delete(loc.key)


def exists(loc: Any) -> bool:
    return storage_for(loc).exists(loc.key)


def describe(loc: Any) -> str:
    """How messages name ``loc`` (``s3://bucket/key``, ``file 'x'``...)."""
    return storage_for(loc).describe(loc.key)
