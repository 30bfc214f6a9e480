"""From a storage type (and bucket) to a backend instance."""

from __future__ import annotations

from typing import Any

from spacer_worker import config
from spacer_worker.constants import StorageType
from spacer_worker.exceptions import InvalidLocationError
from spacer_worker.storage.base import Storage
from spacer_worker.storage.filesystem import FileSystemStorage
from spacer_worker.storage.memory import default_memory_storage
from spacer_worker.storage.s3 import S3Storage
from spacer_worker.storage.url import URLStorage

STORAGE_TYPES = config.STORAGE_TYPES


def _storage_type(storage_type: Any) -> StorageType:
    # Accepts plain strings and str enums (StorageType.S3 -> 's3').
    value = getattr(storage_type, 'value', storage_type)
    if not isinstance(value, str) or value not in STORAGE_TYPES:
        raise InvalidLocationError(
            f"Unknown storage_type {storage_type!r}; expected one of "
            f"{', '.join(STORAGE_TYPES)}.")
    return StorageType(value)


def storage_factory(storage_type: Any, bucket_name: str | None = None
                    ) -> Storage:
    """The backend for ``storage_type``; ``bucket_name`` is needed for s3.

    'memory' returns the process-wide default :class:`MemoryStorage`.
    Backends are imported here, so boto3 loads only when s3 is used.
    """
    kind = _storage_type(storage_type)
    if kind is StorageType.FILESYSTEM:
        return FileSystemStorage()
    if kind is StorageType.MEMORY:
        return default_memory_storage()
    if kind is StorageType.S3:
        if not bucket_name:
            raise InvalidLocationError(
                f"storage_type {kind.value!r} needs a bucket_name, got "
                f"{bucket_name!r}.")
        return S3Storage(bucket_name)
    return URLStorage()


def storage_for(loc: Any) -> Storage:
    """The backend holding a ``DataLocation``."""
    return storage_factory(loc.storage_type, getattr(loc, 'bucket_name', None))
