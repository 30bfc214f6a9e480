"""PySpacer's data classes (``spacer.data_classes``): where data lives,
labels, features, results.

Same names, attributes and JSON shapes as in PySpacer 0.14.0; each lives in
its own module (:mod:`.base`, :mod:`.labels`, :mod:`.features`,
:mod:`.results`; the JSON codec in :mod:`.codec`). Differences that matter:

* ``ImageFeatures`` keeps its points as arrays (``rows``, ``cols``,
  ``feature_array()``); PySpacer's per-point ``point_features`` list is
  built only when asked for.
* Bad values raise typed errors naming the field and value, not asserts.
* numpy is imported only by the methods that need it, so a client without
  numpy can build, serialize and read every message.
* ``load``/``store`` (PySpacer's API on the data classes) call
  :mod:`spacer_worker.storage`, the layer below, which knows bytes and
  arrays but not these classes.
"""

from __future__ import annotations

from spacer_worker.constants import StorageType
from spacer_worker.data_classes.base import (
    ANNOTATIONS,
    COL,
    LOCATION,
    ROW,
    ROWCOLS,
    Annotation,
    DataClass,
    DataLocation,
    FeatureLabelBatch,
    FeatureLabelPair,
    LabelId,
    LocationRoot,
)
from spacer_worker.data_classes.features import ImageFeatures, PointFeatures
from spacer_worker.data_classes.labels import ImageLabels, TrainingTaskLabels
from spacer_worker.data_classes.results import ValResults

__all__ = [
    'ANNOTATIONS', 'COL', 'LOCATION', 'ROW', 'ROWCOLS', 'Annotation',
    'DataClass', 'DataLocation', 'FeatureLabelBatch', 'FeatureLabelPair',
    'ImageFeatures', 'ImageLabels', 'LabelId', 'LocationRoot', 'PointFeatures',
    'StorageType', 'TrainingTaskLabels', 'ValResults',
]

# PySpacer's module re-exports these names; resolved on first use.
from spacer_worker import lazy_exports  # noqa: E402

__getattr__, __dir__ = lazy_exports(__name__, {
    'RowColumnMismatchError': 'spacer_worker.exceptions:RowColumnMismatchError',
    'RowColumnMissingError': 'spacer_worker.exceptions:RowColumnMissingError',
    'RemoteStorage': 'spacer_worker.storage.remote:RemoteStorage',
    'storage_factory': 'spacer_worker.storage.factory:storage_factory',
}, globals())

