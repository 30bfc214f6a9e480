"""A drop-in for CoralNet's vision-backend job queue, on Celery.

CoralNet picks its queue class by the ``SPACER_QUEUE_CHOICE`` setting and
calls three methods: ``submit_job(job_msg, job_id, spec_level)``,
``get_collectable_jobs()`` and ``collect_jobs(jobs)``, the last in chunks of
up to 100 from a periodic task. Setting

    SPACER_QUEUE_CHOICE = 'spacer_worker.contrib.coralnet.CeleryQueue'

swaps AWS Batch for the Celery workers.

Bookkeeping lives in the result backend's Redis, beside the results:

* ``<prefix>order``: sorted set of outstanding task ids, scored by a
  counter, so jobs are listed in submission order;
* ``<prefix>info``: hash task id -> small JSON (CoralNet job id, spec
  level, queue, submit time);
* ``<prefix>msgs``: hash task id -> the JobMsg, to build an ``ok=False``
  JobReturnMsg when the job fails without one; for a job over
  ``PAYLOAD_OFFLOAD_BYTES``, only the location of its stored copy
  (:mod:`spacer_worker.celery.payloads`), from which collect_jobs rebuilds the
  full ``original_job`` before deleting it.

* ``<prefix>handed``: hash task id -> the collect call that handed its
  result back, and whether that call returned.

``collect_jobs`` is two-phase, so a result is delivered to the caller at
least once and never silently dropped: a call hands finished results back
and marks them *handed*; they leave Redis only when the next collect call
(which shows the caller survived the previous one) or :meth:`ack_jobs`
confirms them. A call that crashes before returning leaves its results
handed but unconfirmed: they are handed back again after
``handoff_timeout`` seconds. Two overlapping calls never hand back the
same result (claims are one Lua script). Statuses
follow AWS Batch's words, which CoralNet's dashboards count: ``PENDING``,
``RUNNING``, ``SUCCEEDED``, ``FAILED``, ``DROPPED`` (result expired or lost),
``COLLECTED`` (an earlier call already handed it back).
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from spacer_worker.celery import payloads
from spacer_worker.celery.queues import parse_spec_queues
from spacer_worker.client.jobs import Client, JobHandle, JobState, JobStatus
from spacer_worker.client.pyspacer_objects import as_job_msg, in_callers_classes
from spacer_worker.exceptions import ConfigError, MessageError, failures

if TYPE_CHECKING:
    from celery import Celery

    from spacer_worker.messages import JobMsg, JobReturnMsg

logger = logging.getLogger(__name__)

DEFAULT_PREFIX = 'spacer:coralnet:'

_STATUS_WORDS = {
    JobState.PENDING: 'PENDING',
    JobState.RETRY: 'PENDING',
    JobState.RECEIVED: 'RUNNING',
    JobState.STARTED: 'RUNNING',
    JobState.PROGRESS: 'RUNNING',
    JobState.SUCCESS: 'SUCCEEDED',
    JobState.FAILURE: 'FAILED',
    JobState.REVOKED: 'FAILED',
    JobState.LOST: 'DROPPED',
}


@dataclass(frozen=True)
class CeleryJob:
    """One outstanding job, as ``get_collectable_jobs`` lists it."""

    task_id: str
    job_id: Any
    spec_level: str | None
    queue: str
    submitted_at: float

    def __str__(self) -> str:
        return f'job {self.job_id} (task {self.task_id} on {self.queue})'


def _spec_value(spec_level: Any) -> str | None:
    if spec_level is None:
        return None
    value = getattr(spec_level, 'value', spec_level)
    if not isinstance(value, str):
        raise MessageError(f'spec_level must be a SpacerJobSpec or a string, '
                           f'got {spec_level!r}.')
    return value.lower()


def _known_level(spec_level: Any) -> Any:
    """The spec level for time limits: a level of our own (medium, high),
    else None (a custom level routed by CORALNET_SPEC_QUEUES alone)."""
    from spacer_worker.celery import spec_level_of
    from spacer_worker.constants import QueueKind

    try:
        spec_level_of(QueueKind.EXTRACT, None, spec_level)
    except MessageError:
        return None
    return spec_level


class CeleryQueue:
    """CoralNet's ``BaseQueue`` interface over spacer_worker's Celery app."""

    def __init__(self, app: Celery | None = None,
                 prefix: str = DEFAULT_PREFIX,
                 handoff_timeout: float = 120.0,
                 confirm_on_next_call: bool = True) -> None:
        self.client = Client(app)
        self.prefix = prefix
        # A result handed to a call that never returned (the collector
        # crashed) is handed back again after this many seconds.
        self.handoff_timeout = handoff_timeout
        # False: only ack_jobs confirms; unacked results come back after
        # handoff_timeout (for callers that ack what they stored).
        self.confirm_on_next_call = confirm_on_next_call

    # --- plumbing -----------------------------------------------------------

    @property
    def redis(self) -> Any:
        backend = self.client.app.backend
        client = getattr(backend, 'client', None)
        if client is None or not hasattr(client, 'pipeline'):
            raise ConfigError(
                f'CeleryQueue keeps its job list in the result backend, which '
                f'must be Redis; SPACER_RESULT_BACKEND is '
                f'{type(backend).__name__}. Point it at a redis:// URL.')
        return client

    def _key(self, name: str) -> str:
        return self.prefix + name

    def queue_for(self, job_msg: JobMsg, spec_level: Any) -> str:
        """The queue for a job: CORALNET_SPEC_QUEUES, else the contract's
        for its spec level (HIGH: extract_high / train_high)."""
        from spacer_worker import config
        from spacer_worker.celery import queue_for

        spec = _spec_value(spec_level)
        if spec is not None:
            mapping = parse_spec_queues(config.get('CORALNET_SPEC_QUEUES'))
            for key in (f'{job_msg.task_name}:{spec}', spec):
                if key in mapping:
                    return mapping[key]
        return queue_for('spacer.process_job', {'task_name': job_msg.task_name},
                         _known_level(spec_level))

    def idempotency_key(self, job_id: Any) -> str:
        """What makes a resubmission of CoralNet job ``job_id`` the same
        job while it is pending or running."""
        return f'{self.prefix}job:{job_id}'

    # --- CoralNet's interface -------------------------------------------------

    def submit_job(self, job_msg: JobMsg, job_id: Any,
                   spec_level: Any = None) -> JobHandle:
        """Enqueue a JobMsg for CoralNet job ``job_id``: ours, or
        PySpacer's own (0.13 or 0.14), whose result then comes back in
        PySpacer's classes (:mod:`spacer_worker.client.pyspacer_objects`)."""
        job_msg, wire, family = as_job_msg(job_msg)
        queue = self.queue_for(job_msg, spec_level)
        redis = self.redis
        info = {'job_id': job_id, 'spec_level': _spec_value(spec_level),
                'queue': queue, 'submitted_at': time.time()}
        if family is not None:
            info['classes'] = family
        handle_id = self.client.new_task_id()
        # A large job is stored once (PAYLOAD_LOCATION); the broker and the
        # books here hold its location, and collect_jobs re-reads it.
        payload = payloads.offload(wire, handle_id, owner='caller')

        def register(handle: JobHandle) -> None:
            # After the job is claimed, before it is sent: a job is never
            # running without being collectable. A resubmission of CoralNet
            # job ``job_id`` while it is pending or running returns the
            # earlier handle before this runs, so it is on the books once.
            seq = redis.incr(self._key('seq'))
            pipe = redis.pipeline(transaction=True)
            pipe.hset(self._key('info'), handle.id, json.dumps(info))
            pipe.hset(self._key('msgs'), handle.id, json.dumps(payload))
            pipe.zadd(self._key('order'), {handle.id: seq})
            pipe.execute()
            registered.append(handle.id)

        registered: list[str] = []
        try:
            handle = self.client.send(
                'spacer.process_job', payload, queue=queue,
                task_id=handle_id, before_send=register,
                idempotency_key=self.idempotency_key(job_id),
                spec_level=_known_level(spec_level))
        except Exception:
            self._unregister(registered)
            payloads.discard(payload)
            raise
        if handle.id != handle_id:
            payloads.discard(payload)   # the earlier job has its own copy
        return handle

    def get_collectable_jobs(self) -> list[CeleryJob]:
        """Every job not yet handed back, oldest first. A result handed to
        a call is not listed for ``handoff_timeout`` seconds, nor at all
        once that call returned (it awaits confirmation), unless only
        ack_jobs confirms."""
        redis = self.redis
        ids = [_text(i) for i in redis.zrange(self._key('order'), 0, -1)]
        if not ids:
            return []
        pipe = redis.pipeline(transaction=False)
        pipe.hmget(self._key('info'), ids)
        pipe.hmget(self._key('handed'), ids)
        pipe.time()
        infos, handed, (seconds, micros) = pipe.execute()
        now = seconds + micros / 1e6
        jobs = []
        for task_id, raw, held in zip(ids, infos, handed, strict=True):
            if raw is None:
                continue  # collected between the two reads
            if held is not None:
                hand = json.loads(held)
                if hand.get('returned') and self.confirm_on_next_call:
                    continue  # the caller has it
                if now - hand['at'] < self.handoff_timeout:
                    continue  # handed to a call moments ago
            info = json.loads(raw)
            jobs.append(CeleryJob(task_id=task_id, job_id=info['job_id'],
                                  spec_level=info['spec_level'],
                                  queue=info['queue'],
                                  submitted_at=info['submitted_at']))
        return jobs

    def collect_jobs(self, jobs: list[CeleryJob]
                     ) -> tuple[list[JobReturnMsg], list[str]]:
        """Results of the finished jobs among ``jobs`` (in their order), and
        one status per job. Three round trips per call, whatever its size:
        confirm and read, hand out, mark returned."""
        jobs = list(jobs)
        if not jobs:
            if self.confirm_on_next_call:
                self._confirm(returned_only=True)
            return [], []
        ids = [_job_task_id(j) for j in jobs]
        backend = self.client.app.backend
        # Every state, and whether each job is still on the books, after
        # phase 2 of the earlier calls (what they returned, the caller has).
        pipe = self.redis.pipeline(transaction=False)
        if self.confirm_on_next_call:
            self._confirm(returned_only=True, pipe=pipe)
        pipe.mget([backend.get_key_for_task(i) for i in ids])
        pipe.hmget(self._key('info'), ids)
        *confirmed, raw_metas, registered = pipe.execute()
        self._discard_payloads(confirmed[0] if confirmed else [])
        statuses = [self.client.decode_status(raw) for raw in raw_metas]

        finished = [i for i, (s, r) in enumerate(zip(statuses, registered,
                                                      strict=True))
                    if r is not None and s.finished]
        claimed = self._claim([ids[i] for i in finished])

        results: list[JobReturnMsg] = []
        words: list[str] = []
        for index, (job, status, reg) in enumerate(
                zip(jobs, statuses, registered, strict=True)):
            if reg is None:
                words.append('COLLECTED')
                continue
            if not status.finished:
                words.append(_STATUS_WORDS[status.state])
                continue
            task_id = ids[index]
            if task_id not in claimed:
                words.append('COLLECTED')
                continue
            stored = _stored_payload(claimed[task_id])
            original = _original_data(job, stored)
            msg, word = self._return_msg(job, status, stored, original)
            results.append(in_callers_classes(msg, original, _family(reg),
                                              job))
            words.append(word)
        # Phase 1 done: these results reached the caller.
        self._mark_returned(list(claimed))
        return results, words

    def ack_jobs(self, jobs: list[Any]) -> None:
        """Confirm that the caller stored the results of ``jobs``: they
        leave Redis now (without waiting for the next collect call)."""
        self._confirm(ids=[_job_task_id(j) for j in jobs])

    # --- helpers ------------------------------------------------------------------

    def _claim(self, ids: list[str]) -> dict[str, str | None]:
        """Mark finished jobs handed to this call; return those it won
        (task id -> stored JobMsg JSON). A job another call holds is not
        won, unless that call never returned within handoff_timeout."""
        if not ids:
            return {}
        call = f'{time.time():.6f}:{id(self):x}:{next(_calls)}'
        replies = self.redis.eval(
            _HAND_OUT, 2, self._key('handed'), self._key('msgs'), call,
            str(self.handoff_timeout),
            '1' if self.confirm_on_next_call else '0', *ids)
        won = {}
        for task_id, (took, stored) in zip(ids, _pairs(replies), strict=True):
            if took:
                won[task_id] = None if stored is None else _text(stored)
        return won

    def _mark_returned(self, ids: list[str]) -> None:
        if ids:
            self.redis.eval(_RETURNED, 1, self._key('handed'), *ids)

    def _confirm(self, ids: list[str] | None = None,
                 returned_only: bool = False, pipe: Any = None) -> None:
        """Phase 2: drop confirmed jobs from the books and their results
        (queued on ``pipe`` when given)."""
        backend = self.client.app.backend
        # The result keys' prefix (celery-task-meta-, with any prefix).
        sample = _text(backend.get_key_for_task('x'))
        prefix = sample[:-1]
        stored = (pipe or self.redis).eval(
            _CONFIRM, 4, self._key('handed'), self._key('info'),
            self._key('msgs'), self._key('order'), prefix,
            '1' if returned_only else '0', *(ids or []))
        if pipe is None:
            self._discard_payloads(stored)

    @staticmethod
    def _discard_payloads(stored: list | None) -> None:
        for raw in stored or []:
            if raw:
                # Handed back with its full original_job: the stored copy
                # of an offloaded job is no longer needed.
                payloads.discard(_stored_payload(_text(raw)))

    def _unregister(self, ids: list[str]) -> None:
        pipe = self.redis.pipeline(transaction=True)
        for task_id in ids:
            pipe.hdel(self._key('info'), task_id)
            pipe.hdel(self._key('msgs'), task_id)
            pipe.zrem(self._key('order'), task_id)
        pipe.execute()

    def _return_msg(self, job: Any, status: JobStatus, stored_job: Any,
                    original: dict | None) -> tuple[JobReturnMsg, str]:
        from spacer_worker.messages import JobReturnMsg

        # Every reason ends in a line CoralNet classifies (failures.py).
        word = _STATUS_WORDS[status.state]
        if status.state is JobState.SUCCESS:
            try:
                msg = JobReturnMsg.deserialize(status.result)
                if payloads.is_reference(stored_job):
                    # The worker answered with a compact original_job.
                    full = _as_job_msg(original)
                    if full is not None:
                        msg.original_job = full
                return msg, word
            except Exception as e:  # a result we cannot read is a failure
                reason = failures.line(
                    failures.printed_class(type(e)),
                    f'{job}: the worker succeeded but its result could not '
                    f'be read: {e}')
                word = 'FAILED'
        elif status.state is JobState.LOST:
            reason = failures.line(
                failures.LOST,
                f'{job}: its result expired or was lost before it was '
                f'collected (result backend has no record of it).')
        elif status.state is JobState.REVOKED:
            reason = failures.line(
                failures.REVOKED, f'{job}: cancelled before it finished.')
        else:
            message = status.error
            if status.error_class == failures.HARD_TIME_LIMIT:
                message = (f'{job}: ran past its hard time limit '
                           f'({status.error} s) and was killed.')
            elif status.error_class == failures.WORKER_LOST:
                message = f'{job}: its worker process died: {status.error}'
            reason = f'{job}: failed on the worker.\n' + \
                failures.ensure_last_line(status.traceback,
                                          status.error_class or 'RuntimeError',
                                          message or 'failed')
        return JobReturnMsg(original_job=_as_job_msg(original),
                            ok=False, results=None,
                            error_message=reason), word


_calls = itertools.count()

# KEYS: handed, msgs; ARGV: call, handoff timeout, confirm-on-next, ids...
# -> flat list of (won 0/1, stored msg or false) per id.
_HAND_OUT = """
local now = redis.call('time')
local t = tonumber(now[1]) + tonumber(now[2]) / 1e6
local out = {}
for i = 4, #ARGV do
    local id = ARGV[i]
    local take = true
    local held = redis.call('hget', KEYS[1], id)
    if held then
        local h = cjson.decode(held)
        if h['returned'] and ARGV[3] == '1' then
            take = false    -- confirmed by this very call's sweep
        elseif t - h['at'] < tonumber(ARGV[2]) then
            take = false    -- another call has it
        end
    end
    if take then
        redis.call('hset', KEYS[1], id, cjson.encode(
            {call = ARGV[1], at = t, returned = false}))
        table.insert(out, 1)
        table.insert(out, redis.call('hget', KEYS[2], id))
    else
        table.insert(out, 0)
        table.insert(out, false)
    end
end
return out
"""

# KEYS: handed; ARGV: ids. The call returned these to its caller.
_RETURNED = """
local now = redis.call('time')
local t = tonumber(now[1]) + tonumber(now[2]) / 1e6
for i = 1, #ARGV do
    local held = redis.call('hget', KEYS[1], ARGV[i])
    if held then
        local h = cjson.decode(held)
        h['returned'] = true
        h['at'] = t
        redis.call('hset', KEYS[1], ARGV[i], cjson.encode(h))
    end
end
return #ARGV
"""

# KEYS: handed, info, msgs, order; ARGV: result key prefix, returned-only,
# ids (none: every handed job). -> the stored msgs of the jobs dropped.
_CONFIRM = """
local ids = {}
if #ARGV > 2 then
    for i = 3, #ARGV do table.insert(ids, ARGV[i]) end
else
    ids = redis.call('hkeys', KEYS[1])
end
local dropped = {}
for _, id in ipairs(ids) do
    local go = true
    if ARGV[2] == '1' then
        local held = redis.call('hget', KEYS[1], id)
        go = held and cjson.decode(held)['returned']
    end
    if go then
        table.insert(dropped, redis.call('hget', KEYS[3], id) or '')
        redis.call('hdel', KEYS[1], id)
        redis.call('hdel', KEYS[2], id)
        redis.call('hdel', KEYS[3], id)
        redis.call('zrem', KEYS[4], id)
        redis.call('del', ARGV[1] .. id)
    end
end
return dropped
"""


def _pairs(flat: list) -> list[tuple[int, Any]]:
    return [(int(flat[i]), flat[i + 1]) for i in range(0, len(flat), 2)]


def _stored_payload(stored: str | None) -> Any:
    return None if stored is None else json.loads(stored)


def _original_data(job: Any, stored: Any) -> dict | None:
    """The JobMsg's JSON as submitted: kept here, or re-read from
    storage."""
    if stored is None:
        return None
    if payloads.is_reference(stored):
        try:
            stored = payloads.fetch(stored)
        except Exception as e:
            logger.warning('%s: its stored job could not be read back (%s: '
                           '%s); the result keeps the worker\'s compact '
                           'original_job.', job, type(e).__name__, e)
            return None
    return stored


def _as_job_msg(data: dict | None) -> JobMsg | None:
    from spacer_worker.messages import JobMsg

    return None if data is None else JobMsg.deserialize(data)


def _family(info: Any) -> str | None:
    """The class family a job was submitted in (None: ours)."""
    try:
        family = json.loads(info).get('classes')
    except (TypeError, ValueError, AttributeError):
        return None
    return family if isinstance(family, str) else None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _job_task_id(job: Any) -> str:
    if isinstance(job, CeleryJob):
        return job.task_id
    if isinstance(job, JobHandle):
        return job.id
    if isinstance(job, str):
        return JobHandle.parse(job).id
    raise MessageError(f'collect_jobs expects jobs from get_collectable_jobs, '
                       f'got {job!r}.')
