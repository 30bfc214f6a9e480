"""MLPSteps takes scikit-learn's float32 steps: the same classifier, to
the last bits, as ``MLPClassifier.partial_fit``."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from sklearn.neural_network import MLPClassifier

from spacer_worker.training import prefetch
from spacer_worker.training.matrix import FeatureMatrix
from spacer_worker.training.mlp_steps import MLPSteps, supports
from spacer_worker.training.prefetch import OrderedChunks


def chunks(classes: int, count: int = 5, rows: int = 700, dim: int = 48,
           seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(classes, dim))
    out = []
    for _ in range(count):
        y = rng.integers(0, classes, rows)
        x = np.maximum(centers[y] + rng.normal(scale=1.5, size=(rows, dim)),
                       0).astype(np.float32)
        out.append((x, y + 1))       # labels need not start at 0
    return out


def first_fit(data, sizes) -> MLPClassifier:
    clf = MLPClassifier(hidden_layer_sizes=sizes,
                        random_state=np.random.RandomState(4))
    x, y = data[0]
    clf.partial_fit(x, y, classes=np.unique(np.concatenate(
        [c[1] for c in data])))
    return clf


@pytest.mark.parametrize('classes', [2, 6])
@pytest.mark.parametrize('sizes', [(30,), (40, 20)])
def test_steps_train_scikit_learns_classifier(classes, sizes):
    # Given two identically seeded MLPs after their first partial_fit,
    data = chunks(classes)
    plain, fast = first_fit(data, sizes), first_fit(data, sizes)
    # when one goes on with scikit-learn and the other with MLPSteps
    # (a last chunk of 350 rows ends on a short batch),
    data[-1] = (data[-1][0][:350], data[-1][1][:350])
    steps = MLPSteps(fast)
    for x, y in data[1:]:
        plain.partial_fit(x, y)
        steps.partial_fit(x, y)
    # then the weights, moments and bookkeeping are scikit-learn's, up to
    # float32 rounding,
    for a, b in zip(plain.coefs_ + plain.intercepts_,
                    fast.coefs_ + fast.intercepts_, strict=True):
        assert b.dtype == np.float32
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6)
    for a, b in zip(plain._optimizer.ms + plain._optimizer.vs,
                    fast._optimizer.ms + fast._optimizer.vs, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-3, atol=1e-7)
    np.testing.assert_allclose(fast.loss_curve_, plain.loss_curve_,
                               rtol=1e-5)
    assert fast.best_loss_ == pytest.approx(plain.best_loss_, rel=1e-5)
    assert (fast.t_, fast.n_iter_, fast._optimizer.t,
            fast._no_improvement_count) == \
        (plain.t_, plain.n_iter_, plain._optimizer.t,
         plain._no_improvement_count)
    assert fast._optimizer.learning_rate == \
        pytest.approx(plain._optimizer.learning_rate)
    # and both classify alike.
    x = np.concatenate([c[0] for c in chunks(classes, seed=9)])
    assert (fast.predict(x) == plain.predict(x)).mean() >= 0.999


def test_steps_and_scikit_learn_alternate_on_one_classifier():
    # A classifier MLPSteps trained is a plain scikit-learn object: it
    # pickles without spacer_worker classes and partial_fit goes on.
    data = chunks(4)
    clf = first_fit(data, (16,))
    MLPSteps(clf).partial_fit(*data[1])
    blob = pickle.dumps(clf)
    assert b'spacer_worker' not in blob
    again = pickle.loads(blob)
    again.partial_fit(*data[2])
    MLPSteps(again).partial_fit(*data[3])
    assert len(again.loss_curve_) == 4
    # One MLPSteps follows scikit-learn's steps taken in between too.
    plain, fast = first_fit(data, (16,)), first_fit(data, (16,))
    steps = MLPSteps(fast)
    for k, (x, y) in enumerate(data[1:]):
        plain.partial_fit(x, y)
        if k % 2:
            fast.partial_fit(x, y)
        else:
            steps.partial_fit(x, y)
    np.testing.assert_allclose(fast.coefs_[0], plain.coefs_[0], rtol=1e-4,
                               atol=1e-6)
    np.testing.assert_allclose(fast._optimizer.vs[0],
                               plain._optimizer.vs[0], rtol=1e-3, atol=1e-7)


def test_a_chunk_in_drawn_order_trains_as_partial_fit_does():
    # Given the same classifier twice,
    data = chunks(3)
    a, b = first_fit(data, (16,)), first_fit(data, (16,))
    steps_a, steps_b = MLPSteps(a), MLPSteps(b)
    # when one shuffles inside partial_fit and the other is handed the rows
    # already in the order draw_order gives,
    for x, y in data[1:]:
        steps_a.partial_fit(x, y)
        order = steps_b.draw_order(len(x))
        steps_b.run_ordered(np.ascontiguousarray(x[order]), y[order])
    # then they are bit for bit the same.
    for p, q in zip(a.coefs_ + a.intercepts_, b.coefs_ + b.intercepts_,
                    strict=True):
        assert np.array_equal(p, q)


def test_labels_outside_the_classes_are_refused_as_scikit_learn_does():
    data = chunks(3)
    clf = first_fit(data, (8,))
    x, y = data[1]
    with pytest.raises(ValueError, match='has classes not in'):
        MLPSteps(clf).partial_fit(x, np.where(y == 2, 99, y))
    with pytest.raises(ValueError, match='has classes not in'):
        clf.partial_fit(x, np.where(y == 2, 99, y))


def test_exploding_weights_are_an_error_not_a_model():
    data = chunks(3)
    clf = first_fit(data, (8,))
    x, y = data[1]
    with pytest.raises(ValueError, match='non-finite parameter weights'), \
            np.errstate(all='ignore'):
        MLPSteps(clf).partial_fit(np.full_like(x, 1e38), y)


def test_only_a_float32_adam_mlp_is_taken_over():
    data = chunks(3)
    x, y = data[0]
    doubles = MLPClassifier(hidden_layer_sizes=(8,), random_state=0)
    doubles.partial_fit(x.astype(np.float64), y, classes=np.unique(y))
    sgd = MLPClassifier(hidden_layer_sizes=(8,), solver='sgd',
                        random_state=0)
    sgd.partial_fit(x, y, classes=np.unique(y))
    assert supports(first_fit(data, (8,)))
    assert not supports(doubles) and not supports(sgd)
    with pytest.raises(ValueError, match='float32 ReLU MLPClassifier'):
        MLPSteps(doubles)
    assert not supports(MLPClassifier())        # not fitted yet


def segments_of(rows: int, size: int) -> list[list[tuple[int, int]]]:
    # Chunks of ``size`` rows, each cut into two segments.
    out = []
    for first in range(0, rows, size):
        last = min(first + size, rows)
        middle = (first + last) // 2
        out.append([(middle, last - middle), (first, middle - first)])
    return out


@pytest.mark.parametrize('on_disk, staging', [(False, 512), (True, 512),
                                               (True, 7)])
def test_ordered_chunks_are_the_chunks_in_the_drawn_order(
        tmp_path, monkeypatch, on_disk, staging):
    # Given a feature matrix (in RAM or in a cache file, read through a
    # staging block of 7 rows too, shorter than a segment) and its labels,
    monkeypatch.setattr(prefetch, 'STAGING_ROWS', staging)
    rng = np.random.default_rng(2)
    values = rng.random((230, 6)).astype(np.float32)
    labels = np.arange(230)
    path = tmp_path / 'm.f32' if on_disk else None
    with FeatureMatrix(230, 6, path) as matrix:
        matrix.write(0, values)
        draws = [np.random.RandomState(5), np.random.RandomState(6)]
        expected = [np.random.RandomState(5), np.random.RandomState(6)]
        # when two epochs are queued, each with its own draws,
        with OrderedChunks(matrix, labels, 0, 50) as ordered:
            for epoch in range(2):
                ordered.add_epoch(segments_of(230, 50),
                                  draws[epoch].permutation)
            got = [[(x.copy(), y.copy()) for x, y in ordered.next_epoch()]
                   for _epoch in range(2)]
    # then each epoch's chunks are its segments' rows in its own draws.
    for epoch in range(2):
        assert len(got[epoch]) == 5
        for (x, y), segments in zip(got[epoch], segments_of(230, 50),
                                    strict=True):
            rows = np.concatenate([np.arange(s, s + n) for s, n in segments])
            order = expected[epoch].permutation(len(rows))
            np.testing.assert_array_equal(y, labels[rows][order])
            np.testing.assert_array_equal(x, values[rows][order])


def test_a_failed_gather_reaches_the_trainer_and_stops_the_thread():
    with FeatureMatrix(10, 3) as matrix:
        def broken(n):
            raise OSError('feature cache file is truncated')
        ordered = OrderedChunks(matrix, np.arange(10), 0, 5)
        ordered.add_epoch(segments_of(10, 5), broken)
        with pytest.raises(OSError, match='truncated'), ordered:
            list(ordered.next_epoch())
        assert not ordered._thread.is_alive()


def test_leaving_an_epoch_early_stops_the_producer():
    with FeatureMatrix(100, 3) as matrix:
        ordered = OrderedChunks(matrix, np.arange(100), 0, 10)
        with ordered:
            ordered.add_epoch(segments_of(100, 10), np.arange)
            ordered.add_epoch(segments_of(100, 10), np.arange)
            for _x, _y in ordered.next_epoch():
                break
        assert not ordered._thread.is_alive()


@pytest.mark.parametrize('classes', [2, 5])
@pytest.mark.parametrize('sizes', [(30,), (40, 20)])
def test_predict_is_scikit_learns(classes, sizes):
    data = chunks(classes)
    clf = first_fit(data, sizes)
    steps = MLPSteps(clf)
    steps.partial_fit(*data[1])
    x = np.concatenate([c[0] for c in chunks(classes, seed=3)])
    assert (steps.predict(x) == clf.predict(x)).mean() >= 0.999
    # Rows it cannot take as they are go to scikit-learn itself.
    x64 = x[:50].astype(np.float64)
    assert np.array_equal(steps.predict(x64), clf.predict(x64))
