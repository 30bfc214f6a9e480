"""Submit PySpacer messages to the workers and read their results.

This is what a web server (CoralNet's Django app) imports: it needs only the
``client`` extra (celery, kombu, redis), never torch or scikit-learn.

    from spacer_worker.client.jobs import Client
    client = Client()
    handle = client.submit(ExtractFeaturesMsg(...))
    client.status(handle)          # JobStatus(state=PROGRESS, progress={...})
    msg = client.result(handle, timeout=60)   # ExtractFeaturesReturnMsg

A handle is a small value (task id, task name, queue) that survives a round
trip through a database as a string (``str(handle)`` and
:meth:`JobHandle.parse`).

When a message is submitted, a ``PENDING`` record without expiry is written
to the result backend before the task is sent. The worker overwrites it as
the task runs; once the finished result expires (``result_expires``), the
record is gone. So a handle whose record is missing is reported as
``LOST`` (result expired, or the backend lost its data) instead of looking
"still queued" forever as a bare Celery ``AsyncResult`` would.
"""

from __future__ import annotations

__all__ = [
    'EXPEDITE', 'PRIORITY_RANGE', 'Client', 'JobHandle', 'JobState',
    'JobStatus', 'cancel', 'decode_result', 'default_client', 'message_task',
    'raise_for_status', 'record_status', 'result', 'status',
    'status_from_meta', 'submit',
]

import re
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from celery import Celery

from spacer_worker import celery as celery_app
from spacer_worker import exceptions
from spacer_worker.celery import payloads
from spacer_worker.client import records
from spacer_worker.client.deadlines import Deadlines
from spacer_worker.constants import EXPEDITE_PRIORITY, PRIORITY_STEPS, StrEnum
from spacer_worker.exceptions import (
    ConfigError,
    JobFailedError,
    MessageError,
    RecordError,
    ResultLostError,
    SpacerError,
    failures,
)
from spacer_worker.messages.table import CELERY_NAMES, by_celery_name, for_message

# Result records per Redis script (records.READ), as coralnet.BATCH.
READ_BATCH = 500

# Redis priorities: 0 is served first; senders default to the middle
# (constants.DEFAULT_PRIORITY), so 0 (EXPEDITE) jumps the queue.
EXPEDITE = EXPEDITE_PRIORITY
PRIORITY_RANGE = PRIORITY_STEPS


class JobState(StrEnum):
    """Where a job is. The Celery states, plus LOST."""

    PENDING = 'PENDING'      # queued, no worker has started it
    RECEIVED = 'RECEIVED'    # a worker holds it (prefetched)
    STARTED = 'STARTED'      # running
    PROGRESS = 'PROGRESS'    # running, with progress info
    RETRY = 'RETRY'          # failed transiently, will run again
    SUCCESS = 'SUCCESS'
    FAILURE = 'FAILURE'
    REVOKED = 'REVOKED'      # cancelled
    LOST = 'LOST'            # no record: result expired or backend data lost

    @property
    def finished(self) -> bool:
        return self in _FINISHED


_FINISHED = frozenset({JobState.SUCCESS, JobState.FAILURE, JobState.REVOKED,
                       JobState.LOST})


@dataclass(frozen=True)
class JobHandle:
    """What :meth:`Client.submit` returns; store ``str(handle)`` to keep it."""

    id: str
    task: str
    queue: str

    def __str__(self) -> str:
        return f'{self.task}:{self.queue}:{self.id}'

    @classmethod
    def parse(cls, text: str) -> JobHandle:
        """Inverse of ``str(handle)``; a bare task id is accepted too."""
        if not isinstance(text, str) or not text:
            raise MessageError(f'Job handle must be a non-empty string, got '
                               f'{text!r}.')
        parts = text.rsplit(':', 2)
        if len(parts) == 3 and parts[0] in CELERY_NAMES:
            return cls(id=parts[2], task=parts[0], queue=parts[1])
        return cls(id=text, task='', queue='')


@dataclass(frozen=True)
class JobStatus:
    """One look at a job: its state, progress while running, error if any."""

    state: JobState
    progress: dict | None = None
    error_type: str | None = None
    error: str | None = None
    traceback: str | None = None
    result: Any = field(default=None, repr=False)  # JSON, when SUCCESS
    # The class path CoralNet sorts by: PySpacer's (spacer.exceptions...),
    # or one of failures.INFRASTRUCTURE; error_type is our own class.
    error_class: str | None = None

    @property
    def finished(self) -> bool:
        return self.state.finished

    def failure_text(self) -> str | None:
        """The failure as PySpacer's error_message reads: the traceback,
        ending in ``<class path>: <message>``; None unless it failed."""
        if self.state not in (JobState.FAILURE, JobState.REVOKED,
                              JobState.LOST):
            return None
        return failures.ensure_last_line(
            self.traceback, self.error_class or 'RuntimeError',
            self.error or self.state.value)


def message_task(msg: Any) -> str:
    """The contract task name for a message object."""
    return for_message(msg).celery_name


def decode_result(task: str, data: Any) -> Any:
    """Build the typed return message of ``task`` from its JSON result."""
    return by_celery_name(task).returns.deserialize(data)


def _error_text(info: Any) -> tuple[str | None, str | None, str | None]:
    """(type name, class path, message) from Celery's JSON exception info
    (a record read back from Redis: any field may have any type)."""
    if not isinstance(info, dict):
        return None, None, None if info is None else str(info)[:10_000]
    exc_type = _short(info.get('exc_type'))
    module = _short(info.get('exc_module'))
    path = exc_type if not module or module == 'builtins' or not exc_type \
        else f'{module}.{exc_type}'
    message = info.get('exc_message')
    if isinstance(message, (list, tuple)):
        message = ' '.join(str(m) for m in message)
    return exc_type, path, None if message is None else str(message)


def _short(value: Any) -> str | None:
    """A class or module name from a record: a short string, else None."""
    return value if isinstance(value, str) and 0 < len(value) <= 200 \
        else None


_OUR_ERROR_LINE = re.compile(r'^spacer_worker\.exceptions\.(\w+):', re.M)


def _our_error_type(traceback: str | None) -> str | None:
    """Our own class of a failure sent under PySpacer's: the last of our
    errors in its traceback (the cause of the line CoralNet reads)."""
    found = _OUR_ERROR_LINE.findall(traceback or '')
    return found[-1] if found else None


def bad_record_status(error: RecordError) -> JobStatus:
    """The status of a job whose record could not be read: failed, by
    :data:`failures.BAD_RECORD` (only this job; the record is untrusted)."""
    return JobStatus(JobState.FAILURE, error_type='RecordError',
                     error=str(error), error_class=failures.BAD_RECORD)


def record_status(task_id: str, raw: Any,
                  limits: records.RecordLimits | None = None) -> JobStatus:
    """A JobStatus from ``task_id``'s raw result record (None: no record;
    an int: its size, over the bound), read within the bounds of
    :mod:`.records`; a record that cannot be read fails its own job."""
    if raw is None:
        return status_from_meta(None)
    try:
        return status_from_meta(records.decode_meta(raw, task_id, limits))
    except RecordError as e:
        return bad_record_status(e)


def status_from_meta(meta: dict | None) -> JobStatus:
    """Turn a decoded result-backend record into a JobStatus."""
    if meta is not None and not isinstance(meta, dict):
        return bad_record_status(RecordError(
            f'A result record is a {type(meta).__name__}, not an object.'))
    if meta is None:
        return JobStatus(JobState.LOST, error_class=failures.LOST,
                         error='No record in the result backend: the result '
                               'expired, the job waited longer than '
                               'JOB_MAX_QUEUE_WAIT plus its time limit '
                               'without running, or the backend lost its '
                               'data.')
    raw_state = meta.get('status', 'PENDING')
    try:
        state = JobState(raw_state)
    except (ValueError, TypeError):
        # Custom states a task may publish count as running.
        state = JobState.PROGRESS
    info = meta.get('result')
    if state in (JobState.FAILURE, JobState.REVOKED, JobState.RETRY):
        error_type, error_class, error = _error_text(info)
        if state is JobState.REVOKED and not error:
            error_type, error = 'TaskRevokedError', 'The job was cancelled.'
        if state is JobState.REVOKED:
            error_class = failures.REVOKED
        tb = meta.get('traceback')
        tb = tb if isinstance(tb, str) else None
        return JobStatus(state, error_type=_our_error_type(tb) or error_type,
                         error=error, traceback=tb,
                         error_class=error_class or error_type)
    if state is JobState.SUCCESS:
        return JobStatus(state, result=info)
    if state in (JobState.PROGRESS, JobState.STARTED) and isinstance(info, dict):
        return JobStatus(state, progress=info)
    return JobStatus(state)


def raise_for_status(status: JobStatus, handle: JobHandle | str) -> None:
    """Raise the error a finished, unsuccessful job stands for.

    A failure whose type is one of spacer_worker's errors is raised as that
    type (``except DataNotFoundError`` works across the queue); any other
    failure (time limit, lost worker) as JobFailedError.
    """
    if status.state is JobState.LOST:
        raise ResultLostError(f'Job {handle}: {status.error}')
    if status.state not in (JobState.FAILURE, JobState.REVOKED):
        return
    if status.error_class == failures.BAD_RECORD and not status.traceback:
        raise RecordError(f'Job {handle}: {status.error}')
    cls = getattr(exceptions, status.error_type or '', None)
    text = f'Job {handle} failed on the worker: {status.error_type}: ' \
           f'{status.error}'
    if isinstance(cls, type) and issubclass(cls, SpacerError) and \
            cls not in (JobFailedError, ResultLostError):
        try:
            error = cls(text)
        except TypeError:
            error = None
        if error is not None:
            raise error
    raise JobFailedError(text, error_type=status.error_type,
                         traceback=status.traceback)


class Client:
    """Submits messages and reads their state through one Celery app.

    ``app`` defaults to spacer_worker's own app (broker and backend from
    spacer_worker.config); pass another to talk to a differently configured
    deployment.
    """

    def __init__(self, app: Celery | None = None) -> None:
        self._app = app

    @property
    def app(self) -> Celery:
        if self._app is None:
            self._app = celery_app.app
        return self._app

    # --- submitting -----------------------------------------------------

    def submit(self, msg: Any, *, queue: str | None = None,
               priority: int | None = None,
               task_id: str | None = None,
               idempotency_key: str | None = None,
               before_send: Callable[[JobHandle], None] | None = None,
               spec_level: Any = None,
               ) -> JobHandle:
        """Send one message; return its handle at once.

        ``spec_level`` 'high' (or CoralNet's ``SpacerJobSpec.HIGH``) sends
        it to its kind's high-spec queue (extract_high, train_high) with
        that queue's time limits; trainings of 200k annotations or more go
        there by themselves.

        ``queue`` overrides the contract's queue; ``priority`` 0-9 with 0
        first (``EXPEDITE``) lets a caller jump the queue. Submitting the
        same (task, job token), or the same ``idempotency_key``, while the
        earlier job is pending or running returns the earlier handle and
        enqueues nothing (``SUBMIT_DEDUPE``, ``SUBMIT_DEDUPE_WINDOW``).
        """
        check = getattr(msg, 'check', None)
        if callable(check):
            check()   # a field assigned a bad value fails here, not remotely
        return self.send(message_task(msg), msg.serialize(), queue=queue,
                         priority=priority, task_id=task_id,
                         idempotency_key=idempotency_key,
                         before_send=before_send, spec_level=spec_level)

    def send(self, task: str, payload: dict, *, queue: str | None = None,
             priority: int | None = None,
             task_id: str | None = None,
             idempotency_key: str | None = None,
             before_send: Callable[[JobHandle], None] | None = None,
             spec_level: Any = None,
             headers: dict[str, Any] | None = None,
             books: Any = None,
             ) -> JobHandle:
        """Send an already serialized payload by contract task name.

        Over PAYLOAD_OFFLOAD_BYTES (and with PAYLOAD_LOCATION set) the
        payload is stored and only its location is sent; the worker
        deletes it once the task has its final answer. An already
        offloaded payload (:func:`payloads.offload`) is sent as it is.

        ``before_send(handle)`` runs once the job is claimed and before its
        message goes out (only for a new job); if it raises, nothing is
        sent and the claim is undone. ``headers`` go into the message's
        headers (the worker sees them on its request). ``books``
        (:class:`submission.Books`): a queue's books; an earlier job is
        then returned only while it is on them, and a new one is entered
        there with its claim.
        """
        # Queue, time limits of the task's kind and default priority
        # (MessageError for an unknown task).
        options = celery_app.send_options(task, payload, spec_level)
        if queue is not None:
            if not isinstance(queue, str) or not queue:
                raise MessageError(f'queue must be a non-empty string, got '
                                   f'{queue!r}.')
            options['queue'] = queue
        if priority is not None:
            if isinstance(priority, bool) or not isinstance(priority, int) \
                    or priority not in PRIORITY_RANGE:
                raise MessageError(f'priority must be an integer 0-9 (0 is '
                                   f'served first), got {priority!r}.')
            options['priority'] = priority
        claimed = self._claim(task, payload, task_id or self.new_task_id(),
                              options['queue'], idempotency_key,
                              self.pending_ttl(options), books)
        handle = JobHandle(id=claimed.id, task=task, queue=claimed.queue)
        if not claimed.fresh:
            return handle
        sent = payload
        try:
            if before_send is not None:
                before_send(handle)
            # A large payload goes to storage; the broker gets its location.
            sent = payloads.offload(payload, claimed.id)
            # When it was sent, for the queue view's "oldest waiting job".
            options['headers'] = {**(options.get('headers') or {}),
                                  **(headers or {}),
                                  'spacer_sent_at': time.time()}
            self.app.send_task(task, args=[sent], task_id=claimed.id,
                               **options)
        except BaseException:
            if sent is not payload:
                payloads.discard(sent)
            self._unclaim(claimed)
            raise
        return handle

    def _claim(self, task: str, payload: Any, task_id: str, queue: str,
               idempotency_key: str | None, pending_ttl: int,
               books: Any = None) -> Any:
        from spacer_worker.client import submission

        key = submission.dedupe_key(task, payload, idempotency_key)
        mode = submission.dedupe_mode()
        backend = self.app.backend
        if key is None or mode is submission.DedupeMode.OFF or \
                submission.redis_of(backend) is None:
            # Nothing names the job, deduplication is off, or the backend
            # is not Redis (embedded mode): every submission is a new job.
            self._mark_submitted(task_id, pending_ttl)
            return submission.Claim(id=task_id, queue=queue, fresh=True)
        return submission.claim(backend, key, task_id, queue,
                                self._pending_record(task_id), mode,
                                submission.dedupe_window(), pending_ttl,
                                books)

    def _unclaim(self, claimed: Any) -> None:
        from spacer_worker.client import submission
        backend = self.app.backend
        if claimed.key is not None:
            submission.release(backend, claimed)
        else:
            backend.delete(backend.get_key_for_task(claimed.id))

    @staticmethod
    def new_task_id() -> str:
        return str(uuid.uuid4())

    def _pending_record(self, task_id: str) -> Any:
        return self.app.backend.encode({
            'status': 'PENDING', 'result': None, 'traceback': None,
            'children': [], 'date_done': None, 'task_id': task_id})

    @staticmethod
    def pending_ttl(options: dict) -> int:
        """Seconds a PENDING record lives: the longest queue wait allowed
        (JOB_MAX_QUEUE_WAIT) plus the task's hard time limit. A worker's
        first state replaces it (with the result expiry)."""
        from spacer_worker import config
        wait = config.get('JOB_MAX_QUEUE_WAIT')
        if wait <= 0:
            raise ConfigError(f'JOB_MAX_QUEUE_WAIT must be a positive number '
                              f'of seconds, got {wait!r}.')
        return int(wait + (options.get('time_limit') or 0))

    def _mark_submitted(self, task_id: str, ttl: int) -> None:
        # Written before sending, so a fast worker's result is never
        # overwritten; it expires once the job could no longer be waiting
        # or running, so a message the broker lost reads LOST.
        backend = self.app.backend
        key = backend.get_key_for_task(task_id)
        value = self._pending_record(task_id)
        client = getattr(backend, 'client', None)
        if client is not None and hasattr(client, 'set') and \
                hasattr(client, 'pipeline'):
            client.set(key, value, ex=ttl)
        else:
            backend.set(key, value)

    # --- reading ------------------------------------------------------------

    def read_records(self, ids: Sequence[str]) -> list[Any] | None:
        """The raw result records of ``ids`` (None: no record; an int:
        the size of one over RECORD_MAX_BYTES, left in Redis), in round
        trips of READ_BATCH ids; None when the backend has no raw read."""
        backend = self.app.backend
        keys = [backend.get_key_for_task(i) for i in ids]
        redis = getattr(backend, 'client', None)
        if redis is not None and hasattr(redis, 'pipeline'):
            limit = str(records.RecordLimits.from_settings().max_bytes)
            raws: list[Any] = []
            for start in range(0, len(keys), READ_BATCH):
                chunk = keys[start:start + READ_BATCH]
                raws += redis.eval(records.READ, len(chunk), *chunk, limit)
            return raws
        if hasattr(backend, 'mget'):
            try:
                found = backend.mget(keys)
            except NotImplementedError:
                return None
            if isinstance(found, dict):
                return [found.get(k) for k in keys]
            return None if found is None else list(found)
        return None

    def decode_status(self, raw: bytes | str | int | None,
                      task_id: str) -> JobStatus:
        """A JobStatus from ``task_id``'s raw result-backend value (None:
        no record), read within bounds (:mod:`.records`)."""
        return record_status(task_id, raw)

    def statuses(self, handles: Iterable[JobHandle | str]) -> list[JobStatus]:
        """States of many jobs in one round trip to the result backend
        (per READ_BATCH); a record that cannot be read fails only its own
        job (RecordError)."""
        ids = [_task_id(h) for h in handles]
        if not ids:
            return []
        raws = self.read_records(ids)
        if raws is None:    # a backend without raw reads (embedded mode)
            backend = self.app.backend
            return [status_from_meta(backend._get_task_meta_for(i))
                    for i in ids]
        limits = records.RecordLimits.from_settings()
        return [record_status(i, raw, limits)
                for i, raw in zip(ids, raws, strict=True)]

    def status(self, handle: JobHandle | str) -> JobStatus:
        return self.statuses([handle])[0]

    def progress(self, handle: JobHandle | str) -> dict | None:
        """The latest progress info a running job published, if any."""
        return self.status(handle).progress

    def result(self, handle: JobHandle | str, timeout: float | None = None,
               interval: float = 0.2,
               on_status: Callable[[JobStatus], None] | None = None) -> Any:
        """Wait for the job and return its typed return message.

        Raises the job's own error type (see :func:`raise_for_status`),
        ResultLostError for an expired result, TimeoutError after
        ``timeout`` seconds. ``on_status`` sees every status polled.
        Without a timeout it still stops, with RecordError, once the job
        has waited longer than any job can live (:mod:`.deadlines`): a
        record that says PENDING for ever is not believed.
        """
        handle = handle if isinstance(handle, JobHandle) else \
            JobHandle.parse(handle)
        life = Deadlines.from_settings().longest_life()
        deadline = time.monotonic() + (life if timeout is None else timeout)
        while True:
            status = self.status(handle)
            if on_status is not None:
                on_status(status)
            if status.finished:
                break
            if time.monotonic() >= deadline and timeout is None:
                raise RecordError(
                    f'Job {handle} is still {status.state.value} by its '
                    f'record after {life:.0f} s, longer than any job can '
                    f'wait and run (JOB_MAX_QUEUE_WAIT plus every try\'s '
                    f'time limit and backoff); the record is not believed.')
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f'Job {handle} still {status.state} after {timeout} s; '
                    f'are workers consuming queue {handle.queue or "?"}? '
                    f'(spacer-worker check)')
            time.sleep(interval)
        raise_for_status(status, handle)
        if not handle.task:
            return status.result
        try:
            return decode_result(handle.task, status.result)
        except Exception as e:  # a record that only looks like a result
            raise RecordError(
                f'Job {handle}: its result record is not a '
                f'{by_celery_name(handle.task).returns.__name__}: '
                f'{type(e).__name__}: {str(e)[:200]}') from e

    def cancel(self, handle: JobHandle | str, terminate: bool = False) -> None:
        """Revoke a job: a queued one never runs; ``terminate`` also stops
        a running one (prefork workers only). Workers keep revoked ids in
        memory, so a job queued while no worker is up may still run."""
        self.app.control.revoke(_task_id(handle), terminate=terminate,
                                signal='SIGTERM')

    def forget(self, handles: Iterable[JobHandle | str]) -> None:
        """Delete the stored results of jobs already read."""
        backend = self.app.backend
        for h in handles:
            backend.forget(_task_id(h))


def _task_id(handle: JobHandle | str) -> str:
    if isinstance(handle, JobHandle):
        return handle.id
    return JobHandle.parse(handle).id


_default: Client | None = None


def default_client() -> Client:
    global _default
    if _default is None:
        _default = Client()
    return _default


def submit(msg: Any, **kwargs: Any) -> JobHandle:
    return default_client().submit(msg, **kwargs)


def status(handle: JobHandle | str) -> JobStatus:
    return default_client().status(handle)


def result(handle: JobHandle | str, timeout: float | None = None) -> Any:
    return default_client().result(handle, timeout=timeout)


def cancel(handle: JobHandle | str, terminate: bool = False) -> None:
    default_client().cancel(handle, terminate=terminate)
