"""All-classes-at-once sigmoid calibration fits scikit-learn's very model."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.calibration import CalibratedClassifierCV, _sigmoid_calibration
from sklearn.linear_model import SGDClassifier
from sklearn.neural_network import MLPClassifier

from spacer_worker.classification.scoring import predict_proba
from spacer_worker.storage.classifiers import dump_classifier, parse_classifier
from spacer_worker.training.calibration import calibrate_prefit, fit_sigmoids


def _prefit(kind: str, classes: int):
    rng = np.random.default_rng(classes)
    centers = rng.normal(size=(classes, 24))
    y = rng.integers(0, classes, 1500) * 3 + 1  # labels are not 0..k-1
    x = centers[(y - 1) // 3] + 2.5 * rng.normal(size=(1500, 24))
    if kind == 'MLP':
        base = MLPClassifier(hidden_layer_sizes=(16,), max_iter=30,
                             random_state=0).fit(x[:1000], y[:1000])
    else:
        base = SGDClassifier(loss='log_loss', random_state=0).fit(
            x[:1000], y[:1000])
    return base, x[1000:], y[1000:]


def _parameters(calibrated) -> np.ndarray:
    return np.array([(c.a_, c.b_) for c in
                     calibrated.calibrated_classifiers_[0].calibrators])


@pytest.mark.filterwarnings('ignore::sklearn.exceptions.ConvergenceWarning')
@pytest.mark.parametrize('kind,classes', [('MLP', 12), ('MLP', 2),
                                          ('SGD', 7), ('SGD', 2)])
def test_the_calibration_is_scikit_learns(kind, classes):
    base, x, y = _prefit(kind, classes)
    theirs = CalibratedClassifierCV(base, cv='prefit').fit(x, y)
    ours = calibrate_prefit(base, x, y)

    # The same objects, attribute for attribute; the same optimum (to
    # L-BFGS-B's own tolerance), so the same probabilities.
    assert sorted(vars(ours)) == sorted(vars(theirs))
    mine, their = (c.calibrated_classifiers_[0] for c in (ours, theirs))
    assert sorted(vars(mine)) == sorted(vars(their))
    assert mine.estimator is base and list(mine.classes) == list(their.classes)
    assert all(type(c.a_) is np.float64 and type(c.b_) is np.float64
               for c in mine.calibrators)
    np.testing.assert_allclose(_parameters(ours), _parameters(theirs),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ours.predict_proba(x), theirs.predict_proba(x),
                               atol=1e-6)
    # Its pickle is a classifier that the restricted loader reads and
    # scores as scikit-learn does.
    loaded = parse_classifier(dump_classifier(ours))
    np.testing.assert_array_equal(predict_proba(loaded, x),
                                  ours.predict_proba(x))


def test_large_scores_are_rescaled_as_scikit_learn_does():
    rng = np.random.default_rng(3)
    positive = rng.random((600, 3)) < 0.3
    scores = 80.0 * (positive + rng.normal(scale=0.6, size=(600, 3)))
    slopes, offsets = fit_sigmoids(scores, positive)
    for j in range(3):
        a, b = _sigmoid_calibration(scores[:, j], positive[:, j].astype(float))
        assert slopes[j] == pytest.approx(a, rel=1e-5)
        assert offsets[j] == pytest.approx(b, rel=1e-5, abs=1e-6)


def test_a_column_newton_cannot_fit_is_left_to_scikit_learn():
    rng = np.random.default_rng(4)
    positive = rng.random((300, 2)) < 0.4
    scores = np.column_stack([np.full(300, 0.25),   # constant: singular
                              positive[:, 1] + rng.normal(size=300)])
    slopes, offsets = fit_sigmoids(scores, positive)
    assert np.isfinite(slopes).all() and np.isfinite(offsets).all()
    a, b = _sigmoid_calibration(scores[:, 0], positive[:, 0].astype(float))
    assert (slopes[0], offsets[0]) == (a, b)  # scikit-learn's own result
    a, b = _sigmoid_calibration(scores[:, 1], positive[:, 1].astype(float))
    assert slopes[1] == pytest.approx(a, rel=1e-5)


def test_many_classes_are_fitted_in_bounded_blocks(monkeypatch):
    import spacer_worker.training.calibration as calibration
    rng = np.random.default_rng(5)
    positive = rng.random((200, 9)) < 0.2
    scores = positive + rng.normal(scale=0.8, size=(200, 9))
    whole = fit_sigmoids(scores, positive)
    monkeypatch.setattr(calibration, 'BLOCK_ELEMENTS', 200 * 2)
    blocks = fit_sigmoids(scores, positive)  # columns two at a time
    np.testing.assert_allclose(blocks, whole, rtol=1e-9, atol=1e-12)
