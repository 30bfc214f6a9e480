"""One finished job's records in a CoralNet queue's books, read as
``CeleryQueue.collect_jobs`` believes them (docs/operations.md, "The web
process and records in Redis").

* :func:`believed`: a job's status from its result record (bounded,
  :mod:`.records`), failed when that record or its books entry is
  malformed, LOST past the deadline its submit time allows
  (:class:`.deadlines.Deadlines`);
* :class:`StoredJob`: the JobMsg kept in the books (``msgs``), decoded
  once, an offloaded one read back only from the job's own location, and
  what a success must match.

Client side: no torch, numpy or scikit-learn.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from spacer_worker.celery import books, payloads
from spacer_worker.client import fences, records
from spacer_worker.client.deadlines import Deadlines
from spacer_worker.client.jobs import (
    JobState,
    JobStatus,
    bad_record_status,
    record_status,
)
from spacer_worker.exceptions import RecordError, failures

if TYPE_CHECKING:
    from spacer_worker.messages import JobMsg

logger = logging.getLogger(__name__)


# A books record (info, handed, an offload reference) is a few hundred
# bytes; a larger one is malformed and not decoded.
BOOKS_RECORD_MAX = 64 * 1024


def json_object(raw: Any) -> dict:
    """A small JSON record of the books, {} when it is not an object
    (records read back from Redis are untrusted)."""
    if isinstance(raw, (bytes, str)) and len(raw) > BOOKS_RECORD_MAX:
        return {}
    try:
        value = json.loads(raw)
    except (ValueError, TypeError, RecursionError):
        return {}
    return value if isinstance(value, dict) else {}


def number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return 0.0
    return float(value)


def believed(task_id: str, raw: Any, reg: Any, now: float,
             limits: records.RecordLimits,
             deadlines: Deadlines) -> JobStatus:
    """A job's status as collect_jobs acts on it: its result record read
    within bounds, failed (RecordError) when that record or its books
    record is malformed, LOST when it says waiting or running past the
    deadline its submit time allows."""
    status = record_status(task_id, raw, limits)
    if reg is None:
        return status
    info = fences.books_info(json_object(reg))
    if info is None:
        return bad_record_status(RecordError(
            'its books record (info) is malformed; the job is failed '
            'rather than left uncollectable.'))
    if not status.finished and now > deadlines.of(
            info, status.state is JobState.PENDING):
        return JobStatus(
            JobState.LOST, error_type='ResultLostError',
            error_class=failures.LOST,
            error=f'task {task_id}: still {status.state.value} by its '
                  f'record past its deadline (submitted at '
                  f'{info["submitted_at"]:.0f}; JOB_MAX_QUEUE_WAIT plus its '
                  f'time limits); the record is not believed.')
    return status


class StoredJob:
    """A job's books record, decoded only when needed, and read back only
    from the job's own payload location."""

    def __init__(self, raw: bytes | str | None, job: Any,
                 task_id: str) -> None:
        self.raw = raw.encode() if isinstance(raw, str) else raw
        self.job = job
        self.task_id = task_id
        self._problem: str | None = None

    def offloaded(self) -> bool:
        # An offload reference is kept as JSON text (books.encode_job).
        return bool(self.raw) and self.raw[:1] == b'{' and \
            payloads.is_reference(self.value())

    def original(self) -> dict | None:
        """The JobMsg's JSON as submitted (an offloaded one re-read from
        its own location), decoded once; None when it cannot be read."""
        if not hasattr(self, '_original'):
            self._original = self._read_original()
        return self._original

    def problem(self) -> str | None:
        """Why the books' JobMsg cannot be believed (None: it can, or it
        is offloaded and its storage failed)."""
        self.original()
        return self._problem

    def mismatch(self, result: Any) -> str | None:
        """Why a success's record does not answer this job (None: it
        does, or the job's offloaded copy cannot be read back to check:
        then the worker's compact original_job is kept, as before)."""
        expected = self.original()
        if expected is not None:
            return fences.result_mismatch(result, expected)
        return self.problem() or (None if self.offloaded() else
                                  'no JobMsg is kept for it in the books')

    def _read_original(self) -> dict | None:
        stored = self.value()
        if stored is None:
            return None
        if payloads.is_reference(stored):
            if not fences.own_payload(stored, self.task_id):
                self._problem = ('its books name a stored payload that is '
                                 'not its own')
                return None
            try:
                stored = payloads.fetch(stored)
            except Exception as e:
                logger.warning('%s: its stored job could not be read back '
                               '(%s: %s); the result keeps the worker\'s '
                               'compact original_job.', self.job,
                               type(e).__name__, e)
                return None
        if fences.result_mismatch({'original_job': stored}, stored) is not \
                None:
            self._problem = 'its JobMsg in the books is not a JobMsg'
            return None
        return stored

    def value(self) -> Any:
        """The stored job's JSON, decoded once; None (logged) when it
        cannot be read, so one bad record fails only its own job."""
        if not hasattr(self, '_value'):
            self._value = None
            if self.raw:
                try:
                    self._value = books.decode_job(
                        self.raw, stored_job_limit(),
                        'MESSAGE_MAX_BYTES and PAYLOAD_MAX_BYTES')
                except Exception as e:
                    self._problem = (f'its JobMsg in the books cannot be '
                                     f'read: {e}')
                    logger.warning('%s: its stored job could not be read '
                                   '(%s: %s).', self.job, type(e).__name__,
                                   e)
        return self._value


def stored_job_limit() -> int:
    """How far a stored JobMsg may inflate in the web process: what a
    worker would accept as a message (MESSAGE_MAX_BYTES), at most what it
    reads (PAYLOAD_MAX_BYTES)."""
    from spacer_worker import config
    return min(int(config.get('MESSAGE_MAX_BYTES')), books.read_limit())


def as_job_msg_or_none(data: dict | None) -> JobMsg | None:
    """:func:`as_job_msg`, None when the stored JSON is not a JobMsg."""
    try:
        return as_job_msg(data)
    except Exception as e:
        logger.warning('A stored JobMsg could not be rebuilt: %s: %s',
                       type(e).__name__, e)
        return None


def as_job_msg(data: dict | None) -> JobMsg | None:
    from spacer_worker.messages import JobMsg

    return None if data is None else JobMsg.deserialize(data)


def family_of(info: Any) -> str | None:
    """The class family a job was submitted in (None: ours)."""
    family = json_object(info).get('classes')
    return family if isinstance(family, str) else None
