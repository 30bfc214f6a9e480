"""ClassifyReturnMsg built from a worker's arrays is the message the
constructor builds from the same values, with the same refusals."""

from __future__ import annotations

import numpy as np
import pytest

from spacer_worker.data_classes.results import ClassifyReturnMsg
from spacer_worker.exceptions import MessageError


def _arrays(points: int = 5, classes: int = 3):
    rng = np.random.default_rng(0)
    scores = rng.random((points, classes))
    scores /= scores.sum(axis=1, keepdims=True)
    rows = rng.integers(0, 4000, points).astype(np.uint16)
    cols = rng.integers(0, 70000, points).astype(np.int64)
    return rows, cols, scores


@pytest.mark.parametrize('valid_rowcol', [True, False])
def test_from_arrays_is_the_constructors_message(valid_rowcol):
    rows, cols, scores = _arrays()
    # Given a worker's scores as arrays,
    fast = ClassifyReturnMsg.from_arrays(
        runtime=0.5, rows=rows if valid_rowcol else None,
        cols=cols if valid_rowcol else None, scores=scores,
        classes=[10, 20, 30], valid_rowcol=valid_rowcol)
    # then the message, its types and its JSON are the constructor's.
    slow = ClassifyReturnMsg(
        runtime=0.5, scores=[
            (int(r) if valid_rowcol else None, int(c) if valid_rowcol else None,
             [float(v) for v in s]) for r, c, s in zip(rows, cols, scores,
                                                       strict=True)],
        classes=[10, 20, 30], valid_rowcol=valid_rowcol)
    assert fast == slow
    assert fast.serialize() == slow.serialize()
    assert all(type(r) is type(sr) and type(s[0]) is float
               for (r, _, s), (sr, _, _) in zip(fast.scores, slow.scores,
                                                strict=True))
    assert ClassifyReturnMsg.deserialize(fast.serialize()) == slow


@pytest.mark.parametrize('change, said', [
    (lambda r, c, s: (r, c, np.where(s > 0.5, np.nan, s)), 'finite float'),
    (lambda r, c, s: (r.astype(np.int64) - 10 ** 6, c, s), 'non-negative'),
    (lambda r, c, s: (r[:-1], c, s), 'as many'),
    (lambda r, c, s: (r.astype(float), c, s), 'integer'),
    (lambda r, c, s: (r, c, s[0]), 'float matrix'),
    (lambda r, c, s: (r, c, s.astype(np.int64)), 'float matrix'),
])
def test_from_arrays_refuses_what_is_not_a_result(change, said):
    rows, cols, scores = change(*_arrays())
    with pytest.raises(MessageError, match=said):
        ClassifyReturnMsg.from_arrays(runtime=0.1, rows=rows, cols=cols,
                                      scores=scores, classes=[1, 2, 3],
                                      valid_rowcol=True)


def test_from_arrays_checks_the_classes_as_the_constructor_does():
    rows, cols, scores = _arrays()
    with pytest.raises(MessageError):
        ClassifyReturnMsg.from_arrays(runtime=0.1, rows=rows, cols=cols,
                                      scores=scores, classes=[1.5, 'x', None],
                                      valid_rowcol=True)
