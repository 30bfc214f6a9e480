"""CeleryQueue at CoralNet's scale (issue 30), against real Redis and real
workers: a cycle costs what finished, not what waits; batches lose and
repeat nothing; a queued job is kept once."""

from __future__ import annotations

import json
import math
import random
import uuid

import pytest

from spacer_worker.celery import books
from spacer_worker.client import coralnet, submission
from spacer_worker.client.coralnet import CeleryQueue
from spacer_worker.client.jobs import Client, JobState
from spacer_worker.exceptions import PayloadError
from spacer_worker.messages import JobMsg
from tests.client.helpers import extract_job, extract_msg, write_image
from tests.client.test_coralnet_queue import _RoundTrips
from tests.services import wait_for


@pytest.fixture
def nobody(monkeypatch) -> str:
    """A queue of this test's own that no worker consumes, where
    CoralNet's medium spec level sends its jobs."""
    name = f'nobody-{uuid.uuid4().hex[:8]}'
    monkeypatch.setenv('SPACER_CORALNET_SPEC_QUEUES', f'medium={name}')
    return name


def _queue(app, **options) -> CeleryQueue:
    return CeleryQueue(app, prefix=f'test:{uuid.uuid4().hex[:8]}:', **options)


@pytest.fixture
def image(tmp_path):
    return write_image(tmp_path / 'img.png')


def _submit(queue, image, tmp_path, job_ids, spec='medium'):
    return [queue.submit_job(extract_job([image], tmp_path, token=str(j)), j,
                             spec)
            for j in job_ids]


def _wait_finished(queue, handles):
    wait_for(lambda: all(s.finished for s in queue.client.statuses(handles)),
             90, what='jobs finished')


def _cycle(queue):
    """One of CoralNet's collect cycles: list, then collect by 100."""
    jobs = queue.get_collectable_jobs()
    results, words = [], []
    for start in range(0, len(jobs), 100):
        chunk_results, chunk_words = queue.collect_jobs(
            jobs[start:start + 100])
        results += chunk_results
        words += chunk_words
    return jobs, results, words


def test_workers_mark_finished_jobs_where_the_collector_finds_them(
        app, image, tmp_path, celery_worker):
    # Given a sweep that looks at one waiting job per cycle
    queue = _queue(app, sweep_batch=1)
    handles = _submit(queue, image, tmp_path, range(1, 5))
    _wait_finished(queue, handles)

    # The workers marked all four as they stored their results
    done = queue.redis.zrange(queue._key('done'), 0, -1)
    assert sorted(i.decode() for i in done) == sorted(h.id for h in handles)
    # So one cycle lists and collects all four, in submission order
    jobs, results, words = _cycle(queue)
    assert [j.job_id for j in jobs] == [1, 2, 3, 4]
    assert words == ['SUCCEEDED'] * 4 and all(r.ok for r in results)
    assert queue.redis.zcard(queue._key('done')) == 0


def test_a_cycle_with_none_finished_costs_the_same_at_any_backlog(
        app, image, tmp_path, monkeypatch, nobody):
    queue = _queue(app, sweep_batch=200, waiting_batch=50)

    def cost():
        with monkeypatch.context() as m:
            trips = _RoundTrips(m)
            jobs, results, words = _cycle(queue)
        return trips.count, len(jobs), results, set(words)

    _submit(queue, image, tmp_path, range(60))
    small = cost()
    _submit(queue, image, tmp_path, range(60, 800))
    large = cost()

    # Ten times the backlog: the same round trips, the same jobs looked at
    assert small[0] == large[0], (small[0], large[0])
    assert small[1] == large[1] == 50
    assert small[2] == large[2] == [] and large[3] == {'PENDING'}


def test_the_sweep_finds_a_lost_job_no_worker_marked(app, image, tmp_path,
                                                     nobody):
    # 4 waiting jobs checked per cycle, 1 of them listed for its status
    queue = _queue(app, sweep_batch=4, waiting_batch=1)
    handles = _submit(queue, image, tmp_path, range(1, 8))
    # The result backend loses job 6's record: nothing marks it finished
    app.backend.client.delete(app.backend.get_key_for_task(handles[5].id))

    found, cycles = [], 0
    while not found:
        cycles += 1
        assert cycles <= math.ceil(7 / 4) + 1, 'the sweep never got there'
        jobs, results, words = _cycle(queue)
        assert len(jobs) <= 2
        found = [j.job_id for j, w in zip(jobs, words, strict=True)
                 if w == 'DROPPED']
    assert found == [6] and len(results) == 1
    result = results[0]
    assert not result.ok
    assert result.original_job.tasks[0].job_token == '6'
    # The others still wait; job 6 is never listed again
    queue.collect_jobs([])
    later = [j.job_id for _ in range(4) for j in queue.get_collectable_jobs()]
    assert later and 6 not in later
    assert queue.redis.hlen(queue._key('info')) == 6


def test_batched_collection_hands_every_job_back_exactly_once(
        app, image, tmp_path, celery_worker, monkeypatch):
    # Batches far smaller than the work: 3 finished jobs listed per cycle,
    # 4 ids per Redis command or script, 1 waiting job swept
    monkeypatch.setattr(coralnet, 'BATCH', 4)
    queue = _queue(app, collect_batch=3, sweep_batch=1)
    handles = _submit(queue, image, tmp_path, range(1, 12))
    _wait_finished(queue, handles)

    tokens, cycles = [], 0
    while True:
        jobs, results, words = _cycle(queue)
        if not jobs:
            break
        cycles += 1
        assert len(jobs) <= 3 + 1 and cycles < 20
        assert set(words) <= {'SUCCEEDED', 'COLLECTED'}
        tokens += [r.original_job.tasks[0].job_token for r in results]
    assert sorted(tokens, key=int) == [str(i) for i in range(1, 12)]
    assert cycles >= 4
    # The last call confirmed everything, in batches: nothing left behind
    queue.collect_jobs([])
    for name in ('info', 'msgs', 'order', 'handed', 'handed_at', 'done',
                 'returned'):
        assert not queue.redis.exists(queue._key(name)), name
    assert not any(queue.redis.exists(app.backend.get_key_for_task(h.id))
                   for h in handles)


def test_one_call_over_many_batches_keeps_order_and_confirms_all(
        app, image, tmp_path, celery_worker, monkeypatch):
    monkeypatch.setattr(coralnet, 'BATCH', 4)
    queue = _queue(app)
    handles = _submit(queue, image, tmp_path, range(1, 11))
    _wait_finished(queue, handles)

    results, words = queue.collect_jobs(queue.get_collectable_jobs())
    assert words == ['SUCCEEDED'] * 10
    assert [r.original_job.tasks[0].job_token for r in results] == \
        [str(i) for i in range(1, 11)]
    assert queue.redis.scard(queue._key('returned')) == 10
    # The next call confirms all ten, four at a time
    assert queue.collect_jobs([]) == ([], [])
    assert queue.redis.scard(queue._key('returned')) == 0
    assert queue.redis.hlen(queue._key('info')) == 0


def test_a_queued_200_point_job_takes_at_most_5_kb_of_redis(
        app, image, tmp_path, nobody):
    queue = _queue(app)
    # CoralNet's random points on a 4000 x 3000 image (incompressible)
    rng = random.Random(30)
    rowcols = [(rng.randrange(1000, 3000), rng.randrange(1000, 4000))
               for _ in range(200)]

    def job(n: int) -> JobMsg:
        return JobMsg(task_name='extract_features', tasks=[extract_msg(
            image, tmp_path / f'site/image-{n:08d}.featurevector',
            token=str(n), rowcols=rowcols)])
    assert len(json.dumps(job(0).serialize())) > 3000   # issue 30: 3.2 KB
    handles = [queue.submit_job(job(n), n, 'medium') for n in range(200)]
    handles += queue.submit_jobs([(job(n), n, 'medium')
                                  for n in range(200, 400)])

    # Every key a queued job adds: the books, its PENDING record, its
    # dedupe key and its broker message
    redis = queue.redis
    keys = [queue._key(name) for name in ('info', 'msgs', 'order', 'seq')]
    keys += [app.backend.get_key_for_task(h.id) for h in handles]
    keys += [submission.dedupe_key('spacer.process_job', None,
                                   f'{queue.prefix}job:{n}')
             for n in range(400)]
    keys += [k for k in redis.scan_iter(f'{nobody}*')]
    assert all(redis.exists(k) for k in keys)
    total = sum(redis.memory_usage(k, samples=0) for k in keys)
    assert total / 400 <= 5000, f'{total / 400:.0f} bytes per queued job'


def test_a_reference_reads_only_its_own_tasks_entry(app, image, tmp_path,
                                                    celery_worker):
    # A message that points at the books but whose task is not on them
    queue = _queue(app)
    queue.submit_job(extract_job([image], tmp_path, token='1'), 1,
                     'medium')
    forged = books.reference(queue.prefix, {'task_name': 'extract_features'})
    handle = Client(app).send('spacer.process_job', forged, queue='extract')
    wait_for(lambda: Client(app).status(handle).finished, 60,
             what='the forged job to end')
    status = Client(app).status(handle)
    assert status.state is JobState.FAILURE
    assert status.error_type == 'PayloadError'
    assert 'not in the books' in status.error


def test_a_stored_job_is_inflated_only_up_to_the_limit():
    record = books.encode_job({'tasks': ['x' * 100_000]})
    assert len(record) < 1000
    assert books.decode_job(record, 200_000) == {'tasks': ['x' * 100_000]}
    with pytest.raises(PayloadError, match='inflates past'):
        books.decode_job(record, 50_000)
    with pytest.raises(PayloadError, match='zlib'):
        books.decode_job(b'z1:' + b'\x00' * 20, 1000)
    with pytest.raises(PayloadError, match='truncated'):
        books.decode_job(record[:len(record) // 2], 200_000)
    # The earlier format, JSON text, still reads
    assert books.decode_job(b'{"a": 1}', 100) == {'a': 1}



def _queued(redis, queue: str) -> int:
    """Messages waiting on a broker queue, over its priority lists."""
    return sum(redis.llen(key) for key in redis.scan_iter(f'{queue}*')
               if redis.type(key) == b'list')


def test_submit_jobs_keeps_order_and_idempotency_in_bulk(
        app, image, tmp_path, nobody):
    queue = _queue(app)

    def job(n):
        return extract_job([image], tmp_path, token=str(n))
    first = queue.submit_jobs([(job(1), 1, 'medium'), (job(2), 2, 'medium'),
                               (job(1), 1, 'medium'), (job(3), 3, 'medium')])
    # A job id named twice in one call is one job
    assert first[2] == first[0] and len({h.id for h in first}) == 3
    # A job id still pending gets its earlier handle in a later call too
    second = queue.submit_jobs([(job(2), 2, 'medium'), (job(4), 4, 'medium')])
    assert second[0] == first[1]
    assert queue.submit_job(job(3), 3, 'medium') == first[3]
    assert [j.job_id for j in queue.get_collectable_jobs()] == [1, 2, 3, 4]
    assert _queued(queue.redis, nobody) == 4


def test_submitted_in_bulk_runs_and_is_collected(app, image, tmp_path,
                                                  celery_worker):
    queue = _queue(app)
    handles = queue.submit_jobs(
        [(extract_job([image], tmp_path, token=str(n)), n) for n in range(6)])
    _wait_finished(queue, handles)
    jobs, results, words = _cycle(queue)
    assert [j.job_id for j in jobs] == list(range(6))
    assert words == ['SUCCEEDED'] * 6
    assert [r.original_job.tasks[0].job_token for r in results] == \
        [str(n) for n in range(6)]


def test_a_failed_bulk_send_keeps_what_went_and_takes_back_the_rest(
        app, image, tmp_path, monkeypatch, nobody):
    from kombu.exceptions import OperationalError

    from spacer_worker.client import bulk
    monkeypatch.setattr(bulk, 'CHUNK', 2)
    queue = _queue(app)
    jobs = [(extract_job([image], tmp_path, token=str(n)), n, 'medium')
            for n in range(5)]
    # The broker refuses the third message (a fault a live Redis cannot be
    # made to produce on demand): patch the publish itself.
    publish = app.amqp.send_task_message
    sent = []

    def refuse_third(*args, **kwargs):
        if len(sent) == 2:
            raise OperationalError('broker unavailable')
        sent.append(args)
        return publish(*args, **kwargs)
    with monkeypatch.context() as m:
        m.setattr(app.amqp, 'send_task_message', refuse_third)
        with pytest.raises(OperationalError):
            queue.submit_jobs(jobs)
    # The first chunk stands; the rest left no books entry and no claim
    assert [j.job_id for j in queue.get_collectable_jobs()] == [0, 1]
    assert queue.redis.hlen(queue._key('msgs')) == 2
    # So the same call again sends the rest, once
    again = queue.submit_jobs(jobs)
    assert [j.job_id for j in queue.get_collectable_jobs()] == [0, 1, 2, 3, 4]
    assert len({h.id for h in again}) == 5
    assert _queued(queue.redis, nobody) == 5


def test_results_returned_under_the_earlier_books_are_still_confirmed(
        app, image, tmp_path, celery_worker):
    # Books of the earlier version: a returned result is known by its
    # handed record only (no returned set, no handed_at)
    queue = _queue(app)
    handles = _submit(queue, image, tmp_path, range(1, 4))
    _wait_finished(queue, handles)
    results, _ = queue.collect_jobs(queue.get_collectable_jobs())
    assert len(results) == 3
    queue.redis.delete(queue._key('returned'), queue._key('handed_at'))

    # The sweep finds them, lists none again, and the next call confirms
    assert queue.get_collectable_jobs() == []
    assert queue.collect_jobs([]) == ([], [])
    assert queue.redis.hlen(queue._key('info')) == 0
    assert not any(queue.redis.exists(app.backend.get_key_for_task(h.id))
                   for h in handles)
