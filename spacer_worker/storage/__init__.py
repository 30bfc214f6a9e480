"""Storage backends and the image / feature / classifier formats on them.

``storage_factory(type, bucket)`` gives a backend (filesystem, memory, s3,
url) with ``load``/``store``/``delete``/``exists`` on bytes; the helpers
below take a ``DataLocation``. Importing this package loads no heavy
library: boto3, Pillow, numpy and scikit-learn are imported by the call
that needs them.
"""

from spacer_worker.storage.base import Storage
from spacer_worker.storage.blobs import load_bytes, store_bytes
from spacer_worker.storage.classifiers import load_classifier, store_classifier
from spacer_worker.storage.factory import STORAGE_TYPES, storage_factory, storage_for
from spacer_worker.storage.features import load_features, store_features
from spacer_worker.storage.filesystem import FileSystemStorage
from spacer_worker.storage.images import load_image, open_image, store_image
from spacer_worker.storage.memory import (
    MemoryStorage,
    clear_memory_storage,
    default_memory_storage,
)

__all__ = [
    'STORAGE_TYPES',
    'FileSystemStorage',
    'MemoryStorage',
    'Storage',
    'clear_memory_storage',
    'default_memory_storage',
    'load_bytes',
    'load_classifier',
    'load_features',
    'load_image',
    'open_image',
    'storage_factory',
    'storage_for',
    'store_bytes',
    'store_classifier',
    'store_features',
    'store_image',
]
