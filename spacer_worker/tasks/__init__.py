"""The four PySpacer tasks and ``process_job``, as plain functions.

One module per room: :mod:`.images` (the tasks that read pixels:
extract_features, classify_image), :mod:`.training` (train_classifier) and
:mod:`.classification` (classify_features). The task table
(:mod:`spacer_worker.messages.table`) names each body; the Celery adapters
in :mod:`spacer_worker.worker.adapters` call them; clients never import
them.
"""

from __future__ import annotations

import functools
import importlib
import logging
from collections.abc import Callable
from typing import Any

from spacer_worker.exceptions import MessageError, SpacerError
from spacer_worker.exceptions.failures import (
    as_pyspacer_raises,
    failure_text,
    time_limit_behind,
)
from spacer_worker.messages.table import TASKS, JobMsg, JobReturnMsg
from spacer_worker.tasks import classification, images, training

__all__ = [
    'TASK_FUNCTIONS', 'classify_features', 'classify_image', 'extract_features',
    'process_job', 'run_task', 'train_classifier',
]

logger = logging.getLogger(__name__)

ProgressCallback = Callable[..., None]


def _body(path: str) -> Callable[..., Any]:
    module, _, name = path.partition(':')
    return getattr(importlib.import_module(module), name)


def _raises_as_pyspacer(func: Callable[..., Any]) -> Callable[..., Any]:
    """The in-process API: a task called from a web process raises what
    PySpacer raises (FileNotFoundError, not DataNotFoundError), so its
    ``except`` clauses and stored ``repr``s behave the same. Workers run
    the bodies the task table names, whose typed errors go on the wire."""

    @functools.wraps(func)
    def in_process(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except SpacerError as e:
            converted = as_pyspacer_raises(e)
            if converted is e:
                raise
            raise converted from e

    return in_process


extract_features = _raises_as_pyspacer(images.extract_features)
classify_image = _raises_as_pyspacer(images.classify_image)
train_classifier = _raises_as_pyspacer(training.train_classifier)
classify_features = _raises_as_pyspacer(classification.classify_features)


# The body of each contract task, as its row names it
# (spacer_worker.messages.table.TASKS).
TASK_FUNCTIONS: dict[str, Callable[..., Any]] = {
    name: _body(row.body) for name, row in TASKS.items()}


def run_task(task_name: str, msg: Any,
             progress: ProgressCallback | None = None) -> Any:
    """Run one task message by its PySpacer task name."""
    try:
        func = TASK_FUNCTIONS[task_name]
    except KeyError:
        raise MessageError(
            f"task_name {task_name!r} is not a task; expected one of "
            f"{', '.join(TASK_FUNCTIONS)}.") from None
    if TASKS[task_name].progress:
        return func(msg, progress=progress)
    return func(msg)


def process_job(job_msg: JobMsg,
                progress: ProgressCallback | None = None,
                reraise: tuple[type[BaseException], ...] = (),
                admit: Callable[[], None] | None = None,
                ) -> JobReturnMsg:
    """Run every task of a job; on the first error, return ok=False.

    As in PySpacer, a failure is reported in the return message (the
    traceback text, ending in PySpacer's class path and the message: see
    :mod:`spacer_worker.exceptions.failures`) rather than raised, so a job
    queue always gets an answer.
    ``progress(done=i, total=n)`` is called after each task of the job.
    Errors of the ``reraise`` types propagate instead (the Celery adapter
    passes TransientError, to retry the job before answering ok=False), and
    so does a worker's soft time limit, even where a handler re-raised it
    as another error
    (:func:`spacer_worker.exceptions.failures.time_limit_behind`).
    ``admit()``, when given, runs first; its error is answered the same way
    (the adapter checks a broker message's locations and bounds with it).
    """
    if not isinstance(job_msg, JobMsg):
        raise MessageError(
            f"process_job expects a JobMsg, got {type(job_msg).__name__}.")
    job_msg.check()   # a field assigned a bad value (PySpacer asserts here)
    if admit is not None:
        try:
            admit()
        except Exception as e:
            if time_limit_behind(e) is not None:
                raise  # the worker stopping the job: its adapter answers
            logger.error("Job refused: %s: %s", type(e).__name__, e)
            return JobReturnMsg(original_job=job_msg, ok=False, results=None,
                                error_message=_error_text(e))
    results = []
    total = len(job_msg.tasks)
    for index, task in enumerate(job_msg.tasks):
        try:
            task_progress = None
            if progress is not None and TASKS[job_msg.task_name].progress:
                task_progress = functools.partial(progress, done=index, total=total)
            results.append(run_task(job_msg.task_name, task, task_progress))
        except reraise:
            raise
        except Exception as e:
            if time_limit_behind(e) is not None:
                raise  # the worker stopping the job: its adapter answers
            logger.error("Job task %s (%s) failed: %s: %s",
                         getattr(task, 'job_token', '?'), job_msg.task_name,
                         type(e).__name__, e)
            return JobReturnMsg(original_job=job_msg, ok=False, results=None,
                                error_message=_error_text(e))
        if progress is not None:
            progress(done=index + 1, total=total)
    return JobReturnMsg(original_job=job_msg, ok=True, results=results,
                        error_message=None)


def _error_text(error: BaseException) -> str:
    """PySpacer's error_message for a failed job task: the traceback,
    ending in PySpacer's class path
    (:mod:`spacer_worker.exceptions.failures`).

    For a broker message (sandbox active) without the causes below our
    own error: a decoder's message may quote the bytes it choked on.
    """
    from spacer_worker.storage.sandbox import hide_causes

    return failure_text(hide_causes(error))


# PySpacer's module re-exports these names; resolved on first use.
from spacer_worker import lazy_exports  # noqa: E402

__getattr__, __dir__ = lazy_exports(__name__, {
    'ImageFeatures': 'spacer_worker.data_classes:ImageFeatures',
    'ExtractFeaturesMsg': 'spacer_worker.messages:ExtractFeaturesMsg',
    'ExtractFeaturesReturnMsg': 'spacer_worker.messages:ExtractFeaturesReturnMsg',
    'TrainClassifierMsg': 'spacer_worker.messages:TrainClassifierMsg',
    'TrainClassifierReturnMsg': 'spacer_worker.messages:TrainClassifierReturnMsg',
    'ClassifyFeaturesMsg': 'spacer_worker.messages:ClassifyFeaturesMsg',
    'ClassifyImageMsg': 'spacer_worker.messages:ClassifyImageMsg',
    'ClassifyReturnMsg': 'spacer_worker.messages:ClassifyReturnMsg',
    'JobMsg': 'spacer_worker.messages:JobMsg',
    'JobReturnMsg': 'spacer_worker.messages:JobReturnMsg',
    'load_image': 'spacer_worker.storage:load_image',
    'load_classifier': 'spacer_worker.storage:load_classifier',
    'store_classifier': 'spacer_worker.storage:store_classifier',
    'check_extract_inputs': 'spacer_worker.extractors.checks:check_extract_inputs',
    'preprocess_labels': 'spacer_worker.task_utils:preprocess_labels',
    'ClassifierTrainer': 'spacer_worker.train_classifier:ClassifierTrainer',
}, globals())
