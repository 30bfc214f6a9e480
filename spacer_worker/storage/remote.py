"""Stores behind the network (s3, url): PySpacer's ``RemoteStorage``, whose
``load`` may keep a copy in a local folder (a filesystem store) and read it
from there next time."""

from __future__ import annotations

import abc
import hashlib
from io import BytesIO
from pathlib import Path, PurePosixPath

from spacer_worker.storage.base import Storage
from spacer_worker.storage.filesystem import FileSystemStorage


def cache_file(directory: str, key: str) -> str:
    """Where ``key`` is cached under ``directory``: at its key, as PySpacer
    does, but never outside ``directory`` (an absolute key or one with
    '..' segments is cached under its sha256 instead)."""
    parts = PurePosixPath(key.lstrip('/')).parts
    if not parts or '..' in parts or key.startswith('/'):
        parts = (hashlib.sha256(key.encode('utf-8')).hexdigest(),)
    return str(Path(directory, *parts))


class RemoteStorage(Storage):
    """A store behind the network (s3, url), as PySpacer names it: ``load``
    may keep a copy in a local folder and read it from there next time."""

    def load(self, key: str, filesystem_cache: str | None = None
             ) -> BytesIO:
        """The object under ``key`` as a stream (PySpacer's signature);
        with ``filesystem_cache``, read from the file
        ``<filesystem_cache>/<key>`` when present, else fetched and written
        there (atomically) for next time."""
        return BytesIO(self.load_bytes(key, filesystem_cache))

    def load_bytes(self, key: str,
                   filesystem_cache: str | None = None) -> bytes:
        """The bytes under ``key`` (``filesystem_cache`` as for ``load``)."""
        if not filesystem_cache:
            return self._load_remote(key)

        local = FileSystemStorage()
        cached = cache_file(filesystem_cache, key)
        if local.exists(cached):
            return local.load_bytes(cached)
        data = self._load_remote(key)
        local.store(cached, data)
        return data

    @abc.abstractmethod
    def _load_remote(self, key: str) -> bytes:
        """Fetch ``key`` over the network."""
