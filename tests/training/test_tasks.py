"""train_classifier / classify_features as tasks: inputs and outputs in
storage, the return messages, and the vectorised scoring."""

from __future__ import annotations

import json

import numpy as np
import pytest

from spacer_worker.data_classes import DataLocation, ImageFeatures, ValResults
from spacer_worker.messages import (
    ClassifyFeaturesMsg,
    JobMsg,
    TrainClassifierMsg,
)
from spacer_worker.storage import load_classifier
from spacer_worker.tasks import classify_features, process_job, train_classifier
from spacer_worker.tasks.classification import score_features


def train_msg(split, tmp_path, trainer='minibatch', clf_type='MLP', **kw):
    return TrainClassifierMsg(
        job_token='job1', trainer=trainer, nbr_epochs=2, clf_type=clf_type,
        labels=split, previous_model_locs=kw.pop('previous', []),
        model_loc=DataLocation('filesystem', str(tmp_path / 'model.pkl')),
        valresult_loc=DataLocation('filesystem', str(tmp_path / 'vr.json')),
        **kw)


def test_train_classifier_stores_the_model_and_validation_results(
        split, tmp_path):
    progress = []
    ret = train_classifier(train_msg(split, tmp_path),
                           progress=lambda **info: progress.append(info))
    clf = load_classifier(DataLocation('filesystem',
                                       str(tmp_path / 'model.pkl')))
    val = ValResults.deserialize(json.loads((tmp_path / 'vr.json').read_text()))
    assert clf.classes_.tolist() == val.classes == [1, 2, 3, 4]
    assert len(val.gt) == split.val.label_count
    assert ret.acc == pytest.approx(np.mean(np.equal(val.gt, val.est)))
    assert [p['epoch'] for p in progress] == [1, 2]


def test_previous_models_are_loaded_and_scored(split, tmp_path):
    train_classifier(train_msg(split, tmp_path, clf_type='LR'))
    (tmp_path / 'old').mkdir()
    previous = DataLocation('filesystem', str(tmp_path / 'model.pkl'))
    ret = train_classifier(train_msg(split, tmp_path / 'old',
                                     previous=[previous]))
    assert len(ret.pc_accs) == 1 and 0 < ret.pc_accs[0] <= 1


def test_a_pyspacer_style_custom_trainer_runs(split, tmp_path, monkeypatch):
    from tests.training.pyspacer_style_trainer import FourArgTrainer
    path = 'tests.training.pyspacer_style_trainer.FourArgTrainer'
    monkeypatch.setenv('SPACER_EXTRA_TRAINER_CLASSES', path)
    FourArgTrainer.calls.clear()
    ret = train_classifier(train_msg(split, tmp_path, trainer=path))
    assert FourArgTrainer.calls == [(2, 'MLP')]
    assert len(ret.ref_accs) == 2


def test_classify_features_scores_every_point_as_one_by_one(split, tmp_path):
    train_classifier(train_msg(split, tmp_path))
    feature_loc = next(iter(split.val.keys()))
    model_loc = DataLocation('filesystem', str(tmp_path / 'model.pkl'))
    ret = classify_features(ClassifyFeaturesMsg(
        job_token='c', feature_loc=feature_loc, classifier_loc=model_loc))
    features = ImageFeatures.load(feature_loc)
    clf = load_classifier(model_loc)
    assert ret.classes == [1, 2, 3, 4] and ret.valid_rowcol
    assert [(r, c) for r, c, _ in ret.scores] == list(
        zip(features.rows.tolist(), features.cols.tolist(), strict=True))
    # PySpacer's way: one predict_proba per point.
    one_by_one = [clf.predict_proba(v.reshape(1, -1).astype(np.float64))[0]
                  for v in features.feature_array()]
    np.testing.assert_allclose([s for *_, s in ret.scores], one_by_one,
                               rtol=0, atol=1e-12)
    assert ret.runtime > 0


def test_classifying_features_holding_nan_names_the_file(split, tmp_path):
    from spacer_worker.exceptions import FeatureFileError
    from tests.builders import store_non_finite
    train_classifier(train_msg(split, tmp_path, clf_type='LR'))
    # Given a feature file with an infinite value in its third vector,
    loc = DataLocation('filesystem', str(tmp_path / 'broken.featurevector'))
    store_non_finite(next(iter(split.val.keys())), 2, 5, loc, np.inf)
    # then scoring it fails naming the file and the vector (scikit-learn
    # says only "Input X contains infinity"), under PySpacer's class in
    # process (ValueError), with our typed error as its cause.
    with pytest.raises(ValueError,
                       match=r"broken\.featurevector': 1 of \d+ .*vector 2\)"
                       ) as raised:
        classify_features(ClassifyFeaturesMsg(
            job_token='c', feature_loc=loc, classifier_loc=DataLocation(
                'filesystem', str(tmp_path / 'model.pkl'))))
    assert type(raised.value) is ValueError
    assert isinstance(raised.value.__cause__, FeatureFileError)


def test_score_features_of_legacy_features_has_no_positions(split, tmp_path):
    from spacer_worker.data_classes import ImageFeatures
    train_classifier(train_msg(split, tmp_path, clf_type='LR'))
    clf = load_classifier(DataLocation('filesystem',
                                       str(tmp_path / 'model.pkl')))
    legacy = ImageFeatures.from_arrays([], [], np.zeros((3, 32), np.float32),
                                       valid_rowcol=False)
    ret = score_features(clf, legacy)
    assert not ret.valid_rowcol
    assert [(r, c) for r, c, _ in ret.scores] == [(None, None)] * 3


def test_process_job_reports_a_failed_training(split, tmp_path):
    loc = next(iter(split.train.keys()))
    split.train.add_image(loc, split.train[loc] + [(999, 999, 1)])
    job = JobMsg(task_name='train_classifier',
                 tasks=[train_msg(split, tmp_path)])
    ret = process_job(job)
    assert not ret.ok and 'RowColumnMismatchError' in ret.error_message


def test_a_replaced_classifier_is_never_served_from_the_cache(split, tmp_path):
    train_classifier(train_msg(split, tmp_path, clf_type='LR'))
    feature_loc = next(iter(split.val.keys()))
    msg = ClassifyFeaturesMsg(job_token='c', feature_loc=feature_loc,
                              classifier_loc=DataLocation(
                                  'filesystem', str(tmp_path / 'model.pkl')))
    first = classify_features(msg)
    assert classify_features(msg).scores == first.scores
    # Same location, new content: a model trained on two classes only.
    two = preprocess_labels_for(split, {1, 2})
    train_classifier(train_msg(two, tmp_path, clf_type='LR'))
    assert classify_features(msg).classes == [1, 2]


def preprocess_labels_for(split, classes):
    from spacer_worker.task_utils import preprocess_labels
    return preprocess_labels(split, accepted_classes=classes)


def test_the_model_cache_follows_content_in_memory_storage(split):
    from spacer_worker.storage import store_classifier
    from spacer_worker.storage.classifier_cache import load_classifier_cached
    from spacer_worker.train_classifier import MiniBatchTrainer
    loc = DataLocation('memory', 'models/cache-test.pkl')
    four = MiniBatchTrainer()(split, 1, [], 'LR')[0]
    two = MiniBatchTrainer()(preprocess_labels_for(split, {1, 2}), 1, [],
                             'LR')[0]
    store_classifier(loc, four)
    first = load_classifier_cached(loc)
    assert load_classifier_cached(loc) is first
    store_classifier(loc, two)
    assert load_classifier_cached(loc).classes_.tolist() == [1, 2]


def test_in_process_tasks_raise_what_pyspacer_raises(split, tmp_path):
    """A web process calling classify_features (CoralNet does) catches and
    stores what PySpacer raises; the worker path keeps our typed class."""
    from spacer_worker.exceptions import DataNotFoundError
    from spacer_worker.tasks import classification

    train_classifier(train_msg(split, tmp_path, clf_type='LR'))
    msg = ClassifyFeaturesMsg(
        job_token='c',
        feature_loc=DataLocation('filesystem', str(tmp_path / 'gone.fv')),
        classifier_loc=DataLocation('filesystem', str(tmp_path / 'model.pkl')))
    with pytest.raises(FileNotFoundError, match='gone.fv') as raised:
        classify_features(msg)
    assert repr(raised.value).startswith('FileNotFoundError(')
    with pytest.raises(DataNotFoundError, match='gone.fv'):
        classification.classify_features(msg)
