"""Files go both ways between PySpacer 0.14.0 and us: features and
classifiers written by one load in the other with equal values and
identical predictions."""

from __future__ import annotations

import numpy as np
import pytest

from spacer_worker.data_classes import DataLocation, ImageFeatures
from spacer_worker.storage import (
    load_classifier,
    store_classifier,
)
from tests.reference import run_reference

from .test_classifiers import data, train

pytestmark = pytest.mark.reference


def _features(n=200, dim=32):
    rng = np.random.default_rng(7)
    return (rng.integers(0, 4000, n).tolist(), rng.integers(0, 3000, n).tolist(),
            rng.standard_normal((n, dim)).astype(np.float32))


PYSPACER_STORE_FEATURES = '''
import numpy as np
from spacer.data_classes import DataLocation, ImageFeatures, PointFeatures
rows, cols, feat = PAYLOAD['rows'], PAYLOAD['cols'], PAYLOAD['feat']
if PAYLOAD['valid_rowcol']:
    points = [PointFeatures(r, c, f) for r, c, f in zip(rows, cols, feat)]
else:
    points = [PointFeatures(None, None, f) for f in feat]
ImageFeatures(point_features=points, valid_rowcol=PAYLOAD['valid_rowcol'],
              feature_dim=len(feat[0]), npoints=len(feat)
              ).store(DataLocation('filesystem', PAYLOAD['path']))
RESULT = True
'''


@pytest.mark.parametrize('valid_rowcol', [True, False])
def test_features_written_by_pyspacer_load_here(pyspacer_reference, tmp_path,
                                                valid_rowcol):
    rows, cols, feat = _features()
    path = str(tmp_path / 'pyspacer.featurevector')
    run_reference(PYSPACER_STORE_FEATURES, {
        'rows': rows, 'cols': cols, 'feat': feat.tolist(),
        'valid_rowcol': valid_rowcol, 'path': path})
    loaded = ImageFeatures.load(DataLocation('filesystem', path))
    assert loaded.valid_rowcol is valid_rowcol
    assert loaded.npoints == 200 and loaded.feature_dim == 32
    if valid_rowcol:
        assert list(loaded.rows) == rows and list(loaded.cols) == cols
    # PySpacer wrote float64 copies of float32 values: nothing was lost.
    assert np.array_equal(loaded.feature_array(), feat)


PYSPACER_LOAD_FEATURES = '''
from spacer.data_classes import DataLocation, ImageFeatures
f = ImageFeatures.load(DataLocation('filesystem', PAYLOAD['path']))
RESULT = {
    'valid_rowcol': bool(f.valid_rowcol), 'npoints': int(f.npoints),
    'feature_dim': int(f.feature_dim),
    'rows': [p.row for p in f.point_features],
    'cols': [p.col for p in f.point_features],
    'feat': [p.data.tolist() for p in f.point_features],
}
'''


@pytest.mark.parametrize('valid_rowcol', [True, False])
def test_features_written_here_load_in_pyspacer(pyspacer_reference, tmp_path,
                                                valid_rowcol):
    rows, cols, feat = _features()
    path = str(tmp_path / 'ours.featurevector')
    ImageFeatures.from_arrays(
        rows, cols, feat, valid_rowcol=valid_rowcol).store(DataLocation('filesystem', path))
    got = run_reference(PYSPACER_LOAD_FEATURES, {'path': path})
    assert got['valid_rowcol'] is valid_rowcol
    assert (got['npoints'], got['feature_dim']) == (200, 32)
    if valid_rowcol:
        assert got['rows'] == rows and got['cols'] == cols
    else:
        assert got['rows'] == [None] * 200
    assert np.array_equal(np.array(got['feat']), feat.astype(np.float64))


PYSPACER_TRAIN_AND_STORE = '''
import warnings
import numpy as np
from sklearn.calibration import CalibratedClassifierCV
from sklearn.linear_model import SGDClassifier
from sklearn.neural_network import MLPClassifier
from spacer.data_classes import DataLocation
from spacer.storage import store_classifier
x = np.array(PAYLOAD['x'], dtype=np.float32)
y = np.array(PAYLOAD['y'])
# As PySpacer's MiniBatchTrainer: partial_fit epochs, then prefit calibration.
if PAYLOAD['kind'] == 'sgd':
    clf = SGDClassifier(loss='log_loss', average=True, random_state=0)
else:
    clf = MLPClassifier(hidden_layer_sizes=(16,), random_state=0)
with warnings.catch_warnings():
    warnings.simplefilter('ignore')
    for _ in range(3):
        clf.partial_fit(x, y, classes=[0, 1, 2])
clf = CalibratedClassifierCV(clf, cv='prefit').fit(x, y)
store_classifier(DataLocation('filesystem', PAYLOAD['path']), clf)
test = np.array(PAYLOAD['test'], dtype=np.float32)
RESULT = clf.predict_proba(test).tolist()
'''

PYSPACER_LOAD_AND_PREDICT = '''
import numpy as np
from spacer.data_classes import DataLocation
from spacer.storage import load_classifier
clf = load_classifier(DataLocation('filesystem', PAYLOAD['path']))
RESULT = {'type': type(clf).__name__,
          'proba': clf.predict_proba(
              np.array(PAYLOAD['test'], dtype=np.float32)).tolist()}
'''


@pytest.mark.parametrize('kind', ['sgd', 'mlp'])
def test_classifier_trained_by_pyspacer_predicts_identically_here(
        pyspacer_reference, tmp_path, kind):
    x, y = data()
    test, _ = data(n=50, seed=5)
    path = str(tmp_path / 'pyspacer.model')
    expected = run_reference(PYSPACER_TRAIN_AND_STORE, {
        'x': x.tolist(), 'y': y.tolist(), 'test': test.tolist(),
        'kind': kind, 'path': path})
    clf = load_classifier(DataLocation('filesystem', path))
    assert np.array_equal(clf.predict_proba(test), np.array(expected))


@pytest.mark.parametrize('kind', ['sgd', 'mlp'])
def test_classifier_stored_here_predicts_identically_in_pyspacer(
        pyspacer_reference, tmp_path, kind):
    clf = train(kind)
    test, _ = data(n=50, seed=6)
    path = str(tmp_path / 'ours.model')
    store_classifier(DataLocation('filesystem', path), clf)
    got = run_reference(PYSPACER_LOAD_AND_PREDICT,
                        {'path': path, 'test': test.tolist()})
    assert got['type'] == 'CalibratedClassifierCV'
    assert np.array_equal(np.array(got['proba']), clf.predict_proba(test))


PYSPACER_OWN_TRAINER = '''
import numpy as np
from spacer.data_classes import DataLocation
from spacer.storage import store_classifier
from spacer.train_classifier import MiniBatchTrainer
from spacer.train_utils import make_random_data
base = DataLocation('filesystem', PAYLOAD['dir'])
train = make_random_data(4, [1, 2, 3], 20, 32, base,
                         [PAYLOAD['dir'] + f'/t{i}' for i in range(4)])
ref = make_random_data(2, [1, 2, 3], 20, 32, base,
                       [PAYLOAD['dir'] + f'/r{i}' for i in range(2)])
# PySpacer's own training: its MLP has no random_state, so the pickle
# carries the global RandomState and its SeedSequence.
clf, _ = MiniBatchTrainer()._train(train, ref, 2, PAYLOAD['kind'])
store_classifier(DataLocation('filesystem', PAYLOAD['path']), clf)
test = np.array(PAYLOAD['test'], dtype=np.float32)
RESULT = clf.predict_proba(test).tolist()
'''


@pytest.mark.parametrize('kind', ['LR', 'MLP'])
def test_classifier_from_pyspacers_own_trainer_loads_here(
        pyspacer_reference, tmp_path, kind):
    test, _ = data(n=50, seed=7)
    path = str(tmp_path / 'pyspacer-trained.model')
    expected = run_reference(PYSPACER_OWN_TRAINER, {
        'dir': str(tmp_path), 'path': path, 'kind': kind,
        'test': test.tolist()})
    clf = load_classifier(DataLocation('filesystem', path))
    assert np.array_equal(clf.predict_proba(test), np.array(expected))
