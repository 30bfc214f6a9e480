"""Label preprocessing before training: split, filter, check.

``preprocess_labels`` produces the same train/ref/val split as PySpacer 0.14
for the same input (same seeds, same ordering), so a training here and one in
PySpacer see the same sets. CoralNet calls it on its web server, so this
module imports no numpy or scikit-learn at import time; only the point-wise
split modes need scikit-learn.
"""

from __future__ import annotations

import logging
import random
from typing import Any

from spacer_worker import config
from spacer_worker.constants import StrEnum
from spacer_worker.data_classes import ImageLabels, LabelId, TrainingTaskLabels
from spacer_worker.exceptions import MessageError, TrainingLabelsError
from spacer_worker.extractors.checks import check_extract_inputs

logger = logging.getLogger(__name__)

__all__ = ['SplitMode', 'split_labels', 'preprocess_labels',
           'check_extract_inputs']

SET_NAMES = ('train', 'ref', 'val')

# Rarer classes than this cannot be stratified over three sets.
_STRATIFY_MIN_PER_CLASS = 3


class SplitMode(StrEnum):
    """How annotations are dealt out to the train, ref and val sets.

    VECTORS: whole feature vectors (images) go to one set, so evaluation is
    on images the classifier never saw; set sizes are only approximate.
    POINTS: points are dealt individually; sizes are exact.
    POINTS_STRATIFIED: as POINTS, and each class is split in the same
    proportions (a set may still get none of a very rare class).
    """

    VECTORS = 'vectors'
    POINTS = 'points'
    POINTS_STRATIFIED = 'points_stratified'



def _check_split_ratios(split_ratios: Any) -> tuple[float, float]:
    try:
        ref_ratio, val_ratio = (float(r) for r in split_ratios)
    except (TypeError, ValueError):
        raise MessageError(
            f"split_ratios must be two numbers (ref ratio, val ratio), "
            f"got {split_ratios!r}.") from None
    if not (0 < ref_ratio < 1 and 0 < val_ratio < 1
            and ref_ratio + val_ratio < 1):
        raise MessageError(
            f"split_ratios {split_ratios!r}: each ratio must be between 0 "
            f"and 1 and together below 1, leaving a training set.")
    return ref_ratio, val_ratio


def _check_split_mode(split_mode: Any) -> SplitMode:
    value = getattr(split_mode, 'value', split_mode)
    try:
        return SplitMode(value)
    except ValueError:
        raise MessageError(
            f"split_mode {split_mode!r} is not one of "
            f"{', '.join(m.value for m in SplitMode)}.") from None


def split_labels(labels_in: ImageLabels,
                 split_ratios: tuple[float, float],
                 split_mode: SplitMode) -> TrainingTaskLabels:
    """Split annotations into train/ref/val exactly as PySpacer 0.14 does.

    ``split_ratios`` is (ref max ratio, val ratio); the ref set is also
    capped at TRAINING_BATCH_LABEL_COUNT, and the rest goes to train.
    """
    ref_ratio, val_ratio = _check_split_ratios(split_ratios)
    split_mode = _check_split_mode(split_mode)
    counts = labels_in.label_count_per_class
    total = sum(counts.values())
    ref_goal = min(round(total * ref_ratio),
                   config.get('TRAINING_BATCH_LABEL_COUNT'))
    val_goal = round(total * val_ratio)
    train_goal = total - ref_goal - val_goal

    # PySpacer's words (CoralNet shows them to users).
    if split_mode == SplitMode.POINTS_STRATIFIED:
        minimum = len(counts)
        why = (f"Each set's size must not be less than the number of classes"
               f" ({minimum}) to work with train_test_split().")
    else:
        minimum = 1
        why = "Each set must be non-empty."
    if min(train_goal, ref_goal, val_goal) < minimum:
        raise TrainingLabelsError(
            f"Not enough annotations to populate train/ref/val sets. Split "
            f"was calculated as {train_goal}/{ref_goal}/{val_goal}. {why}")

    if split_mode == SplitMode.VECTORS:
        return _split_vectors(labels_in, train_goal, ref_goal, val_goal)
    return _split_points(labels_in, ref_goal, val_goal,
                         stratified=split_mode == SplitMode.POINTS_STRATIFIED)


def _split_vectors(labels_in: ImageLabels, train_goal: int, ref_goal: int,
                   val_goal: int) -> TrainingTaskLabels:
    # PySpacer shuffles the image keys with Python's random seeded 0, then
    # fills val, ref, train in turn until each goal is met or exceeded.
    # A private Random(0) gives the same order without touching the
    # process-wide generator.
    keys = list(labels_in.keys())
    random.Random(0).shuffle(keys)
    sets: dict[str, dict] = {name: {} for name in SET_NAMES}
    position = 0
    for name, goal in (('val', val_goal), ('ref', ref_goal),
                       ('train', train_goal)):
        taken = 0
        while taken < goal and position < len(keys):
            key = keys[position]
            position += 1
            sets[name][key] = labels_in[key]
            taken += len(labels_in[key])
    return TrainingTaskLabels(**{n: ImageLabels(sets[n]) for n in SET_NAMES})


def _split_points(labels_in: ImageLabels, ref_goal: int, val_goal: int,
                  stratified: bool) -> TrainingTaskLabels:
    # Clients call preprocess_labels too: numpy and scikit-learn only here.
    import numpy as np
    from sklearn.model_selection import train_test_split

    image_keys = list(labels_in.keys())
    annotations = [labels_in[key] for key in image_keys]
    image_of = np.repeat(np.arange(len(image_keys)),
                         [len(a) for a in annotations])
    index_in_image = np.concatenate(
        [np.arange(len(a)) for a in annotations])
    flat_labels = [label for annos in annotations
                   for _row, _col, label in annos]
    everything = np.arange(len(flat_labels))

    # PySpacer splits its list of (image, annotation) pairs with
    # train_test_split(random_state=0), first off val then off ref. The
    # permutation depends only on the count (and the labels, if stratified),
    # so splitting an index array picks the same points in the same order.
    train_ref, val = train_test_split(
        everything, test_size=val_goal, random_state=0, shuffle=True,
        stratify=flat_labels if stratified else None)
    train, ref = train_test_split(
        train_ref, test_size=ref_goal, random_state=0, shuffle=True,
        stratify=[flat_labels[i] for i in train_ref] if stratified else None)

    result = []
    for indices in (train, ref, val):
        data: dict = {}
        for image, position in zip(image_of[indices].tolist(),
                                   index_in_image[indices].tolist(),
                                   strict=True):
            key = image_keys[image]
            bucket = data.get(key)
            if bucket is None:
                bucket = data[key] = []
            bucket.append(annotations[image][position])
        result.append(ImageLabels(data))
    return TrainingTaskLabels(**dict(zip(SET_NAMES, result, strict=True)))


def _is_split(labels_in: Any) -> bool:
    return all(hasattr(labels_in, name) for name in SET_NAMES)


def preprocess_labels(
        labels_in: ImageLabels | TrainingTaskLabels,
        accepted_classes: set[LabelId] | None = None,
        split_ratios: tuple[float, float] = (0.1, 0.1),
        split_mode: SplitMode = SplitMode.VECTORS,
) -> TrainingTaskLabels:
    """Split (unless already split), filter by class, and check labels.

    Called by the client before sending a TrainClassifierMsg and by the
    worker before training. Only classes present in both train and ref
    survive, since the classifier learns from train and is calibrated on
    ref. Returns a new TrainingTaskLabels; the input is not modified.
    """
    split_mode = _check_split_mode(split_mode)
    if _is_split(labels_in):
        sets = {name: getattr(labels_in, name) for name in SET_NAMES}
        if accepted_classes:
            sets = {name: s.filter_classes(accepted_classes)
                    for name, s in sets.items()}
    else:
        pre_split = labels_in
        if accepted_classes:
            pre_split = pre_split.filter_classes(accepted_classes)
        if split_mode == SplitMode.POINTS_STRATIFIED:
            # Stratification needs every class in every set. As PySpacer
            # does, counts are taken before the accepted_classes filter.
            counts = labels_in.label_count_per_class
            common = [c for c, n in counts.items()
                      if n >= _STRATIFY_MIN_PER_CLASS]
            if len(common) != len(counts):
                pre_split = pre_split.filter_classes(common)
        split = split_labels(pre_split, split_ratios=split_ratios,
                             split_mode=split_mode)
        sets = {name: getattr(split, name) for name in SET_NAMES}

    classes = {name: s.classes_set for name, s in sets.items()}
    usable = classes['train'] & classes['ref']
    if len(usable) <= 1:
        # PySpacer's words; what a user can change is in the log.
        logger.info("Classes after preprocessing: train %s, ref %s, val %s.%s",
                    _describe(classes['train']), _describe(classes['ref']),
                    _describe(classes['val']), _filter_hint(accepted_classes))
        raise TrainingLabelsError(
            f"Need multiple classes to do training. After preprocessing "
            f"training data, there are {len(usable)} class(es) left.")

    for name in SET_NAMES:
        if not classes[name] <= usable:
            sets[name] = sets[name].filter_classes(usable)
        if sets[name].label_count == 0:
            logger.info("The '%s' set's classes %s are not among the "
                        "classes found in both train and ref %s.%s", name,
                        _describe(classes[name]), _describe(usable),
                        _filter_hint(accepted_classes))
            raise TrainingLabelsError(
                f"After preprocessing training data, '{name}' set is "
                f"empty.")

    return TrainingTaskLabels(train=sets['train'], ref=sets['ref'],
                              val=sets['val'])


def _describe(classes: set, limit: int = 10) -> str:
    if not classes:
        return '(no classes)'
    shown = sorted(classes, key=str)[:limit]
    more = f', ... {len(classes) - limit} more' if len(classes) > limit else ''
    return f"({', '.join(map(repr, shown))}{more})"


def _filter_hint(accepted_classes: Any) -> str:
    if not accepted_classes:
        return ''
    return (f" accepted_classes kept only {_describe(set(accepted_classes))}"
            f"; check it names the classes you meant.")


# PySpacer's module re-exports these names; resolved on first use.
from spacer_worker import lazy_exports  # noqa: E402

__getattr__, __dir__ = lazy_exports(__name__, {
    'ImageLabels': 'spacer_worker.data_classes:ImageLabels',
    'LabelId': 'spacer_worker.data_classes:LabelId',
    'DataLimitError': 'spacer_worker.exceptions:DataLimitError',
    'RowColumnInvalidError': 'spacer_worker.exceptions:RowColumnInvalidError',
    'TrainingTaskLabels': 'spacer_worker.messages:TrainingTaskLabels',
}, globals())
