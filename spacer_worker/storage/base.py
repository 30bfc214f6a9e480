"""The interface every storage backend implements.

Backends move bytes, nothing else: formats (images, features, classifiers)
live in their own modules on top of :func:`load_bytes`/:func:`store_bytes`.
Every failure leaves as a :mod:`spacer_worker.exceptions` error, split into
permanent (missing key, access denied, bad location) and transient
(unavailable, throttled) so the task layer retries only the latter.
"""

from __future__ import annotations

import abc
from io import BytesIO
from typing import Any


class Storage(abc.ABC):
    """A flat key -> bytes store."""

    #: Whether store/delete are supported.
    writable: bool = True

    def load(self, key: str) -> BytesIO:
        """The object under ``key`` as a stream, as PySpacer's storages
        return it; DataNotFoundError if absent."""
        return BytesIO(self.load_bytes(key))

    @abc.abstractmethod
    def load_bytes(self, key: str) -> bytes:
        """Return the bytes under ``key``; DataNotFoundError if absent."""

    @abc.abstractmethod
    def store(self, key: str, stream: bytes | BytesIO) -> None:
        """Write ``stream`` (bytes, or a BytesIO as PySpacer passes) under
        ``key`` whole: readers never see a partial object."""

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Remove ``key``; removing a missing key is not an error."""

    @abc.abstractmethod
    def exists(self, key: str) -> bool:
        """Whether ``key`` holds an object."""

    def move(self, source: str, key: str) -> None:
        """Put the object at ``source`` under ``key`` and remove ``source``
        (publishing a staged output); FileNotFoundError (DataNotFoundError)
        when ``source`` is gone. Backends with a cheaper way override it."""
        self.store(key, self.load_bytes(source))
        self.delete(source)

    def describe(self, key: str) -> str:
        """How error messages name ``key`` in this storage."""
        return key


def as_bytes(data: Any) -> bytes:
    """What a ``store`` was given, as bytes: bytes-like, or a stream such
    as the BytesIO PySpacer's storage classes take."""
    if hasattr(data, 'getvalue'):
        return data.getvalue()
    if hasattr(data, 'read'):
        return data.read()
    return bytes(data)
