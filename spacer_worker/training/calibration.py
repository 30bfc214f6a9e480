"""Platt's sigmoid calibration of a prefit classifier, all classes at once.

``CalibratedClassifierCV(clf, cv='prefit').fit`` solves one two-parameter
problem per class with scipy's L-BFGS-B: 20-40 iterations of Python and
Fortran calls per class: 0.13 s of a 20-class training here, 45 s for
300 classes over 20,000 reference points. The problem is small and convex, so
:func:`calibrate_prefit` solves every class together with Newton's method
(a 2x2 system per class, whole-array passes), to a tighter optimum than
L-BFGS-B's stopping rule, on scikit-learn's very objective (its Platt
targets, its rescaling of large scores, its binomial loss) and writes the
objects ``fit`` writes, so the pickle is the one PySpacer reads. A class
whose Newton iteration does not converge (a constant score column, say)
is fitted by scikit-learn's own routine instead.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.special import expit

#: scikit-learn's ``max_abs_prediction_threshold``: larger scores are
#: divided by their column's maximum before fitting.
LARGE_SCORE = 30.0
MAX_ITERATIONS = 100
MAX_HALVINGS = 40
#: Columns fitted together: bounds the temporaries to ~8 x this many
#: float64s however many classes and rows there are.
BLOCK_ELEMENTS = 1 << 21


def calibrate_prefit(clf: Any, x: np.ndarray, y: np.ndarray) -> Any:
    """What ``CalibratedClassifierCV(clf, cv='prefit').fit(x, y)`` returns
    for sigmoid calibration (its default), with every class fitted at
    once."""
    from sklearn.calibration import (
        CalibratedClassifierCV,
        _CalibratedClassifier,
        _SigmoidCalibration,
    )
    from sklearn.preprocessing import label_binarize
    from sklearn.utils._response import _get_response_values
    from sklearn.utils.multiclass import check_classification_targets

    check_classification_targets(y)
    calibrated = CalibratedClassifierCV(clf, cv='prefit')
    scores, _ = _get_response_values(
        clf, x, response_method=['decision_function', 'predict_proba'])
    if scores.ndim == 1:
        scores = scores.reshape(-1, 1)
    classes = clf.classes_
    # _fit_calibrator's pairing for a prefit classifier: score column j
    # calibrates class j (binary: one column and one indicator column, the
    # positive class's).
    indicators = label_binarize(y, classes=classes)
    slopes, offsets = fit_sigmoids(scores, indicators[:, :scores.shape[1]])
    calibrators = []
    for slope, offset in zip(slopes, offsets, strict=True):
        calibrator = _SigmoidCalibration()
        calibrator.a_, calibrator.b_ = np.float64(slope), np.float64(offset)
        calibrators.append(calibrator)
    calibrated.calibrated_classifiers_ = [_CalibratedClassifier(
        clf, calibrators, method='sigmoid', classes=classes)]
    calibrated.classes_ = clf.classes_
    if hasattr(clf, 'n_features_in_'):
        calibrated.n_features_in_ = clf.n_features_in_
    if hasattr(clf, 'feature_names_in_'):
        calibrated.feature_names_in_ = clf.feature_names_in_
    return calibrated


def fit_sigmoids(scores: np.ndarray, positives: np.ndarray,
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Platt's (a, b) for every column: P(positive) = 1 / (1 + exp(a s + b)),
    as scikit-learn's ``_sigmoid_calibration`` defines them."""
    n, k = scores.shape
    slopes, offsets = np.empty(k), np.empty(k)
    width = max(1, BLOCK_ELEMENTS // max(n, 1))
    for first in range(0, k, width):
        block = slice(first, min(first + width, k))
        slopes[block], offsets[block] = _fit_block(
            np.asarray(scores[:, block], dtype=np.float64),
            np.asarray(positives[:, block]) > 0)
    return slopes, offsets


def _fit_block(scores: np.ndarray, positive: np.ndarray,
               ) -> tuple[np.ndarray, np.ndarray]:
    largest = np.max(np.abs(scores), axis=0)
    scale = np.where(largest >= LARGE_SCORE, largest, 1.0)
    f = scores / scale
    n = len(f)
    prior1 = positive.sum(axis=0).astype(np.float64)
    prior0 = n - prior1
    # Platt's targets, kept off 0 and 1.
    target = np.where(positive, (prior1 + 1.0) / (prior1 + 2.0),
                      1.0 / (prior0 + 2.0))
    a = np.zeros(f.shape[1])
    b = np.log((prior0 + 1.0) / (prior1 + 1.0))
    loss = _loss(f, target, a, b)
    for _ in range(MAX_ITERATIONS):
        # d loss / dz with z = a f + b is target - q, q = expit(-z).
        q = expit(-(a * f + b))
        g = target - q
        grad_a, grad_b = np.einsum('ij,ij->j', g, f), g.sum(axis=0)
        w = q * (1.0 - q)
        wf = w * f
        h_aa, h_ab, h_bb = np.einsum('ij,ij->j', wf, f), wf.sum(axis=0), \
            w.sum(axis=0)
        # Singular (a constant score column) to rounding: not for Newton.
        det = h_aa * h_bb - h_ab * h_ab
        singular = ~(det > 1e-12 * h_aa * h_bb)
        with np.errstate(divide='ignore', invalid='ignore'):
            step_a = (h_bb * grad_a - h_ab * grad_b) / det
            step_b = (h_aa * grad_b - h_ab * grad_a) / det
        usable = np.isfinite(step_a) & np.isfinite(step_b) & ~singular
        step_a, step_b = np.where(usable, step_a, 0.0), \
            np.where(usable, step_b, 0.0)
        # Backtrack where a full step would raise the loss; a column whose
        # Newton decrement is at rounding level has converged.
        decrease = grad_a * step_a + grad_b * step_b  # >= 0: a descent
        converged = decrease <= 1e-13 * np.maximum(loss, 1.0)
        t = np.where(converged, 0.0, 1.0)
        for _ in range(MAX_HALVINGS):
            trial = _loss(f, target, a - t * step_a, b - t * step_b)
            worse = trial > loss - 1e-4 * t * decrease
            if not worse.any():
                break
            t = np.where(worse, t / 2, t)
        else:  # no acceptable step: those columns stay where they are
            t = np.where(worse, 0.0, t)
            trial = np.where(worse, loss, trial)
        a, b = a - t * step_a, b - t * step_b
        loss = trial
        done = ~usable | converged
        if done.all():
            break
    failed = ~(np.isfinite(a) & np.isfinite(b) & done)
    for j in np.flatnonzero(failed | singular):
        a[j], b[j] = _scikit_learn_fit(scores[:, j], positive[:, j])
        scale[j] = 1.0  # already in the score's own units
    return a / scale, b


def _loss(f: np.ndarray, target: np.ndarray, a: np.ndarray,
          b: np.ndarray) -> np.ndarray:
    # scikit-learn's HalfBinomialLoss at raw prediction -z, summed.
    z = a * f + b
    return (np.logaddexp(0.0, -z) + target * z).sum(axis=0)


def _scikit_learn_fit(scores: np.ndarray, positive: np.ndarray,
                      ) -> tuple[float, float]:
    from sklearn.calibration import _sigmoid_calibration
    return _sigmoid_calibration(scores, positive.astype(np.float64))
