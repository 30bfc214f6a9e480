"""The web process holds its own line (issue 28, item 10): records read
back from Redis (results, CeleryQueue's books, dedupe keys) may be
malformed or forged, by a bug, a partial write, another version or a
broker user. The real client against a real Redis, and a real worker
wherever a result must be produced:

* one bad record fails only its own job (RecordError, a last line
  CoralNet sorts), every other job is collected in the same cycle, and
  the next cycle is clean;
* decoding is bounded before it starts (size, depth, no compressed form
  unless RECORD_COMPRESSION allows it, and then only up to the bound);
* a result must match the job it is collected for;
* only a job's own payload is discarded;
* a dedupe hit is honoured only for a job on the queue's own books;
* PENDING (or RUNNING) ends at the deadline counted from the submit time.

The CLI's side is in test_cli_hostile_records.py; the decoder's fuzz test
in test_record_fuzz.py.
"""

from __future__ import annotations

import json
import time
import uuid
import zlib
from pathlib import Path

import pytest

from spacer_worker.client import submission
from spacer_worker.client.coralnet import CeleryQueue
from spacer_worker.exceptions import failures
from tests.client.helpers import extract_job, write_image
from tests.services import wait_for

BAD_RECORD = 'spacer_worker.exceptions.RecordError'
# Celery's in-band marker of a compressed result (result_compression).
COMPRESSED_MAGIC = b'\x00celery-compressed\x00'


@pytest.fixture
def nobody(monkeypatch) -> str:
    """A queue no worker consumes, where CoralNet's medium jobs go."""
    name = f'nobody-{uuid.uuid4().hex[:8]}'
    monkeypatch.setenv('SPACER_CORALNET_SPEC_QUEUES', f'medium={name}')
    return name


@pytest.fixture
def queue(app) -> CeleryQueue:
    return CeleryQueue(app, prefix=f'hostile:{uuid.uuid4().hex[:8]}:')


@pytest.fixture
def image(tmp_path) -> Path:
    return write_image(tmp_path / 'img.png')


def _finished(queue, image, tmp_path, count, spec=None):
    """``count`` jobs (job id n, job token str(n)) run by the real worker."""
    handles = queue.submit_jobs([
        (extract_job([image], tmp_path, token=str(n)), n, spec)
        for n in range(count)])
    wait_for(lambda: all(s.finished for s in
                         queue.client.statuses(handles)), 180,
             what=f'{count} jobs finished')
    return handles


def _record_key(queue, handle) -> str:
    return queue.client.app.backend.get_key_for_task(handle.id)


def _coralnet_cycle(queue):
    """CoralNet's collect_spacer_jobs: list, collect by 100, handle each
    result by its original_job's job token (as CoralNet finds its Job)."""
    jobs = queue.get_collectable_jobs()
    handled, words = {}, []
    for start in range(0, len(jobs), 100):
        results, chunk_words = queue.collect_jobs(jobs[start:start + 100])
        words += chunk_words
        for result in results:
            token = result.original_job.tasks[0].job_token
            handled[token] = result
    return handled, words


def _queued(redis, name: str) -> int:
    """Messages waiting on queue ``name`` (one list per priority step)."""
    return sum(redis.llen(k) for k in redis.scan_iter(f'{name}*'))


def _books_empty(queue) -> bool:
    """Every structure of the books gone, once a collect call confirmed
    what the earlier ones returned."""
    queue.collect_jobs([])
    redis = queue.redis
    return all(redis.exists(queue.prefix + name) == 0 for name in (
        'order', 'info', 'msgs', 'done', 'handed', 'handed_at', 'returned'))


def _assert_failed_by_record(result):
    assert result.ok is False
    assert failures.error_class(result.error_message) == BAD_RECORD, \
        result.error_message


# --- one bad record among 100 ---------------------------------------------

def test_one_bad_record_among_100_finished_jobs_fails_only_its_own_job(
        queue, image, tmp_path, celery_worker):
    # Given 100 jobs the worker finished, one of whose results is not JSON
    handles = _finished(queue, image, tmp_path, 100)
    queue.redis.set(_record_key(queue, handles[37]), b'{"status": "SUCC')

    # When CoralNet runs one collect cycle
    handled, words = _coralnet_cycle(queue)

    # Then the other 99 are collected in that same cycle, and the bad one
    # fails alone, with a last line CoralNet sorts
    assert len(handled) == 100
    assert sorted(words) == ['FAILED'] + ['SUCCEEDED'] * 99
    assert all(handled[str(n)].ok for n in range(100) if n != 37)
    _assert_failed_by_record(handled['37'])
    assert 'not JSON' in handled['37'].error_message
    # And the next cycle is clean: nothing listed, nothing fails, and the
    # books are empty once a call confirmed what the first returned
    assert _coralnet_cycle(queue) == ({}, [])
    assert _books_empty(queue)


# --- every kind of malformed result record --------------------------------

_MALFORMED = {
    'not JSON': b'\x80not json at all',
    'a list instead of an object': b'[1, 2, 3]',
    'a status of the wrong type': b'{"status": ["SUCCESS"], "result": null}',
    'a traceback of the wrong type':
        b'{"status": "FAILURE", "result": {"exc_type": "ValueError"}, '
        b'"traceback": {"a": 1}}',
    'a result of the wrong shape': b'{"status": "SUCCESS", "result": 7}',
    'an exception of the wrong shape':
        b'{"status": "FAILURE", "result": {"exc_type": [1], "exc_module": '
        b'{"x": 2}, "exc_message": {"y": 3}}, "traceback": null}',
    'nested too deep': b'{"status": "SUCCESS", "result": ' + b'[' * 5000 +
        b']' * 5000 + b'}',
    'compressed': COMPRESSED_MAGIC + b'application/x-gzip\x00' +
        zlib.compress(b'{"status": "SUCCESS", "result": {}}'),
    'invalid UTF-8 inside a string': b'{"status": "SUCCESS\xff\xfe"}',
}


@pytest.mark.parametrize('kind', list(_MALFORMED))
def test_a_malformed_result_record_fails_only_its_own_job(
        kind, queue, image, tmp_path, celery_worker):
    handles = _finished(queue, image, tmp_path, 3)
    queue.redis.set(_record_key(queue, handles[1]), _MALFORMED[kind])

    handled, words = _coralnet_cycle(queue)

    assert sorted(handled) == ['0', '1', '2']
    assert handled['0'].ok and handled['2'].ok
    assert words[1] == 'FAILED'
    if kind == 'an exception of the wrong shape':
        # Decodable as a failure: it stays one, under a class CoralNet
        # can sort, not the record's mangled names
        assert handled['1'].ok is False
        assert failures.error_class(handled['1'].error_message) == \
            'RuntimeError', handled['1'].error_message
    else:
        _assert_failed_by_record(handled['1'])
    assert _coralnet_cycle(queue) == ({}, [])
    assert _books_empty(queue)


def test_a_record_over_the_size_bound_is_never_read(
        queue, image, tmp_path, celery_worker, monkeypatch):
    handles = _finished(queue, image, tmp_path, 2)
    monkeypatch.setenv('SPACER_RECORD_MAX_BYTES', str(64 * 1024))
    queue.redis.set(_record_key(queue, handles[0]),
                    b'{"status": "SUCCESS", "result": "' + b'x' * 200_000 +
                    b'"}')

    handled, words = _coralnet_cycle(queue)

    _assert_failed_by_record(handled['0'])
    assert 'over RECORD_MAX_BYTES' in handled['0'].error_message
    assert handled['1'].ok
    assert words == ['FAILED', 'SUCCEEDED']


def _bomb(inflated: int) -> bytes:
    """Celery's compressed form of ``inflated`` bytes of JSON whitespace."""
    out = zlib.compressobj(9)
    body = [out.compress(b'{"status": "SUCCESS", "result": {}')]
    chunk = b' ' * (1 << 20)
    for _ in range(inflated >> 20):
        body.append(out.compress(chunk))
    body.append(out.compress(b'}') + out.flush())
    return COMPRESSED_MAGIC + b'application/x-gzip\x00' + b''.join(body)


def test_a_compressed_record_inflates_only_where_allowed_and_then_bounded(
        queue, image, tmp_path, celery_worker, monkeypatch):
    handles = _finished(queue, image, tmp_path, 3)
    bomb = _bomb(512 << 20)          # ~0.5 MB of Redis, 512 MiB inflated
    assert len(bomb) < 1 << 20
    queue.redis.set(_record_key(queue, handles[0]), bomb)
    # A genuine compressed result, as Celery's result_compression writes
    genuine = json.loads(queue.redis.get(_record_key(queue, handles[2])))
    queue.redis.set(_record_key(queue, handles[2]),
                    COMPRESSED_MAGIC + b'application/x-gzip\x00' +
                    zlib.compress(json.dumps(genuine).encode()))

    # Refused while the operator has not enabled it
    assert queue.client.status(handles[0]).error_type == 'RecordError'
    assert 'RECORD_COMPRESSION' in queue.client.status(handles[2]).error

    # Enabled: the genuine one reads, the bomb stops at the bound
    monkeypatch.setenv('SPACER_RECORD_COMPRESSION', 'zlib')
    handled, words = _coralnet_cycle(queue)
    _assert_failed_by_record(handled['0'])
    assert 'inflates past RECORD_MAX_BYTES' in handled['0'].error_message
    assert handled['1'].ok and handled['2'].ok
    assert words == ['FAILED', 'SUCCEEDED', 'SUCCEEDED']


# --- a result must match its job ------------------------------------------

def test_a_result_written_for_another_job_is_not_believed(
        queue, image, tmp_path, celery_worker):
    handles = _finished(queue, image, tmp_path, 4)
    redis = queue.redis
    records = [json.loads(redis.get(_record_key(queue, h))) for h in handles]
    # Job 0's record copied over job 1's (it names task 0)
    redis.set(_record_key(queue, handles[1]), json.dumps(records[0]))
    # Job 0's result under job 2's own task id (it answers job 0)
    forged = dict(records[0], task_id=handles[2].id)
    redis.set(_record_key(queue, handles[2]), json.dumps(forged))
    # Job 3's result with one task result too many
    extra = json.loads(json.dumps(records[3]))
    extra['result']['results'].append(extra['result']['results'][0])
    redis.set(_record_key(queue, handles[3]), json.dumps(extra))

    handled, words = _coralnet_cycle(queue)

    assert words == ['SUCCEEDED', 'FAILED', 'FAILED', 'FAILED']
    assert handled['0'].ok
    for token in '123':
        # Each comes back under its own JobMsg, never another job's
        assert [t.job_token for t in handled[token].original_job.tasks] \
            == [token]
        _assert_failed_by_record(handled[token])
    assert 'another task' in handled['1'].error_message
    assert 'answers another job' in handled['2'].error_message
    assert '2 task results for a job of 1 tasks' in \
        handled['3'].error_message


# --- the books ------------------------------------------------------------

def test_malformed_books_records_fail_only_their_own_jobs(
        queue, image, tmp_path, celery_worker):
    handles = _finished(queue, image, tmp_path, 4)
    redis = queue.redis
    # Job 0's info is not JSON, job 1's is a list, job 2's stored JobMsg
    # cannot be read; ids that are not text sit in order and done
    redis.hset(queue.prefix + 'info', handles[0].id, b'\xff{')
    redis.hset(queue.prefix + 'info', handles[1].id, b'[1]')
    redis.hset(queue.prefix + 'msgs', handles[2].id, b'z1:not zlib')
    redis.zadd(queue.prefix + 'order', {b'\xff\xfe\x00bad': 0})
    redis.zadd(queue.prefix + 'done', {b'\xc3\x28': 0, b'x' * 300: 1})

    handled, words = _coralnet_cycle(queue)

    assert words == ['FAILED', 'FAILED', 'FAILED', 'SUCCEEDED']
    _assert_failed_by_record(handled['0'])
    _assert_failed_by_record(handled['1'])
    # No JobMsg names job 2: no result to misfile, FAILED in the words
    assert '2' not in handled
    assert handled['3'].ok
    # The ids that are not text were fenced off; the next cycle is clean
    assert _coralnet_cycle(queue) == ({}, [])
    assert _books_empty(queue)


# --- payloads -------------------------------------------------------------

def test_confirming_a_job_deletes_only_its_own_payload(
        queue, image, tmp_path, monkeypatch, nobody):
    # Given offloaded jobs, where job 0's books name job 1's payload
    store = tmp_path / 'payloads'
    store.mkdir()
    monkeypatch.setenv('SPACER_PAYLOAD_LOCATION', str(store))
    monkeypatch.setenv('SPACER_PAYLOAD_OFFLOAD_BYTES', '10')
    h0 = queue.submit_job(extract_job([image], tmp_path, token='0'), 0,
                          'medium')
    h1 = queue.submit_job(extract_job([image], tmp_path, token='1'), 1,
                          'medium')
    redis = queue.redis
    theirs = redis.hget(queue.prefix + 'msgs', h1.id)
    assert theirs.startswith(b'{') and (store / f'{h1.id}.json').exists()
    redis.hset(queue.prefix + 'msgs', h0.id, theirs)
    # and job 0 is finished (its record lost: DROPPED)
    redis.delete(_record_key(queue, h0))

    # When job 0 is collected, and the next cycle confirms it
    words = queue.collect_jobs(queue.get_collectable_jobs())[1]
    assert words == ['FAILED', 'PENDING']
    queue.collect_jobs([])

    # Then job 1's payload is still there, and job 1 still reads it
    assert (store / f'{h1.id}.json').exists()
    assert redis.hget(queue.prefix + 'msgs', h1.id) == theirs


# --- dedupe ---------------------------------------------------------------

@pytest.mark.parametrize('value', [
    'foreign', 'not json', 'wrong shape'])
def test_a_forged_dedupe_key_does_not_swallow_a_submission(
        value, queue, image, tmp_path, nobody, app):
    redis = queue.redis
    key = submission.dedupe_key('spacer.process_job', None,
                                queue.idempotency_key(5))
    foreign = str(uuid.uuid4())
    # A key naming a job of nobody's books, whose record says PENDING
    redis.set(app.backend.get_key_for_task(foreign),
              json.dumps({'status': 'PENDING', 'task_id': foreign}))
    redis.set(key, {'foreign': json.dumps({'id': foreign, 'queue': nobody}),
                    'not json': '\xff{',
                    'wrong shape': json.dumps([foreign])}[value])

    handle = queue.submit_job(extract_job([image], tmp_path, token='5'), 5,
                              'medium')
    more = queue.submit_jobs([(extract_job([image], tmp_path, token='6'),
                               5, 'medium')])

    # A new job, on the books and queued, and the bulk call finds it
    assert handle.id != foreign
    assert [j.task_id for j in queue.get_collectable_jobs()] == [handle.id]
    assert _queued(redis, nobody) == 1
    assert [h.id for h in more] == [handle.id]


# --- deadlines ------------------------------------------------------------

def test_a_non_final_record_over_a_failure_ends_at_the_deadline(
        queue, tmp_path, celery_worker, monkeypatch):
    from tests.client.helpers import LocalOnlyExtractor
    # Given short limits at submission (the deadline is counted from them)
    monkeypatch.setenv('SPACER_EXTRA_EXTRACTOR_CLASSES',
                       'tests.client.helpers.LocalOnlyExtractor')
    monkeypatch.setenv('SPACER_JOB_MAX_QUEUE_WAIT', '2')
    monkeypatch.setenv('SPACER_EXTRACT_TIME_LIMIT', '2')
    monkeypatch.setenv('SPACER_TASK_MAX_RETRIES', '0')
    monkeypatch.setenv('SPACER_RETRY_BACKOFF_MAX', '1')
    image = write_image(tmp_path / 'f.png')
    failing = queue.submit_job(extract_job(
        [image], tmp_path, token='0',
        extractor=LocalOnlyExtractor(feature_dim=8)), 0)
    running = queue.submit_job(extract_job([image], tmp_path, token='1'), 1)
    wait_for(lambda: all(s.finished for s in queue.client.statuses(
        [failing, running])), 60, what='both jobs ran')
    # A record that says PENDING (no TTL) written over the real FAILURE,
    # one that says STARTED over the success
    redis = queue.redis
    redis.set(_record_key(queue, failing),
              json.dumps({'status': 'PENDING', 'task_id': failing.id}))
    redis.set(_record_key(queue, running),
              json.dumps({'status': 'STARTED', 'task_id': running.id,
                          'result': {'pid': 1}}))
    assert _coralnet_cycle(queue)[1] == ['PENDING', 'RUNNING']

    # Then past wait + limit (PENDING) and wait + (limit + backoff) per
    # try (RUNNING) after submission, neither is believed any more
    dropped = {}

    def cycle() -> bool:
        handled = _coralnet_cycle(queue)[0]
        dropped.update(handled)
        return len(dropped) == 2
    wait_for(cycle, 30, interval=0.5, what='both jobs DROPPED')
    for token in '01':
        assert failures.error_class(dropped[token].error_message) == \
            failures.LOST
        assert 'past its deadline' in dropped[token].error_message
    assert _coralnet_cycle(queue) == ({}, [])
    assert _books_empty(queue)


def test_a_pending_record_kept_forever_ends_at_the_deadline(
        queue, image, tmp_path, nobody, monkeypatch):
    # Given a job nobody runs, whose PENDING record is made to last forever
    monkeypatch.setenv('SPACER_JOB_MAX_QUEUE_WAIT', '1')
    monkeypatch.setenv('SPACER_EXTRACT_TIME_LIMIT', '1')
    handle = queue.submit_job(extract_job([image], tmp_path, token='0'), 0,
                              'medium')
    queue.redis.persist(_record_key(queue, handle))
    assert _coralnet_cycle(queue)[1] == ['PENDING']

    # Then past its wait and limit after submission it is DROPPED, saying
    # why, and leaves the books
    time.sleep(2.5)
    handled, words = _coralnet_cycle(queue)
    assert words == ['DROPPED']
    assert failures.error_class(handled['0'].error_message) == failures.LOST
    assert 'past its deadline' in handled['0'].error_message
    assert _coralnet_cycle(queue) == ({}, [])
    assert _books_empty(queue)


def test_a_hand_out_dated_in_the_future_does_not_hide_a_job(
        queue, image, tmp_path, nobody):
    # Given two finished jobs (their records lost: DROPPED), one of them
    # "handed" to a call at a time far in the future
    handles = [queue.submit_job(extract_job([image], tmp_path, token=str(n)),
                                n, 'medium') for n in range(2)]
    redis = queue.redis
    for handle in handles:
        redis.delete(_record_key(queue, handle))
    redis.hset(queue.prefix + 'handed', handles[0].id, json.dumps(
        {'call': 'forged', 'at': 1e12, 'returned': False}))
    # and an id in order that no books entry names
    redis.zadd(queue.prefix + 'order', {'not-a-job-of-ours': 0})

    # Then both are collected in one cycle, the stray id leaves the books,
    # and the next cycle is clean
    handled, words = _coralnet_cycle(queue)
    assert sorted(handled) == ['0', '1'] and words == ['DROPPED', 'DROPPED']
    assert _coralnet_cycle(queue) == ({}, [])
    assert _books_empty(queue)
