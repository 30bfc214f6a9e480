"""Test data builders shared by every folder: images, feature files,
labels and messages on the filesystem."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from spacer_worker.data_classes import DataLocation, ImageLabels
from spacer_worker.extractors import DummyExtractor
from spacer_worker.messages import (
    ClassifyFeaturesMsg,
    ExtractFeaturesMsg,
    TrainClassifierMsg,
    TrainingTaskLabels,
)
from spacer_worker.train_utils import make_random_data

FEATURE_DIM = 8
ROWCOLS = [(5, 5), (10, 20), (30, 40), (50, 12)]


def fs(path: Path | str) -> DataLocation:
    return DataLocation('filesystem', str(path))


def store_non_finite(source: DataLocation, vector: int | slice, column: int,
                     target: DataLocation | None = None,
                     value: float = np.nan) -> None:
    """The feature file at ``source``, with ``value`` (NaN) at
    ``[vector, column]``, stored at ``target`` (default: in place), as
    broken weights would have written it."""
    from spacer_worker.data_classes import ImageFeatures
    features = ImageFeatures.load(source)
    array = features.feature_array().copy()
    array[vector, column] = value
    ImageFeatures.from_arrays(
        features.rows, features.cols, array).store(target or source)


def make_image(path: Path, seed: int = 0, size: int = 64) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
                    ).save(path)
    return path


def extract_msg(data_dir: Path, name: str, seed: int = 0) -> ExtractFeaturesMsg:
    """Dummy-extractor extraction of a fresh image into name.featurevector."""
    image = make_image(data_dir / f'{name}.png', seed)
    return ExtractFeaturesMsg(
        job_token=name, extractor=DummyExtractor(feature_dim=FEATURE_DIM),
        rowcols=ROWCOLS, image_loc=fs(image),
        feature_loc=fs(data_dir / f'{name}.featurevector'))


def train_msg(data_dir: Path, epochs: int = 3) -> TrainClassifierMsg:
    """A small training set of random features (3 classes)."""
    np.random.seed(0)
    sets = {}
    for part, count in (('train', 6), ('ref', 2), ('val', 2)):
        keys = [str(data_dir / f'{part}{i}.featurevector')
                for i in range(count)]
        sets[part] = make_random_data(count, [1, 2, 3], 10, FEATURE_DIM,
                                      fs(data_dir), keys)
    return TrainClassifierMsg(
        job_token='train', trainer='minibatch', nbr_epochs=epochs,
        clf_type='MLP', labels=TrainingTaskLabels(**sets),
        previous_model_locs=[], model_loc=fs(data_dir / 'model.pkl'),
        valresult_loc=fs(data_dir / 'valresult.json'))


def classify_msg(feature_path: Path, model_path: Path) -> ClassifyFeaturesMsg:
    return ClassifyFeaturesMsg(job_token=Path(feature_path).name,
                               feature_loc=fs(feature_path),
                               classifier_loc=fs(model_path))


def random_labels(directory, im_count: int = 40, classes=(1, 2, 3, 4),
                  points: int = 50, dim: int = 32, seed: int = 0,
                  ) -> ImageLabels:
    """Random features stored as npz files in ``directory``, and labels."""
    np.random.seed(seed)
    keys = [str(directory / f'img{i:03d}.npz') for i in range(im_count)]
    return make_random_data(im_count, list(classes), points, dim,
                            DataLocation('filesystem', str(directory)), keys)
