"""The classification task that reads a feature file: classify_features.

``score_features`` is the one place a classifier scores feature vectors:
all points of an image in one vectorised ``predict_proba`` call (PySpacer
calls it once per point). ``tasks.images.classify_image`` uses it too.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from spacer_worker.classification.scoring import predict_proba
from spacer_worker.data_classes import ImageFeatures
from spacer_worker.data_classes.results import (
    ClassifyReturnMsg,
)
from spacer_worker.messages.task_messages import ClassifyFeaturesMsg
from spacer_worker.storage.classifier_cache import load_classifier_cached
from spacer_worker.training.threads import blas_threads

logger = logging.getLogger(__name__)

# Points scored on one BLAS thread; more get the task's threads.
SMALL_BATCH = 1000

__all__ = ['classify_features', 'score_features']


def classify_features(msg: ClassifyFeaturesMsg) -> ClassifyReturnMsg:
    """Score every point of a stored feature file with a stored classifier
    (kept unpickled between calls while its bytes are unchanged)."""
    t0 = time.time()
    features = ImageFeatures.read(msg.feature_loc)
    clf = load_classifier_cached(msg.classifier_loc)
    return _score(clf, features, t0)


def score_features(clf: Any, features: ImageFeatures) -> ClassifyReturnMsg:
    """Scores of all points of ``features`` (runtime 0.0: callers set it).

    One ``predict_proba`` over the whole float64 matrix: the same numbers
    PySpacer's per-point calls give, in one pass.
    """
    return _score(clf, features, None)


def _score(clf: Any, features: ImageFeatures,
           t0: float | None) -> ClassifyReturnMsg:
    # The values as stored: a float64 file (PySpacer writes them) scores
    # exactly as PySpacer scores it.
    x = np.asarray(features.stored_array(), dtype=np.float64)
    # One BLAS thread for an image's points (a 200 x 1280 x 100 product
    # takes ~0.5 ms): a second saves at most half of that, and costs
    # milliseconds whenever the other core is busy (median call 4.7-5.9 ms
    # on one thread against 8.9-13.7 on two, on a shared 2-core host).
    with blas_threads(1 if len(x) <= SMALL_BATCH else None):
        # scikit-learn's numbers without its per-class calls (see
        # classification.scoring).
        probabilities = predict_proba(clf, x)
    valid = bool(features.valid_rowcol)
    return ClassifyReturnMsg.from_arrays(
        runtime=0.0 if t0 is None else time.time() - t0,
        rows=features.rows if valid else None,
        cols=features.cols if valid else None,
        scores=probabilities, classes=np.asarray(clf.classes_).tolist(),
        valid_rowcol=valid)
