"""Celery signal handlers that feed the worker metrics (worker only).

Loaded with the worker (``spacer_worker.celery.WORKER_MODULES``); does
nothing unless ``METRICS_PORT`` is set. What is counted:

* every task's duration, outcome (success, failure, retry, revoked) and
  error class (our own class, e.g. ``DataNotFoundError``; for a failed
  ``process_job``, the class its error text names), and tasks in flight;
* extraction: images and points of successful extract_features /
  classify_image tasks and jobs, and the seconds they took;
* training epochs (from the progress callback), cache lookups (classifier
  and network caches), lease reaper restores (from their modules).
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any

from celery.signals import (
    task_failure,
    task_postrun,
    task_prerun,
    task_retry,
    task_revoked,
    worker_init,
    worker_process_init,
    worker_ready,
    worker_shutdown,
)

from spacer_worker.constants import QueueKind
from spacer_worker.messages.table import PROCESS_JOB, TASKS, Unit
from spacer_worker.metrics import recording

logger = logging.getLogger(__name__)

# Tasks that extract features: those whose unit of work is an image.
_EXTRACT_ROWS = [row for row in TASKS.values() if row.unit is Unit.IMAGES]
_EXTRACT_TASKS = {row.celery_name for row in _EXTRACT_ROWS}
_EXTRACT_JOBS = {str(row.name) for row in _EXTRACT_ROWS}
_OUTCOMES = {'SUCCESS': 'success', 'FAILURE': 'failure', 'RETRY': 'retry'}
_OUR_ERROR = re.compile(r'spacer_worker\.exceptions\.(\w+):')

# task id -> (start, task name, queue); error class by task id.
_running: dict[str, tuple[float, str, str]] = {}
_errors: dict[str, str] = {}
_endpoint: Any = None


def _queue_of(task: Any) -> str:
    info = getattr(getattr(task, 'request', None), 'delivery_info', None) or {}
    return str(info.get('routing_key') or info.get('queue') or '')


def error_class(exc: BaseException | None) -> str:
    """Our class of a failure (the cause behind PySpacer's class)."""
    if exc is None:
        return ''
    from spacer_worker.exceptions import SpacerError
    seen = exc
    while seen is not None:
        if isinstance(seen, SpacerError):
            return type(seen).__name__
        seen = seen.__cause__
    return type(exc).__name__


def job_error_class(text: str) -> str:
    """The class a failed job's error_message names: ours if it is in the
    traceback, else the last line's (PySpacer's)."""
    from spacer_worker.exceptions.failures import error_class as wire_class
    ours = _OUR_ERROR.findall(text or '')
    if ours:
        return ours[-1]
    return (wire_class(text) or 'Error').rpartition('.')[2]


def _points(payload: Any) -> int:
    rowcols = payload.get('rowcols') if isinstance(payload, dict) else None
    return len(rowcols) if isinstance(rowcols, list) else 0


def _extraction(task: str, payload: Any, retval: Any) -> tuple[int, int]:
    """(images, points) a successful task extracted."""
    if task in _EXTRACT_TASKS:
        return 1, _points(payload)
    if task == PROCESS_JOB.celery_name and isinstance(payload, dict) and \
            payload.get('task_name') in _EXTRACT_JOBS and \
            isinstance(retval, dict) and retval.get('ok'):
        tasks = payload.get('tasks') or []
        return len(tasks), sum(_points(t) for t in tasks)
    return 0, 0


# --- worker life cycle --------------------------------------------------------

@worker_init.connect
def _start(sender: Any = None, **_: Any) -> None:
    global _endpoint
    from spacer_worker import config
    port = config.get('METRICS_PORT')
    if port <= 0:
        return
    from spacer_worker.metrics.host import (
        HostEndpoint,
        base_directory,
        worker_directory,
    )
    try:
        base = base_directory(port)
        node = getattr(sender, 'hostname', None) or 'worker'
        recording.enable(worker_directory(base, node))
        _zero_known_series()
        _endpoint = HostEndpoint(base, config.get('METRICS_BIND'), port,
                                 config.get('METRICS_AUTH'))
    except Exception:
        # Metrics are for people watching; a worker without them still works.
        logger.exception('Worker metrics are off: could not set up %s.',
                         'the metrics directory or endpoint')
        recording.disable()


# Outcomes every worker may record, exported at zero from the start: the
# first failure of a kind then shows in increase(), as the first success
# does. Our error classes (the label error_class() gives), and what Celery
# raises for time limits and dead pool processes.
_CELERY_ERRORS = ('SoftTimeLimitExceeded', 'TimeLimitExceeded',
                  'WorkerLostError', 'MemoryError')


def _error_classes(base: type) -> list[str]:
    found: dict[str, None] = {}
    todo = [base]
    while todo:
        cls = todo.pop()
        found.setdefault(cls.__name__)
        todo.extend(cls.__subclasses__())
    return list(found)


def _known_outcomes() -> list[tuple[str, str]]:
    from spacer_worker.exceptions import SpacerError, TransientError
    failures = [*_error_classes(SpacerError), *_CELERY_ERRORS]
    return [('success', ''), ('revoked', ''),
            *(('failure', name) for name in failures),
            *(('retry', name) for name in _error_classes(TransientError))]


def _zero_known_series() -> None:
    # A counter that first appears at 1 has no earlier sample, so rate()
    # and increase() miss that first task: export the series every worker
    # will have (each contract task on its configured queue) from the start.
    from spacer_worker.celery import queue_name
    outcomes = _known_outcomes()
    for row in [*TASKS.values(), PROCESS_JOB]:
        kinds = [row.queue] if row.queue is not None else list(QueueKind)
        for kind in kinds:
            labels = (row.celery_name, queue_name(kind))
            for outcome, error in outcomes:
                recording.metric('spacer_tasks_total').labels(
                    *labels, outcome, error)
            recording.metric('spacer_task_duration_seconds').labels(*labels)
            recording.metric('spacer_tasks_in_flight').labels(*labels)
        if row in _EXTRACT_ROWS or row is PROCESS_JOB:
            for name in ('spacer_extract_images_total',
                         'spacer_extract_patches_total',
                         'spacer_extract_seconds_total'):
                recording.metric(name).labels(row.celery_name)
    recording.metric('spacer_training_epochs_total')
    recording.metric('spacer_lease_restored_total')
    for cache in ('classifier', 'network'):
        for result in ('hit', 'miss'):
            recording.metric('spacer_cache_requests_total').labels(
                cache, result)


@worker_ready.connect
def _serve(**_: Any) -> None:
    # Once the pool runs and logging is set up: the endpoint's messages
    # (serving, or port taken) reach the worker's log.
    if _endpoint is not None:
        _endpoint.start()


@worker_process_init.connect
def _in_child(**_: Any) -> None:
    if _endpoint is not None:
        _endpoint.close_in_child()


@worker_shutdown.connect
def _stop(**_: Any) -> None:
    if _endpoint is not None:
        _endpoint.stop()


# --- tasks ----------------------------------------------------------------------

@task_prerun.connect
def _task_started(task_id: str = '', task: Any = None, **_: Any) -> None:
    if not recording.enabled() or task is None:
        return
    queue = _queue_of(task)
    _running[task_id] = (time.perf_counter(), task.name, queue)
    recording.metric('spacer_tasks_in_flight').labels(task.name, queue).inc()


@task_failure.connect
def _task_failed(task_id: str = '', exception: BaseException | None = None,
                 **_: Any) -> None:
    if recording.enabled():
        _errors[task_id] = error_class(exception)


@task_retry.connect
def _task_retried(request: Any = None, reason: Any = None, **_: Any) -> None:
    # ``reason`` is Celery's Retry; the error that caused it is its .exc.
    if recording.enabled() and request is not None:
        cause = getattr(reason, 'exc', None) or reason
        _errors[request.id] = error_class(
            cause if isinstance(cause, BaseException) else None)


@task_postrun.connect
def _task_ended(task_id: str = '', task: Any = None, args: Any = None,
                retval: Any = None, state: str | None = None,
                **_: Any) -> None:
    if not recording.enabled() or task_id not in _running:
        return
    started, name, queue = _running.pop(task_id)
    seconds = time.perf_counter() - started
    error = _errors.pop(task_id, '')
    outcome = _OUTCOMES.get(state or '', str(state or 'unknown').lower())
    if name == PROCESS_JOB.celery_name and outcome == 'success' and \
            isinstance(retval, dict) and retval.get('ok') is False:
        outcome, error = 'failure', job_error_class(
            retval.get('error_message') or '')
    recording.metric('spacer_tasks_in_flight').labels(name, queue).dec()
    recording.metric('spacer_task_duration_seconds').labels(
        name, queue).observe(seconds)
    recording.metric('spacer_tasks_total').labels(
        name, queue, outcome, error).inc()
    if outcome == 'success':
        payload = args[0] if args else None
        images, points = _extraction(name, payload, retval)
        if images:
            recording.metric('spacer_extract_images_total').labels(
                name).inc(images)
            recording.metric('spacer_extract_patches_total').labels(
                name).inc(points)
            recording.metric('spacer_extract_seconds_total').labels(
                name).inc(seconds)


@task_revoked.connect
def _task_revoked(request: Any = None, **_: Any) -> None:
    # In the worker's parent: the task never ran, or its process was
    # terminated (its in-flight count went with the process).
    if not recording.enabled() or request is None:
        return
    name = getattr(request, 'name', None) or getattr(request, 'task', '') or ''
    info = getattr(request, 'delivery_info', None) or {}
    recording.metric('spacer_tasks_total').labels(
        name, str(info.get('routing_key') or ''), 'revoked', '').inc()
