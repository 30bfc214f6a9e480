"""CeleryQueue, CoralNet's job-queue interface, against real Redis and
real workers: order, chunks, no duplicates, failures and expiry."""

from __future__ import annotations

import time
import uuid
from enum import Enum

import pytest

from spacer_worker.celery.queues import parse_spec_queues
from spacer_worker.client.coralnet import CeleryQueue
from spacer_worker.client.jobs import Client, JobState
from spacer_worker.exceptions import ConfigError, ResultLostError
from spacer_worker.messages import JobMsg
from tests.client.helpers import LocalOnlyExtractor, extract_job, write_image
from tests.services import spawn_worker


class SpacerJobSpec(Enum):
    """CoralNet's spec levels (config.constants)."""
    MEDIUM = 'medium'
    HIGH = 'high'
    SHORT = 'short'   # routed to the short-expiry worker in these tests


@pytest.fixture
def queue(app):
    return CeleryQueue(app, prefix=f'test:{uuid.uuid4().hex[:8]}:')


@pytest.fixture
def image(tmp_path):
    return write_image(tmp_path / 'img.png')


def _job(image, tmp_path, job_id, extractor=None) -> JobMsg:
    return extract_job([image], tmp_path, token=str(job_id),
                       extractor=extractor)


def _wait_finished(client, handles, timeout=90):
    deadline = time.monotonic() + timeout
    while True:
        states = [s.state for s in client.statuses(handles)]
        if all(s.finished for s in states):
            return states
        assert time.monotonic() < deadline, f'not finished: {states}'
        time.sleep(0.1)


def test_spec_levels_map_to_queues(queue, image, tmp_path, monkeypatch):
    monkeypatch.setenv('SPACER_CORALNET_SPEC_QUEUES',
                       'extract_features:high=extract_big, short=expiring')
    job = _job(image, tmp_path, 1)
    assert queue.queue_for(job, SpacerJobSpec.HIGH) == 'extract_big'
    assert queue.queue_for(job, 'short') == 'expiring'
    assert queue.queue_for(job, SpacerJobSpec.MEDIUM) == 'extract'
    assert queue.queue_for(job, None) == 'extract'
    with pytest.raises(ConfigError, match='CORALNET_SPEC_QUEUES'):
        parse_spec_queues('high')


class _RoundTrips:
    """Counts commands our process writes to Redis (pipelines count once)."""

    def __init__(self, monkeypatch):
        from redis.connection import AbstractConnection
        self.count = 0
        original = AbstractConnection.send_packed_command

        def counting(conn, command, check_health=True):
            self.count += 1
            return original(conn, command, check_health)
        monkeypatch.setattr(AbstractConnection, 'send_packed_command', counting)


def test_collect_in_chunks_keeps_order_and_never_repeats(
        queue, image, tmp_path, celery_worker, monkeypatch):
    handles = [queue.submit_job(_job(image, tmp_path, job_id), job_id,
                                SpacerJobSpec.MEDIUM)
               for job_id in range(1, 151)]
    _wait_finished(queue.client, handles)

    jobs = queue.get_collectable_jobs()
    assert [j.job_id for j in jobs] == list(range(1, 151))

    collected, statuses = [], []
    trips = _RoundTrips(monkeypatch)
    for start in range(0, len(jobs), 100):         # CoralNet's batch size
        results, chunk_statuses = queue.collect_jobs(jobs[start:start + 100])
        collected.extend(results)
        statuses.extend(chunk_statuses)
    # confirm+read, hand out, mark returned: 3 per call
    assert 2 <= trips.count <= 6, f"{trips.count} round trips for 2 chunks"

    assert statuses == ['SUCCEEDED'] * 150
    assert [r.original_job.tasks[0].job_token for r in collected] == \
        [str(i) for i in range(1, 151)]
    assert all(r.ok for r in collected)

    # Collected jobs are gone; a stale list yields nothing twice.
    assert queue.get_collectable_jobs() == []
    again, again_statuses = queue.collect_jobs(jobs[:100])
    assert again == [] and set(again_statuses) == {'COLLECTED'}


def test_unfinished_jobs_stay_collectable(queue, image, tmp_path,
                                          monkeypatch):
    # No worker consumes this queue: the job waits and is reported PENDING.
    monkeypatch.setenv('SPACER_CORALNET_SPEC_QUEUES', 'medium=nobody-listens')
    queue.submit_job(_job(image, tmp_path, 8), 8, SpacerJobSpec.MEDIUM)
    jobs = queue.get_collectable_jobs()
    assert [j.job_id for j in jobs] == [8]

    results, statuses = queue.collect_jobs(jobs)

    assert results == [] and statuses == ['PENDING']
    assert queue.get_collectable_jobs() == jobs


def test_worker_failure_comes_back_as_not_ok(queue, image, tmp_path,
                                             celery_worker, monkeypatch):
    # The client allows an extractor class the workers do not: the worker
    # refuses the message for good (UnknownClassError), never running it.
    monkeypatch.setenv('SPACER_EXTRA_EXTRACTOR_CLASSES',
                       'tests.client.helpers.LocalOnlyExtractor')
    bad = _job(image, tmp_path, 2, extractor=LocalOnlyExtractor(feature_dim=8))
    good = _job(image, tmp_path, 3)
    handles = [queue.submit_job(good, 3), queue.submit_job(bad, 2),
               queue.submit_job(good, 4)]
    _wait_finished(queue.client, handles)

    results, statuses = queue.collect_jobs(queue.get_collectable_jobs())

    assert statuses == ['SUCCEEDED', 'FAILED', 'SUCCEEDED']
    assert [r.ok for r in results] == [True, False, True]
    failed = results[1]
    assert failed.original_job.tasks[0].job_token == '2'
    assert 'UnknownClassError' in failed.error_message
    assert 'job 2' in failed.error_message


@pytest.fixture(scope='module')
def expiring_worker(redis_url, worker_logs):
    """A worker whose results expire after 1 s."""
    worker = spawn_worker(redis_url, 'expiring', 'expiring', worker_logs,
                          RESULT_EXPIRES='1')
    yield worker
    worker.stop()


def test_expired_result_is_reported_not_skipped(queue, image, tmp_path,
                                                expiring_worker, monkeypatch):
    monkeypatch.setenv('SPACER_CORALNET_SPEC_QUEUES', 'short=expiring')
    handle = queue.submit_job(_job(image, tmp_path, 5), 5, SpacerJobSpec.SHORT)
    assert handle.queue == 'expiring'
    deadline = time.monotonic() + 60
    while queue.client.status(handle).state is not JobState.LOST:
        assert time.monotonic() < deadline, 'result never expired'
        time.sleep(0.2)
    with pytest.raises(ResultLostError, match='expired'):
        Client(queue.client.app).result(handle, timeout=5)

    results, statuses = queue.collect_jobs(queue.get_collectable_jobs())

    assert statuses == ['DROPPED']
    assert len(results) == 1 and not results[0].ok
    assert 'expired or was lost' in results[0].error_message
    assert results[0].original_job.tasks[0].job_token == '5'
    assert queue.get_collectable_jobs() == []
