"""The mini-batch trainer: repeatable, reports progress, reads each
feature file once, trains the same from RAM or from the disk cache."""

from __future__ import annotations

import numpy as np
import pytest

from spacer_worker.data_classes import ImageFeatures
from spacer_worker.messages import FeatureCache
from spacer_worker.train_classifier import MiniBatchTrainer
from spacer_worker.train_utils import calc_acc, evaluate_classifier


def train(split, clf_type='MLP', epochs=3, cache=FeatureCache.AUTO,
          trainer=None, pc_models=(), progress=None):
    trainer = trainer or MiniBatchTrainer()
    return trainer(split, epochs, list(pc_models), clf_type,
                   feature_loc=cache, progress=progress)


def val_matrix(split):
    from spacer_worker.training.loading import open_training_data
    with open_training_data(split, names=('val',)) as data:
        return data['val'].read_all().astype(np.float64)


@pytest.mark.parametrize('clf_type', ['MLP', 'LR'])
def test_training_twice_gives_the_same_classifier(split, clf_type):
    clf1, val1, ret1 = train(split, clf_type)
    clf2, val2, ret2 = train(split, clf_type)
    assert ret1.ref_accs == ret2.ref_accs
    assert val1 == val2
    x = val_matrix(split)
    np.testing.assert_array_equal(clf1.predict_proba(x), clf2.predict_proba(x))


def test_training_does_not_touch_numpys_global_generator(split):
    np.random.seed(123)
    expected = np.random.rand()
    np.random.seed(123)
    train(split, 'MLP', epochs=1)
    assert np.random.rand() == expected


def test_progress_is_reported_after_each_epoch(split):
    calls = []
    _clf, _val, ret = train(split, epochs=4,
                            progress=lambda **info: calls.append(info))
    assert [c['epoch'] for c in calls] == [1, 2, 3, 4]
    assert {c['nbr_epochs'] for c in calls} == {4}
    assert [c['ref_acc'] for c in calls] == ret.ref_accs


def test_each_feature_file_is_read_once_per_training(split, monkeypatch):
    reads = []
    real = ImageFeatures.read

    def counting(loc):
        reads.append(loc.key)
        return real(loc)

    monkeypatch.setattr(ImageFeatures, 'read', staticmethod(counting))
    train(split, epochs=5)
    everything = set(split.train.keys()) | set(split.ref.keys()) \
        | set(split.val.keys())
    assert sorted(reads) == sorted(loc.key for loc in everything)


def test_a_large_training_set_trains_from_a_cache_file(split, tmp_path,
                                                      monkeypatch):
    in_memory = train(split, epochs=2)
    monkeypatch.setenv('SPACER_TRAINING_IN_MEMORY_MB', '0')
    cache = tmp_path / 'cache'
    cache.mkdir()
    seen = []
    on_disk = train(split, epochs=2, cache=str(cache),
                    progress=lambda **_: seen.append(
                        sorted(p.name for p in cache.rglob('*'))))
    assert 'features.f32' in seen[0], 'the matrix is a file while training'
    assert list(cache.iterdir()) == [], 'and is removed afterwards'
    assert on_disk[2].ref_accs == in_memory[2].ref_accs
    assert on_disk[1] == in_memory[1]


@pytest.mark.parametrize('cache, on_disk', [(FeatureCache.AUTO, True),
                                             (FeatureCache.DISABLED, False)])
def test_auto_cache_uses_the_temp_dir_and_disabled_uses_none(
        split, tmp_path, monkeypatch, cache, on_disk):
    import tempfile
    monkeypatch.setenv('SPACER_TRAINING_IN_MEMORY_MB', '0')
    monkeypatch.setattr(tempfile, 'tempdir', str(tmp_path))
    seen = []
    train(split, epochs=1, cache=cache, progress=lambda **_: seen.extend(
        p.name for p in tmp_path.glob('spacer-features-*/*')))
    assert seen == (['features.f32'] if on_disk else [])


def test_mlp_size_follows_the_label_count_unless_overridden(split):
    small = train(split, epochs=1)[0].estimator
    assert (small.hidden_layer_sizes, small.learning_rate_init) == ((100,), 1e-3)
    large = train(split, epochs=1, trainer=MiniBatchTrainer(
        mlp_large_data_threshold=10))[0].estimator
    assert (large.hidden_layer_sizes, large.learning_rate_init) == \
        ((200, 100), 1e-4)
    custom = train(split, epochs=1, trainer=MiniBatchTrainer(
        mlp_hidden_layer_sizes=(7, 5), mlp_learning_rate_init=0.01)
    )[0].estimator
    assert (custom.hidden_layer_sizes, custom.learning_rate_init) == \
        ((7, 5), 0.01)


def test_lr_is_sgd_with_log_loss_calibrated_on_ref(split):
    clf, _val, _ret = train(split, 'LR', epochs=2)
    assert type(clf.estimator).__name__ == 'SGDClassifier'
    assert clf.estimator.loss == 'log_loss' and clf.cv == 'prefit'
    np.testing.assert_allclose(clf.predict_proba(val_matrix(split)).sum(1), 1)


def test_validation_results_describe_the_new_classifier(split):
    clf, val, ret = train(split, 'LR', epochs=2)
    gts, ests, scores = evaluate_classifier(clf, split.val)
    assert val.classes == clf.classes_.tolist() == [1, 2, 3, 4]
    assert [val.classes[i] for i in val.gt] == gts
    assert [val.classes[i] for i in val.est] == ests
    np.testing.assert_allclose(val.scores, scores)
    assert ret.acc == calc_acc(gts, ests)
    assert len(ret.ref_accs) == 2 and ret.runtime > 0


def test_previous_classifiers_are_scored_on_the_validation_set(split):
    previous = train(split, 'LR', epochs=1)[0]
    gts, ests, _ = evaluate_classifier(previous, split.val)
    _clf, _val, ret = train(split, 'LR', epochs=1, pc_models=[previous] * 2)
    assert ret.pc_accs == [calc_acc(gts, ests)] * 2


def test_float32_training_reaches_the_float64_accuracy(split, monkeypatch):
    monkeypatch.setenv('SPACER_TRAINING_PRECISION', 'float64')
    exact = train(split, epochs=5)
    monkeypatch.setenv('SPACER_TRAINING_PRECISION', 'float32')
    fast = train(split, epochs=5)
    assert fast[0].estimator.coefs_[0].dtype == np.float32
    assert exact[0].estimator.coefs_[0].dtype == np.float64
    assert abs(fast[2].acc - exact[2].acc) <= 0.02


def test_an_unknown_precision_is_a_config_error(split, monkeypatch):
    from spacer_worker.exceptions import ConfigError
    monkeypatch.setenv('SPACER_TRAINING_PRECISION', 'float16')
    with pytest.raises(ConfigError, match="TRAINING_PRECISION 'float16'"):
        train(split, epochs=1)
