"""Calibrated probabilities of many points at once, without per-call
overhead.

A classify worker's time goes mostly to scikit-learn's bookkeeping around
a small amount of arithmetic: ``CalibratedClassifierCV.predict_proba``
checks its input again in every layer, fits a LabelEncoder and calls one
sigmoid calibrator per class (20 to 1000+ small calls). For the
classifiers PySpacer trains (a prefit MLP or SGD, sigmoid calibration,
more than two classes) :func:`predict_proba` does the same operations in
the same order on whole arrays, so the result is bit for bit scikit-learn's
(``tests/training/test_scoring.py``); any other classifier goes through
scikit-learn unchanged.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def predict_proba(clf: Any, x: np.ndarray) -> np.ndarray:
    """``clf.predict_proba(x)`` for float64 ``x`` [n, d]."""
    fast = _calibrated_parts(clf)
    if fast is None or x.ndim != 2 or x.dtype != np.float64 \
            or x.shape[1] != getattr(fast[0], 'n_features_in_', -1) \
            or not np.isfinite(np.add.reduce(x, axis=None)):
        # (A sum is finite where every value is, or overflowed: then
        # scikit-learn, which checks value by value, takes it.)
        return clf.predict_proba(x)
    estimator, classes, columns, slopes, offsets = fast
    predictions = _predictions(estimator, x)
    proba = np.zeros((len(x), len(classes)))
    # _SigmoidCalibration.predict, every class at once.
    from scipy.special import expit
    proba[:, columns] = expit(-(slopes * predictions + offsets))
    # _CalibratedClassifier.predict_proba's normalisation (multiclass).
    denominator = np.sum(proba, axis=1)[:, np.newaxis]
    uniform = np.full_like(proba, 1 / len(classes))
    proba = np.divide(proba, denominator, out=uniform,
                      where=denominator != 0)
    proba[(1.0 < proba) & (proba <= 1.0 + 1e-5)] = 1.0
    # CalibratedClassifierCV's mean over its one calibrated classifier.
    mean = np.zeros((len(x), len(classes)))
    mean += proba
    mean /= 1
    return mean


def _calibrated_parts(clf: Any) -> tuple | None:
    """(estimator, classes, columns, slopes, offsets), or None where the
    classifier is not a prefit MLP/SGD with sigmoid calibration over more
    than two classes."""
    from sklearn.calibration import CalibratedClassifierCV, _SigmoidCalibration
    from sklearn.linear_model import SGDClassifier
    from sklearn.neural_network import MLPClassifier

    if type(clf) is not CalibratedClassifierCV:
        return None
    parts = getattr(clf, 'calibrated_classifiers_', None)
    if not parts or len(parts) != 1:
        return None
    part = parts[0]
    estimator = part.estimator
    classes = np.asarray(part.classes)
    if type(estimator) not in (MLPClassifier, SGDClassifier) \
            or len(classes) <= 2 or part.method != 'sigmoid' \
            or not np.array_equal(classes, np.asarray(clf.classes_)) \
            or len(part.calibrators) != len(estimator.classes_) \
            or any(type(c) is not _SigmoidCalibration
                   for c in part.calibrators):
        return None
    if type(estimator) is MLPClassifier and (
            estimator.out_activation_ != 'softmax'
            or estimator.n_outputs_ != len(estimator.classes_)):
        return None
    columns = np.searchsorted(classes, estimator.classes_)
    if columns.max() >= len(classes) or \
            not np.array_equal(classes[columns], estimator.classes_):
        return None
    slopes = np.array([c.a_ for c in part.calibrators], dtype=np.float64)
    offsets = np.array([c.b_ for c in part.calibrators], dtype=np.float64)
    return estimator, classes, columns, slopes, offsets


def _predictions(estimator: Any, x: np.ndarray) -> np.ndarray:
    """What the calibrators see: SGD's decision_function, the MLP's
    predict_proba (scikit-learn's own arithmetic, minus input checks)."""
    from sklearn.linear_model import SGDClassifier

    if type(estimator) is SGDClassifier:
        from sklearn.utils.extmath import safe_sparse_dot
        return (safe_sparse_dot(x, estimator.coef_.T, dense_output=True)
                + estimator.intercept_)
    return estimator._forward_pass_fast(x, check_input=False)
