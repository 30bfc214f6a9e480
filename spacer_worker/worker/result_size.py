"""A task's result is bounded before it is written to the result backend.

A result's size follows from its message, not from the operator: a
process_job of MAX_TASKS_PER_JOB classifications, each of
MAX_POINTS_PER_IMAGE points scored against every label, can serialize to
gigabytes, which Redis would be asked to hold (and every client to
decode). RESULT_MAX_BYTES bounds the JSON of a result; a larger one fails
its task with a DataLimitError that names the bound, and nothing is
written but that failure. A process_job answers as PySpacer answers any
failure of its job (ok=False and the error's text), since that answer is
small; the single tasks end in FAILURE.
"""

from __future__ import annotations

import json
from typing import Any

from spacer_worker import config
from spacer_worker.data_classes.results import ClassifyReturnMsg
from spacer_worker.exceptions import DataLimitError
from spacer_worker.messages.table import JobReturnMsg

# The longest JSON of one number: a float's repr ('-2.2250738585072014e-308'
# is 24 characters) or a 64-bit integer, plus its separator.
_NUMBER = 25


def result_size(result: Any) -> int:
    """Bytes of ``result`` as JSON (the result backend's encoding)."""
    return len(json.dumps(result, separators=(',', ':')).encode('utf-8'))


def check_result(task_name: str, message: Any) -> Any:
    """``message`` serialized, or DataLimitError if its JSON is over
    RESULT_MAX_BYTES. The JSON is measured only when a bound read from the
    message's shape does not settle it: a classification's scores would
    cost as much to measure as to send."""
    limit = config.get('RESULT_MAX_BYTES')
    result = message.serialize()
    bound = _upper_bound(message)
    if bound is not None and bound <= limit:
        return result
    size = result_size(result)
    if size > limit:
        raise DataLimitError(
            f"The result of {task_name} is {size} bytes of JSON, over the "
            f"RESULT_MAX_BYTES limit of {limit}; it was not written. Send "
            f"fewer points or tasks per message, or raise the limit.")
    return result


def _upper_bound(message: Any) -> int | None:
    """Most bytes ``message``'s JSON can take, from counts alone; None
    where only measuring tells (those results are small)."""
    if isinstance(message, ClassifyReturnMsg):
        classes = result_size(message.classes)
        per_point = 2 * _NUMBER + _NUMBER * len(message.classes) + 8
        return 200 + classes + per_point * len(message.scores)
    if isinstance(message, JobReturnMsg):
        bounds = [_upper_bound(r) for r in message.results or []]
        if any(b is None for b in bounds):
            return None
        # A character outside the BMP is two \uXXXX escapes.
        error = len(message.error_message or '') * 12
        return (200 + result_size(message.original_job.serialize())
                + sum(bounds) + error)
    return None
