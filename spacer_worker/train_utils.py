"""PySpacer's training helpers (``spacer.train_utils``): evaluate a
classifier, accuracy, random test data.

Same names and results as PySpacer's; they live with the rest of training
(:mod:`spacer_worker.training.evaluation`,
:mod:`spacer_worker.training.random_data`).
"""

from __future__ import annotations

from spacer_worker.training.evaluation import calc_acc, evaluate_classifier
from spacer_worker.training.random_data import make_random_data

__all__ = ['evaluate_classifier', 'calc_acc', 'make_random_data']

# PySpacer's module re-exports these names; resolved on first use.
from spacer_worker import lazy_exports  # noqa: E402

__getattr__, __dir__ = lazy_exports(__name__, {
    'DataLocation': 'spacer_worker.data_classes:DataLocation',
    'ImageLabels': 'spacer_worker.data_classes:ImageLabels',
    'ImageFeatures': 'spacer_worker.data_classes:ImageFeatures',
    'LabelId': 'spacer_worker.data_classes:LabelId',
}, globals())
