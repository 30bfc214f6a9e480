"""A drop-in for CoralNet's vision-backend job queue, on Celery.

CoralNet picks its queue class by the ``SPACER_QUEUE_CHOICE`` setting and
calls three methods: ``submit_job(job_msg, job_id, spec_level)``,
``get_collectable_jobs()`` and ``collect_jobs(jobs)``, the last in chunks of
up to 100 from a periodic task. Setting

    SPACER_QUEUE_CHOICE = 'spacer_worker.contrib.coralnet.CeleryQueue'

swaps AWS Batch for the Celery workers. ``submit_jobs`` enqueues many jobs
in a few round trips (a source's backlog: :mod:`spacer_worker.client.bulk`).

Bookkeeping lives in the result backend's Redis, beside the results
(sizes and batch bounds in docs/internals.md, "CoralNet queue books"):

* ``<prefix>order``: sorted set of outstanding task ids, scored by a
  counter, so jobs are listed in submission order;
* ``<prefix>info``: hash task id -> small JSON (CoralNet job id, spec
  level, queue, submit time);
* ``<prefix>msgs``: hash task id -> the JobMsg, compressed, kept once: the
  broker message only refers to it (:mod:`spacer_worker.celery.books`); for
  a job over ``PAYLOAD_OFFLOAD_BYTES``, only the location of its stored
  copy (:mod:`spacer_worker.celery.payloads`), from which collect_jobs
  rebuilds the full ``original_job`` before deleting it;
* ``<prefix>done``: sorted set of finished task ids, written by the
  workers as they store a final state, popped oldest first;
* ``<prefix>handed``: hash task id -> the collect call that handed its
  result back, and whether that call returned; ``<prefix>handed_at``
  (sorted set, by time) finds hand-outs whose call never returned,
  ``<prefix>returned`` (set) the results awaiting confirmation;
* ``<prefix>sweep``: where the sweep of ``order`` stopped.

A cycle costs what finished, not what waits: ``get_collectable_jobs``
lists up to ``collect_batch`` finished jobs from ``done``, hand-outs that
timed out, and from a window of ``sweep_batch`` outstanding jobs taken in
turn from ``order`` the first ``waiting_batch`` (for their statuses) and
whatever is finished or lost though no worker marked it (a lost result, a
job revoked before a worker saw it), found by a script in Redis. Every
Redis command and script handles at most ``BATCH`` ids.

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
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from spacer_worker.celery import books, payloads, send_options
from spacer_worker.celery.queues import parse_spec_queues
from spacer_worker.client import bulk, fences, records, scripts
from spacer_worker.client.collected import StoredJob as _StoredJob
from spacer_worker.client.collected import as_job_msg as _as_job_msg
from spacer_worker.client.collected import as_job_msg_or_none as _as_job_msg_or_none
from spacer_worker.client.collected import believed as _believed
from spacer_worker.client.collected import family_of as _family
from spacer_worker.client.collected import json_object as _json_object
from spacer_worker.client.collected import number as _number
from spacer_worker.client.deadlines import Deadlines
from spacer_worker.client.jobs import Client, JobHandle, JobState, JobStatus
from spacer_worker.client.pyspacer_objects import as_job_msg, in_callers_classes
from spacer_worker.exceptions import ConfigError, MessageError, failures

if TYPE_CHECKING:
    from celery import Celery

    from spacer_worker.messages import JobMsg, JobReturnMsg

logger = logging.getLogger(__name__)

DEFAULT_PREFIX = 'spacer:coralnet:'
# Ids per Redis command or Lua script: each stays in the low milliseconds
# whatever the backlog (benchmarks/scale.py).
BATCH = 500
# Finished jobs one get_collectable_jobs call lists at most; the rest wait
# for the next cycle (a listed job is ~0.5 KB in the web process).
DEFAULT_COLLECT_BATCH = 10_000
# Outstanding jobs one call checks in Redis, in turn, for a final or
# missing result no worker marked (a full sweep of N waiting jobs takes
# N / sweep_batch cycles); the first DEFAULT_WAITING_BATCH of them are
# listed whatever their state (CoralNet counts PENDING and RUNNING).
DEFAULT_SWEEP_BATCH = 1000
DEFAULT_WAITING_BATCH = 100

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
                 confirm_on_next_call: bool = True,
                 collect_batch: int = DEFAULT_COLLECT_BATCH,
                 sweep_batch: int = DEFAULT_SWEEP_BATCH,
                 waiting_batch: int = DEFAULT_WAITING_BATCH) -> None:
        for name, value in (('collect_batch', collect_batch),
                            ('sweep_batch', sweep_batch),
                            ('waiting_batch', waiting_batch)):
            if isinstance(value, bool) or not isinstance(value, int) or \
                    value < 1:
                raise ConfigError(f'CeleryQueue {name} must be a positive '
                                  f'integer, got {value!r}.')
        self.client = Client(app)
        # Finished jobs listed per cycle, and waiting ones swept per cycle.
        self.collect_batch = collect_batch
        self.sweep_batch = sweep_batch
        self.waiting_batch = waiting_batch
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
        # Its hard time limit: with the submit time, when a record that
        # says PENDING or RUNNING stops being believed (client.deadlines).
        sent = books.reference(self.prefix, {'task_name': job_msg.task_name})
        info['time_limit'] = send_options('spacer.process_job', sent,
                                          _known_level(spec_level)
                                          )['time_limit']
        # A large job is stored once (PAYLOAD_LOCATION); the broker and the
        # books here hold its location, and collect_jobs re-reads it.
        payload = payloads.offload(wire, handle_id, owner='caller')

        def register(handle: JobHandle) -> None:
            # After the job is claimed, before it is sent: a job is never
            # running without being collectable. A resubmission of CoralNet
            # job ``job_id`` while it is pending or running returns the
            # earlier handle before this runs, so it is on the books once.
            self._register(redis, handle.id, info, payload)
            registered.append(handle.id)

        registered: list[str] = []
        try:
            # The job is kept once, in the books; the broker carries a
            # reference, and the header lets the worker mark it finished.
            handle = self.client.send(
                'spacer.process_job', books.reference(self.prefix, payload),
                queue=queue, task_id=handle_id, before_send=register,
                idempotency_key=self.idempotency_key(job_id),
                spec_level=_known_level(spec_level),
                headers={books.HEADER: self.prefix},
                books=self._books_entry(handle_id, info))
        except Exception:
            # The claim may have entered it in info (submission.Books).
            self._unregister(registered or [handle_id])
            payloads.discard(payload)
            raise
        if handle.id != handle_id:
            payloads.discard(payload)   # the earlier job has its own copy
        return handle

    def submit_jobs(self, jobs: Iterable[Sequence[Any]]) -> list[JobHandle]:
        """``submit_job`` for many jobs, ``[(job_msg, job_id[, spec_level]),
        ...]``: one handle each, in order, with the same guarantees (a job
        id already pending or running, or named twice here, gets the
        earlier handle; jobs are listed in this order), in a few round
        trips per ``bulk.CHUNK`` jobs (:mod:`spacer_worker.client.bulk`)."""
        outgoing: list[bulk.Outgoing] = []
        infos: dict[str, dict] = {}
        stored: dict[str, Any] = {}
        encoded: dict[str, bytes] = {}     # JSON, encoded once
        routes: dict[tuple, str] = {}
        sends: dict[tuple, dict] = {}
        try:
            for item in jobs:
                job_msg, job_id, spec_level = _job_item(item)
                # Ours or PySpacer's own, as submit_job takes them.
                job_msg, wire, family = as_job_msg(job_msg)
                # Queue and send options per (task name, spec level).
                kind = (str(job_msg.task_name), _spec_value(spec_level))
                if kind not in routes:
                    routes[kind] = self.queue_for(job_msg, spec_level)
                queue = routes[kind]
                task_id = self.client.new_task_id()
                full = wire
                data = payloads.encode(full)
                payload = payloads.offload(full, task_id, owner='caller',
                                           encoded=data)
                stored[task_id] = payload
                if payload is full:
                    encoded[task_id] = data
                sent = books.reference(self.prefix, payload)
                if kind not in sends:
                    sends[kind] = send_options('spacer.process_job', sent,
                                               _known_level(spec_level))
                options = {**sends[kind], 'queue': queue}
                infos[task_id] = {'job_id': job_id,
                                  'spec_level': _spec_value(spec_level),
                                  'queue': queue, 'submitted_at': time.time(),
                                  'time_limit': options.get('time_limit')}
                if family is not None:
                    infos[task_id]['classes'] = family
                outgoing.append(bulk.Outgoing(
                    task='spacer.process_job', payload=sent, task_id=task_id,
                    options=options,
                    idempotency_key=self.idempotency_key(job_id),
                    headers={books.HEADER: self.prefix},
                    books=self._books_entry(task_id, infos[task_id])))
            claims = bulk.claim_all(self.client, outgoing)
        except BaseException:
            # Claims may have entered jobs in info (submission.Books).
            self._unregister(list(infos))
            for payload in stored.values():
                payloads.discard(payload)
            raise
        for job, claim in zip(outgoing, claims, strict=True):
            if not claim.fresh:     # the earlier job has its own copy
                payloads.discard(stored.pop(job.task_id))

        def register(chunk: list[bulk.Outgoing]) -> None:
            self._register_many([(j.task_id, infos[j.task_id],
                                  books.encode_job(stored[j.task_id],
                                                   encoded.get(j.task_id)))
                                 for j in chunk])

        def undo(chunk: list[bulk.Outgoing]) -> None:
            self._unregister([j.task_id for j in chunk])
            for j in chunk:
                payloads.discard(stored[j.task_id])

        return bulk.send_all(self.client, outgoing, claims, register, undo)

    def get_collectable_jobs(self) -> list[CeleryJob]:
        """The jobs to collect now, oldest first: up to ``collect_batch``
        finished ones (marked by the workers), hand-outs whose call never
        returned within ``handoff_timeout`` (unless only ack_jobs
        confirms, a returned result awaiting the next call is not listed
        again), and from a window of ``sweep_batch`` outstanding jobs
        taken in turn the first ``waiting_batch`` (reporting the waiting
        ones) and those finished or lost that no worker marked. Four round
        trips, whatever the backlog."""
        redis = self.redis
        pipe = redis.pipeline(transaction=False)
        pipe.time()
        pipe.zrange(self._key('done'), 0, self.collect_batch - 1)
        pipe.get(self._key('sweep'))
        (seconds, micros), finished, cursor = pipe.execute()
        now = seconds + micros / 1e6
        ids = _unique(self._text_ids(finished))
        ids += self._expired_and_window(now, cursor, set(ids))
        return self._listable(ids, now)

    def iter_jobs(self) -> Iterator[CeleryJob]:
        """Every job on the books not yet handed back (what
        get_collectable_jobs listed before issue 30), oldest first, read
        BATCH at a time. O(N): for tools and test helpers
        (client.testing), never for the collect cycle."""
        redis = self.redis
        after = '-inf'
        while True:
            page = redis.zrangebyscore(self._key('order'), after, '+inf',
                                       start=0, num=BATCH, withscores=True)
            if not page:
                return
            seconds, micros = redis.time()
            yield from self._listable(self._text_ids([i for i, _ in page]),
                                      seconds + micros / 1e6)
            after = f'({page[-1][1]!r}'

    def _listable(self, ids: list[str], now: float) -> list[CeleryJob]:
        """The jobs among ``ids`` a collect call may take now, in
        submission order; ids no longer on the books leave ``done``."""
        if not ids:
            return []
        redis = self.redis
        pipe = redis.pipeline(transaction=False)
        for chunk in _chunks(ids):
            pipe.hmget(self._key('info'), chunk)
            pipe.hmget(self._key('handed'), chunk)
            pipe.zmscore(self._key('order'), chunk)
        replies = pipe.execute()
        infos = [x for i in range(0, len(replies), 3) for x in replies[i]]
        handed = [x for i in range(1, len(replies), 3) for x in replies[i]]
        seqs = [x for i in range(2, len(replies), 3) for x in replies[i]]
        listed, gone, returned = [], [], []
        for task_id, raw, held, seq in zip(ids, infos, handed, seqs,
                                           strict=True):
            if raw is None:
                gone.append(task_id)    # collected since it was marked
                continue
            if held is not None:
                hand = _json_object(held)
                if hand.get('returned') and self.confirm_on_next_call:
                    # The caller has it; the next call confirms it (books
                    # of an earlier version did not list it in returned).
                    returned.append(task_id)
                    continue
                at = _number(hand.get('at'))
                if now - (0.0 if at > now + 1 else at) < \
                        self.handoff_timeout:
                    continue  # handed to a call moments ago (a time in
                    # the future is forged: it would hide the job forever)
            listed.append((float('inf') if seq is None else seq,
                           _celery_job(task_id, raw)))
        if gone:
            # Not (or no longer) on the books: out of done, and out of
            # order too (an entry there without info is no job of ours,
            # and would take a place in every sweep).
            pipe = redis.pipeline(transaction=False)
            for chunk in _chunks(gone):
                pipe.zrem(self._key('done'), *chunk)
                pipe.zrem(self._key('order'), *chunk)
            pipe.execute()
        if returned:
            for chunk in _chunks(returned):
                redis.sadd(self._key('returned'), *chunk)
        listed.sort(key=lambda pair: pair[0])
        return [job for _, job in listed]

    def _expired_and_window(self, now: float, cursor: Any,
                            seen: set[str]) -> list[str]:
        """Hand-outs that timed out, then from the sweep's next window of
        ``order`` (wrapping round) the first ``waiting_batch`` jobs and
        every finished or lost one, moving the sweep's cursor on."""
        try:
            after = float(cursor) if cursor is not None else float('-inf')
        except ValueError:
            after = float('-inf')   # a forged cursor starts a fresh sweep
        redis = self.redis
        pipe = redis.pipeline(transaction=False)
        pipe.zrangebyscore(self._key('handed_at'), '-inf',
                           now - self.handoff_timeout, start=0,
                           num=self.collect_batch)
        pipe.zrangebyscore(self._key('order'), f'({after}', '+inf', start=0,
                           num=self.sweep_batch, withscores=True)
        pipe.zrangebyscore(self._key('order'), '-inf', f'{after}', start=0,
                           num=self.sweep_batch, withscores=True)
        expired, tail, head = pipe.execute()
        window = (tail + head)[:self.sweep_batch]
        found: list[str] = []
        if window:
            # In Redis: which of the window's jobs have a final or no
            # result record (what no worker marked); the first
            # waiting_batch are listed anyway, for their statuses.
            pipe = redis.pipeline(transaction=False)
            pipe.set(self._key('sweep'), repr(float(window[-1][1])))
            for chunk in _chunks(self._text_ids([i for i, _ in window])):
                pipe.eval(scripts.SWEEP, 0, self._result_prefix(), *chunk)
            _, *replies = pipe.execute()
            found = [_text(i) for reply in replies for i in reply]
        waiting = fences.split_ids([i for i, _ in
                                    window[:self.waiting_batch]])[0]
        out = []
        for task_id in self._text_ids(expired) + waiting + found:
            if task_id not in seen:
                seen.add(task_id)
                out.append(task_id)
        return out

    def collect_jobs(self, jobs: list[CeleryJob]
                     ) -> tuple[list[JobReturnMsg], list[str]]:
        """Results of the finished jobs among ``jobs`` (in their order), and
        one status per job. Per ``BATCH`` jobs three round trips: confirm
        and read, hand out, mark returned."""
        jobs = list(jobs)
        first = True
        results: list[JobReturnMsg] = []
        words: list[str] = []
        for start in range(0, max(len(jobs), 1), BATCH):
            chunk_results, chunk_words = self._collect_chunk(
                jobs[start:start + BATCH], confirm=first and
                self.confirm_on_next_call)
            first = False
            results += chunk_results
            words += chunk_words
        return results, words

    def _collect_chunk(self, jobs: list[Any], confirm: bool
                       ) -> tuple[list[JobReturnMsg], list[str]]:
        if not jobs:
            if confirm:
                self._confirm_returned()
            return [], []
        ids = [_job_task_id(j) for j in jobs]
        backend = self.client.app.backend
        limits = records.RecordLimits.from_settings()
        keys = [backend.get_key_for_task(i) for i in ids]
        # Every state (a record over RECORD_MAX_BYTES stays in Redis), and
        # whether each job is still on the books, after phase 2 of the
        # earlier calls (what they returned, the caller has).
        pipe = self.redis.pipeline(transaction=False)
        if confirm:
            self._queue_confirm(pipe)
        pipe.eval(records.READ, len(keys), *keys, str(limits.max_bytes))
        pipe.hmget(self._key('info'), ids)
        *confirmed, raw_metas, registered = pipe.execute()
        if confirm:
            more = self._confirmed(confirmed[0])
            if more:
                self._confirm_returned()
        now = time.time()
        deadlines = Deadlines.from_settings()
        statuses = [_believed(i, raw, reg, now, limits, deadlines)
                    for i, raw, reg in zip(ids, raw_metas, registered,
                                           strict=True)]
        del raw_metas

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
            result, word = self._answer(job, task_id, status,
                                        _StoredJob(claimed[task_id], job,
                                                   task_id), reg)
            if result is not None:
                results.append(result)
            words.append(word)
        # Phase 1 done: these results reached the caller (or, with no
        # JobMsg to name them by, are left for the next call to drop).
        self._mark_returned(list(claimed))
        return results, words

    def _answer(self, job: Any, task_id: str, status: JobStatus,
                stored: _StoredJob, reg: Any) -> tuple[Any, str]:
        """One finished job's result in the caller's classes, and its word;
        whatever its records hold, this fails only this job. None for the
        result when no JobMsg names the job (CoralNet finds a job by its
        original_job): its status word says FAILED, and the next call
        drops it from the books."""
        family = _family(reg)
        try:
            msg, word = self._return_msg(job, status, stored)
            if msg.original_job is None:
                logger.error('%s: finished (%s), but its JobMsg in the books '
                             'cannot be read (%s), so no result names it; it '
                             'is dropped from the books.', job, word,
                             stored.problem() or 'missing')
                return None, 'FAILED'
            # PySpacer's classes are rebuilt from the JSON submitted.
            return in_callers_classes(
                msg, stored.original() if family is not None else None,
                family, job), word
        except Exception as e:  # a record no check above foresaw
            logger.exception('%s: its result could not be built', job)
            original = _as_job_msg_or_none(stored.original())
            if original is None:
                return None, 'FAILED'
            from spacer_worker.messages import JobReturnMsg
            return JobReturnMsg(original_job=original, ok=False,
                                results=None, error_message=failures.line(
                                    failures.BAD_RECORD,
                                    f'{job}: its records could not be read '
                                    f'({type(e).__name__}: {e}).')), 'FAILED'

    def ack_jobs(self, jobs: list[Any]) -> None:
        """Confirm that the caller stored the results of ``jobs``: they
        leave Redis now (without waiting for the next collect call)."""
        ids = [_job_task_id(j) for j in jobs]
        for chunk in _chunks(ids):
            self._confirmed(self.redis.eval(
                scripts.CONFIRM, len(self._book_keys()), *self._book_keys(),
                self._result_prefix(), 'ids', '0', *chunk))

    # --- helpers ------------------------------------------------------------------

    def _register(self, redis: Any, task_id: str, info: dict,
                  payload: Any) -> None:
        """Put a job on the books (before its message is sent)."""
        seq = redis.incr(self._key('seq'))
        pipe = redis.pipeline(transaction=True)
        pipe.hset(self._key('info'), task_id, json.dumps(info))
        pipe.hset(self._key('msgs'), task_id, books.encode_job(payload))
        pipe.zadd(self._key('order'), {task_id: seq})
        pipe.execute()

    def _register_many(self, entries: list[tuple[str, dict, bytes]]
                       ) -> None:
        """Put jobs (id, info, stored job) on the books in one
        transaction, numbered in order."""
        if not entries:
            return
        redis = self.redis
        last = redis.incrby(self._key('seq'), len(entries))
        first = last - len(entries) + 1
        pipe = redis.pipeline(transaction=True)
        pipe.hset(self._key('info'), mapping={
            task_id: json.dumps(info) for task_id, info, _ in entries})
        pipe.hset(self._key('msgs'), mapping={
            task_id: stored for task_id, _, stored in entries})
        pipe.zadd(self._key('order'), {
            task_id: first + n for n, (task_id, _, _) in enumerate(entries)})
        pipe.execute()

    def _claim(self, ids: list[str]) -> dict[str, bytes | None]:
        """Mark finished jobs handed to this call; return those it won
        (task id -> stored JobMsg). A job another call holds is not won,
        unless that call never returned within handoff_timeout."""
        won: dict[str, bytes | None] = {}
        call = f'{time.time():.6f}:{id(self):x}:{next(_calls)}'
        for chunk in _chunks(ids):
            replies = self.redis.eval(
                scripts.HAND_OUT, 4, self._key('handed'), self._key('msgs'),
                self._key('handed_at'), self._key('done'), call,
                str(self.handoff_timeout),
                '1' if self.confirm_on_next_call else '0', *chunk)
            for task_id, (took, stored) in zip(chunk, _pairs(replies),
                                               strict=True):
                if took:
                    won[task_id] = stored or None
        return won

    def _mark_returned(self, ids: list[str]) -> None:
        for chunk in _chunks(ids):
            self.redis.eval(scripts.RETURNED, 3, self._key('handed'),
                            self._key('handed_at'), self._key('returned'),
                            '1' if self.confirm_on_next_call else '0',
                            *chunk)

    def _books_entry(self, task_id: str, info: dict) -> Any:
        """What a dedupe claim checks an earlier job against (this
        queue's ``info``), and enters a new job there with."""
        from spacer_worker.client.submission import Books
        return Books(key=self._key('info'), entry=json.dumps(info))

    def _text_ids(self, raws: list[Any]) -> list[str]:
        """Ids read from the books, as text; any other (not UTF-8, empty,
        too long: not one this queue wrote) is fenced off the books now,
        so it cannot fail a cycle again."""
        good, bad = fences.split_ids(list(raws))
        if bad:
            logger.warning('Fencing off %d id(s) in the books %r that are '
                           'not task ids (e.g. %r).', len(bad), self.prefix,
                           bad[0][:80] if isinstance(bad[0], bytes)
                           else bad[0])
            pipe = self.redis.pipeline(transaction=False)
            for chunk in _chunks(bad):
                for name in ('order', 'done', 'handed_at'):
                    pipe.zrem(self._key(name), *chunk)
                for name in ('info', 'msgs', 'handed'):
                    pipe.hdel(self._key(name), *chunk)
                pipe.srem(self._key('returned'), *chunk)
            pipe.execute()
        return good

    def _book_keys(self) -> list[str]:
        return [self._key(name) for name in (
            'handed', 'info', 'msgs', 'order', 'handed_at', 'done',
            'returned')]

    def _result_prefix(self) -> str:
        # The result keys' prefix (celery-task-meta-, with any prefix).
        sample = _text(self.client.app.backend.get_key_for_task('x'))
        return sample[:-1]

    def _queue_confirm(self, pipe: Any) -> None:
        """Phase 2, queued on ``pipe``: drop up to BATCH results that
        earlier calls returned, from the books and the result backend."""
        pipe.eval(scripts.CONFIRM, len(self._book_keys()), *self._book_keys(),
                  self._result_prefix(), 'pop', str(BATCH))

    def _confirm_returned(self) -> None:
        """Phase 2 for every returned result, BATCH at a time."""
        while self._confirmed(self.redis.eval(
                scripts.CONFIRM, len(self._book_keys()), *self._book_keys(),
                self._result_prefix(), 'pop', str(BATCH))):
            pass

    def _confirmed(self, reply: list) -> int:
        """Discard the stored payloads a confirm dropped (each only at its
        own job's location, whatever its record names); how many returned
        results are left to confirm."""
        left, *dropped = reply or [0]
        for raw_id, raw in zip(dropped[::2], dropped[1::2], strict=True):
            # An offloaded job's reference (kept as JSON text): handed back
            # with its full original_job, its stored copy is not needed.
            task_id = fences.task_id(raw_id)
            ref = _json_object(raw) if raw and raw[:1] in (b'{', '{') \
                else None
            if task_id is None or not ref:
                continue
            if fences.own_payload(ref, task_id):
                payloads.discard(ref)
            else:
                logger.warning('Task %s: its books name a stored payload '
                               'that is not its own; not deleted.', task_id)
        return int(left)

    def _unregister(self, ids: list[str]) -> None:
        pipe = self.redis.pipeline(transaction=True)
        for task_id in ids:
            pipe.hdel(self._key('info'), task_id)
            pipe.hdel(self._key('msgs'), task_id)
            pipe.zrem(self._key('order'), task_id)
        pipe.execute()

    def _return_msg(self, job: Any, status: JobStatus,
                    stored_job: _StoredJob) -> tuple[JobReturnMsg, str]:
        from spacer_worker.messages import JobReturnMsg

        # Every reason ends in a line CoralNet classifies (failures.py).
        word = _STATUS_WORDS[status.state]
        mismatch = stored_job.mismatch(status.result) \
            if status.state is JobState.SUCCESS else None
        if mismatch is not None:
            # A result for another job, or one nothing can check.
            reason = failures.line(
                failures.BAD_RECORD,
                f'{job}: its result record is not believed: {mismatch}.')
            word = 'FAILED'
        elif status.state is JobState.SUCCESS:
            try:
                msg = JobReturnMsg.deserialize(status.result)
                # The JobMsg as submitted, kept in the books (an offloaded
                # one re-read from storage), not the record's say-so.
                full = _as_job_msg(stored_job.original())
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
                failures.LOST, status.error
                if status.error_type == 'ResultLostError' else
                f'{job}: its result expired or was lost before it was '
                f'collected (result backend has no record of it).')
        elif status.error_class == failures.BAD_RECORD and \
                status.error_type == 'RecordError' and not status.traceback:
            reason = failures.line(failures.BAD_RECORD,
                                   f'{job}: {status.error}')
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
        return JobReturnMsg(
            original_job=_as_job_msg_or_none(stored_job.original()),
            ok=False, results=None, error_message=reason), word


_calls = itertools.count()


def _job_item(item: Any) -> tuple[Any, Any, Any]:
    """(job_msg, job_id, spec_level) of one submit_jobs entry."""
    if isinstance(item, (tuple, list)) and len(item) in (2, 3):
        return item[0], item[1], item[2] if len(item) == 3 else None
    raise MessageError(f'submit_jobs takes (job_msg, job_id) or (job_msg, '
                       f'job_id, spec_level) entries, got {item!r:.200}.')


def _pairs(flat: list) -> list[tuple[int, Any]]:
    return [(int(flat[i]), flat[i + 1]) for i in range(0, len(flat), 2)]


def _chunks(ids: list[str]) -> list[list[str]]:
    return [ids[i:i + BATCH] for i in range(0, len(ids), BATCH)]


def _unique(ids: list[str]) -> list[str]:
    return list(dict.fromkeys(ids))


def _celery_job(task_id: str, raw: Any) -> CeleryJob:
    """A listed job from its info record; a malformed record is listed
    too (job_id None), so that collect_jobs fails it and it leaves the
    books, rather than staying on them unlisted."""
    info = fences.books_info(_json_object(raw))
    if info is None:
        logger.warning('Job %s: its books record is malformed; listed so '
                       'that collect_jobs fails it.', task_id)
        return CeleryJob(task_id=task_id, job_id=None, spec_level=None,
                         queue='?', submitted_at=0.0)
    return CeleryJob(task_id=task_id, job_id=info['job_id'],
                     spec_level=info.get('spec_level'),
                     queue=info['queue'],
                     submitted_at=float(info['submitted_at']))


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
