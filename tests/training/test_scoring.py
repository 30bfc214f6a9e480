"""The direct scorer gives scikit-learn's calibrated probabilities exactly."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.calibration import CalibratedClassifierCV
from sklearn.linear_model import SGDClassifier
from sklearn.neural_network import MLPClassifier

from spacer_worker.classification.scoring import _calibrated_parts, predict_proba


def _calibrated(kind: str, classes: int, dtype=np.float64):
    rng = np.random.default_rng(classes)
    x = rng.random((400, 32)).astype(dtype)
    y = rng.integers(0, classes, 400) * 3 + 1
    if kind == 'MLP':
        base = MLPClassifier(hidden_layer_sizes=(16,), max_iter=20,
                             random_state=0).fit(x[:300], y[:300])
    else:
        base = SGDClassifier(loss='log_loss', random_state=0).fit(x[:300],
                                                                   y[:300])
    clf = CalibratedClassifierCV(base, cv='prefit').fit(
        x[300:].astype(np.float64), y[300:])
    return clf, rng.random((50, 32))


@pytest.mark.filterwarnings('ignore::sklearn.exceptions.ConvergenceWarning')
@pytest.mark.parametrize('kind,dtype', [('MLP', np.float64),
                                        ('MLP', np.float32),
                                        ('SGD', np.float64)])
def test_direct_scores_are_scikit_learns_bit_for_bit(kind, dtype):
    clf, x = _calibrated(kind, 6, dtype)
    assert _calibrated_parts(clf) is not None  # the direct path is taken
    assert np.array_equal(predict_proba(clf, x), clf.predict_proba(x))


@pytest.mark.filterwarnings('ignore::sklearn.exceptions.ConvergenceWarning')
def test_other_classifiers_and_inputs_go_through_scikit_learn():
    binary, x = _calibrated('MLP', 2)
    assert _calibrated_parts(binary) is None
    assert np.array_equal(predict_proba(binary, x), binary.predict_proba(x))
    clf, x = _calibrated('SGD', 5)
    bad = x.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match='NaN'):
        predict_proba(clf, bad)  # scikit-learn's own check still applies
