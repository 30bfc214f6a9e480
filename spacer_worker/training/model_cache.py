"""Classifiers kept per worker process, keyed by the file's content.

A classify worker scores image after image with the same source
classifier; unpickling it each time costs more than scoring 200 points.
Entries are keyed by the sha256 of the bytes just read, so a classifier
overwritten at the same location is never served stale (the bytes are
still read on every call; only the unpickling is saved).
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from typing import Any

_lock = threading.Lock()
_entries: OrderedDict[str, Any] = OrderedDict()


def load_classifier_cached(loc: Any) -> Any:
    """``storage.load_classifier(loc)``, reusing an identical classifier
    loaded before in this process (CLASSIFIER_CACHE_SIZE entries, LRU)."""
    from spacer_worker import config
    from spacer_worker.storage.blobs import describe, load_bytes
    from spacer_worker.storage.classifiers import parse_classifier

    data = load_bytes(loc)
    size = config.get('CLASSIFIER_CACHE_SIZE')
    if size <= 0:
        return parse_classifier(data, describe(loc))
    digest = hashlib.sha256(data).hexdigest()
    with _lock:
        clf = _entries.get(digest)
        if clf is not None:
            _entries.move_to_end(digest)
            return clf
    clf = parse_classifier(data, describe(loc))
    with _lock:
        _entries[digest] = clf
        while len(_entries) > size:
            _entries.popitem(last=False)
    return clf


def clear() -> None:
    with _lock:
        _entries.clear()
