"""The tasks that read pixels: extract_features and classify_image.

The image is fetched and decoded once (its pixel count checked from the
header first, so a decompression bomb is refused before decoding), the
points are checked with PySpacer's rules, and the extractor runs on the
image. An RGB JPEG is decoded as the extractor reaches the rows its
patches need (``storage.pixel_arrays``), and to its end after, so a
corrupt image fails whatever the points. Every bad input ends in a typed
PermanentError.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from spacer_worker.data_classes import DataLocation
from spacer_worker.data_classes.results import (
    ClassifyReturnMsg,
    ExtractFeaturesReturnMsg,
)
from spacer_worker.extractors.checks import check_point_count, checked_inputs
from spacer_worker.messages.task_messages import ClassifyImageMsg, ExtractFeaturesMsg
from spacer_worker.storage import open_image
from spacer_worker.storage.classifier_cache import load_classifier_cached
from spacer_worker.storage.pixel_arrays import row_decoder
from spacer_worker.tasks.classification import score_features

if TYPE_CHECKING:
    from PIL.Image import Image

    from spacer_worker.data_classes import ImageFeatures
    from spacer_worker.extractors.base import FeatureExtractor


def _open_image(image_loc: DataLocation) -> Image:
    # Rows on demand: the extractor starts on the top rows' patches while
    # the rest is decoded (storage.pixel_arrays).
    return open_image(image_loc, rows_on_demand=True)


def _extract(extractor: FeatureExtractor, image: Image, rowcols: list,
             image_loc: DataLocation
             ) -> tuple[ImageFeatures, ExtractFeaturesReturnMsg]:
    # The one check of the image and its points (the extractor skips its
    # own), naming the image's location.
    with checked_inputs(image, rowcols, image_loc.key):
        features, return_msg = extractor(image, rowcols)
    # Rows no patch needed (or an extractor that never read the pixels)
    # are decoded too: a corrupt or truncated image fails as it always
    # did, whatever the points.
    decoder = row_decoder(image)
    if decoder is not None:
        decoder.finish()
    return features, return_msg


def extract_features(msg: ExtractFeaturesMsg) -> ExtractFeaturesReturnMsg:
    """Extract features at ``msg.rowcols`` and store them at feature_loc."""
    # Counting points costs nothing; fetching the image may cost a lot.
    check_point_count(msg.rowcols, msg.image_loc.key)
    image = _open_image(msg.image_loc)
    features, return_msg = _extract(msg.extractor, image, msg.rowcols,
                                    msg.image_loc)
    del image
    features.store(msg.feature_loc)
    return return_msg


def classify_image(msg: ClassifyImageMsg) -> ClassifyReturnMsg:
    """Extract features at ``msg.rowcols`` and score them with the
    classifier at ``classifier_loc``; nothing is stored."""
    check_point_count(msg.rowcols, msg.image_loc.key)
    start = time.time()
    # The image (fetched, its header read; pixels decode on demand), then
    # the classifier, as PySpacer orders them: either fails before the
    # costly extraction. From the process's classifier cache, as classify_features does: a
    # worker classifies image after image of one source with the same
    # classifier, and unpickling it each time (tens of ms, more for large
    # MLPs) is work thrown away. Entries are keyed by content (or a local
    # file's inode/size/mtime), so an overwritten classifier is never
    # served stale, and CLASSIFIER_CACHE_SIZE bounds the memory they take
    # on an extract worker (0 turns the cache off).
    image = _open_image(msg.image_loc)
    clf = load_classifier_cached(msg.classifier_loc)
    features, _ = _extract(msg.extractor, image, msg.rowcols, msg.image_loc)
    del image
    result = score_features(clf, features)
    result.runtime = time.time() - start
    return result
