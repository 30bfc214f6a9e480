"""The bound a result's shape gives is never below its JSON size: a result
the bound lets through unmeasured is never one over RESULT_MAX_BYTES."""

from __future__ import annotations

import numpy as np
import pytest

from spacer_worker.data_classes.results import ClassifyReturnMsg
from spacer_worker.exceptions import DataLimitError
from spacer_worker.messages import JobMsg, JobReturnMsg
from spacer_worker.worker.result_size import _upper_bound, check_result, result_size

LONGEST_FLOAT = -2.2250738585072014e-308


def classify(points: int, classes: list, value: float = LONGEST_FLOAT,
             valid_rowcol: bool = True) -> ClassifyReturnMsg:
    scores = np.full((points, len(classes)), value)
    rows = np.full(points, 2 ** 62) if valid_rowcol else None
    return ClassifyReturnMsg.from_arrays(
        -1.2345678901234567e-300, rows, rows, scores, classes, valid_rowcol)


@pytest.mark.parametrize('msg', [
    classify(200, list(range(100))),
    classify(3, ['\u2028' * 50, 'x' * 200]),
    classify(50, [1, 2], valid_rowcol=False),
    classify(1, [7], value=0.0),
], ids=['many-classes', 'long-labels', 'legacy', 'short'])
def test_the_shape_bound_covers_the_json(msg):
    assert _upper_bound(msg) >= result_size(msg.serialize())
    job = JobReturnMsg(original_job=JobMsg.example(), ok=True,
                       results=[msg, msg], error_message=None)
    assert _upper_bound(job) >= result_size(job.serialize())


def test_a_result_the_bound_cannot_settle_is_measured(monkeypatch):
    msg = classify(200, list(range(100)))
    size = result_size(msg.serialize())
    monkeypatch.setenv('SPACER_RESULT_MAX_BYTES', str(size))
    assert check_result('classify', msg) == msg.serialize()
    monkeypatch.setenv('SPACER_RESULT_MAX_BYTES', str(size - 1))
    with pytest.raises(DataLimitError, match='RESULT_MAX_BYTES'):
        check_result('classify', msg)
