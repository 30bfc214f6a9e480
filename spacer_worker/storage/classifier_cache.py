"""Classifiers kept per process, keyed by the file's identity.

A classify worker scores image after image with the same source
classifier; unpickling it each time costs more than scoring 200 points.
An entry is keyed by the sha256 of the bytes, or for a local file by its
inode, size and modification time (an ETag, as web servers make them: our
storage replaces files by rename, so a rewrite always gets a new inode).
A classifier overwritten at the same location is never served stale.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from typing import Any

from spacer_worker import config
from spacer_worker.metrics import recording
from spacer_worker.storage.blobs import check_readable, describe, load_bytes
from spacer_worker.storage.classifiers import parse_classifier

_lock = threading.Lock()
_entries: OrderedDict[Any, Any] = OrderedDict()


def _file_tag(loc: Any) -> tuple | None:
    if getattr(loc, 'storage_type', None) != 'filesystem':
        return None
    try:
        st = os.stat(loc.key)
    except OSError:
        return None  # let the storage layer raise its proper error
    return ('file', st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns,
            st.st_ctime_ns)


def _lookup(key: Any) -> Any:
    with _lock:
        clf = _entries.get(key)
        if clf is not None:
            _entries.move_to_end(key)
        return clf


def _remember(key: Any, clf: Any, size: int) -> None:
    with _lock:
        _entries[key] = clf
        while len(_entries) > size:
            _entries.popitem(last=False)


def load_classifier_cached(loc: Any) -> Any:
    """``storage.load_classifier(loc)``, reusing an identical classifier
    loaded before in this process (CLASSIFIER_CACHE_SIZE entries, LRU)."""
    # Before the file's identity is looked at: a cached classifier is
    # served only for a location the running task may read.
    check_readable(loc)
    size = config.get('CLASSIFIER_CACHE_SIZE')
    if size <= 0:
        return parse_classifier(load_bytes(loc), describe(loc))
    key = _file_tag(loc)
    if key is not None:
        clf = _lookup(key)
        if clf is not None:
            recording.cache_lookup('classifier', hit=True)
            return clf
    data = load_bytes(loc)
    if key is None:
        key = ('sha256', hashlib.sha256(data).hexdigest())
        clf = _lookup(key)
        if clf is not None:
            recording.cache_lookup('classifier', hit=True)
            return clf
    recording.cache_lookup('classifier', hit=False)
    clf = parse_classifier(data, describe(loc))
    _remember(key, clf, size)
    return clf


def clear() -> None:
    with _lock:
        _entries.clear()


def load_classifier(loc: Any) -> Any:
    """PySpacer's ``storage.load_classifier``: the classifier at ``loc``,
    reused from this process's cache while the file is unchanged. PySpacer
    caches by location (``lru_cache``), which serves a stale classifier
    after an overwrite; this cache cannot. ``load_classifier.cache_clear()``
    empties it, as PySpacer's does."""
    return load_classifier_cached(loc)


load_classifier.cache_clear = clear  # type: ignore[attr-defined]
