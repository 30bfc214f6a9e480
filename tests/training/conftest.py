from __future__ import annotations

import numpy as np
import pytest

from spacer_worker.data_classes import DataLocation, ImageLabels
from spacer_worker.train_utils import make_random_data


def random_labels(directory, im_count: int = 40, classes=(1, 2, 3, 4),
                  points: int = 50, dim: int = 32, seed: int = 0,
                  ) -> ImageLabels:
    """Random features stored as npz files in ``directory``, and labels."""
    np.random.seed(seed)
    keys = [str(directory / f'img{i:03d}.npz') for i in range(im_count)]
    return make_random_data(im_count, list(classes), points, dim,
                            DataLocation('filesystem', str(directory)), keys)


@pytest.fixture
def labels(tmp_path) -> ImageLabels:
    return random_labels(tmp_path)


@pytest.fixture
def split(labels):
    from spacer_worker.task_utils import SplitMode, preprocess_labels
    return preprocess_labels(labels, split_mode=SplitMode.POINTS)


# A real S3 endpoint (moto's server) for training from remote features.
from tests.storage.conftest import moto_endpoint, s3_bucket  # noqa: E402, F401
