"""PySpacer's make_random_data: stored random features and their labels,
for tests and demos."""

from __future__ import annotations

import random
import string

import numpy as np

from spacer_worker.data_classes import DataLocation, ImageFeatures, ImageLabels, LabelId
from spacer_worker.exceptions import MessageError


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
    every image has each class at least once (so an image has at least
    ``len(class_list)`` points, whatever ``points_per_image``). Keys are random unless
    ``feature_loc_keys`` (at least ``im_count`` of them) are given.
    """
    if feature_loc_keys is not None and len(feature_loc_keys) < im_count:
        raise MessageError(
            f"make_random_data: feature_loc_keys has {len(feature_loc_keys)} "
            f"keys for im_count={im_count} images.")
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
