"""The interface every storage backend implements.

Backends move bytes, nothing else: formats (images, features, classifiers)
live in their own modules on top of :func:`load_bytes`/:func:`store_bytes`.
Every failure leaves as a :mod:`spacer_worker.exceptions` error, split into
permanent (missing key, access denied, bad location) and transient
(unavailable, throttled) so the task layer retries only the latter.
"""

from __future__ import annotations

import abc


class Storage(abc.ABC):
    """A flat key -> bytes store."""

    #: Whether store/delete are supported.
    writable: bool = True

    @abc.abstractmethod
    def load(self, key: str) -> bytes:
        """Return the bytes under ``key``; DataNotFoundError if absent."""

    @abc.abstractmethod
    def store(self, key: str, data: bytes) -> None:
        """Write ``data`` under ``key`` whole: readers never see a partial
        object."""

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Remove ``key``; removing a missing key is not an error."""

    @abc.abstractmethod
    def exists(self, key: str) -> bool:
        """Whether ``key`` holds an object."""

    def describe(self, key: str) -> str:
        """How error messages name ``key`` in this storage."""
        return key
