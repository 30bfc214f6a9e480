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
from spacer_worker.exceptions import DataLimitError


def result_size(result: Any) -> int:
    """Bytes of ``result`` as JSON (the result backend's encoding)."""
    return len(json.dumps(result, separators=(',', ':')).encode('utf-8'))


def check_result(task_name: str, result: Any) -> Any:
    """``result``, or DataLimitError if its JSON is over RESULT_MAX_BYTES."""
    limit = config.get('RESULT_MAX_BYTES')
    size = result_size(result)
    if size > limit:
        raise DataLimitError(
            f"The result of {task_name} is {size} bytes of JSON, over the "
            f"RESULT_MAX_BYTES limit of {limit}; it was not written. Send "
            f"fewer points or tasks per message, or raise the limit.")
    return result
