"""Storage backends and the image / feature / classifier formats on them.

``storage_factory(type, bucket)`` gives a backend (filesystem, memory, s3,
url) with ``load``/``store``/``delete``/``exists`` on bytes; the helpers
below take a ``DataLocation``. Importing this package loads no heavy
library: boto3, Pillow, numpy and scikit-learn are imported by the call
that needs them.
"""

from spacer_worker.aws import get_s3_resource
from spacer_worker.exceptions import URLDownloadError
from spacer_worker.storage.base import Storage
from spacer_worker.storage.blobs import load_bytes, store_bytes
from spacer_worker.storage.classifier_cache import load_classifier
from spacer_worker.storage.classifiers import ClassifierUnpickler, store_classifier
from spacer_worker.storage.factory import STORAGE_TYPES, storage_factory, storage_for
from spacer_worker.storage.filesystem import FileSystemStorage
from spacer_worker.storage.images import load_image, open_image, store_image
from spacer_worker.storage.memory import (
    MemoryStorage,
    clear_memory_storage,
    default_memory_storage,
)
from spacer_worker.storage.remote import RemoteStorage
from spacer_worker.storage.s3 import S3Storage
from spacer_worker.storage.url import URLStorage

__all__ = [
    'STORAGE_TYPES',
    'ClassifierUnpickler',
    'FileSystemStorage',
    'MemoryStorage',
    'RemoteStorage',
    'S3Storage',
    'Storage',
    'URLDownloadError',
    'URLStorage',
    'get_s3_resource',
    'clear_memory_storage',
    'default_memory_storage',
    'load_bytes',
    'load_classifier',
    'load_image',
    'open_image',
    'storage_factory',
    'storage_for',
    'store_bytes',
    'store_classifier',
    'store_image',
]
