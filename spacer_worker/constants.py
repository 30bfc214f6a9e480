"""Names and numbers every part agrees on, each defined once.

``str`` enums compare equal to PySpacer's plain strings. This module imports
nothing from the package, so every other module (``config`` included) may
derive from it.
"""

from __future__ import annotations

import sys
from enum import Enum

__all__ = [
    'DEFAULT_PRIORITY', 'EXPEDITE_PRIORITY', 'PRIORITY_STEPS', 'ClassifierType',
    'FeatureCache', 'HIGH_SPEC_ANNOTATIONS', 'HIGH_SPEC_IMAGE_PIXELS',
    'HIGH_SPEC_KINDS', 'QueueKind', 'SpecLevel', 'StorageType', 'StrEnum',
    'TaskName', 'TrainerName',
]

# Python 3.10 (CoralNet's web servers) lacks enum.StrEnum.
if sys.version_info >= (3, 11):
    from enum import StrEnum
else:  # pragma: no cover - exercised by the Python 3.10 client venv
    class StrEnum(str, Enum):
        """A str whose members compare and print as their values."""

        def __str__(self) -> str:
            return str(self.value)

        def __format__(self, spec: str) -> str:
            return format(str(self.value), spec)


class TaskName(StrEnum):
    """PySpacer's four tasks (``config.TASKS``, ``JobMsg.task_name``)."""

    EXTRACT_FEATURES = 'extract_features'
    TRAIN_CLASSIFIER = 'train_classifier'
    CLASSIFY_FEATURES = 'classify_features'
    CLASSIFY_IMAGE = 'classify_image'


class ClassifierType(StrEnum):
    LR = 'LR'
    MLP = 'MLP'


class TrainerName(StrEnum):
    """PySpacer's built-in trainers (``TrainClassifierMsg.trainer_name``)."""

    MINIBATCH = 'minibatch'


class StorageType(StrEnum):
    S3 = 's3'
    FILESYSTEM = 'filesystem'
    MEMORY = 'memory'
    URL = 'url'


class QueueKind(StrEnum):
    """The kinds of work, each with its queue and time limits; the _HIGH
    ones take HIGH spec-level jobs (big images, big trainings) to workers
    with more memory and longer limits."""

    EXTRACT = 'extract'
    TRAIN = 'train'
    CLASSIFY = 'classify'
    EXTRACT_HIGH = 'extract_high'
    TRAIN_HIGH = 'train_high'


class SpecLevel(StrEnum):
    """CoralNet's job spec levels (its ``SpacerJobSpec``)."""

    MEDIUM = 'medium'
    HIGH = 'high'


#: Where a HIGH spec-level job of each kind goes.
HIGH_SPEC_KINDS = {QueueKind.EXTRACT: QueueKind.EXTRACT_HIGH,
                   QueueKind.TRAIN: QueueKind.TRAIN_HIGH}
# CoralNet's thresholds: extractions of images with at least this many
# pixels, trainings with at least this many annotations are HIGH.
HIGH_SPEC_IMAGE_PIXELS = 6000 * 6000
HIGH_SPEC_ANNOTATIONS = 200_000


# Redis serves priority 0 first. A message without a priority counts as 0
# there, so our senders default to the middle and a caller expedites with 0.
PRIORITY_STEPS = list(range(10))
DEFAULT_PRIORITY = 5
EXPEDITE_PRIORITY = 0


class FeatureCache(StrEnum):
    """Where training caches remotely loaded features: AUTO (a temporary
    directory the OS picks), DISABLED, or else a directory path (str)."""

    AUTO = 'auto'
    DISABLED = 'disabled'
