"""The in-place Adam step trains the very same MLP as scikit-learn's."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from sklearn.neural_network import MLPClassifier
from sklearn.neural_network._stochastic_optimizers import AdamOptimizer

from spacer_worker.training.adam import InPlaceAdam, restore, use_in_place_adam


@pytest.mark.parametrize('dtype', [np.float32, np.float64])
def test_in_place_adam_gives_bit_identical_weights(dtype):
    # Given two identically seeded MLPs and the same mini-batches,
    rng = np.random.default_rng(0)
    x = rng.random((600, 64)).astype(dtype)
    y = rng.integers(0, 5, 600)
    plain, fused = (MLPClassifier(hidden_layer_sizes=(20,),
                                  random_state=np.random.RandomState(3))
                    for _ in range(2))
    # when one takes its steps with InPlaceAdam after the first batch,
    for clf, swap in ((plain, False), (fused, True)):
        clf.partial_fit(x[:200], y[:200], classes=np.arange(5))
        if swap:
            use_in_place_adam(clf)
            assert isinstance(clf._optimizer, InPlaceAdam)
        for start in range(200, 600, 100):
            clf.partial_fit(x[start:start + 100], y[start:start + 100])
    # then every weight is bit for bit the same, and so are Adam's moments.
    for a, b in zip(plain.coefs_ + plain.intercepts_,
                    fused.coefs_ + fused.intercepts_, strict=True):
        assert a.dtype == b.dtype == dtype
        assert np.array_equal(a, b)
    for a, b in zip(plain._optimizer.ms + plain._optimizer.vs,
                    fused._optimizer.ms + fused._optimizer.vs, strict=True):
        assert np.array_equal(a, b)
    assert fused._optimizer.t == plain._optimizer.t


def test_restored_classifier_pickles_with_scikit_learn_classes_only():
    # Given an MLP trained with InPlaceAdam,
    rng = np.random.default_rng(1)
    x, y = rng.random((100, 8)), rng.integers(0, 3, 100)
    clf = MLPClassifier(hidden_layer_sizes=(5,), random_state=0)
    clf.partial_fit(x, y, classes=np.arange(3))
    use_in_place_adam(clf)
    clf.partial_fit(x, y)
    # when its optimizer is restored,
    restore(clf)
    # then the pickle names no spacer_worker class, and it still trains.
    assert type(clf._optimizer) is AdamOptimizer
    data = pickle.dumps(clf)
    assert b'spacer_worker' not in data
    pickle.loads(data).partial_fit(x, y)
