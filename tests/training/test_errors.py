"""Bad labels, features and arguments give typed errors that say what is
wrong, and a failed training stores nothing."""

from __future__ import annotations

import numpy as np
import pytest

from spacer_worker.data_classes import DataLocation, ImageFeatures, ImageLabels
from spacer_worker.exceptions import (
    FeatureFileError,
    MessageError,
    RowColumnMismatchError,
    RowColumnMissingError,
    TrainingLabelsError,
)
from spacer_worker.messages import TrainClassifierMsg, TrainingTaskLabels
from spacer_worker.task_utils import SplitMode, preprocess_labels
from spacer_worker.tasks import train_classifier
from spacer_worker.train_classifier import MiniBatchTrainer

from .test_splits import make_labels


def test_too_few_annotations_says_how_they_would_split():
    # PySpacer's words, which CoralNet shows its users.
    labels = make_labels(2, 2, [1, 2])
    with pytest.raises(TrainingLabelsError,
                       match=r'Split was calculated as 4/0/0\. Each set must '
                             r'be non-empty\.$'):
        preprocess_labels(labels, split_ratios=(0.1, 0.1))
    with pytest.raises(TrainingLabelsError,
                       match=r'must not be less than the number of classes '
                             r'\(3\)'):
        preprocess_labels(make_labels(3, 4, [1, 2, 3]),
                          split_mode=SplitMode.POINTS_STRATIFIED)


def test_a_single_class_is_refused_and_the_log_names_it(caplog):
    caplog.set_level('INFO', logger='spacer_worker.task_utils')
    with pytest.raises(TrainingLabelsError,
                       match=r"^Need multiple classes to do training\. After "
                             r"preprocessing training data, there are 1 "
                             r"class\(es\) left\.$"):
        preprocess_labels(make_labels(10, 10, ['coral']))
    assert "train ('coral')" in caplog.text


def test_accepted_classes_that_leave_one_class_are_named(caplog):
    caplog.set_level('INFO', logger='spacer_worker.task_utils')
    with pytest.raises(TrainingLabelsError, match='Need multiple classes'):
        preprocess_labels(make_labels(10, 10, [1, 2, 3]),
                          accepted_classes={1})
    assert 'accepted_classes kept only (1)' in caplog.text


def test_an_emptied_set_is_named(caplog):
    caplog.set_level('INFO', logger='spacer_worker.task_utils')
    loc = DataLocation('filesystem', '/f/a.npz')
    given = TrainingTaskLabels(
        train=ImageLabels({loc: [(0, 0, 1), (1, 0, 2)]}),
        ref=ImageLabels({loc: [(3, 0, 1), (4, 0, 2)]}),
        val=ImageLabels({loc: [(6, 0, 3)]}))
    with pytest.raises(TrainingLabelsError,
                       match=r"^After preprocessing training data, 'val' set "
                             r"is empty\.$"):
        preprocess_labels(given)
    assert "'val' set's classes (3) are not among" in caplog.text


@pytest.mark.parametrize('ratios', [(0.5, 0.5), (0, 0.1), ('x', 0.1), (0.1,)])
def test_bad_split_ratios_are_named(ratios):
    with pytest.raises(MessageError, match='split_ratios'):
        preprocess_labels(make_labels(10, 10, [1, 2]), split_ratios=ratios)


def test_bad_split_mode_is_named():
    with pytest.raises(MessageError, match="split_mode 'images'"):
        preprocess_labels(make_labels(10, 10, [1, 2]), split_mode='images')


def _train(split, clf_type='LR', **kwargs):
    return MiniBatchTrainer()(split, 1, [], clf_type, **kwargs)


def test_labelled_point_without_features_names_file_and_point(split):
    loc = next(iter(split.train.keys()))
    split.train.add_image(loc, split.train[loc] + [(999, 7, 1)])
    with pytest.raises(RowColumnMismatchError,
                       match=rf'{loc.key}: 1 labelled point.*row 999, column 7'):
        _train(split)


def test_legacy_features_without_positions_are_refused(split, tmp_path):
    loc = next(iter(split.train.keys()))
    feats = np.ones((50, 32), dtype=np.float32)
    ImageFeatures.from_arrays([], [], feats,
                                                  valid_rowcol=False).store(loc)
    # PySpacer's words.
    with pytest.raises(RowColumnMissingError,
                       match='Features without rowcols are no longer '
                             'supported for training'):
        _train(split)


def test_features_of_another_dimension_are_refused(split):
    loc = list(split.train.keys())[-1]
    n = 50
    ImageFeatures.from_arrays(
        list(range(n)), list(range(n)), np.ones((n, 8), dtype=np.float32)).store(loc)
    with pytest.raises(FeatureFileError, match=r'dimension \(8,\).* has 32'):
        _train(split)


@pytest.mark.parametrize('clf_type', ['LR', 'MLP'])
def test_features_holding_nan_are_refused_naming_the_file(split, clf_type):
    # Given one training image whose feature file holds a NaN (written by
    # broken weights, or by another tool),
    loc = list(split.train.keys())[-1]
    n = 50
    feats = np.ones((n, 32), dtype=np.float32)
    feats[7, 3] = np.nan
    ImageFeatures.from_arrays(
        list(range(n)), list(range(n)), feats).store(loc)
    # then the training fails naming that file, before any step.
    with pytest.raises(FeatureFileError,
                       match=rf"{loc.key}': 1 of 50 feature vector\(s\) .*NaN"):
        _train(split, clf_type=clf_type)


def test_unknown_classifier_type_is_named(split):
    with pytest.raises(MessageError, match="clf_type 'SVM'"):
        _train(split, clf_type='SVM')


def test_missing_cache_directory_is_named(split, tmp_path, monkeypatch):
    monkeypatch.setenv('SPACER_TRAINING_IN_MEMORY_MB', '0')
    missing = str(tmp_path / 'nope')
    with pytest.raises(MessageError, match='feature_cache_dir .*nope'):
        MiniBatchTrainer()(split, 1, [], 'LR', feature_loc=missing)


def test_failed_training_stores_nothing(split, tmp_path):
    loc = list(split.val.keys())[0]
    split.val.add_image(loc, split.val[loc] + [(999, 999, 1)])
    model = tmp_path / 'out' / 'model.pkl'
    msg = TrainClassifierMsg(
        job_token='j', trainer='minibatch', nbr_epochs=1, clf_type='LR',
        labels=split, previous_model_locs=[],
        model_loc=DataLocation('filesystem', str(model)),
        valresult_loc=DataLocation('filesystem', str(tmp_path / 'vr.json')))
    with pytest.raises(RowColumnMismatchError):
        train_classifier(msg)
    assert not model.exists() and not (tmp_path / 'vr.json').exists()
