"""Celery tasks named ``spacer.*``: thin adapters over spacer_worker.tasks.

One adapter per row of :data:`spacer_worker.messages.table.TASKS`, registered
under the row's Celery name, plus ``spacer.process_job``.

Each adapter takes the PySpacer JSON serialization of a message, builds
the message class, runs the plain task function and returns the result
message's serialization. Everything else lives in the task functions,
which are tested without a broker.

Failures:

* bad input (any :class:`PermanentError`, a payload that is not a valid
  message) fails at once: FAILURE under PySpacer's class path for the
  error (``spacer.exceptions.DataLimitError``...; see
  :mod:`spacer_worker.exceptions.failures`), our own error as its cause;
* a :class:`TransientError` (storage or network hiccup) is retried with
  exponential backoff and full jitter, ``TASK_MAX_RETRIES`` times, then
  fails with that error;
* ``spacer.process_job`` answers like PySpacer: a JobReturnMsg with
  ``ok=False`` and the traceback text, once retries are spent.

Messages from the broker are untrusted: each task body runs inside
:func:`spacer_worker.storage.sandbox.untrusted` (the operator's storage
allowlists) after :func:`spacer_worker.worker.admission.admit` checked the
message's locations and bounds. The task functions themselves trust their
caller, as PySpacer's do.

Progress (state ``PROGRESS``, read by clients and shown in Flower):
training publishes ``{'epoch', 'epochs', 'ref_acc'}`` after each epoch; a
job publishes ``{'done', 'total', 'unit'}`` after each of its tasks
(``unit`` is ``'images'`` for extraction/classify_image jobs), merged with
the training keys for a training job.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from celery import Task, shared_task
from celery.exceptions import SoftTimeLimitExceeded, TaskPredicate
from kombu.exceptions import SerializationError

from spacer_worker import tasks
from spacer_worker.celery import books, payloads
from spacer_worker.data_classes.codec import show
from spacer_worker.exceptions import (
    DataLimitError,
    MessageError,
    SpacerError,
    TransientError,
)
from spacer_worker.exceptions.failures import (
    failure_text,
    fold_chain,
    time_limit_behind,
    to_wire,
)
from spacer_worker.messages.table import PROCESS_JOB, TASKS, JobReturnMsg
from spacer_worker.messages.table import Task as ContractTask
from spacer_worker.metrics import recording
from spacer_worker.storage.sandbox import hide_causes, untrusted
from spacer_worker.worker import delivery
from spacer_worker.worker.admission import admit, check_payload_size
from spacer_worker.worker.result_size import check_result

logger = logging.getLogger(__name__)

PROGRESS = 'PROGRESS'
_TRAINING_KEYS = ('epoch', 'epochs', 'ref_acc')


def decode_payload(task_name: str, cls: type, payload: Any) -> Any:
    """The message object of a payload; MessageError when it is not one.

    A payload may also arrive as a JSON text (a client that serialized
    twice); anything else that is not an object is refused with its type.
    """
    message_class = cls.__name__
    check_payload_size(task_name, payload)
    if payloads.is_reference(payload):
        # Bounded by PAYLOAD_MAX_BYTES, from PAYLOAD_LOCATION only.
        payload = payloads.fetch(payload)
    if isinstance(payload, (str, bytes)):
        try:
            payload = json.loads(payload)
        except (ValueError, RecursionError) as e:
            raise MessageError(
                f'{task_name}: the payload is a string that is not valid '
                f'JSON ({e}); send the {message_class} serialization as a '
                f'JSON object.') from e
    if not isinstance(payload, dict):
        raise MessageError(
            f'{task_name}: the payload must be a JSON object (the PySpacer '
            f'serialization of {message_class}), got '
            f'{type(payload).__name__}: {show(payload)}.')
    try:
        return cls.deserialize(payload)
    except SpacerError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError,
            RecursionError) as e:
        raise MessageError(
            f'{task_name}: the payload is not a valid {message_class}: '
            f'{type(e).__name__}: {e}') from e


class SpacerTask(Task):
    """Base of the adapters: retries, time limits, progress, wire classes."""

    # Checking call signatures at send time needs the task registered on
    # the sender's app; senders use names only.
    typing = False
    # Celery's own retry: a TransientError is retried after 1, 2, 4... s
    # with full jitter; max_retries and retry_backoff_max come from the
    # settings through the app's task_annotations (celery.build_config).
    # Celery's worker logs each retry ("retry: Retry in 2s: ...").
    autoretry_for = (TransientError,)
    retry_backoff = True
    retry_jitter = True

    # Clamps a message's own time limits to the configured ones.
    Request = 'spacer_worker.worker.request:Request'

    @property
    def backend(self) -> Any:
        # Result writes of a leased worker's run are fenced (delivery.py).
        return delivery.fenced_backend(self.app)

    @backend.setter
    def backend(self, value: Any) -> None:
        pass

    def begin_delivery(self) -> None:
        """Fence this run (leased workers); a message already committed is
        acked without running again."""
        delivery.begin(self)

    def declare_outputs(self, msg: Any) -> None:
        """Outputs of the message are staged until the run commits."""
        run = delivery.current()
        if run is not None:
            run.declare_outputs(delivery.output_locations(msg))

    def retry(self, *args: Any, **kwargs: Any) -> Any:
        # Celery's autoretry calls this; a lost run must not send a retry.
        run = delivery.current()
        if run is not None:
            run.check(force=True)
        return super().retry(*args, **kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        # This wraps Celery's autoretry wrapper of run(), so a
        # TransientError gets here only once its retries are spent. Every
        # failure leaves under PySpacer's class path, ours as its cause.
        try:
            return super().__call__(*args, **kwargs)
        except SpacerError as e:
            # Without the causes below ours: see sandbox.hide_causes. On
            # one line each: Celery formats the traceback it stores.
            raise to_wire(fold_chain(hide_causes(e, broker=True))) from e
        except TaskPredicate:
            raise       # Celery's own signals (retry, ignore, reject)
        except Exception as e:
            fold_chain(e)
            raise

    def after_return(self, status: str, retval: Any, task_id: str,
                     args: Any, kwargs: Any, einfo: Any) -> None:
        # Runs once the result is stored. A payload kept in storage for
        # this task goes once the task has its final answer; a retry or a
        # redelivery after a lost worker still needs it, and so does the
        # run elsewhere of a message this run lost (it did not commit).
        run = delivery.current()
        delivery.end()
        if run is not None and not run.committed:
            return
        if status in ('SUCCESS', 'FAILURE') and args and \
                payloads.owner(args[0]) == 'worker':
            payloads.discard(args[0])

    def publish_progress(self, meta: dict) -> None:
        if self.request.id and not self.request.is_eager:
            try:
                self.update_state(state=PROGRESS, meta=meta)
            except SerializationError as e:
                # kombu wraps whatever interrupts its encoding, or its
                # decoding (the backend reads the state back as it stores
                # it): a soft time limit that fires there must still read
                # as one (an EncodeError or DecodeError otherwise).
                inner = e.args[0] if e.args else e.__context__
                if isinstance(inner, SoftTimeLimitExceeded):
                    raise inner from None
                raise

    def training_progress(self) -> Callable[..., None]:
        """The ``progress`` callback of a training: accepts the trainer's
        ``(epoch, nbr_epochs, ref_acc)`` and process_job's keywords."""
        def report(*args: Any, **info: Any) -> None:
            meta = dict(zip(_TRAINING_KEYS, args, strict=False))
            if 'nbr_epochs' in info:
                info['epochs'] = info.pop('nbr_epochs')
            meta.update(info)
            for key in ('epoch', 'epochs', 'done', 'total'):
                if key in meta and meta[key] is not None:
                    meta[key] = int(meta[key])
            if meta.get('ref_acc') is not None:
                meta['ref_acc'] = float(meta['ref_acc'])
            if meta.get('epoch') is not None:
                recording.epoch_done()
            self.publish_progress(meta)
        return report

    def time_limit_error(self, limit: BaseException) -> Exception:
        """The soft time limit as the task's failure, caused by ``limit``
        (its traceback: where it landed), not by an error a handler made
        of it: a ClassifierLoadError in the chain would be taken for the
        job's own error (client.raise_for_status)."""
        soft = self.request.timelimit and self.request.timelimit[1]
        error = SoftTimeLimitExceeded(
            f'{self.name}[{self.request.id}] ran past its soft time limit '
            f'({soft or self.soft_time_limit} s) and was stopped; raise '
            f'SPACER_<EXTRACT|TRAIN|CLASSIFY>_TIME_LIMIT or split the work.')
        error.__cause__ = limit
        return error


def _run(task: SpacerTask, payload: Any, message_class: type,
         func: Callable[..., Any], with_progress: bool = False) -> dict:
    """Run one task: decode, call, serialize (errors: see SpacerTask)."""
    task.begin_delivery()
    msg = decode_payload(task.name, message_class, payload)
    task.declare_outputs(msg)
    try:
        with untrusted() as sandbox:
            admit(msg, sandbox)
            if with_progress:
                result = func(msg, progress=task.training_progress())
            else:
                result = func(msg)
    except Exception as e:
        limit = time_limit_behind(e)
        if limit is None:
            raise
        raise task.time_limit_error(limit) from limit
    return check_result(task.name, result)


def _adapter(row: ContractTask) -> SpacerTask:
    def run(self: SpacerTask, payload: Any) -> dict:
        return _run(self, payload, row.message, tasks.TASK_FUNCTIONS[row.name],
                    with_progress=row.progress)
    run.__name__ = run.__qualname__ = str(row.name)
    run.__doc__ = (f'{row.message.__name__} -> {row.returns.__name__}'
                   + (', with progress.' if row.progress else '.'))
    return shared_task(name=row.celery_name, bind=True, base=SpacerTask)(run)


# The four contract tasks, e.g. ADAPTERS['extract_features'] is
# 'spacer.extract_features'.
ADAPTERS: dict[str, SpacerTask] = {name: _adapter(row)
                                   for name, row in TASKS.items()}


def read_books(task: SpacerTask, ref: dict) -> Any:
    """The job a CoralNet queue keeps in its books for this task; a Redis
    that cannot be reached now is transient (the task is retried)."""
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    try:
        return books.fetch(task.backend.client, ref, task.request.id,
                           books.read_limit())
    except (RedisConnectionError, RedisTimeoutError) as e:
        raise TransientError(f'Task {task.request.id}: its job could not be '
                             f'read from the books in Redis: {e}') from e


@shared_task(name=PROCESS_JOB.celery_name, bind=True, base=SpacerTask)
def process_job(self: SpacerTask, payload: Any) -> dict:
    """JobMsg -> JobReturnMsg; a failing task gives ok=False, not FAILURE."""
    self.begin_delivery()
    if books.is_reference(payload):
        # A CoralNet queue's job, kept once in its books (celery.books).
        payload = read_books(self, payload)
    job = decode_payload(self.name, PROCESS_JOB.message, payload)
    self.declare_outputs(job)
    # An offloaded job is not repeated in full in its result (Redis).
    answer_job = payloads.compact_job(job) if payloads.is_reference(payload) \
        else job
    unit = str(TASKS[job.task_name].unit)
    report = self.training_progress()

    def progress(*args: Any, **info: Any) -> None:
        report(*args, unit=unit, **info)

    try:
        with untrusted() as sandbox:
            result = tasks.process_job(
                job, progress=progress,
                reraise=(TransientError, delivery.DeliveryLostError),
                admit=lambda: admit(job, sandbox))
    except TransientError as e:
        if self.request.retries < (self.max_retries or 0):
            raise  # autoretry_for schedules the retry
        # Retries spent: answer like PySpacer does for any failure.
        result = JobReturnMsg(
            original_job=job, ok=False, results=None,
            error_message=failure_text(hide_causes(e, broker=True)))
    except Exception as e:
        limit = time_limit_behind(e)
        if limit is None:
            raise
        error = self.time_limit_error(limit)
        result = JobReturnMsg(original_job=job, ok=False, results=None,
                              error_message=failure_text(error))
    result.original_job = answer_job
    try:
        return check_result(self.name, result)
    except DataLimitError as e:
        # PySpacer's answer to a failed job; it is small (else: FAILURE).
        return check_result(self.name, JobReturnMsg(
            original_job=answer_job, ok=False, results=None,
            error_message=failure_text(e)))
