"""Many jobs sent in a few round trips, with one job's guarantees each.

``CeleryQueue.submit_jobs`` enqueues a CoralNet source's backlog (tens of
thousands of extraction jobs) at once. Sent one by one, each job costs a
dedupe claim, a books write and a publish, plus the Redis result backend's
pub/sub subscribe and unsubscribe that ``send_task`` does for an
``AsyncResult`` nobody waits on: ~660 jobs/s (issue 30). Here:

* every claim (:mod:`submission`'s script, in list order, so a job named
  twice in one call is claimed once) goes in one pipeline;
* the caller's books writes for all new jobs go in one transaction per
  ``CHUNK``;
* the messages are built by Celery (``create_task_message``: the same
  headers and body as ``send_task``) and published through kombu's
  pipelined publish batch, ``CHUNK`` at a time (one message at a time on
  a kombu without ``Producer.batch``).

A chunk whose publish fails is undone with every later one (claims
released, books entries removed, the failure raised); earlier chunks
stand, so calling again with the same jobs returns their handles (their
claims hold) and sends the rest.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from spacer_worker.client import submission
from spacer_worker.client.jobs import Client, JobHandle

CHUNK = 500     # claims, books writes and publishes per round trip


@dataclass
class Outgoing:
    """One job to send: payload and options as ``Client.send`` takes."""

    task: str
    payload: Any
    task_id: str
    options: dict              # celery send options: queue, limits, priority
    idempotency_key: str | None = None
    headers: dict = field(default_factory=dict)
    # A queue's books (submission.Books): a dedupe hit counts only there.
    books: submission.Books | None = None


def claim_all(client: Client, jobs: Sequence[Outgoing]
              ) -> list[submission.Claim]:
    """The claim of each job, in order, in one pipeline per CHUNK."""
    backend = client.app.backend
    redis = submission.redis_of(backend)
    mode = submission.dedupe_mode()
    claims: list[submission.Claim | None] = [None] * len(jobs)
    todo = []
    for index, job in enumerate(jobs):
        key = submission.dedupe_key(job.task, job.payload,
                                    job.idempotency_key)
        if key is None or mode is submission.DedupeMode.OFF or redis is None:
            client._mark_submitted(job.task_id, client.pending_ttl(job.options))
            claims[index] = submission.Claim(id=job.task_id,
                                             queue=job.options['queue'],
                                             fresh=True)
        else:
            todo.append((index, key))
    if todo:
        window = submission.dedupe_window()
        script = redis.register_script(submission.CLAIM_SCRIPT)
        for start in range(0, len(todo), CHUNK):
            part = todo[start:start + CHUNK]
            pipe = redis.pipeline(transaction=False)
            for index, key in part:
                job = jobs[index]
                submission.queue_claim(
                    script, pipe, backend, key, job.task_id,
                    job.options['queue'],
                    client._pending_record(job.task_id), mode, window,
                    client.pending_ttl(job.options), job.books)
            for (index, key), reply in zip(part, pipe.execute(),
                                           strict=True):
                job = jobs[index]
                claims[index] = submission.claimed(
                    reply, key, job.task_id, job.options['queue'])
    return [c for c in claims if c is not None]


def send_all(client: Client, jobs: Sequence[Outgoing],
             claims: Sequence[submission.Claim],
             before_send: Callable[[list[Outgoing]], None],
             undo: Callable[[list[Outgoing]], None]) -> list[JobHandle]:
    """Publish the jobs whose claim is fresh, CHUNK at a time, after
    ``before_send(chunk)``; ``undo(jobs)`` takes back what was not sent."""
    handles = [JobHandle(id=c.id, task=job.task, queue=c.queue)
               for job, c in zip(jobs, claims, strict=True)]
    fresh = [(job, c) for job, c in zip(jobs, claims, strict=True)
             if c.fresh]
    app = client.app
    declared: set[str] = set()
    for start in range(0, len(fresh), CHUNK):
        part = fresh[start:start + CHUNK]
        try:
            before_send([job for job, _ in part])
            with app.producer_or_acquire() as producer:
                batch = getattr(producer, 'batch', None)
                with batch(2 * CHUNK) if batch is not None else \
                        contextlib.nullcontext():
                    for job, _ in part:
                        _publish(app, producer, job, declared)
        except BaseException:
            rest = fresh[start:]
            undo([job for job, _ in rest])
            for _, c in rest:
                client._unclaim(c)
            raise
    return handles


def _publish(app: Any, producer: Any, job: Outgoing,
             declared: set[str]) -> None:
    """What ``send_task`` publishes, without its AsyncResult (whose
    result-channel subscription is a round trip of its own). A queue is
    declared (its binding written) with its first message of the call."""
    import time

    amqp = app.amqp
    options = dict(job.options)
    time_limit = options.pop('time_limit', None)
    soft_time_limit = options.pop('soft_time_limit', None)
    options['headers'] = {**(options.get('headers') or {}), **job.headers,
                          'spacer_sent_at': time.time()}
    options = amqp.router.route(options, job.task, [job.payload], None, None)
    # Celery's saferepr of the arguments costs more than the rest of the
    # message; the payload here is a small reference, so repr() is safe.
    message = amqp.create_task_message(
        job.task_id, job.task, [job.payload], None, None, None, None, None,
        None, 0, None, None, None, app.thread_oid, time_limit,
        soft_time_limit, app.conf.task_send_sent_event, None, None, None,
        None, ignore_result=None, argsrepr=repr([job.payload])[:1024],
        kwargsrepr='{}', **options)
    for stamp in options.pop('stamped_headers', None) or []:
        options.pop(stamp, None)
    queue = job.options['queue']
    if queue in declared:
        options['declare'] = []
    amqp.send_task_message(producer, job.task, message, **options)
    declared.add(queue)
