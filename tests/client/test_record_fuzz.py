"""Fuzz the web process's reading of records from Redis (issue 28, items
10 and 11): whatever bytes a result record or a books entry holds, the
client answers with a status or a RecordError, never another exception,
and a collect cycle over such records answers every job."""

from __future__ import annotations

import json
import random
import uuid
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spacer_worker.client import fences, records
from spacer_worker.client.coralnet import CeleryQueue
from spacer_worker.client.jobs import JobStatus, record_status
from spacer_worker.exceptions import RecordError, failures
from tests.client.helpers import extract_job, write_image

LIMITS = records.RecordLimits(max_bytes=1 << 16, max_depth=16,
                              compression=frozenset({'zlib', 'bz2',
                                                    'lzma'}))
TASK = 'a6f1c2d4-0000-4000-8000-000000000000'

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() |
    st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) |
    st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20)
_meta = st.fixed_dictionaries({}, optional={
    'status': st.sampled_from(['SUCCESS', 'FAILURE', 'REVOKED', 'PENDING',
                               'STARTED', 'PROGRESS', 'RETRY', 'X']) | _json,
    'result': _json | st.fixed_dictionaries({}, optional={
        'exc_type': _json, 'exc_module': _json, 'exc_message': _json}),
    'traceback': _json, 'task_id': st.just(TASK) | _json,
})


def _forms(value: bytes) -> list[bytes]:
    """A record's bytes as stored, and in Celery's compressed forms (the
    methods LIMITS allows, and one it does not)."""
    import bz2
    import lzma
    magic = records.COMPRESSED_MAGIC
    return [value,
            magic + b'application/x-gzip\x00' + zlib.compress(value),
            magic + b'application/x-bz2\x00' + bz2.compress(value),
            magic + b'application/x-lzma\x00' + lzma.compress(value),
            magic + b'application/zstd\x00' + value]


def _check_status(status: JobStatus) -> None:
    assert isinstance(status, JobStatus)
    text = status.failure_text()
    if status.finished and status.state.value != 'SUCCESS':
        assert failures.error_class(text)


@settings(max_examples=400, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_any_bytes_decode_to_a_meta_or_a_record_error(raw):
    for form in _forms(raw):
        try:
            meta = records.decode_meta(form, TASK, LIMITS)
        except RecordError:
            continue
        assert isinstance(meta, dict)
        _check_status(record_status(TASK, form, LIMITS))


@settings(max_examples=400, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(_meta, st.integers(min_value=0, max_value=40))
def test_any_json_meta_gives_a_status(meta, cut):
    raw = json.dumps(meta).encode()
    for form in (*_forms(raw), raw[:cut], raw + b'\xff'):
        _check_status(record_status(TASK, form, LIMITS))


@settings(max_examples=300, deadline=None)
@given(_json, _json)
def test_result_checks_and_ids_never_raise(result, stored):
    fences.result_mismatch(result, stored if isinstance(stored, dict)
                           else {'task_name': 'x', 'tasks': [stored]})
    fences.books_info(result)
    fences.own_payload(result, TASK)
    fences.split_ids([json.dumps(result).encode()[:250], b'\xff', b''])


def _mutations(rng: random.Random, good: bytes) -> bytes:
    """A real record, mangled one of several ways."""
    data = bytearray(good)
    way = rng.randrange(6)
    if way == 0:       # truncated
        return bytes(data[:rng.randrange(len(data))])
    if way == 1:       # bytes flipped
        for _ in range(rng.randrange(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        return bytes(data)
    if way == 2:       # a field replaced by another type
        meta = json.loads(good)
        field = rng.choice(sorted(meta))
        meta[field] = rng.choice([[], {}, 7, None, 'x', [meta[field]]])
        return json.dumps(meta).encode()
    if way == 3:       # nested deep
        return b'{"status": "SUCCESS", "result": ' + b'[' * 3000 + \
            b']' * 3000 + b'}'
    if way == 4:       # compressed
        return _forms(good)[rng.randrange(1, 5)]
    return bytes(rng.randrange(256) for _ in range(rng.randrange(64)))


@pytest.mark.parametrize('seed', [1, 2])
def test_a_cycle_over_mangled_records_answers_every_job(
        seed, app, tmp_path, monkeypatch):
    # 40 jobs on a queue no worker consumes, each with a mangled record
    # (a seeded loop, a fixed budget: 80 records through the real client
    # and a real Redis)
    monkeypatch.setenv('SPACER_CORALNET_SPEC_QUEUES',
                       f'medium=fuzz-{uuid.uuid4().hex[:8]}')
    rng = random.Random(seed)
    image = write_image(tmp_path / 'img.png')
    queue = CeleryQueue(app, prefix=f'fuzz:{uuid.uuid4().hex[:8]}:')
    handles = queue.submit_jobs([
        (extract_job([image], tmp_path, token=str(n)), n, 'medium')
        for n in range(40)])
    redis = queue.redis
    for handle in handles:
        key = app.backend.get_key_for_task(handle.id)
        good = json.dumps({'status': 'SUCCESS', 'task_id': handle.id,
                           'result': {'ok': True, 'results': [],
                                      'original_job': None}}).encode()
        redis.set(key, _mutations(rng, good))
        redis.zadd(queue.prefix + 'done', {handle.id: 1})

    jobs = queue.get_collectable_jobs()
    results, words = queue.collect_jobs(jobs)

    assert len(words) == len(jobs) == 40
    for result in results:
        assert result.original_job is not None
        assert result.ok is False
        assert failures.error_class(result.error_message)
