from __future__ import annotations

import pytest

from spacer_worker.data_classes import ImageLabels
from tests.builders import random_labels


@pytest.fixture
def labels(tmp_path) -> ImageLabels:
    return random_labels(tmp_path)


@pytest.fixture
def split(labels):
    from spacer_worker.task_utils import SplitMode, preprocess_labels
    return preprocess_labels(labels, split_mode=SplitMode.POINTS)

