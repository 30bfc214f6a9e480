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

from spacer_worker.classification.model_cache import load_classifier_cached
from spacer_worker.classification.scoring import predict_proba
from spacer_worker.data_classes import ImageFeatures
from spacer_worker.data_classes.results import (
    ClassifyReturnMsg,
)
from spacer_worker.messages.task_messages import ClassifyFeaturesMsg
from spacer_worker.training.threads import blas_threads

logger = logging.getLogger(__name__)

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
    x = np.asarray(features.feature_array(), dtype=np.float64)
    with blas_threads():
        # scikit-learn's numbers without its per-class calls (see
        # classification.scoring).
        probabilities = predict_proba(clf, x).tolist()
    if features.valid_rowcol:
        rows = np.asarray(features.rows).tolist()
        cols = np.asarray(features.cols).tolist()
    else:
        rows = cols = [None] * len(probabilities)
    return ClassifyReturnMsg(
        runtime=0.0 if t0 is None else time.time() - t0,
        scores=list(zip(rows, cols, probabilities, strict=True)),
        classes=np.asarray(clf.classes_).tolist(),
        valid_rowcol=bool(features.valid_rowcol))
