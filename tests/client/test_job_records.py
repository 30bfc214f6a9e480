"""Job records: nothing collectable forever, nothing dropped on the way.

* a PENDING record whose message never runs turns LOST after
  JOB_MAX_QUEUE_WAIT plus the task's hard time limit;
* a send that fails leaves no record;
* CeleryQueue.collect_jobs is two-phase: a result leaves Redis only once
  the next collect call, or ack_jobs, confirms the caller has it.
"""

from __future__ import annotations

import uuid

import pytest

from spacer_worker.client.coralnet import CeleryQueue
from spacer_worker.client.jobs import Client, JobState
from tests.client.helpers import extract_job, write_image
from tests.services import wait_for


@pytest.fixture
def queue(app):
    return CeleryQueue(app, prefix=f'test:{uuid.uuid4().hex[:8]}:')


@pytest.fixture
def job(tmp_path):
    image = write_image(tmp_path / 'img.png')
    return extract_job([image], tmp_path, token='1')


def _finished_jobs(queue, job, count, celery_worker):
    handles = [queue.submit_job(job, n) for n in range(count)]
    wait_for(lambda: all(s.finished for s in
                         queue.client.statuses(handles)), 90,
             what='jobs finished')
    return queue.get_collectable_jobs()


def test_a_pending_record_turns_lost_after_the_wait_and_the_limit(
        app, job, monkeypatch):
    # Given no worker on the queue, at most 1 s of queue wait, 1 s limit
    monkeypatch.setenv('SPACER_JOB_MAX_QUEUE_WAIT', '1')
    monkeypatch.setenv('SPACER_EXTRACT_TIME_LIMIT', '1')
    client = Client(app)
    handle = client.submit(job, queue='nobody-listens')
    redis = app.backend.client
    ttl = redis.pttl(app.backend.get_key_for_task(handle.id))
    assert 0 < ttl <= 2000
    assert client.status(handle).state is JobState.PENDING
    # Then after wait + limit the job reads LOST (never PENDING forever)
    wait_for(lambda: client.status(handle).state is JobState.LOST, 5,
             what='LOST')


def test_a_failed_send_leaves_no_record(app, job, monkeypatch):
    from kombu.exceptions import OperationalError
    client = Client(app)
    task_id = str(uuid.uuid4())
    # The broker refuses the message (a fault a live Redis cannot be made
    # to produce on demand): patch the send itself.
    def refuse(*args, **kwargs):
        raise OperationalError('broker unavailable')
    monkeypatch.setattr(app, 'send_task', refuse)
    with pytest.raises(OperationalError):
        client.submit(job, task_id=task_id)
    assert app.backend.client.get(app.backend.get_key_for_task(task_id)) \
        is None
    assert client.status(task_id).state is JobState.LOST


def test_a_collector_crash_inside_collect_jobs_loses_nothing(
        queue, job, celery_worker, monkeypatch):
    jobs = _finished_jobs(queue, job, 3, celery_worker)
    queue.handoff_timeout = 0.5

    # When the collector dies in the middle of collect_jobs
    def crash(*args, **kwargs):
        raise KeyboardInterrupt('collector killed')
    with monkeypatch.context() as m:
        m.setattr(queue, '_return_msg', crash)
        with pytest.raises(KeyboardInterrupt):
            queue.collect_jobs(jobs)

    # Then, after the hand-off timeout, the next call hands all three back
    wait_for(lambda: len(queue.get_collectable_jobs()) == 3, 5,
             what='jobs collectable again')
    results, words = queue.collect_jobs(queue.get_collectable_jobs())
    assert words == ['SUCCEEDED'] * 3 and all(r.ok for r in results)


def test_a_result_leaves_redis_only_when_the_next_call_confirms_it(
        queue, job, celery_worker):
    jobs = _finished_jobs(queue, job, 2, celery_worker)
    backend = queue.client.app.backend
    keys = [backend.get_key_for_task(j.task_id) for j in jobs]

    results, words = queue.collect_jobs(jobs)
    assert words == ['SUCCEEDED'] * 2
    # Handed back, not yet confirmed: still in Redis, not listed again
    assert all(queue.redis.exists(k) for k in keys)
    assert queue.get_collectable_jobs() == []

    # The next call confirms: the results go, and are not handed twice
    again, words = queue.collect_jobs(jobs)
    assert again == [] and words == ['COLLECTED'] * 2
    assert not any(queue.redis.exists(k) for k in keys)


def test_ack_jobs_confirms_and_unacked_results_come_back(
        app, job, celery_worker):
    queue = CeleryQueue(app, prefix=f'test:{uuid.uuid4().hex[:8]}:',
                        handoff_timeout=0.5, confirm_on_next_call=False)
    jobs = _finished_jobs(queue, job, 2, celery_worker)
    first, _ = queue.collect_jobs(jobs)
    assert len(first) == 2
    queue.ack_jobs(jobs[:1])
    # The acked one is gone; the other comes back after the timeout
    wait_for(lambda: [j.task_id for j in queue.get_collectable_jobs()] ==
             [jobs[1].task_id], 5, what='unacked job listed again')
    again, words = queue.collect_jobs(queue.get_collectable_jobs())
    assert words == ['SUCCEEDED'] and len(again) == 1
    queue.ack_jobs(jobs[1:])
    assert queue.get_collectable_jobs() == []
