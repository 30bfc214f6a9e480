"""The four PySpacer tasks and ``process_job``, as plain functions.

Each name imports its engine when called, so importing this module (as the
Celery app does in every process, clients included) pulls in no torch or
scikit-learn.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from spacer_worker.exceptions import MessageError

if TYPE_CHECKING:
    from spacer_worker.messages import (
        ClassifyFeaturesMsg,
        ClassifyImageMsg,
        ClassifyReturnMsg,
        ExtractFeaturesMsg,
        ExtractFeaturesReturnMsg,
        JobMsg,
        JobReturnMsg,
        TrainClassifierMsg,
        TrainClassifierReturnMsg,
    )

logger = logging.getLogger(__name__)

ProgressCallback = Callable[..., None]


def extract_features(msg: ExtractFeaturesMsg) -> ExtractFeaturesReturnMsg:
    from spacer_worker.task_extract import extract_features as run
    return run(msg)


def classify_image(msg: ClassifyImageMsg) -> ClassifyReturnMsg:
    from spacer_worker.task_extract import classify_image as run
    return run(msg)


def train_classifier(msg: TrainClassifierMsg,
                     progress: ProgressCallback | None = None
                     ) -> TrainClassifierReturnMsg:
    from spacer_worker.task_train import train_classifier as run
    return run(msg, progress=progress)


def classify_features(msg: ClassifyFeaturesMsg) -> ClassifyReturnMsg:
    from spacer_worker.task_train import classify_features as run
    return run(msg)


TASK_FUNCTIONS: dict[str, Callable[..., Any]] = {
    'extract_features': extract_features,
    'train_classifier': train_classifier,
    'classify_features': classify_features,
    'classify_image': classify_image,
}


def run_task(task_name: str, msg: Any,
             progress: ProgressCallback | None = None) -> Any:
    """Run one task message by its PySpacer task name."""
    try:
        func = TASK_FUNCTIONS[task_name]
    except KeyError:
        raise MessageError(
            f"task_name {task_name!r} is not a task; expected one of "
            f"{', '.join(TASK_FUNCTIONS)}.") from None
    if task_name == 'train_classifier':
        return func(msg, progress=progress)
    return func(msg)


def process_job(job_msg: JobMsg,
                progress: ProgressCallback | None = None,
                reraise: tuple[type[BaseException], ...] = ()
                ) -> JobReturnMsg:
    """Run every task of a job; on the first error, return ok=False.

    As in PySpacer, a failure is reported in the return message (the
    traceback text, ending in PySpacer's class path and the message: see
    :mod:`spacer_worker.failures`) rather than raised, so a job queue always gets an answer.
    ``progress(done=i, total=n)`` is called after each task of the job.
    Errors of the ``reraise`` types propagate instead (the Celery adapter
    passes TransientError, to retry the job before answering ok=False).
    """
    from spacer_worker.failures import failure_text
    from spacer_worker.messages import JobMsg, JobReturnMsg

    if not isinstance(job_msg, JobMsg):
        raise MessageError(
            f"process_job expects a JobMsg, got {type(job_msg).__name__}.")
    results = []
    total = len(job_msg.tasks)
    for index, task in enumerate(job_msg.tasks):
        try:
            task_progress = None
            if progress is not None and job_msg.task_name == 'train_classifier':
                task_progress = functools.partial(progress, done=index, total=total)
            results.append(run_task(job_msg.task_name, task, task_progress))
        except reraise:
            raise
        except Exception as e:
            logger.error("Job task %s (%s) failed: %s: %s",
                         getattr(task, 'job_token', '?'), job_msg.task_name,
                         type(e).__name__, e)
            return JobReturnMsg(original_job=job_msg, ok=False, results=None,
                                error_message=failure_text(e))
        if progress is not None:
            progress(done=index + 1, total=total)
    return JobReturnMsg(original_job=job_msg, ok=True, results=results,
                        error_message=None)
