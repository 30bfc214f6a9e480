"""PySpacer's training helpers: evaluate a classifier, accuracy, test data.

Same names and results as ``spacer.train_utils``; evaluation reads each
feature file once and scores all its points in one call.
"""

from __future__ import annotations

import random
import string
from typing import Any

import numpy as np

from spacer_worker.data_classes import DataLocation, ImageFeatures, ImageLabels, LabelId
from spacer_worker.exceptions import MessageError, TrainingLabelsError
from spacer_worker.training.evaluation import as_float64
from spacer_worker.training.loading import open_training_data

__all__ = ['evaluate_classifier', 'calc_acc', 'make_random_data']


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


def make_random_data(im_count: int,
                     class_list: list[LabelId],
                     points_per_image: int,
                     feature_dim: int,
                     feature_loc_base: DataLocation,
                     feature_loc_keys: list[str] | None = None,
                     ) -> ImageLabels:
    """Store random features for ``im_count`` images and return their
    labels (for tests and demos), as PySpacer's function of that name.

    Each point's features are ``hash(label)`` plus standard normal noise,
    drawn from numpy's global generator (seed it for repeatable data);
    every image has each class at least once. Keys are random unless
    ``feature_loc_keys`` (at least ``im_count`` of them) are given.
    """
    if feature_loc_keys is not None and len(feature_loc_keys) < im_count:
        raise MessageError(
            f"make_random_data: feature_loc_keys has {len(feature_loc_keys)} "
            f"keys for im_count={im_count} images.")
    if points_per_image < len(class_list):
        raise MessageError(
            f"make_random_data: points_per_image={points_per_image} cannot "
            f"hold each of the {len(class_list)} classes.")
    labels = ImageLabels()
    for i in range(im_count):
        point_labels = np.random.choice(class_list, points_per_image).tolist()
        point_labels[:len(class_list)] = class_list
        features = ImageFeatures.make_random(point_labels, feature_dim)
        if feature_loc_keys is None:
            key = ''.join(random.choice(string.ascii_uppercase + string.digits)
                          for _ in range(20))
        else:
            key = feature_loc_keys[i]
        loc = DataLocation(storage_type=feature_loc_base.storage_type,
                           key=key, bucket_name=feature_loc_base.bucket_name)
        features.store(loc)
        labels.add_image(loc, [(p, p, label) for p, label
                               in enumerate(point_labels)])
    return labels


# PySpacer's module re-exports these names; resolved on first use.
from spacer_worker import lazy_exports  # noqa: E402

__getattr__, __dir__ = lazy_exports(__name__, {
    'DataLocation': 'spacer_worker.data_classes:DataLocation',
    'ImageLabels': 'spacer_worker.data_classes:ImageLabels',
    'ImageFeatures': 'spacer_worker.data_classes:ImageFeatures',
    'LabelId': 'spacer_worker.data_classes:LabelId',
}, globals())
