"""Scoring loaded feature sets with classifiers, a chunk of rows at a time.

Classifiers run in float64, as in PySpacer (its features are float64
arrays), so a classifier scores the same here and there. Rows are
converted a chunk at a time to bound the extra memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from spacer_worker.data_classes import ImageLabels
from spacer_worker.exceptions import TrainingLabelsError
from spacer_worker.training.loading import FeatureSet, open_training_data

CHUNK_ROWS = 2000


def as_float64(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    if out is None:
        return x.astype(np.float64)
    out = out[:len(x)]
    np.copyto(out, x)
    return out


def accuracy(gt: np.ndarray, est: np.ndarray) -> float:
    """PySpacer's calc_acc on arrays: matches / count, as a Python float.

    Compared as Python objects so labels of different types (a previous
    classifier trained on str labels, say) compare unequal, not fail.
    """
    if len(gt) == 0 or len(gt) != len(est):
        raise ValueError(f'cannot compare {len(gt)} labels with {len(est)}')
    gt = np.asarray(gt)
    est = np.asarray(est)
    if gt.dtype.kind != est.dtype.kind:
        gt, est = gt.astype(object), est.astype(object)
    return float(np.count_nonzero(gt == est)) / len(gt)


def predict_labels(clf: Any, x32: np.ndarray,
                   chunk_rows: int = CHUNK_ROWS) -> np.ndarray:
    """``clf.predict`` of float32 rows, converted chunk by chunk."""
    buffer = np.empty((min(chunk_rows, len(x32)), x32.shape[1]),
                      dtype=np.float64)
    parts = [clf.predict(as_float64(x32[i:i + chunk_rows], buffer))
             for i in range(0, len(x32), chunk_rows)]
    return np.concatenate(parts)


@dataclass
class Evaluation:
    """The new classifier on a set, and previous classifiers' accuracy."""

    gt: list[int]        # index into classes
    est: list[int]       # index into classes
    scores: list[float]  # the top calibrated score of each point
    classes: list[Any]
    acc: float
    pc_accs: list[float]


def evaluate_set(clf: Any, feature_set: FeatureSet,
                 pc_models: Sequence[Any] = (),
                 chunk_rows: int = 5000) -> Evaluation:
    """Score every row of ``feature_set`` with ``clf`` (and ``pc_models``),
    reading each chunk of rows once for all of them."""
    classes = np.asarray(clf.classes_)
    gt_labels = feature_set.labels
    gt = np.searchsorted(classes, gt_labels)
    unknown = (gt >= len(classes)) | (classes[np.minimum(gt, len(classes) - 1)]
                                      != gt_labels)
    if unknown.any():
        raise TrainingLabelsError(
            f"The {feature_set.name} set has labels the classifier was not "
            f"trained on (example: {gt_labels[unknown][0]!r}); run "
            f"preprocess_labels on the labels first.")
    est_parts, score_parts = [], []
    pc_predictions: list[list[np.ndarray]] = [[] for _ in pc_models]
    buffer = np.empty((min(chunk_rows, feature_set.nrows),
                       feature_set.matrix.dim), dtype=np.float64)
    for x32, _y in feature_set.chunks(chunk_rows):
        x = as_float64(x32, buffer)
        proba = clf.predict_proba(x)
        est_parts.append(proba.argmax(axis=1))
        score_parts.append(proba.max(axis=1))
        for predictions, pc in zip(pc_predictions, pc_models, strict=True):
            predictions.append(np.asarray(pc.predict(x)))
    est = np.concatenate(est_parts)
    return Evaluation(
        gt=gt.tolist(), est=est.tolist(),
        scores=np.concatenate(score_parts).tolist(),
        classes=classes.tolist(),
        acc=accuracy(gt, est),
        pc_accs=[accuracy(gt_labels, np.concatenate(p))
                 for p in pc_predictions])


def evaluate_classifier(clf: Any, labels: ImageLabels,
                        ) -> tuple[list, list, list]:
    """(ground truth labels, predicted labels, top scores) of every
    annotation of ``labels``, in PySpacer's order."""
    if sum(len(labels[key]) for key in labels.keys()) == 0:
        raise TrainingLabelsError(
            "evaluate_classifier: the labels hold no annotations to "
            "evaluate on.")
    classes = np.asarray(clf.classes_)
    ests, scores = [], []
    with open_training_data({'eval': labels}, names=('eval',)) as data:
        feature_set = data['eval']
        for x32, _y in feature_set.chunks(5000):
            proba = clf.predict_proba(as_float64(x32))
            ests.extend(classes[proba.argmax(axis=1)].tolist())
            scores.extend(proba.max(axis=1).tolist())
        gts = feature_set.labels.tolist()
    return gts, ests, scores


def calc_acc(gt: list, est: list) -> float:
    """Fraction of positions where ``gt`` and ``est`` agree."""
    if len(gt) == 0 or len(est) == 0:
        raise ValueError('Inputs can not be empty')
    if len(gt) != len(est):
        raise ValueError('Input gt and est must have the same length')
    return float(sum(g == e for g, e in zip(gt, est, strict=True))) / len(gt)
